/**
 * The migration reader and writer against real QEMU 7.2 streams (TCG): one guest writes an 8 MiB
 * random blob and runs a counter; its state is captured twice — (a) `stop` + `migrate exec:cat`,
 * (b) `background-snapshot` while it runs. Each file is read (random chunks), its page counts
 * checked against query-migrate, re-written by our writer, and loaded into a fresh QEMU
 * (`-incoming defer`, `migrate-incoming exec:cat`): the blob's md5 must match and the counter
 * must go on from where it was. Also: the reader split at every byte over the head of a real file
 * and over its device-state tail, and reader → writer → reader equality.
 */
import assert from "node:assert/strict";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { splitDeviceSections } from "../../src/migration/device-sections.ts";
import { MigrationStreamReader } from "../../src/migration/reader.ts";
import type { MigrationEvent, PageRecord } from "../../src/migration/types.ts";
import { writePrecopyStream } from "../../src/migration/writer.ts";
import { loadGuestImage, type GuestImage } from "../../src/image/image.ts";
import { VirtualSwitch } from "../../src/net/switch.ts";
import type { MigrationInfo } from "../../src/qmp/commands.ts";
import type { VmSpec } from "../../src/spec/schema.ts";
import { silentLogger } from "../../src/util/log.ts";
import { Vm } from "../../src/vm/vm.ts";

const SPEC: VmSpec = {
  name: "t",
  memoryMiB: 128,
  vcpus: 1,
  ip: "10.0.0.2",
  mac: "52:54:00:00:00:02",
  diskMiB: undefined,
  workloads: [],
};
const BOOT_TIMEOUT_MS = 180_000;
const WINDOW = 64 * 1024;

interface Capture {
  file: string;
  info: MigrationInfo;
  counterAtCut: number;
  ms: number;
}

let dir = "";
let image: GuestImage;
let sw: VirtualSwitch | undefined;
const vms: Vm[] = [];
const captures = new Map<string, Capture>();

async function startVm(port: string, extraArgs: string[] = []): Promise<Vm> {
  const vm = new Vm(SPEC, join(dir, port), silentLogger());
  vms.push(vm);
  const netSocket = await sw!.addPort(port);
  await vm.start({ accel: "tcg", image, netSocket, hosts: "t:10.0.0.2", disk: undefined, extraArgs });
  return vm;
}

async function guest(vm: Vm, command: string): Promise<string> {
  const result = await vm.exec(command, 120_000);
  assert.equal(result.exitCode, 0, `${command}: ${result.stderr.toString()}`);
  return result.stdout.toString().trim();
}

async function waitMigration(vm: Vm, timeoutMs = 120_000): Promise<MigrationInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await vm.qmp.execute("query-migrate");
    if (info.status === "completed") return info;
    assert.notEqual(info.status, "failed", `migration failed: ${info["error-desc"] ?? ""}`);
    assert.ok(Date.now() < deadline, `migration still ${String(info.status)} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

function readEvents(bytes: Buffer, seed: number): MigrationEvent[] {
  const reader = new MigrationStreamReader();
  const events: MigrationEvent[] = [];
  let state = seed;
  for (let pos = 0; pos < bytes.length;) {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    const size = 1 + (state % (256 * 1024));
    events.push(...reader.push(bytes.subarray(pos, pos + size)));
    pos += size;
  }
  events.push(...reader.end());
  return events;
}

function find<T extends MigrationEvent["type"]>(
  events: MigrationEvent[],
  type: T,
): Extract<MigrationEvent, { type: T }> {
  const event = events.find(
    (candidate): candidate is Extract<MigrationEvent, { type: T }> => candidate.type === type,
  );
  assert.ok(event, `no ${type} event`);
  return event;
}

function toRecord(event: Extract<MigrationEvent, { type: "page" }>): PageRecord {
  return event.kind === "zero"
    ? { block: event.block, offset: event.offset, zero: true, fill: event.fill }
    : { block: event.block, offset: event.offset, data: event.data! };
}

/** A compact, comparable view of events (page data compared by reference-free equality). */
function sameEvents(actual: MigrationEvent[], expected: MigrationEvent[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: event count`);
  for (let i = 0; i < expected.length; i += 1) {
    const [got, want] = [actual[i]!, expected[i]!];
    assert.equal(got.type, want.type, `${what}: event ${i}`);
    if (got.type === "page" && want.type === "page") {
      assert.ok(
        got.block === want.block && got.offset === want.offset && got.kind === want.kind,
        `${what}: page ${i}`,
      );
      if (want.data) assert.ok(got.data?.equals(want.data), `${what}: page ${i} data`);
    } else if ("raw" in got && "raw" in want) {
      assert.ok(got.raw.equals(want.raw), `${what}: ${got.type} bytes`);
    }
  }
}

/** Feeds `bytes` split in two at each offset of `points` and compares with one whole push. */
function splitAt(bytes: Buffer, points: Iterable<number>, withEnd: boolean): number {
  const run = (chunks: Buffer[]): MigrationEvent[] => {
    const reader = new MigrationStreamReader();
    const events = chunks.flatMap((chunk) => reader.push(chunk));
    return withEnd ? [...events, ...reader.end()] : events;
  };
  const whole = run([bytes]);
  let count = 0;
  for (const at of points) {
    sameEvents(run([bytes.subarray(0, at), bytes.subarray(at)]), whole, `split at ${at}`);
    count += 1;
  }
  return count;
}

function* range(from: number, to: number, step = 1): Generator<number> {
  for (let at = Math.max(0, from); at < to; at += step) yield at;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-mig-"));
  image = await loadGuestImage();
  sw = new VirtualSwitch({ dir: join(dir, "switch") });
  const source = await startVm("src");
  await source.waitReady(BOOT_TIMEOUT_MS);
  await guest(source, "head -c 8388608 /dev/urandom > /tmp/blob && md5sum /tmp/blob > /tmp/blob.md5");
  await source.agent.spawn("(i=0; while true; do i=$((i+1)); echo $i > /tmp/ctr; sleep 0.2; done) &");
  await sleep(1500);
  await source.qmp.execute("migrate-set-parameters", { "max-bandwidth": 1073741824 });
});

after(async () => {
  for (const vm of vms) await vm.stop();
  await sw?.close();
  if (dir !== "") await rm(dir, { recursive: true, force: true });
});

void describe("migration streams of a real QEMU 7.2 guest", { timeout: 600_000 }, () => {
  void it("(a) captures a stopped precopy stream with migrate exec:cat", async () => {
    const source = vms[0]!;
    const counterAtCut = Number(await guest(source, "cat /tmp/ctr"));
    const file = join(dir, "a.mig");
    const started = Date.now();
    await source.qmp.execute("stop");
    await source.qmp.execute("migrate", { uri: `exec:cat > ${file}` });
    const info = await waitMigration(source);
    captures.set("a", { file, info, counterAtCut, ms: Date.now() - started });
    await source.qmp.execute("cont");
  });

  void it("(b) captures a background snapshot while the guest runs", async () => {
    const source = vms[0]!;
    await source.qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "background-snapshot", state: true }],
    });
    const counterAtCut = Number(await guest(source, "cat /tmp/ctr"));
    const file = join(dir, "b.mig");
    const started = Date.now();
    await source.qmp.execute("migrate", { uri: `exec:cat > ${file}` });
    const info = await waitMigration(source);
    captures.set("b", { file, info, counterAtCut, ms: Date.now() - started });
    assert.equal(await source.queryStatus(), "running");
    await source.stop();
  });

  for (const name of ["a", "b"]) {
    void it(`(${name}) reads the stream, re-writes it with our writer, and QEMU restores from that`, async () => {
      const capture = captures.get(name);
      assert.ok(capture, "capture step failed");
      const bytes = await readFile(capture.file);
      let started = Date.now();
      const events = readEvents(bytes, name.charCodeAt(0));
      const readMs = Date.now() - started;
      const pageEvents = events.filter((event) => event.type === "page");
      const data = pageEvents.filter((event) => event.kind === "data").length;
      assert.equal(data, capture.info.ram?.normal, "data pages == query-migrate ram.normal");
      assert.equal(pageEvents.length - data, capture.info.ram?.duplicate, "zero pages == ram.duplicate");
      const sections = events.filter((event) => event.type === "ramSection");
      const layout = events
        .map((event) => event.type)
        .filter((type) => type !== "page" && type !== "ramSection");
      assert.deepEqual(layout, ["header", "configuration", "ramBlocks", "deviceState", "eof", "vmdesc"]);
      const hasEnd = sections.some((section) => section.kind === "end");
      assert.equal(hasEnd, name === "a", "a background snapshot has no ram END section");
      const deviceState = find(events, "deviceState");
      const vmdesc = find(events, "vmdesc");
      const devices = splitDeviceSections(deviceState.raw, vmdesc.json);
      assert.equal(devices.length, vmdesc.json.devices.length);

      const memory = new Map<string, PageRecord>();
      for (const event of pageEvents) memory.set(`${event.block}:${event.offset}`, toRecord(event));
      const file2 = join(dir, `${name}-rewritten.mig`);
      started = Date.now();
      const stats = await writePrecopyStream(createWriteStream(file2), {
        configuration: find(events, "configuration").raw,
        ramStart: find(events, "ramBlocks"),
        pages: memory.values(),
        deviceState: deviceState.raw,
        vmdesc: vmdesc.raw,
      });
      const writeMs = Date.now() - started;
      assert.equal(stats.bytes, (await stat(file2)).size);

      const restored = await startVm(`dst-${name}`, ["-incoming", "defer"]);
      started = Date.now();
      await restored.qmp.execute("migrate-incoming", { uri: `exec:cat ${file2}` });
      await waitMigration(restored);
      const loadMs = Date.now() - started;
      await restored.qmp.execute("cont");
      await restored.waitReady(60_000);
      const readyMs = Date.now() - started;
      assert.match(await guest(restored, "md5sum -c /tmp/blob.md5"), /\/tmp\/blob: OK/);
      const first = Number(await guest(restored, "cat /tmp/ctr"));
      await sleep(1500);
      const later = Number(await guest(restored, "cat /tmp/ctr"));
      assert.ok(first >= capture.counterAtCut, `counter ${first} went on from ${capture.counterAtCut}`);
      assert.ok(later > first, `counter runs after restore (${first} -> ${later})`);
      await restored.stop();
      console.log(
        `[${name}] capture ${capture.ms} ms (qemu total-time ${String(capture.info["total-time"])} ms, downtime ${String(capture.info.downtime)} ms), file ${bytes.length} B, ` +
          `pages ${data} data + ${pageEvents.length - data} zero in ${sections.length} ram sections (end: ${hasEnd}), ` +
          `device state ${deviceState.raw.length} B in ${devices.length} sections (${devices.filter((d) => d.sizedByVmdesc).length} sized by vmdesc), vmdesc ${vmdesc.raw.length} B; ` +
          `read ${readMs} ms, rewrite ${stats.bytes} B in ${writeMs} ms (${stats.parts} parts); ` +
          `restore: incoming completed ${loadMs} ms, agent answers ${readyMs} ms; counter ${capture.counterAtCut} -> ${first} -> ${later}`,
      );
    });
  }

  void it("reader split at every byte: first 64 KiB of a real file, and around its device-state tail", async () => {
    const bytes = await readFile(captures.get("a")!.file);
    let started = Date.now();
    const head = bytes.subarray(0, WINDOW);
    const headSplits = splitAt(head, range(0, head.length + 1), false);
    const headMs = Date.now() - started;
    // The tail stream: the real bytes up to the START footer, then from the first FULL section on
    // (device state, EOF, VMDESCRIPTION). Every byte around the junction and around EOF; in
    // between the reader only accumulates the tail, and each split costs a VMDESCRIPTION parse.
    const events = readEvents(bytes, 3);
    const start = find(events, "ramBlocks").raw;
    const junction = bytes.indexOf(start) + start.length;
    const deviceState = find(events, "deviceState").raw;
    const tail = Buffer.concat([bytes.subarray(0, junction), bytes.subarray(bytes.lastIndexOf(deviceState))]);
    const eof = junction + deviceState.length;
    started = Date.now();
    const tailSplits =
      splitAt(tail, range(junction - 64, junction + 2048), true) +
      splitAt(tail, range(junction + 2048, eof - 256, 499), true) +
      splitAt(tail, range(eof - 256, eof + 64), true) +
      splitAt(tail, range(eof + 64, tail.length + 1, 997), true);
    console.log(
      `splits: ${headSplits} over the first ${WINDOW} B in ${headMs} ms; ${tailSplits} over a ${tail.length} B tail stream in ${Date.now() - started} ms`,
    );
  });

  void it("reader → writer → reader gives the same events for a real file", async () => {
    for (const name of ["a", "b"]) {
      const bytes = await readFile(captures.get(name)!.file);
      const events = readEvents(bytes, 5);
      const chunks: Buffer[] = [];
      const sink = createCollector(chunks);
      await writePrecopyStream(sink, {
        configuration: find(events, "configuration").raw,
        ramStart: find(events, "ramBlocks"),
        pages: events.flatMap((event) => (event.type === "page" ? [toRecord(event)] : [])),
        deviceState: find(events, "deviceState").raw,
        vmdesc: find(events, "vmdesc").raw,
      });
      const again = readEvents(Buffer.concat(chunks), 6);
      const strip = (list: MigrationEvent[]): MigrationEvent[] =>
        list.filter((event) => event.type !== "ramSection");
      sameEvents(strip(again), strip(events), `${name} round trip`);
    }
  });
});

function createCollector(chunks: Buffer[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done): void {
      chunks.push(chunk);
      done();
    },
  });
}
