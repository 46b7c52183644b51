import { isAbsolute } from "node:path";
import { z } from "zod";
import { ORDERS } from "../restore/cluster/start-gate.ts";
import { PAGINGS } from "../restore/vm/kernel-paged.ts";
import { STRATEGIES } from "../restore/vm/strategy.ts";

/**
 * The one list of things HotRestore can be asked to do. Every face (CLI over the daemon socket,
 * later HTTP) translates its input into one of these and hands it to the Controller.
 */
/** A path the daemon writes to: absolute, since the daemon's working directory is not the caller's. */
const absolutePath = z
  .string()
  .min(1)
  .max(4096)
  .refine((path) => isAbsolute(path) && !path.includes("\0"), { message: "must be an absolute path" });

export const actionSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("ping") }),
  z.strictObject({
    type: z.literal("up"),
    /** The spec document as the user wrote it (validated again by the controller). */
    spec: z.unknown(),
    /** Where it came from, for error messages. */
    source: z.string().max(4096),
  }),
  z.strictObject({ type: z.literal("status"), workloads: z.boolean().default(false) }),
  z.strictObject({
    type: z.literal("exec"),
    vm: z.string().max(64),
    command: z.string().min(1).max(65536),
    timeoutMs: z.number().int().min(1).max(86_400_000).optional(),
  }),
  z.strictObject({ type: z.literal("down") }),
  z.strictObject({
    type: z.literal("capture"),
    vm: z.string().max(64),
    /** Absolute path of the pcap file to write. */
    file: absolutePath,
    seconds: z.number().min(0.1).max(3600),
  }),
  z.strictObject({ type: z.literal("snapshot"), name: z.string().max(64).optional() }),
  z.strictObject({ type: z.literal("snapshots") }),
  z.strictObject({ type: z.literal("snapshot-inspect"), name: z.string().max(64) }),
  z.strictObject({ type: z.literal("snapshot-verify"), name: z.string().max(64) }),
  z.strictObject({ type: z.literal("snapshot-graph"), name: z.string().max(64) }),
  z.strictObject({ type: z.literal("snapshot-rm"), name: z.string().max(64) }),
  z.strictObject({
    type: z.literal("restore"),
    name: z.string().max(64),
    strategy: z.enum(STRATEGIES).default("hotrestore"),
    order: z.enum(ORDERS).default("restore-line"),
    /** Hold frames for VMs not yet running; default: on for restore-line, off for the baselines. */
    hold: z.boolean().optional(),
    /** hotrestore: working-set pages every VM loads before start (default: the restore line's W0). */
    w0: z
      .number()
      .int()
      .min(0)
      .max(1 << 30)
      .optional(),
    /** Absolute directory for one pcap per VM of the restored cluster's traffic. */
    capture: absolutePath.optional(),
    /** hotrestore: how pages reach the guests (default auto: kernel paging where FUSE mounts). */
    paging: z.enum(PAGINGS).optional(),
  }),
]);

/** Actions that only read or change the snapshot store: they need no daemon. */
export const STORE_ACTIONS = new Set([
  "snapshots",
  "snapshot-inspect",
  "snapshot-verify",
  "snapshot-graph",
  "snapshot-rm",
]);

export type Action = z.output<typeof actionSchema>;
export type ActionInput = z.input<typeof actionSchema>;

/** A progress note emitted while an action runs (shown by the CLI, ignored by scripts). */
export interface Progress {
  step: string;
  vm?: string;
  detail?: string;
}
