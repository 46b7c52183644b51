/**
 * Test-only fault injection, inert unless HOTRESTORE_FAULT is set (in the environment of the
 * process that starts the daemon). It is a comma-separated list of `kind:vm@point` faults and
 * `knob=ms` settings, e.g. `page-server-stall:b@running,stall-timeout-ms=3000`:
 *
 *   page-server-stall:<vm>@<point>   the VM's page server stops reading and writing (a stall)
 *   store-read-hang:<vm>@<point>     every store read of the VM's page server hangs forever
 *   event-loop-block:<vm>@<point>    the daemon's event loop blocks forever (a wedged daemon)
 *
 * Points: `prefetch` (W0 sent, device state not yet), `running` (the VM was just started, its
 * pages still streaming).
 * Knobs: `stall-timeout-ms` (the page server's stall bound, default 30 s) and `loop-timeout-ms`
 * (the daemon supervisor's bound on a blocked event loop, default 30 s).
 */
export const FAULT_ENV = "HOTRESTORE_FAULT";

export type FaultKind = "page-server-stall" | "store-read-hang" | "event-loop-block";
export type FaultPoint = "prefetch" | "running";
export type FaultKnob = "stall-timeout-ms" | "loop-timeout-ms";

const KINDS: readonly string[] = ["page-server-stall", "store-read-hang", "event-loop-block"];
const POINTS: readonly string[] = ["prefetch", "running"];
const KNOBS: readonly string[] = ["stall-timeout-ms", "loop-timeout-ms"];

export interface Fault {
  kind: FaultKind;
  vm: string;
  point: FaultPoint;
}

export interface FaultPlan {
  faults: Fault[];
  knobs: Partial<Record<FaultKnob, number>>;
}

/** Parses the variable's value; an unknown entry is an error (a typo must not pass silently). */
export function parseFaults(text: string | undefined): FaultPlan {
  const plan: FaultPlan = { faults: [], knobs: {} };
  for (const entry of (text ?? "").split(",").map((part) => part.trim())) {
    if (entry === "") continue;
    const knob = /^([a-z-]+)=(\d+)$/.exec(entry);
    if (knob !== null && KNOBS.includes(knob[1] ?? "")) {
      plan.knobs[knob[1] as FaultKnob] = Number(knob[2]);
      continue;
    }
    const fault = /^([a-z-]+):([a-z][a-z0-9-]*)@([a-z]+)$/.exec(entry);
    const [, kind = "", vm = "", point = ""] = fault ?? [];
    if (fault === null || !KINDS.includes(kind) || !POINTS.includes(point)) {
      throw new Error(`${FAULT_ENV}: cannot read '${entry}'`);
    }
    plan.faults.push({ kind: kind as FaultKind, vm, point: point as FaultPoint });
  }
  return plan;
}

let cached: FaultPlan | undefined;

function plan(): FaultPlan {
  cached ??= parseFaults(process.env[FAULT_ENV]);
  return cached;
}

/** The faults planned for this VM at this point (none unless HOTRESTORE_FAULT names them). */
export function faultsAt(vm: string, point: FaultPoint): FaultKind[] {
  return plan()
    .faults.filter((fault) => fault.vm === vm && fault.point === point)
    .map((fault) => fault.kind);
}

export function faultKnob(knob: FaultKnob): number | undefined {
  return plan().knobs[knob];
}

/** Blocks this thread for good without burning CPU (a wedged event loop). */
export function blockForever(): never {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(cell, 0, 0);
}
