/**
 * Child process of store-atomicity.test.ts: starts a snapshot, writes part of it, says "ready"
 * on stdout and waits to be killed (SIGKILL), as a daemon crashing mid-snapshot would.
 * Usage: node --import tsx store-crash-child.ts <store root> <snapshot name>
 */
import { SnapshotStore } from "../../../src/snapshot/store/index.ts";

const [root, name] = process.argv.slice(2);
if (root === undefined || name === undefined) throw new Error("usage: store-crash-child.ts <root> <name>");
const builder = await new SnapshotStore(root, { stagingPages: 4 }).begin(name);
const vm = await builder.vm("victim", [{ id: "pc.ram", usedLength: 64 * 4096 }]);
for (let page = 0; page < 64; page += 3)
  await vm.writePage("pc.ram", page * 4096, Buffer.alloc(4096, page + 1));
await vm.setDeviceState(Buffer.from("device"));
process.stdout.write(`ready ${builder.tempDir}\n`);
setInterval(() => undefined, 1000);
