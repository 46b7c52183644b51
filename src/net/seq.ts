/**
 * TCP sequence-number arithmetic modulo 2^32 (RFC 1982 serial numbers): `a` is after `b` when
 * going forward from b to a takes fewer than 2^31 steps. Sequence numbers are unsigned 32-bit.
 */
export function seqAfter(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

/** The later of two sequence numbers under serial arithmetic. */
export function seqMax(a: number, b: number): number {
  return seqAfter(a, b) ? a : b;
}

export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
