/** The QMP client: connect to a QEMU monitor socket, run typed commands, wait for events. */
export { QmpClient, type QmpConnectOptions, type ExecuteOptions, type ExecuteRest } from "./client.ts";
export { QmpCommandError, type QmpErrorCode } from "./errors.ts";
export type { WaitForEventOptions } from "./events.ts";
export type * from "./types.ts";
