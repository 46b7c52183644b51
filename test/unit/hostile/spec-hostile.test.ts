import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, it } from "node:test";
import { shQuote, workloadLaunches } from "../../../src/cluster/workloads.ts";
import { validateSpec } from "../../../src/spec/validate.ts";
import { HrError } from "../../../src/util/errors.ts";
import { kernelCommandLine, optValue } from "../../../src/vm/argv.ts";

/**
 * Issue 7 part 4, specs: names and addresses with shell metacharacters, option separators or
 * path traversal are refused, naming the field; the one free-text field, a command workload's
 * `run`, is meant for the guest's shell and reaches it verbatim, single-quoted.
 */
const execFileAsync = promisify(execFile);
const HOST_MIB = { hostMemoryMiB: 64 * 1024 };

const HOSTILE = [
  "../x",
  "a/b",
  "a;rm -rf /",
  "$(reboot)",
  "`id`",
  "a b",
  "a\nb",
  "a,debug-threads=off",
  "a=b",
  "a'b",
  'a"b',
  "a|b",
  "a&b",
  "a>b",
  "-rf",
  "A",
  "",
  "x".repeat(32),
  "ä",
];

function refused(doc: unknown, field: string, what: string): void {
  assert.throws(
    () => validateSpec(doc, "spec.json", HOST_MIB),
    (error: unknown) => {
      assert.ok(error instanceof HrError, `${what}: ${String(error)}`);
      assert.equal(error.code, "SPEC_INVALID", what);
      assert.ok(error.message.includes(field), `${what}: ${error.message} does not name ${field}`);
      return true;
    },
  );
}

describe("hostile specs are refused, naming the field", () => {
  for (const name of HOSTILE) {
    it(`VM name ${JSON.stringify(name)}`, () => {
      refused({ name: "lab", vms: [{ name, memoryMiB: 128 }] }, "vms[0].name", name);
    });
  }

  it("cluster names, peers, addresses, subnets and ports with metacharacters", () => {
    for (const name of HOSTILE) {
      refused({ name, vms: [{ name: "a", memoryMiB: 128 }] }, "name", `cluster ${name}`);
      refused(
        {
          name: "lab",
          vms: [{ name: "a", memoryMiB: 128, workload: { kind: "tcp-stream", to: name, port: 1 } }],
        },
        "vms[0].workload.to",
        `peer ${name}`,
      );
    }
    for (const ip of ["10.0.0.2; reboot", "10.0.0.2 ", "$(id)", "10.0.0.256", "../../10.0.0.2"]) {
      refused({ name: "lab", vms: [{ name: "a", memoryMiB: 128, ip }] }, "vms[0].ip", ip);
    }
    for (const subnet of ["10.0.0.0/24;id", "10.0.0.0/8", "$(id)/24"]) {
      refused({ name: "lab", subnet, vms: [{ name: "a", memoryMiB: 128 }] }, "subnet", subnet);
    }
    for (const port of ["7001;id", 0, 70000, 1.5]) {
      refused(
        {
          name: "lab",
          vms: [{ name: "a", memoryMiB: 128, workload: { kind: "tcp-stream", to: "a", port } }],
        },
        "vms[0].workload.port",
        String(port),
      );
    }
    refused(
      { name: "lab", vms: [{ name: "a", memoryMiB: 128, workload: { kind: "mem", mib: "64; id" } }] },
      "vms[0].workload.mib",
      "mib",
    );
    refused(
      { name: "lab", vms: [{ name: "a", memoryMiB: 128, extra: "-monitor stdio" }] },
      "vms[0]",
      "unknown key",
    );
  });
});

describe("the command workload reaches the guest's shell verbatim", () => {
  const NASTY = [
    "echo 'single' \"double\" `back` $(sub) $HOME ; rm -rf / & | > < \\ \n newline",
    "'",
    "''''",
    "it's",
    "a\\'b",
    "\u00e4\u{1f600}",
  ];

  it("shQuote round-trips through a POSIX sh (argv, no host shell string)", async () => {
    for (const text of NASTY) {
      const { stdout } = await execFileAsync("/bin/sh", ["-c", `printf %s ${shQuote(text)}`]);
      assert.equal(stdout, text);
    }
  });

  it("the launch command runs `sh -c <run>` with run as one quoted word", () => {
    const spec = validateSpec(
      { name: "lab", vms: [{ name: "a", memoryMiB: 128, workload: { kind: "command", run: NASTY[0] } }] },
      "spec.json",
      HOST_MIB,
    );
    const [launch] = workloadLaunches(spec.vms);
    assert.ok(launch);
    assert.ok(launch.command.includes(`exec sh -c ${shQuote(NASTY[0] ?? "")} >`), launch.command);
  });
});

describe("QEMU's argv and the kernel command line", () => {
  it("the kernel command line refuses values that would add parameters", () => {
    for (const value of ["a:10.0.0.2 init=/bin/sh", "a\nb", "$(id)", "a'b", 'a"b', "a;b"]) {
      assert.throws(() => kernelCommandLine({ "hr.hosts": value }), /not allowed/, value);
    }
    assert.throws(() => kernelCommandLine({ "hr.x y": "1" }), /not allowed/);
  });

  it("option values double their commas, so no option can be injected", () => {
    assert.equal(optValue("path,readonly=off"), "path,,readonly=off");
  });
});
