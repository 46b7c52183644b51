import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  decodeCommand,
  encodeOpenReturnPath,
  encodePackaged,
  encodePing,
  encodePostcopyAdvise,
  encodePostcopyListen,
  encodePostcopyRun,
  encodeRamDiscard,
} from "../../../src/migration/commands.ts";
import { encodeConfiguration, parseConfiguration } from "../../../src/migration/configuration.ts";
import { splitDeviceSections } from "../../../src/migration/device-sections.ts";
import { encodeHeader } from "../../../src/migration/encode.ts";
import { MigrationStreamReader } from "../../../src/migration/reader.ts";
import type { CommandEvent } from "../../../src/migration/types.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { DEVICES, deviceState } from "./fixtures.ts";

function commandEvents(records: Buffer[]): CommandEvent[] {
  const reader = new MigrationStreamReader();
  const events = reader.push(Buffer.concat([encodeHeader(), ...records]));
  return events.filter((event): event is CommandEvent => event.type === "command");
}

void describe("commands", () => {
  void it("encodes the post-copy preamble as QEMU 7.2 does (bytes from a captured stream)", () => {
    assert.equal(encodeOpenReturnPath().toString("hex"), "0800010000");
    assert.equal(encodePing(1).toString("hex"), "08000200040000" + "0001");
    assert.equal(
      encodePostcopyAdvise(4096, 4096).toString("hex"),
      "0800030010" + "0000000000001000" + "0000000000001000",
    );
    assert.equal(encodePostcopyListen().toString("hex"), "0800040000");
    assert.equal(encodePostcopyRun().toString("hex"), "0800050000");
    assert.equal(encodePackaged(Buffer.from("abc")).toString("hex"), "080007000400000003616263");
  });

  void it("decodes what it encodes, through the stream reader", () => {
    const ranges = [
      { start: 0, length: 4096 },
      { start: 2 ** 33, length: 2 ** 21 },
    ];
    const events = commandEvents([
      encodeOpenReturnPath(),
      encodePing(0xdeadbeef),
      encodePostcopyAdvise(2 * 1024 * 1024, 4096),
      encodeRamDiscard("pc.ram", ranges),
      encodePostcopyListen(),
      encodePostcopyRun(),
    ]);
    assert.deepEqual(
      events.map((event) => decodeCommand(event.cmd, event.data)),
      [
        { cmd: "openReturnPath" },
        { cmd: "ping", value: 0xdeadbeef },
        { cmd: "advise", ramPageSize: 2 * 1024 * 1024, targetPageSize: 4096 },
        { cmd: "ramDiscard", block: "pc.ram", ranges },
        { cmd: "listen" },
        { cmd: "run" },
      ],
    );
    const discard = encodeRamDiscard("pc.ram", [{ start: 0, length: 4096 }]);
    assert.equal(
      discard.subarray(5, 14).toString("hex"),
      "0006" + Buffer.from("pc.ram").toString("hex") + "00",
    );
  });

  void it("refuses malformed command data with HrError", () => {
    assert.throws(
      () => decodeCommand(2, Buffer.alloc(3)),
      (error: unknown) => isHrError(error, "MIGRATION_BAD_STREAM"),
    );
    assert.throws(
      () => decodeCommand(6, Buffer.from("00027063", "hex")),
      (error: unknown) => isHrError(error),
    );
    assert.throws(
      () => encodePackaged(Buffer.alloc((1 << 24) + 1)),
      (error: unknown) => isHrError(error, "MIGRATION_BAD_INPUT"),
    );
  });
});

void describe("configuration", () => {
  void it("round-trips every subsection and refuses an unknown one", () => {
    const info = {
      machine: "pc-q35-7.2",
      targetPageBits: 12,
      capabilities: ["x-ignore-shared"],
      uuid: Buffer.alloc(16, 1),
    };
    assert.deepEqual(parseConfiguration(encodeConfiguration(info)), info);
    const unknown = Buffer.concat([
      encodeConfiguration({ machine: "m", capabilities: [] }),
      Buffer.from("05016100000001", "hex"),
    ]);
    assert.throws(
      () => parseConfiguration(unknown),
      (error: unknown) => isHrError(error, "MIGRATION_UNSUPPORTED"),
    );
    assert.throws(
      () => parseConfiguration(Buffer.from("07000000", "hex")),
      (error: unknown) => isHrError(error),
    );
  });
});

void describe("splitDeviceSections", () => {
  void it("cuts the device state into sections using the VMDESCRIPTION sizes", () => {
    const { raw, vmdesc } = deviceState();
    const sections = splitDeviceSections(raw, vmdesc);
    assert.deepEqual(
      sections.map((section) => [section.idstr, section.sectionId, section.sizedByVmdesc]),
      DEVICES.map((device, i) => [device.name, 3 + i, true]),
    );
    assert.equal(
      sections.reduce((sum, section) => sum + section.length, 0),
      raw.length,
    );
    assert.equal(sections[1]!.payloadLength, 8 + 4 + 6 + "cpu/xsave".length + 16);
  });

  void it("falls back to finding the footer when the sizes do not add up", () => {
    const { raw, vmdesc } = deviceState();
    vmdesc.devices[1]!.fields![0]!.size = 3;
    vmdesc.devices[3]!.fields![0]!.size = 1;
    const sections = splitDeviceSections(raw, vmdesc);
    assert.deepEqual(
      sections.map((section) => section.sizedByVmdesc),
      [true, false, true, false],
    );
    assert.equal(
      sections.reduce((sum, section) => sum + section.length, 0),
      raw.length,
    );
  });

  void it("refuses a VMDESCRIPTION that does not match the sections", () => {
    const { raw, vmdesc } = deviceState();
    vmdesc.devices[0]!.name = "other";
    assert.throws(
      () => splitDeviceSections(raw, vmdesc),
      (error: unknown) => isHrError(error, "MIGRATION_BAD_STREAM"),
    );
    const short = deviceState();
    short.vmdesc.devices.pop();
    assert.throws(
      () => splitDeviceSections(short.raw, short.vmdesc),
      (error: unknown) => isHrError(error),
    );
  });

  // Found by the fuzzer (test/fuzz, migration-reader): the VMDESCRIPTION is JSON from the stream, and a null
  // device or a subsection without vmsd_name crashed with a TypeError instead of a typed error.
  void it("refuses a malformed VMDESCRIPTION with MIGRATION_BAD_STREAM, never a TypeError", () => {
    const { raw, vmdesc } = deviceState();
    let deep: object = { vmsd_name: "leaf" };
    for (let depth = 0; depth < 100_000; depth += 1) deep = { vmsd_name: `s${depth}`, subsections: [deep] };
    const damaged: unknown[] = [
      null,
      7,
      [],
      { name: 3, instance_id: 0 },
      { name: "timer" },
      { name: "timer", instance_id: 0, fields: 5 },
      { name: "timer", instance_id: 0, fields: [null] },
      { name: "timer", instance_id: 0, subsections: "x" },
      { name: "timer", instance_id: 0, subsections: [{ fields: [] }] },
      { name: "timer", instance_id: 0, subsections: [deep] },
    ];
    damaged.forEach((device, i) => {
      for (const at of [0, 1]) {
        const devices: unknown[] = [...vmdesc.devices];
        devices[at] = device;
        assert.throws(
          () => splitDeviceSections(raw, { ...vmdesc, devices } as typeof vmdesc),
          (error: unknown) => isHrError(error, "MIGRATION_BAD_STREAM") && /malformed/.test(error.message),
          `damaged device ${i} at ${at}`,
        );
      }
    });
  });
});
