/**
 * Every fuzz target, shared by the short run (test/unit/fuzz/fuzz-short.test.ts, in `npm test`)
 * and the long run (`npm run fuzz`, scripts/fuzz.ts). Harness: harness.ts; inputs: mutate.ts.
 */
import type { FuzzTarget } from "./harness.ts";
import { MIGRATION_TARGETS } from "./migration.ts";
import { NET_TARGETS } from "./net.ts";
import { QMP_TARGETS } from "./qmp.ts";
import { SNAPSHOT_TARGETS } from "./snapshot.ts";

export const TARGETS: readonly FuzzTarget[] = [
  ...MIGRATION_TARGETS,
  ...SNAPSHOT_TARGETS,
  ...NET_TARGETS,
  ...QMP_TARGETS,
];

export function findTarget(name: string): FuzzTarget | undefined {
  return TARGETS.find((target) => target.name === name);
}
