/**
 * When each VM of a cluster restore may start (`cont`), by order (DESIGN.md §7, §8). Pure: the
 * coordinator tells it what became ready and what started; it answers which VMs to start now.
 *
 *   as-ready      a VM starts the moment its own restore is ready (naive tooling);
 *   simultaneous  every VM starts once all are ready;
 *   restore-line  a strongly connected component starts once all its members are ready and every
 *                 component it sends to has started: receivers no later than senders, each
 *                 component at one instant. This is the restore line's rule evaluated on the
 *                 actual readiness times instead of the estimates, so it is the pointwise-earliest
 *                 feasible schedule for what really happened.
 */
import type { CondensedGraph } from "./line-input.ts";

export const ORDERS = ["restore-line", "simultaneous", "as-ready"] as const;
export type Order = (typeof ORDERS)[number];

export class StartGate {
  readonly #order: Order;
  readonly #vms: readonly string[];
  readonly #components: readonly (readonly string[])[];
  /** Per component, the components it sends to (they must start first). */
  readonly #receivers: number[][];
  readonly #componentOf = new Map<string, number>();
  readonly #ready = new Set<string>();
  readonly #released = new Set<string>();
  readonly #startedComponents = new Set<number>();
  readonly #startedVms = new Set<string>();

  constructor(order: Order, vms: readonly string[], graph: CondensedGraph) {
    this.#order = order;
    this.#vms = vms;
    this.#components = graph.components;
    this.#receivers = graph.components.map(() => []);
    graph.components.forEach((members, index) => {
      for (const vm of members) this.#componentOf.set(vm, index);
    });
    for (const edge of graph.condensation.edges) this.#receivers[edge.from]?.push(edge.to);
    // A VM the graph does not know is a component of its own.
    for (const vm of vms) {
      if (this.#componentOf.has(vm)) continue;
      this.#componentOf.set(vm, this.#receivers.length);
      this.#receivers.push([]);
    }
  }

  /** The VM's restore is ready; returns the VMs to start now. */
  ready(vm: string): string[] {
    this.#ready.add(vm);
    return this.#due();
  }

  /** The VM was started (`cont` returned); returns the VMs to start now. */
  started(vm: string): string[] {
    this.#startedVms.add(vm);
    const component = this.#componentOf.get(vm);
    if (component !== undefined && this.#membersOf(component).every((m) => this.#startedVms.has(m))) {
      this.#startedComponents.add(component);
    }
    return this.#due();
  }

  #membersOf(component: number): readonly string[] {
    const members = this.#components[component];
    if (members !== undefined) return members;
    return this.#vms.filter((vm) => this.#componentOf.get(vm) === component);
  }

  #due(): string[] {
    const out: string[] = [];
    const release = (vm: string): void => {
      if (this.#released.has(vm)) return;
      this.#released.add(vm);
      out.push(vm);
    };
    switch (this.#order) {
      case "as-ready":
        for (const vm of this.#ready) release(vm);
        break;
      case "simultaneous":
        if (this.#vms.every((vm) => this.#ready.has(vm))) this.#vms.forEach(release);
        break;
      case "restore-line":
        for (let component = 0; component < this.#receivers.length; component += 1) {
          const members = this.#membersOf(component);
          if (!members.every((vm) => this.#ready.has(vm))) continue;
          const receivers = this.#receivers[component] ?? [];
          if (receivers.every((to) => this.#startedComponents.has(to))) members.forEach(release);
        }
        break;
    }
    return out;
  }
}
