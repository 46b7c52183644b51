/**
 * A priority queue of timed events: a binary min-heap on (time, insertion sequence), so events at
 * equal times come out in the order they were pushed (stable), which keeps a simulation
 * deterministic. push and pop are O(log n).
 */
export interface TimedEvent<T> {
  time: number;
  /** Insertion rank, the tie-breaker for equal times. */
  sequence: number;
  payload: T;
}

export class EventQueue<T> {
  readonly #heap: TimedEvent<T>[] = [];
  #pushed = 0;

  get size(): number {
    return this.#heap.length;
  }

  push(time: number, payload: T): void {
    if (Number.isNaN(time)) throw new RangeError("event time is NaN");
    const heap = this.#heap;
    heap.push({ time, sequence: this.#pushed, payload });
    this.#pushed += 1;
    this.#siftUp(heap.length - 1);
  }

  /** The earliest event without removing it; undefined when empty. */
  peek(): TimedEvent<T> | undefined {
    return this.#heap[0];
  }

  /** Removes and returns the earliest event; undefined when empty. */
  pop(): TimedEvent<T> | undefined {
    const heap = this.#heap;
    const first = heap[0];
    const last = heap.pop();
    if (first === undefined || last === undefined) return undefined;
    if (heap.length > 0) {
      heap[0] = last;
      this.#siftDown(0);
    }
    return first;
  }

  #siftUp(start: number): void {
    const heap = this.#heap;
    const moving = heap[start];
    if (moving === undefined) return;
    let index = start;
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = heap[parentIndex];
      if (parent === undefined || !earlier(moving, parent)) break;
      heap[index] = parent;
      index = parentIndex;
    }
    heap[index] = moving;
  }

  #siftDown(start: number): void {
    const heap = this.#heap;
    const moving = heap[start];
    if (moving === undefined) return;
    let index = start;
    for (;;) {
      const leftIndex = 2 * index + 1;
      const left = heap[leftIndex];
      if (left === undefined) break;
      let childIndex = leftIndex;
      let child = left;
      const right = heap[leftIndex + 1];
      if (right !== undefined && earlier(right, left)) {
        childIndex = leftIndex + 1;
        child = right;
      }
      if (!earlier(child, moving)) break;
      heap[index] = child;
      index = childIndex;
    }
    heap[index] = moving;
  }
}

function earlier<T>(x: TimedEvent<T>, y: TimedEvent<T>): boolean {
  return x.time < y.time || (x.time === y.time && x.sequence < y.sequence);
}
