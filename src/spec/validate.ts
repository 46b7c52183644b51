import { readFile } from "node:fs/promises";
import { totalmem } from "node:os";
import { HrError, messageOf } from "../util/errors.ts";
import { clusterSpecSchema, type ClusterSpec, type VmSpec } from "./schema.ts";

/** Memory QEMU itself needs per VM beyond guest RAM (TCG translation cache, devices), in MiB. */
export const QEMU_OVERHEAD_MIB = 160;
/** Memory the guest kernel and initramfs need before any workload, in MiB. */
export const GUEST_BASE_MIB = 48;
/** Memory kept free for the host, the daemon and the page cache, in MiB. */
export const HOST_RESERVE_MIB = 1024;

export interface ValidateOptions {
  /** The host's memory in MiB (defaults to this machine's). */
  hostMemoryMiB?: number;
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out === "" ? "(spec)" : out;
}

function specError(source: string, problems: string[]): HrError {
  return new HrError("SPEC_INVALID", `${source}: invalid cluster spec:\n  - ${problems.join("\n  - ")}`, {
    hint: "fix the fields named above and run the command again; nothing was started",
  });
}

function ipToInt(ip: string): number {
  return ip.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

function intToIp(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join(".");
}

/** A locally administered MAC derived from the IP, so it is stable and unique within the subnet. */
export function macForIp(ip: string): string {
  const octets = ip.split(".").map((octet) => Number(octet).toString(16).padStart(2, "0"));
  return `52:54:00:${octets.slice(1).join(":")}`;
}

/** Validates a parsed document; returns the spec with defaults, IPs and MACs filled in. */
export function validateSpec(doc: unknown, source = "spec", options: ValidateOptions = {}): ClusterSpec {
  const parsed = clusterSpecSchema.safeParse(doc);
  if (!parsed.success) {
    throw specError(
      source,
      parsed.error.issues.map((issue) => `${formatPath(issue.path)}: ${issue.message}`),
    );
  }
  const input = parsed.data;
  const problems: string[] = [];
  const base = ipToInt(input.subnet.split("/")[0] ?? "0.0.0.0");
  const names = new Map<string, number>();
  const taken = new Map<string, number>();

  input.vms.forEach((vm, index) => {
    const seen = names.get(vm.name);
    if (seen !== undefined)
      problems.push(`vms[${index}].name: duplicate name '${vm.name}' (also vms[${seen}])`);
    else names.set(vm.name, index);
    if (vm.workload !== undefined && vm.workloads !== undefined) {
      problems.push(`vms[${index}]: give either 'workload' or 'workloads', not both`);
    }
    if (vm.ip === undefined) return;
    const value = ipToInt(vm.ip);
    const host = value - base;
    if (host < 2 || host > 254) {
      problems.push(
        `vms[${index}].ip: ${vm.ip} is not a usable host address of ${input.subnet} (.2 to .254)`,
      );
    }
    const other = taken.get(vm.ip);
    if (other !== undefined) problems.push(`vms[${index}].ip: duplicate IP ${vm.ip} (also vms[${other}])`);
    else taken.set(vm.ip, index);
  });

  input.vms.forEach((vm, index) => {
    const workloads = vm.workloads ?? (vm.workload ? [vm.workload] : []);
    workloads.forEach((workload, w) => {
      if (workload.kind !== "tcp-stream") return;
      const field = vm.workloads ? `vms[${index}].workloads[${w}].to` : `vms[${index}].workload.to`;
      if (!names.has(workload.to))
        problems.push(`${field}: unknown peer '${workload.to}' (no VM has that name)`);
      else if (workload.to === vm.name) problems.push(`${field}: a VM cannot stream to itself`);
    });
    workloads.forEach((workload, w) => {
      if (workload.kind !== "mem" || workload.mib <= vm.memoryMiB - GUEST_BASE_MIB) return;
      const field = vm.workloads ? `vms[${index}].workloads[${w}].mib` : `vms[${index}].workload.mib`;
      problems.push(
        `${field}: ${workload.mib} MiB does not fit in ${vm.memoryMiB} MiB of RAM (the guest itself needs ~${GUEST_BASE_MIB} MiB)`,
      );
    });
  });

  const hostMiB = options.hostMemoryMiB ?? Math.floor(totalmem() / 1048576);
  const needed = input.vms.reduce((sum, vm) => sum + vm.memoryMiB + QEMU_OVERHEAD_MIB, 0) + HOST_RESERVE_MIB;
  if (needed > hostMiB) {
    problems.push(
      `vms: the cluster needs about ${needed} MiB (RAM + ${QEMU_OVERHEAD_MIB} MiB per VM + ${HOST_RESERVE_MIB} MiB reserve) but this machine has ${hostMiB} MiB`,
    );
  }
  if (problems.length > 0) throw specError(source, problems);

  let next = 2;
  const vms: VmSpec[] = input.vms.map((vm) => {
    let ip = vm.ip;
    if (ip === undefined) {
      while (taken.has(intToIp(base + next))) next += 1;
      if (next > 254) throw specError(source, ["vms: more VMs than addresses in the subnet"]);
      ip = intToIp(base + next);
      taken.set(ip, -1);
    }
    return {
      name: vm.name,
      memoryMiB: vm.memoryMiB,
      vcpus: vm.vcpus,
      ip,
      mac: macForIp(ip),
      diskMiB: vm.diskMiB,
      workloads: vm.workloads ?? (vm.workload ? [vm.workload] : []),
    };
  });
  return { name: input.name, subnet: input.subnet, prefixLength: 24, vms };
}

/** Reads and validates a JSON spec file. */
export async function loadSpec(path: string, options: ValidateOptions = {}): Promise<ClusterSpec> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new HrError("SPEC_UNREADABLE", `${path}: cannot read the cluster spec: ${messageOf(error)}`, {
      cause: error,
      hint: "check the path",
    });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    throw new HrError("SPEC_INVALID", `${path}: not valid JSON: ${messageOf(error)}`, { cause: error });
  }
  return validateSpec(doc, path, options);
}
