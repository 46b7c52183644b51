import { z } from "zod";

/**
 * The cluster spec: what the user writes (JSON). Validated with zod; the checks that need the
 * whole document (duplicates, unknown peers, host memory) live in `validate.ts`.
 */
export const VM_NAME_RE = /^[a-z][a-z0-9-]{0,30}$/;

const vmName = z.string().regex(VM_NAME_RE, {
  message: "must match [a-z][a-z0-9-]{0,30} (lower-case letter first, then letters, digits or '-')",
});
const port = z.number().int().min(1).max(65535);
const ipv4 = z.ipv4({ message: "must be an IPv4 address such as 10.0.0.2" });

export const commandWorkload = z.strictObject({
  kind: z.literal("command"),
  /** A shell command line run by the guest's busybox sh (never by a host shell). */
  run: z.string().min(1).max(4096),
});

export const tcpStreamWorkload = z.strictObject({
  kind: z.literal("tcp-stream"),
  /** The peer VM that receives the flow (a sink is started there automatically). */
  to: vmName,
  port,
  /** Sending rate in KiB/s. */
  rateKiBps: z.number().int().min(1).max(1_048_576).default(256),
});

export const memWorkload = z.strictObject({
  kind: z.literal("mem"),
  /** How much memory the workload owns and touches, in MiB. */
  mib: z.number().int().min(1).max(16384),
  /** Percentage of that memory touched often (the rest is touched rarely). */
  hotPercent: z.number().int().min(1).max(100).default(15),
  /** Pace in touches per second; unset = as fast as the vCPU goes. */
  touchesPerSec: z.number().int().min(1).max(100_000_000).optional(),
});

export const workloadSchema = z.discriminatedUnion("kind", [commandWorkload, tcpStreamWorkload, memWorkload]);

export const vmSchema = z.strictObject({
  name: vmName,
  memoryMiB: z.number().int().min(64).max(16384),
  vcpus: z.number().int().min(1).max(64).default(1),
  ip: ipv4.optional(),
  diskMiB: z.number().int().min(16).max(1_048_576).optional(),
  workload: workloadSchema.optional(),
  workloads: z.array(workloadSchema).max(16).optional(),
});

export const clusterSpecSchema = z.strictObject({
  name: vmName,
  /** The guests' private network; it exists only inside our switch. */
  subnet: z
    .string()
    .regex(/^\d{1,3}\.\d{1,3}\.\d{1,3}\.0\/24$/, { message: "must be a /24 such as 10.0.0.0/24" })
    .default("10.0.0.0/24"),
  vms: z.array(vmSchema).min(1).max(64),
});

export type ClusterSpecInput = z.input<typeof clusterSpecSchema>;
export type Workload = z.output<typeof workloadSchema>;

/** A VM after validation: every default filled in, its IP and MAC assigned. */
export interface VmSpec {
  name: string;
  memoryMiB: number;
  vcpus: number;
  ip: string;
  mac: string;
  diskMiB: number | undefined;
  workloads: Workload[];
}

export interface ClusterSpec {
  name: string;
  subnet: string;
  prefixLength: number;
  vms: VmSpec[];
}
