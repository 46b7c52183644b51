import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseStats, shQuote, workloadLaunches } from "../../../src/cluster/workloads.ts";
import { validateSpec } from "../../../src/spec/validate.ts";

describe("workload launches", () => {
  it("starts each sink once, before the senders", () => {
    const spec = validateSpec(
      {
        name: "lab",
        vms: [
          { name: "db", memoryMiB: 256, workload: { kind: "mem", mib: 32 } },
          { name: "a", memoryMiB: 128, workload: { kind: "tcp-stream", to: "db", port: 7001 } },
          {
            name: "b",
            memoryMiB: 128,
            workload: { kind: "tcp-stream", to: "db", port: 7001, rateKiBps: 64 },
          },
        ],
      },
      "spec",
      { hostMemoryMiB: 24_000 },
    );
    const launches = workloadLaunches(spec.vms);
    assert.deepEqual(
      launches.map((l) => [l.vm, l.id, l.kind]),
      [
        ["db", "stream-recv-7001", "tcp-sink"],
        ["db", "mem-0", "mem"],
        ["a", "stream-send-db-7001", "tcp-stream"],
        ["b", "stream-send-db-7001", "tcp-stream"],
      ],
    );
    assert.match(
      launches[3]?.command ?? "",
      /hr-stream send db 7001 64 \/run\/hr\/stream-send-db-7001\.json/,
    );
  });

  it("quotes command workloads for the guest shell", () => {
    assert.equal(shQuote("it's"), `'it'\\''s'`);
    const spec = validateSpec(
      {
        name: "lab",
        vms: [{ name: "a", memoryMiB: 128, workload: { kind: "command", run: "echo 'x'; $(id)" } }],
      },
      "spec",
      { hostMemoryMiB: 24_000 },
    );
    assert.match(workloadLaunches(spec.vms)[0]?.command ?? "", /exec sh -c 'echo '\\''x'\\''; \$\(id\)'/);
  });

  it("parses stats lines and skips torn ones", () => {
    assert.deepEqual(parseStats('mem-0\t{"rate":5}\nbad\t{"ra\n\nstream\t{"seq":1}\n'), {
      "mem-0": { rate: 5 },
      stream: { seq: 1 },
    });
  });
});
