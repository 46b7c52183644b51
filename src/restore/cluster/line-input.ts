import { HrError } from "../../util/errors.ts";

/**
 * Input of the restore line, and its checks. A bad input is a caller's bug or a damaged snapshot;
 * it fails with RESTORE_LINE_INVALID_INPUT naming what is wrong, never with a silent plan.
 */
export type RestoreLineErrorCode = "RESTORE_LINE_INVALID_INPUT" | "RESTORE_LINE_CYCLE";

/** The condensed dependency graph: what `buildDependencyGraph` returns is one. */
export interface CondensedGraph {
  components: readonly (readonly string[])[];
  /** Edge C→D between component indices: D's members start no later than C's. */
  condensation: { edges: readonly { from: number; to: number }[] };
}

export interface LineVm {
  name: string;
  /** Ms from the restore command until this VM can start, having loaded its minimum W0. */
  readyEstimateMs: number;
  /** Working-set pages the estimate includes (the minimum W0); 0 when absent. */
  w0Pages?: number;
  /** Length of the VM's working set in pages: W0 never exceeds it. */
  workingSetPages: number;
  /** Ms to load one more working-set page before start (from the measured store bandwidth). */
  pageCostMs: number;
}

export interface RestoreLineInput {
  graph: CondensedGraph;
  vms: readonly LineVm[];
}

function invalid(message: string): HrError {
  return new HrError("RESTORE_LINE_INVALID_INPUT", `restore line: ${message}`, {
    hint: "the dependency graph and the VM list must come from the same snapshot",
  });
}

function checkNumber(vm: LineVm, field: keyof LineVm, value: number, integer: boolean): void {
  const ok = Number.isFinite(value) && value >= 0 && (!integer || Number.isInteger(value));
  if (!ok) {
    const kind = integer ? "a non-negative integer" : "a finite non-negative number";
    throw invalid(`VM ${vm.name}: ${field} must be ${kind}, got ${String(value)}`);
  }
}

/** Checks every VM's figures and returns each VM's component index, in `vms` order. */
export function validateLineInput(input: RestoreLineInput): Int32Array {
  const { graph, vms } = input;
  const indexOf = new Map<string, number>();
  vms.forEach((vm, index) => {
    if (indexOf.has(vm.name)) throw invalid(`VM ${vm.name} is listed twice`);
    indexOf.set(vm.name, index);
    checkNumber(vm, "readyEstimateMs", vm.readyEstimateMs, false);
    checkNumber(vm, "workingSetPages", vm.workingSetPages, true);
    checkNumber(vm, "pageCostMs", vm.pageCostMs, false);
    if (vm.w0Pages !== undefined) checkNumber(vm, "w0Pages", vm.w0Pages, true);
  });
  const componentOf = new Int32Array(vms.length).fill(-1);
  graph.components.forEach((members, component) => {
    if (members.length === 0) throw invalid(`component ${component} is empty`);
    for (const name of members) {
      const index = indexOf.get(name);
      if (index === undefined) throw invalid(`component ${component} names VM ${name}, which is not listed`);
      if (componentOf[index] !== -1) throw invalid(`VM ${name} is in two components`);
      componentOf[index] = component;
    }
  });
  vms.forEach((vm, index) => {
    if (componentOf[index] === -1) throw invalid(`VM ${vm.name} is in no component of the graph`);
  });
  const count = graph.components.length;
  for (const edge of graph.condensation.edges) {
    const inRange = (value: number): boolean => Number.isInteger(value) && value >= 0 && value < count;
    if (!inRange(edge.from) || !inRange(edge.to)) {
      throw invalid(`edge ${edge.from}→${edge.to} names a component that does not exist (${count} exist)`);
    }
  }
  return componentOf;
}

export function cycleError(components: readonly (readonly string[])[], stuck: readonly number[]): HrError {
  const names = stuck.slice(0, 4).map((component) => `[${(components[component] ?? []).join(", ")}]`);
  const more = stuck.length > 4 ? ` and ${stuck.length - 4} more` : "";
  return new HrError(
    "RESTORE_LINE_CYCLE",
    `restore line: the condensed graph is not a DAG: components ${names.join(", ")}${more} are on or lead to a cycle`,
    { hint: "condense the dependency graph (buildDependencyGraph / condenseGraph) before planning" },
  );
}
