/**
 * A tiny WebAssembly binary emitter: LEB128, sections, function bodies and the opcodes the CPU
 * kernels use (core, SIMD, relaxed SIMD). Kernels are built as bytes at run time, so importing
 * nbit from a URL needs no toolchain and no binary files.
 *
 * Spec: WebAssembly Core 2.0, §5 (binary format); relaxed SIMD proposal (opcode 0xfd 0x105).
 *
 * @module
 */

/** Bytes of a code fragment (nested arrays are flattened by {@link flat}). */
export type Code = number | readonly Code[];

/** Flatten a code fragment into bytes. */
export function flat(c: Code, out: number[] = []): number[] {
  if (typeof c === "number") out.push(c);
  else for (const x of c) flat(x, out);
  return out;
}

/** Unsigned LEB128. */
export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (32-bit range). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  n |= 0;
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

/** A length-prefixed vector of encoded items. */
function vec(items: readonly number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

/** Value types. */
export const T = { i32: 0x7f, f32: 0x7d, f64: 0x7c, v128: 0x7b } as const;

/** Block type "no result". */
const EMPTY = 0x40;

/** Core instructions used by the kernels (stack machine; operands pushed before). */
export const I = {
  block: (...body: Code[]): Code => [0x02, EMPTY, body, 0x0b],
  loop: (...body: Code[]): Code => [0x03, EMPTY, body, 0x0b],
  if: (...body: Code[]): Code => [0x04, EMPTY, body, 0x0b],
  ifElse: (then: Code, other: Code): Code => [0x04, EMPTY, then, 0x05, other, 0x0b],
  br: (depth: number): Code => [0x0c, uleb(depth)],
  brIf: (depth: number): Code => [0x0d, uleb(depth)],
  get: (i: number): Code => [0x20, uleb(i)],
  set: (i: number): Code => [0x21, uleb(i)],
  tee: (i: number): Code => [0x22, uleb(i)],
  i32: (v: number): Code => [0x41, sleb(v)],
  f32: (v: number): Code => {
    const b = new Uint8Array(new Float32Array([v]).buffer);
    return [0x43, ...b];
  },
  f32Load: (offset = 0): Code => [0x2a, 2, uleb(offset)],
  i32Store: (offset = 0): Code => [0x36, 2, uleb(offset)],
  f32Store: (offset = 0): Code => [0x38, 2, uleb(offset)],
  i32Load16u: (offset = 0): Code => [0x2f, 1, uleb(offset)],
  eqz: 0x45,
  eq: 0x46,
  ne: 0x47,
  ltS: 0x48,
  ltU: 0x49,
  gtS: 0x4a,
  geU: 0x4f,
  add: 0x6a,
  sub: 0x6b,
  mul: 0x6c,
  and: 0x71,
  or: 0x72,
  shl: 0x74,
  shrU: 0x76,
  f32Mul: 0x94,
  f64Add: 0xa0,
  f64Mul: 0xa2,
  f64FromF32: 0xbb,
  f32FromBits: 0xbe,
  f32Bits: 0xbc,
  select: 0x1b,
} as const;

const simd = (op: number, ...imm: number[]): Code => [0xfd, uleb(op), imm];

/** SIMD (and relaxed SIMD) instructions. */
export const V = {
  load: (offset = 0): Code => simd(0x00, 4, ...uleb(offset)),
  load32Splat: (offset = 0): Code => simd(0x09, 2, ...uleb(offset)),
  /** Load 4 u16 lanes and zero-extend them to i32x4 (`v128.load16x4_u`). */
  load16x4u: (offset = 0): Code => simd(0x04, 3, ...uleb(offset)),
  store: (offset = 0): Code => simd(0x0b, 4, ...uleb(offset)),
  /** Store 64-bit lane `lane` of a v128 (`v128.store64_lane`). */
  store64Lane: (offset: number, lane: number): Code => simd(0x5b, 3, ...uleb(offset), lane),
  zero: (): Code => simd(0x0c, ...new Array(16).fill(0)),
  i32x4Splat: simd(0x11),
  f32x4Splat: simd(0x13),
  /** The f32 in lane `l` of an f32x4 (`f32x4.extract_lane`). */
  f32x4ExtractLane: (l: number): Code => simd(0x1f, l),
  and: simd(0x4e),
  or: simd(0x50),
  bitselect: simd(0x52),
  i32x4GeS: simd(0x3f),
  i32x4GtS: simd(0x3b),
  i32x4Eq: simd(0x37),
  i32x4LtU: simd(0x3a),
  anyTrue: simd(0x53),
  i32x4ShrU: simd(0xad),
  i32x4ShrS: simd(0xac),
  i16x8Eq: simd(0x2d),
  /** Lanes of two i32x4 picked by index (0–3: the first, 4–7: the second; `i8x16.shuffle`). */
  i32x4Shuffle: (lanes: readonly number[]): Code =>
    simd(0x0d, ...lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3])),
  i32x4Add: simd(0xae),
  i32x4Sub: simd(0xb1),
  /** Saturating narrow of two i32x4 to u16 lanes (`i16x8.narrow_i32x4_u`). */
  i16x8NarrowU: simd(0x86),
  i32x4Shl: simd(0xab),
  f32x4Add: simd(0xe4),
  f32x4Sub: simd(0xe5),
  f32x4Mul: simd(0xe6),
  /** `a·b + c`, fused or not as the machine decides (relaxed SIMD). */
  f32x4RelaxedMadd: simd(0x105),
};

/** A function to emit: its signature, extra locals and body (without the final `end`). */
export interface Func {
  /** Export name. */
  readonly name: string;
  /** Parameter types. */
  readonly params: readonly number[];
  /** Result types. */
  readonly results?: readonly number[];
  /** Extra locals, in order after the parameters. */
  readonly locals?: readonly number[];
  /** Body instructions. */
  readonly body: Code;
}

function section(id: number, payload: number[]): number[] {
  return [id, ...uleb(payload.length), ...payload];
}

function str(s: string): number[] {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
}

/**
 * A module importing one memory as `e.m` (shared when `shared`, with `maxPages`) and exporting
 * `funcs` by name, in order (function index = position).
 */
export function wasmModule(
  funcs: readonly Func[],
  memory: { shared: boolean; minPages: number; maxPages: number },
): Uint8Array<ArrayBuffer> {
  const types = funcs.map((f) => [
    0x60,
    ...vec(f.params.map((t) => [t])),
    ...vec((f.results ?? []).map((t) => [t])),
  ]);
  const limits = memory.shared
    ? [0x03, ...uleb(memory.minPages), ...uleb(memory.maxPages)]
    : [0x01, ...uleb(memory.minPages), ...uleb(memory.maxPages)];
  const imports = vec([[...str("e"), ...str("m"), 0x02, ...limits]]);
  const codes = funcs.map((f) => {
    const locals = (f.locals ?? []).map((t) => [1, t]);
    const body = [...vec(locals), ...flat(f.body), 0x0b];
    return [...uleb(body.length), ...body];
  });
  const bytes = [
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec(types)),
    ...section(2, imports),
    ...section(3, vec(funcs.map((_, i) => uleb(i)))),
    ...section(7, vec(funcs.map((f, i) => [...str(f.name), 0x00, ...uleb(i)]))),
    ...section(10, vec(codes)),
  ];
  return new Uint8Array(bytes);
}
