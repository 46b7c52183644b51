import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { validateSpec } from "../../../src/spec/validate.ts";
import { isHrError } from "../../../src/util/errors.ts";

const host = { hostMemoryMiB: 24 * 1024 };

function refused(doc: unknown, ...fragments: string[]): void {
  assert.throws(
    () => validateSpec(doc, "lab.json", host),
    (error: unknown) => {
      assert.ok(isHrError(error, "SPEC_INVALID"), `expected SPEC_INVALID, got ${String(error)}`);
      for (const fragment of fragments)
        assert.match(error.message, new RegExp(fragment.replace(/[[\]().]/g, "\\$&")));
      return true;
    },
  );
}

describe("cluster spec validation", () => {
  it("fills defaults, assigns IPs and MACs", () => {
    const spec = validateSpec(
      {
        name: "lab",
        vms: [
          { name: "db", memoryMiB: 256, ip: "10.0.0.2", workload: { kind: "command", run: "true" } },
          { name: "app", memoryMiB: 384, workload: { kind: "tcp-stream", to: "db", port: 7001 } },
          { name: "cache", memoryMiB: 128, diskMiB: 64 },
        ],
      },
      "lab.json",
      host,
    );
    assert.equal(spec.subnet, "10.0.0.0/24");
    assert.deepEqual(
      spec.vms.map((vm) => [vm.name, vm.ip, vm.mac, vm.vcpus]),
      [
        ["db", "10.0.0.2", "52:54:00:00:00:02", 1],
        ["app", "10.0.0.3", "52:54:00:00:00:03", 1],
        ["cache", "10.0.0.4", "52:54:00:00:00:04", 1],
      ],
    );
    assert.deepEqual(spec.vms[1]?.workloads, [{ kind: "tcp-stream", to: "db", port: 7001, rateKiBps: 256 }]);
    assert.equal(spec.vms[2]?.diskMiB, 64);
  });

  it("skips addresses given explicitly when assigning", () => {
    const spec = validateSpec(
      {
        name: "x",
        vms: [
          { name: "a", memoryMiB: 128 },
          { name: "b", memoryMiB: 128, ip: "10.0.0.2" },
        ],
      },
      "x",
      host,
    );
    assert.deepEqual(
      spec.vms.map((vm) => vm.ip),
      ["10.0.0.3", "10.0.0.2"],
    );
  });

  it("refuses duplicate names and IPs, naming the field", () => {
    refused(
      {
        name: "lab",
        vms: [
          { name: "a", memoryMiB: 128 },
          { name: "a", memoryMiB: 128 },
        ],
      },
      "vms[1].name: duplicate name 'a'",
    );
    refused(
      {
        name: "lab",
        vms: [
          { name: "a", memoryMiB: 128, ip: "10.0.0.5" },
          { name: "b", memoryMiB: 128, ip: "10.0.0.5" },
        ],
      },
      "vms[1].ip: duplicate IP 10.0.0.5",
    );
  });

  it("refuses unknown peers and streams to self", () => {
    refused(
      {
        name: "lab",
        vms: [{ name: "a", memoryMiB: 128, workload: { kind: "tcp-stream", to: "zz", port: 1 } }],
      },
      "vms[0].workload.to: unknown peer 'zz'",
    );
    refused(
      {
        name: "lab",
        vms: [{ name: "a", memoryMiB: 128, workload: { kind: "tcp-stream", to: "a", port: 1 } }],
      },
      "to itself",
    );
  });

  it("refuses bad names, memory out of range and unknown fields", () => {
    refused({ name: "lab", vms: [{ name: "Bad_Name", memoryMiB: 128 }] }, "vms[0].name");
    refused({ name: "lab", vms: [{ name: "a;rm -rf /", memoryMiB: 128 }] }, "vms[0].name");
    refused({ name: "lab", vms: [{ name: "../etc", memoryMiB: 128 }] }, "vms[0].name");
    refused({ name: "lab", vms: [{ name: "a", memoryMiB: 32 }] }, "vms[0].memoryMiB");
    refused({ name: "lab", vms: [{ name: "a", memoryMiB: 20000 }] }, "vms[0].memoryMiB");
    refused({ name: "lab", vms: [{ name: "a", memoryMiB: 128, colour: "red" }] }, "vms[0]");
    refused({ name: "lab", vms: [] }, "vms");
    refused({ vms: [{ name: "a", memoryMiB: 128 }] }, "name");
  });

  it("refuses a cluster that does not fit in the host's memory", () => {
    const vms = Array.from({ length: 8 }, (_, i) => ({ name: `vm${i}`, memoryMiB: 4096 }));
    refused({ name: "big", vms }, "this machine has 24576 MiB");
  });

  it("refuses a mem workload larger than the VM", () => {
    refused(
      { name: "lab", vms: [{ name: "a", memoryMiB: 128, workload: { kind: "mem", mib: 120 } }] },
      "vms[0].workload.mib",
    );
  });

  it("refuses an IP outside the subnet's host range", () => {
    refused({ name: "lab", vms: [{ name: "a", memoryMiB: 128, ip: "10.0.1.9" }] }, "vms[0].ip");
    refused({ name: "lab", vms: [{ name: "a", memoryMiB: 128, ip: "10.0.0.1" }] }, "vms[0].ip");
  });
});
