import { join } from "node:path";
import { connectUnixWithRetry } from "../../util/unix-socket.ts";
import { writePrecopyStream } from "../../migration/index.ts";
import { waitMigration } from "../../snapshot/capture.ts";
import { HrError, messageOf } from "../../util/errors.ts";
import type { Vm } from "../../vm/vm.ts";
import { RAM_BLOCK_ID } from "../../vm/argv.ts";
import { pageBatches, type VmStreamSource } from "./stream-source.ts";

/**
 * Strategy `full` — QEMU's own eager restore, the baseline: the destination QEMU (started with
 * `-S -incoming defer`) listens on a unix socket; we connect and write the whole precopy stream
 * (every page from the store, then the device state); QEMU loads all of it and stays paused
 * until the coordinator says `cont`.
 *
 * Guest RAM (block ram0) goes without its zero pages: a fresh destination's ram0 is still all
 * zero when the load starts (QEMU writes nothing into it before: measured by `mmap`, whose ram0
 * mapping has Private_Dirty 0 at ready, mmap.ts), and a precopy load never asks for a page it did
 * not get. The other blocks (ROMs, ACPI tables) hold QEMU's own content at start, so theirs are
 * sent. The restore bench's 512 MiB VM: 60,000 zero records fewer of its 131,000 pages.
 */
export interface LoadReport {
  loadMs: number;
  bytes: number;
  pages: number;
}

export async function loadFull(vm: Vm, source: VmStreamSource, timeoutMs: number): Promise<LoadReport> {
  const started = performance.now();
  const socketPath = join(vm.dir, "incoming.sock");
  try {
    await vm.qmp.execute("migrate-incoming", { uri: `unix:${socketPath}` });
    const socket = await connectUnixWithRetry(socketPath, 10_000);
    const stats = await writePrecopyStream(socket, {
      configuration: source.configuration,
      ramStart: source.ramStart,
      pages: pageBatches(source, new Set([RAM_BLOCK_ID])),
      deviceState: source.deviceState,
    });
    await waitMigration(vm, timeoutMs);
    return { loadMs: Math.round(performance.now() - started), bytes: stats.bytes, pages: stats.pages };
  } catch (error) {
    throw new HrError(
      "RESTORE_LOAD_FAILED",
      `VM ${vm.spec.name}: loading its state failed: ${messageOf(error)}`,
      {
        cause: error,
        hint: `see ${join(vm.dir, "qemu.log")}`,
      },
    );
  }
}
