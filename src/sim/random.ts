import { HrError } from "../util/errors.ts";
import { MIN_RTO_MS, type SimFlow, type SimVm } from "./model.ts";

/**
 * Seeded randomness for the simulator: the same seed always gives the same cluster.
 *
 * A random cluster: each VM gets a memory size uniform in 256–4096 MiB and is ready after
 * 150–3000 ms, proportional to its memory (a restore reads memory), ±10% jitter. Flows: about
 * `vms × avgDegree` data directions (avgDegree is the mean out-degree). VMs have a hidden random
 * rank and form services of up to four consecutive ranks. A share `cycles` of connections stay
 * inside a service and carry data both ways (a 2-cycle: two flows, like replicas of a database);
 * the others go to any VM, data one way, from the lower rank to the higher (clients to servers).
 * So cycles never cross services: components stay small, as in real clusters (uniformly random
 * flows would merge most VMs into one giant component, which would all start at one instant).
 */
export interface RandomClusterOptions {
  vms: number;
  /** Mean data flows sent per VM. Default 2. */
  avgDegree?: number;
  /** Share of connections with data both ways, in [0, 1]. Default 0.2. */
  cycles?: number;
  /** Give every flow a random RTO elapsed at the cut, in [0, 200) ms. Default false (0). */
  randomRtoElapsed?: boolean;
}

export interface RandomCluster {
  vms: SimVm[];
  flows: SimFlow[];
  /** Memory size drawn for each VM, in `vms` order. */
  memoryMiB: number[];
}

const MIN_MEMORY_MIB = 256;
const MAX_MEMORY_MIB = 4096;
const MIN_READY_MS = 150;
const MAX_READY_MS = 3000;
const READY_JITTER = 0.1;
const SERVICE_SIZE = 4;

/** mulberry32: a small, fast 32-bit seeded generator of numbers in [0, 1). */
export function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomCluster(seed: number, options: RandomClusterOptions): RandomCluster {
  const count = options.vms;
  const avgDegree = options.avgDegree ?? 2;
  const cycles = options.cycles ?? 0.2;
  if (!Number.isInteger(count) || count < 0)
    throw invalid(`VM count must be a non-negative integer, got ${count}`);
  if (!Number.isFinite(avgDegree) || avgDegree < 0) throw invalid(`avgDegree must be ≥ 0, got ${avgDegree}`);
  if (!(cycles >= 0 && cycles <= 1)) throw invalid(`cycles must be in [0, 1], got ${cycles}`);
  const next = createRandom(seed);

  const memoryMiB: number[] = [];
  const vms: SimVm[] = [];
  for (let index = 0; index < count; index += 1) {
    const memory = Math.round(MIN_MEMORY_MIB + next() * (MAX_MEMORY_MIB - MIN_MEMORY_MIB));
    const share = (memory - MIN_MEMORY_MIB) / (MAX_MEMORY_MIB - MIN_MEMORY_MIB);
    const jitter = 1 + READY_JITTER * (2 * next() - 1);
    const readyMs = (MIN_READY_MS + share * (MAX_READY_MS - MIN_READY_MS)) * jitter;
    memoryMiB.push(memory);
    vms.push({ name: `vm${index}`, readyMs: Math.round(readyMs * 10) / 10 });
  }

  const flows: SimFlow[] = [];
  const target = count < 2 ? 0 : Math.round(count * avgDegree);
  const flow = (from: number, to: number): SimFlow => {
    const made: SimFlow = { from: `vm${from}`, to: `vm${to}` };
    if (options.randomRtoElapsed === true) made.rtoElapsedMs = Math.floor(next() * MIN_RTO_MS * 10) / 10;
    return made;
  };
  const byRank = shuffledIndices(count, next);
  while (flows.length < target) {
    const rank = Math.floor(next() * count);
    const serviceStart = rank - (rank % SERVICE_SIZE);
    const serviceSize = Math.min(SERVICE_SIZE, count - serviceStart);
    const self = byRank[rank] ?? 0;
    if (serviceSize > 1 && next() < cycles) {
      const offset = 1 + Math.floor(next() * (serviceSize - 1));
      const peer = byRank[serviceStart + ((rank - serviceStart + offset) % serviceSize)] ?? 0;
      flows.push(flow(self, peer));
      if (flows.length < target) flows.push(flow(peer, self));
    } else {
      let otherRank = Math.floor(next() * (count - 1));
      if (otherRank >= rank) otherRank += 1;
      const other = byRank[otherRank] ?? 0;
      flows.push(rank < otherRank ? flow(self, other) : flow(other, self));
    }
  }
  return { vms, flows, memoryMiB };
}

/** 0..count-1 in a random order (Fisher–Yates). */
function shuffledIndices(count: number, next: () => number): number[] {
  const indices = Array.from({ length: count }, (_, index) => index);
  for (let index = count - 1; index > 0; index -= 1) {
    const other = Math.floor(next() * (index + 1));
    [indices[index], indices[other]] = [indices[other] ?? 0, indices[index] ?? 0];
  }
  return indices;
}

function invalid(message: string): HrError {
  return new HrError("SIM_INVALID_INPUT", `random cluster: ${message}`);
}
