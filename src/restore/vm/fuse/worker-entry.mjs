// Worker entry shim: Node 20 workers do not inherit tsx's loader, so register it here and load
// the TypeScript worker (worker.ts). Plain JavaScript: nothing here needs types.
import { register } from "tsx/esm/api";

register();
await import("./worker.ts");
