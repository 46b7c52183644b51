import { rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { HrError, isHrError, messageOf } from "../util/errors.ts";
import type { Vm } from "../vm/vm.ts";

/**
 * Receives one VM's migration stream over a unix socket we listen on (QEMU `migrate unix:PATH`
 * connects to us), so the stream is parsed as it arrives: no temporary file of the whole RAM.
 * `consume` gets every chunk in order; the socket is paused while it works (backpressure).
 */
export interface CaptureOptions {
  /** Use QEMU's background-snapshot (uffd write-protect): the VM runs again after its device state. */
  background: boolean;
  timeoutMs: number;
}

export interface MigrationStats {
  status: string;
  totalTimeMs: number | undefined;
  downtimeMs: number | undefined;
  ramNormal: number | undefined;
  ramDuplicate: number | undefined;
}

const MAX_BANDWIDTH = 4 * 1024 * 1024 * 1024;
/** Errors of a stream whose consumer failed but which was read to its end (QEMU finished it). */
const drained = new WeakSet<object>();

export async function captureMigration(
  vm: Vm,
  socketPath: string,
  consume: (chunk: Buffer) => Promise<void> | void,
  options: CaptureOptions,
): Promise<MigrationStats> {
  await rm(socketPath, { force: true });
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => resolve());
  });
  try {
    const received = receive(server, consume, options.timeoutMs);
    // A VM restored by post-copy still has the capabilities its restore set, and QEMU refuses
    // background-snapshot beside them: turn them off in the same call.
    await vm.qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "postcopy-ram", state: false },
        { capability: "postcopy-blocktime", state: false },
        { capability: "background-snapshot", state: options.background },
      ],
    });
    await vm.qmp.execute("migrate-set-parameters", { "max-bandwidth": MAX_BANDWIDTH });
    await vm.qmp.execute("migrate", { uri: `unix:${socketPath}` });
    await received;
    return await waitMigration(vm, options.timeoutMs);
  } catch (error) {
    if (drained.has(error as object)) {
      // The stream was read to its end: let QEMU finish the migration; never cancel it midway.
      await waitMigration(vm, options.timeoutMs).catch(() => undefined);
    } else {
      await vm.qmp.executeRaw("migrate_cancel").catch(() => undefined);
    }
    // The store's own codes (SNAPSHOT_DISK_FULL, SNAPSHOT_IO, ...) and hints are kept.
    const stored = isHrError(error) && error.code.startsWith("SNAPSHOT_");
    throw new HrError(
      stored ? error.code : "SNAPSHOT_CAPTURE_FAILED",
      `VM ${vm.spec.name}: saving memory failed: ${messageOf(error)}`,
      { cause: error, ...(stored && error.hint !== undefined ? { hint: error.hint } : {}) },
    );
  } finally {
    server.close();
    await rm(socketPath, { force: true });
  }
}

async function receive(
  server: Server,
  consume: (chunk: Buffer) => Promise<void> | void,
  timeoutMs: number,
): Promise<void> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new HrError("SNAPSHOT_CAPTURE_FAILED", "QEMU did not connect")),
      timeoutMs,
    );
    server.once("connection", (connection) => {
      clearTimeout(timer);
      resolve(connection);
    });
  });
  await new Promise<void>((resolve, reject) => {
    let failed = false;
    const timer = setTimeout(() => {
      failed = true;
      socket.destroy();
      reject(new HrError("SNAPSHOT_CAPTURE_FAILED", `the stream did not end within ${timeoutMs} ms`));
    }, timeoutMs);
    let chain = Promise.resolve();
    let consumeError: Error | undefined;
    socket.on("data", (chunk: Buffer) => {
      if (consumeError !== undefined) return; // draining
      socket.pause();
      chain = chain
        .then(() => consume(chunk))
        .then(
          () => {
            socket.resume();
          },
          (error: unknown) => {
            // Drain the rest instead of cutting the stream: QEMU 7.2 deadlocks a VM whose
            // background-snapshot is cut off or cancelled midway (its vCPU waits forever in a
            // userfaultfd write-protect fault), so its stream is read to the end and dropped.
            consumeError = error instanceof Error ? error : new Error(String(error));
            socket.resume();
          },
        );
    });
    socket.on("error", (error) => {
      if (failed) return;
      failed = true;
      clearTimeout(timer);
      reject(error);
    });
    socket.on("end", () => {
      chain.then(
        () => {
          clearTimeout(timer);
          if (failed) return;
          if (consumeError === undefined) {
            resolve();
            return;
          }
          drained.add(consumeError);
          reject(consumeError);
        },
        () => undefined,
      );
    });
  });
}

export async function waitMigration(vm: Vm, timeoutMs: number): Promise<MigrationStats> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await vm.qmp.execute("query-migrate");
    const status = info.status ?? "none";
    if (status === "completed") {
      return {
        status,
        totalTimeMs: info["total-time"],
        downtimeMs: info.downtime,
        ramNormal: info.ram?.normal,
        ramDuplicate: info.ram?.duplicate,
      };
    }
    if (status === "failed" || status === "cancelled") {
      throw new HrError(
        "MIGRATION_FAILED",
        `VM ${vm.spec.name}: migration ${status}: ${info["error-desc"] ?? ""}`,
      );
    }
    if (Date.now() > deadline)
      throw new HrError("MIGRATION_TIMEOUT", `VM ${vm.spec.name}: migration still ${status}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
