/**
 * Input generators for the fuzz targets: fully random bytes, and mutations of valid seeds (bit
 * flips, byte writes, inserts, deletes, truncation, duplicated ranges, splices of another seed,
 * and corrupted length fields), fed whole or cut into chunks at random points.
 *
 * A seed knows where its length fields are (`fields`), so a mutation can set exactly those to
 * huge or off-by-one values: the inputs that test "lengths are checked before allocating".
 * Field mutations apply first, to the seed as built; byte mutations then move things around.
 */
import fc from "fast-check";

export interface LengthField {
  /** Byte offset in the seed. */
  at: number;
  width: 1 | 2 | 4 | 8;
  littleEndian: boolean;
}

export interface Seed {
  bytes: Buffer;
  fields: LengthField[];
}

/** Builds a seed from parts, recording the offsets of the length fields in each part. */
export class SeedBuilder {
  readonly #parts: Buffer[] = [];
  readonly #fields: LengthField[] = [];
  #length = 0;

  /** Appends `bytes`; `fields` are offsets within `bytes`. */
  add(bytes: Buffer, ...fields: LengthField[]): this {
    for (const field of fields) this.#fields.push({ ...field, at: this.#length + field.at });
    this.#parts.push(bytes);
    this.#length += bytes.length;
    return this;
  }

  build(): Seed {
    return { bytes: Buffer.concat(this.#parts, this.#length), fields: [...this.#fields] };
  }
}

export function be(at: number, width: LengthField["width"]): LengthField {
  return { at, width, littleEndian: false };
}

export function le(at: number, width: LengthField["width"]): LengthField {
  return { at, width, littleEndian: true };
}

/** Values that sit on limits: around powers of two, the all-ones values, and the formats' limits. */
const INTERESTING: readonly bigint[] = [
  0n,
  1n,
  2n,
  3n,
  4n,
  5n,
  7n,
  8n,
  13n,
  16n,
  0x3fn,
  0x7fn,
  0x80n,
  0xfen,
  0xffn,
  0x100n,
  0xfffn,
  0x1000n,
  0x1001n,
  0x7fffn,
  0x8000n,
  0xffffn,
  0x10000n,
  0x11000n,
  0x11001n,
  0x40000n,
  0x40001n,
  0x100000n,
  0x1000000n,
  0x1000001n,
  0x4000000n,
  0x4000001n,
  0x7fffffffn,
  0x80000000n,
  0xfffffffen,
  0xffffffffn,
  0x100000000n,
  0x1fffff00000000n,
  0x20000000000000n,
  0x7fffffffffffffffn,
  0xffffffffffffffffn,
];

const interestingValue: fc.Arbitrary<bigint> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...INTERESTING) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 0xffffffffffffffffn }) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 0xffffn }) },
);

type FieldMutation = { field: number; value: bigint; delta: number };

type ByteMutation =
  | { kind: "flip"; at: number; bit: number }
  | { kind: "set"; at: number; value: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "delete"; at: number; length: number }
  | { kind: "truncate"; at: number }
  | { kind: "duplicate"; at: number; from: number; length: number }
  | { kind: "splice"; at: number; seed: number; from: number; length: number; replace: boolean }
  | { kind: "int"; at: number; width: 1 | 2 | 4 | 8; littleEndian: boolean; value: bigint };

const position = fc.nat();

const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: position, bit: fc.nat(7) }),
  fc.record({ kind: fc.constant("set" as const), at: position, value: fc.nat(255) }),
  fc.record({
    kind: fc.constant("insert" as const),
    at: position,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({ kind: fc.constant("delete" as const), at: position, length: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant("truncate" as const), at: position }),
  fc.record({
    kind: fc.constant("duplicate" as const),
    at: position,
    from: position,
    length: fc.integer({ min: 1, max: 256 }),
  }),
  fc.record({
    kind: fc.constant("splice" as const),
    at: position,
    seed: fc.nat(),
    from: position,
    length: fc.integer({ min: 1, max: 512 }),
    replace: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant("int" as const),
    at: position,
    width: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const),
    littleEndian: fc.boolean(),
    value: interestingValue,
  }),
);

const fieldMutation: fc.Arbitrary<FieldMutation> = fc.record({
  field: fc.nat(),
  value: interestingValue,
  /** Sometimes an off-by-a-little of the field's current value instead of a new value. */
  delta: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.integer({ min: -8, max: 8 })),
});

function writeInt(bytes: Buffer, at: number, width: number, littleEndian: boolean, value: bigint): void {
  const masked = value & ((1n << BigInt(width * 8)) - 1n);
  for (let i = 0; i < width && at + i < bytes.length; i += 1) {
    const shift = BigInt((littleEndian ? i : width - 1 - i) * 8);
    bytes[at + i] = Number((masked >> shift) & 0xffn);
  }
}

function readInt(bytes: Buffer, at: number, width: number, littleEndian: boolean): bigint {
  let value = 0n;
  for (let i = 0; i < width; i += 1) {
    const byte = BigInt(bytes[at + (littleEndian ? width - 1 - i : i)] ?? 0);
    value = (value << 8n) | byte;
  }
  return value;
}

function applyField(bytes: Buffer, fields: readonly LengthField[], mutation: FieldMutation): void {
  if (fields.length === 0) return;
  const field = fields[mutation.field % fields.length]!;
  const value =
    mutation.delta === 0
      ? mutation.value
      : readInt(bytes, field.at, field.width, field.littleEndian) + BigInt(mutation.delta);
  writeInt(bytes, field.at, field.width, field.littleEndian, value < 0n ? 0n : value);
}

function applyBytes(bytes: Buffer, mutation: ByteMutation, seeds: readonly Seed[]): Buffer {
  const at = bytes.length === 0 ? 0 : mutation.at % (bytes.length + 1);
  switch (mutation.kind) {
    case "flip":
      if (at < bytes.length) bytes[at] = bytes[at]! ^ (1 << mutation.bit);
      return bytes;
    case "set":
      if (at < bytes.length) bytes[at] = mutation.value;
      return bytes;
    case "int":
      writeInt(bytes, at, mutation.width, mutation.littleEndian, mutation.value);
      return bytes;
    case "insert":
      return Buffer.concat([bytes.subarray(0, at), mutation.bytes, bytes.subarray(at)]);
    case "delete":
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + mutation.length)]);
    case "truncate":
      return bytes.subarray(0, at);
    case "duplicate": {
      const from = bytes.length === 0 ? 0 : mutation.from % bytes.length;
      const range = bytes.subarray(from, from + mutation.length);
      return Buffer.concat([bytes.subarray(0, at), range, bytes.subarray(at)]);
    }
    case "splice": {
      const other = seeds[mutation.seed % seeds.length]!.bytes;
      const from = other.length === 0 ? 0 : mutation.from % other.length;
      const range = other.subarray(from, from + mutation.length);
      const rest = mutation.replace ? at + range.length : at;
      return Buffer.concat([bytes.subarray(0, at), range, bytes.subarray(rest)]);
    }
  }
}

/** Seeds with 1-8 mutations (length fields first, then bytes). Never modifies the seeds. */
export function mutated(seeds: readonly Seed[]): fc.Arbitrary<Buffer> {
  return fc
    .record({
      seed: fc.nat(seeds.length - 1),
      fields: fc.array(fieldMutation, { maxLength: 3 }),
      bytes: fc.array(byteMutation, { maxLength: 6 }),
    })
    .filter((plan) => plan.fields.length + plan.bytes.length > 0)
    .map((plan) => {
      const seed = seeds[plan.seed]!;
      let bytes: Buffer = Buffer.from(seed.bytes);
      for (const mutation of plan.fields) applyField(bytes, seed.fields, mutation);
      for (const mutation of plan.bytes) bytes = applyBytes(bytes, mutation, seeds);
      return bytes;
    });
}

/** Only the length fields of a seed changed (to huge, zero or off-by-a-little values). */
export function withBadLengths(seeds: readonly Seed[]): fc.Arbitrary<Buffer> {
  return fc
    .record({
      seed: fc.nat(seeds.length - 1),
      fields: fc.array(fieldMutation, { minLength: 1, maxLength: 3 }),
    })
    .map((plan) => {
      const seed = seeds[plan.seed]!;
      const bytes = Buffer.from(seed.bytes);
      for (const mutation of plan.fields) applyField(bytes, seed.fields, mutation);
      return bytes;
    });
}

const HUGE: readonly bigint[] = [
  0x7fffffffn,
  0x80000000n,
  0xfffffff0n,
  0xffffffffn,
  0x7fffffffffffffffn,
  0xffffffffffffffffn,
];

/**
 * Every length field of a seed (or a random few) set to a huge value: 2^31 and up, all ones
 * (a one- or two-byte field gets the low bytes: all ones).
 */
export function withHugeLengths(seeds: readonly Seed[]): fc.Arbitrary<Buffer> {
  return fc
    .record({
      seed: fc.nat(seeds.length - 1),
      all: fc.boolean(),
      picks: fc.array(fc.record({ field: fc.nat(), value: fc.constantFrom(...HUGE) }), {
        minLength: 1,
        maxLength: 3,
      }),
    })
    .map(({ seed, all, picks }) => {
      const { bytes, fields } = seeds[seed]!;
      const out = Buffer.from(bytes);
      const chosen = all ? fields.map((_, field) => ({ field, value: picks[0]!.value })) : picks;
      for (const { field, value } of chosen) applyField(out, fields, { field, value, delta: 0 });
      return out;
    });
}

export function randomBytes(maxLength: number): fc.Arbitrary<Buffer> {
  return fc.uint8Array({ maxLength }).map((bytes) => Buffer.from(bytes));
}

/** A valid prefix of a seed followed by random bytes. */
export function prefixThenGarbage(seeds: readonly Seed[], maxGarbage = 256): fc.Arbitrary<Buffer> {
  return fc
    .record({
      seed: fc.nat(seeds.length - 1),
      cut: fc.nat(),
      garbage: fc.uint8Array({ maxLength: maxGarbage }),
    })
    .map(({ seed, cut, garbage }) => {
      const bytes = seeds[seed]!.bytes;
      return Buffer.concat([bytes.subarray(0, cut % (bytes.length + 1)), garbage]);
    });
}

/**
 * The usual mix: mostly mutated seeds, some seeds with only their length fields changed, valid
 * prefixes with garbage after them, fully random bytes, and the seeds unchanged.
 */
export function fuzzBytes(seeds: readonly Seed[], maxRandomLength = 512): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 10, arbitrary: mutated(seeds) },
    { weight: 3, arbitrary: withBadLengths(seeds) },
    { weight: 2, arbitrary: prefixThenGarbage(seeds) },
    { weight: 3, arbitrary: randomBytes(maxRandomLength) },
    { weight: 1, arbitrary: fc.nat(seeds.length - 1).map((index) => Buffer.from(seeds[index]!.bytes)) },
  );
}

export interface Chunked {
  bytes: Buffer;
  /** How to cut `bytes` for a push parser. */
  cuts: number[] | { every: number };
}

/** Bytes, plus a way to cut them: up to 12 random cut points, or chunks of one fixed size. */
export function chunked(bytes: fc.Arbitrary<Buffer>): fc.Arbitrary<Chunked> {
  const cuts = fc.oneof(
    { weight: 4, arbitrary: fc.array(fc.nat(), { maxLength: 12 }) },
    {
      weight: 1,
      arbitrary: fc.record({
        every: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 4096 })),
      }),
    },
  );
  return fc.record({ bytes, cuts });
}

/**
 * The chunks of a Chunked input: views of its bytes, empty chunks included (a socket never
 * delivers one, but a caller may push one).
 */
export function chunksOf(input: Chunked): Buffer[] {
  const { bytes, cuts } = input;
  if (!Array.isArray(cuts)) {
    const chunks: Buffer[] = [];
    for (let at = 0; at < bytes.length; at += cuts.every) chunks.push(bytes.subarray(at, at + cuts.every));
    return chunks;
  }
  const points = cuts.map((cut) => cut % (bytes.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const point of points) {
    chunks.push(bytes.subarray(from, point));
    from = point;
  }
  chunks.push(bytes.subarray(from));
  return chunks;
}
