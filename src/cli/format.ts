import type { ClusterStatus } from "../cluster/cluster.ts";

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((row) => (row[col] ?? "").length))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, col) => cell.padEnd(widths[col] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

export function human(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

export function formatStatus(status: ClusterStatus): string {
  const lines = [`cluster ${status.cluster}  accel ${status.accel}`, ""];
  lines.push(
    table([
      ["VM", "STATE", "IP", "MEMORY", "VCPUS", "PID"],
      ...status.vms.map((vm) => [
        vm.name,
        vm.state,
        vm.ip,
        `${vm.memoryMiB} MiB`,
        String(vm.vcpus),
        String(vm.pid ?? "-"),
      ]),
    ]),
  );
  if (status.traffic.length > 0) {
    lines.push("", "traffic");
    lines.push(
      table([
        ["FROM", "TO", "FRAMES", "BYTES"],
        ...status.traffic.map((t) => [t.from, t.to, String(t.frames), human(t.bytes)]),
      ]),
    );
  }
  for (const vm of status.vms) {
    if (!vm.workloads) continue;
    for (const [id, stats] of Object.entries(vm.workloads))
      lines.push(`${vm.name} ${id}: ${JSON.stringify(stats)}`);
  }
  return lines.join("\n");
}
