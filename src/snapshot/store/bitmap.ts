/**
 * A fixed-size bit set over a Buffer: bit `i` is bit `i % 8` (LSB first) of byte `i >> 3`. This
 * is also the on-disk encoding of the present-page bitmap; bits past `size` are always zero.
 */
export class Bitmap {
  readonly size: number;
  readonly bytes: Buffer;

  constructor(size: number, bytes?: Buffer) {
    this.size = size;
    this.bytes = bytes ?? Buffer.alloc(Bitmap.byteLength(size));
  }

  static byteLength(size: number): number {
    return Math.ceil(size / 8);
  }

  get(index: number): boolean {
    return ((this.bytes[index >> 3] ?? 0) & (1 << (index & 7))) !== 0;
  }

  set(index: number): void {
    const at = index >> 3;
    this.bytes[at] = (this.bytes[at] ?? 0) | (1 << (index & 7));
  }

  clear(index: number): void {
    const at = index >> 3;
    this.bytes[at] = (this.bytes[at] ?? 0) & ~(1 << (index & 7));
  }

  count(): number {
    let total = 0;
    for (const byte of this.bytes) total += POPCOUNT[byte] ?? 0;
    return total;
  }

  /** True if any bit in [from, to) is set; `from` must be a multiple of 8. */
  anyInRange(from: number, to: number): boolean {
    const end = Math.min(to, this.size);
    for (let index = from; index < end; index += 8) {
      if ((this.bytes[index >> 3] ?? 0) !== 0) return true;
    }
    return false;
  }

  /** True if no bit at or past `size` is set (a decoded bitmap must satisfy this). */
  tailIsClear(): boolean {
    for (let index = this.size; index < this.bytes.length * 8; index++) {
      if (this.get(index)) return false;
    }
    return true;
  }
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, value) => {
  let bits = 0;
  for (let rest = value; rest !== 0; rest >>= 1) bits += rest & 1;
  return bits;
});
