/**
 * The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of 16-bit
 * big-endian words, an odd last byte padded with zero. `sum16` returns an unfolded partial sum
 * so a pseudo-header and a segment can be summed separately and then combined.
 */
export function sum16(data: Uint8Array, initial = 0): number {
  let sum = initial;
  const evenEnd = data.length - (data.length % 2);
  for (let i = 0; i < evenEnd; i += 2) sum += ((data[i] ?? 0) << 8) | (data[i + 1] ?? 0);
  if (evenEnd < data.length) sum += (data[evenEnd] ?? 0) << 8;
  // Each word adds at most 0xffff, so even a 64 KiB input stays far below 2^53 before folding.
  return fold(sum);
}

function fold(sum: number): number {
  let folded = sum;
  while (folded > 0xffff) folded = (folded & 0xffff) + Math.floor(folded / 0x10000);
  return folded;
}

/** The checksum field value for data whose partial sum is `sum`. */
export function finishChecksum(sum: number): number {
  return ~fold(sum) & 0xffff;
}

export function internetChecksum(data: Uint8Array): number {
  return finishChecksum(sum16(data));
}
