/**
 * Data types, exact rounding, format limits and real low-precision storage.
 *
 * Every narrowing float conversion rounds to nearest, ties to even, once from
 * the source value (a JS number is an f64; a `Float32Array` element is an
 * exact f32). See `docs/dtypes.md` for the rules, the promotion table and the
 * fp8 saturation default.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// DType names
// ---------------------------------------------------------------------------

/**
 * The element type of a tensor.
 *
 * @example
 * ```ts
 * const d: DType = "bf16";
 * ```
 */
export type DType = "f64" | "f32" | "f16" | "bf16" | "f8e4m3" | "f8e5m2" | "i32" | "u8" | "bool";

/**
 * Every dtype, widest float first, then the integer types.
 *
 * @example
 * ```ts
 * dtypes.includes("f16"); // true
 * ```
 */
export const dtypes: readonly DType[] = Object.freeze(
  ["f64", "f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i32", "u8", "bool"] as const,
);

const DTYPE_SET: ReadonlySet<string> = new Set(dtypes);

function describe(x: unknown): string {
  try {
    return String(x);
  } catch {
    return typeof x;
  }
}

/**
 * Checks that `x` names a dtype and returns it; anything else throws an Error
 * that lists the valid names.
 *
 * @example
 * ```ts
 * parseDType("f16"); // "f16"
 * parseDType("half"); // throws: Unknown dtype "half". Valid dtypes: f64, f32, ...
 * ```
 */
export function parseDType(x: unknown): DType {
  if (typeof x === "string" && DTYPE_SET.has(x)) return x as DType;
  return unknownDType(x);
}

function unknownDType(x: unknown): never {
  throw new Error(`Unknown dtype "${describe(x)}". Valid dtypes: ${dtypes.join(", ")}.`);
}

/**
 * True for the float dtypes (f64, f32, f16, bf16, f8e4m3, f8e5m2).
 *
 * @example
 * ```ts
 * isFloating("bf16"); // true
 * isFloating("i32"); // false
 * ```
 */
export function isFloating(d: DType): boolean {
  return d === "f64" || d === "f32" || d === "f16" || d === "bf16" || d === "f8e4m3" ||
    d === "f8e5m2";
}

/**
 * Bytes per element in storage: 8, 4, 2, 2, 1, 1, 4, 1, 1 in `dtypes` order.
 *
 * @example
 * ```ts
 * byteSize("f16"); // 2
 * ```
 */
export function byteSize(d: DType): number {
  switch (d) {
    case "f64":
      return 8;
    case "f32":
    case "i32":
      return 4;
    case "f16":
    case "bf16":
      return 2;
    case "f8e4m3":
    case "f8e5m2":
    case "u8":
    case "bool":
      return 1;
  }
  return unknownDType(d);
}

// ---------------------------------------------------------------------------
// Format limits
// ---------------------------------------------------------------------------

/**
 * Limits of a float format (like `numpy.finfo`).
 *
 * @example
 * ```ts
 * const fi: FInfo = finfo("f16");
 * fi.max; // 65504
 * ```
 */
export interface FInfo {
  /** The dtype described. */
  dtype: DType;
  /** Total bits per value. */
  bits: number;
  /** Stored mantissa (fraction) bits, without the hidden bit. */
  mantissaBits: number;
  /** Exponent bits. */
  exponentBits: number;
  /** Largest finite value. */
  max: number;
  /** Smallest positive normal value. */
  minNormal: number;
  /** Smallest positive subnormal value. */
  minSubnormal: number;
  /** Distance from 1.0 to the next larger value. */
  eps: number;
  /** Whether the format has ±Infinity (f8e4m3 does not). */
  hasInf: boolean;
}

// Exact powers of two 2^k for k in [-1074, 1023], built by exact doubling/halving.
const POW2_BIAS = 1074;
const POW2 = new Float64Array(1074 + 1024);
POW2[POW2_BIAS] = 1;
for (let k = 1; k <= 1023; k++) POW2[POW2_BIAS + k] = POW2[POW2_BIAS + k - 1] * 2;
for (let k = -1; k >= -1074; k--) POW2[POW2_BIAS + k] = POW2[POW2_BIAS + k + 1] / 2;

function pow2(k: number): number {
  return POW2[POW2_BIAS + k];
}

function makeInfo(
  dtype: DType,
  bits: number,
  mantissaBits: number,
  exponentBits: number,
  max: number,
  hasInf: boolean,
): FInfo {
  const emin = 2 - 2 ** (exponentBits - 1);
  return Object.freeze({
    dtype,
    bits,
    mantissaBits,
    exponentBits,
    max,
    minNormal: pow2(emin),
    minSubnormal: pow2(emin - mantissaBits),
    eps: pow2(-mantissaBits),
    hasInf,
  });
}

const FINFO: Readonly<Partial<Record<DType, FInfo>>> = {
  f64: makeInfo("f64", 64, 52, 11, Number.MAX_VALUE, true),
  f32: makeInfo("f32", 32, 23, 8, (2 - pow2(-23)) * pow2(127), true),
  f16: makeInfo("f16", 16, 10, 5, 65504, true),
  bf16: makeInfo("bf16", 16, 7, 8, (2 - pow2(-7)) * pow2(127), true),
  f8e4m3: makeInfo("f8e4m3", 8, 3, 4, 448, false),
  f8e5m2: makeInfo("f8e5m2", 8, 2, 5, 57344, true),
};

/**
 * Limits of a float dtype. Throws for i32, u8 and bool (use the integer range
 * directly: i32 is [-2^31, 2^31-1], u8 is [0, 255]).
 *
 * @example
 * ```ts
 * finfo("bf16").eps; // 0.0078125 (2^-7)
 * finfo("f8e4m3").max; // 448
 * ```
 */
export function finfo(d: DType): FInfo {
  const info = FINFO[parseDType(d)];
  if (info === undefined) {
    throw new Error(
      `finfo: dtype "${d}" is not a floating-point dtype ` +
        `(floating dtypes: ${dtypes.filter(isFloating).join(", ")}).`,
    );
  }
  return info;
}

// ---------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------

/**
 * The flat array that holds a tensor's elements: f16/bf16 as raw u16 bits,
 * fp8 as raw u8 bits.
 *
 * @example
 * ```ts
 * const s: Storage = storageFor("bf16", 4); // Uint16Array(4)
 * ```
 */
export type Storage = Float64Array | Float32Array | Uint16Array | Uint8Array | Int32Array;

/**
 * Exact values of a storage widened to a JS-readable array: f64 →
 * Float64Array, other floats → Float32Array, i32 → Int32Array, u8/bool →
 * Uint8Array.
 *
 * @example
 * ```ts
 * const w: Widened = decode("f16", encode("f16", [1.5])); // Float32Array [1.5]
 * ```
 */
export type Widened = Float64Array | Float32Array | Int32Array | Uint8Array;

/**
 * Options for casts to fp8. `saturate: false` (the default) is OCP
 * non-saturating, as ml_dtypes `astype`: overflow gives Inf on f8e5m2 and NaN
 * on f8e4m3. `saturate: true` is Transformer-Engine clipping: finite values
 * and ±Inf clip to ±max before rounding, NaN stays NaN. Other dtypes ignore it.
 *
 * @example
 * ```ts
 * roundTo("f8e4m3", 1000, { saturate: true }); // 448
 * ```
 */
export interface CastOptions {
  /** Clip to ±max (fp8 only); default false. */
  saturate?: boolean;
}

/**
 * A zeroed storage array of `n` elements for dtype `d`: f64 → Float64Array,
 * f32 → Float32Array, f16/bf16 → Uint16Array (raw bits), f8 → Uint8Array (raw
 * bits), i32 → Int32Array, u8/bool → Uint8Array.
 *
 * @example
 * ```ts
 * storageFor("f16", 3).byteLength; // 6
 * ```
 */
export function storageFor(d: DType, n: number): Storage {
  switch (d) {
    case "f64":
      return new Float64Array(n);
    case "f32":
      return new Float32Array(n);
    case "f16":
    case "bf16":
      return new Uint16Array(n);
    case "i32":
      return new Int32Array(n);
    case "f8e4m3":
    case "f8e5m2":
    case "u8":
    case "bool":
      return new Uint8Array(n);
  }
  return unknownDType(d);
}

// ---------------------------------------------------------------------------
// Exact general rounding path: e = max(⌊log2|x|⌋, emin), quantum q = 2^(e − mantissa bits),
// round |x|/q to the nearest integer, ties to even (IEEE 754-2019 §4.3.1, roundTiesToEven)
// ---------------------------------------------------------------------------

interface Fmt {
  /** mantissa bits */
  readonly m: number;
  /** min normal exponent */
  readonly emin: number;
  /** largest finite magnitude bit pattern */
  readonly maxBits: number;
  /** canonical positive NaN */
  readonly nan: number;
  /** positive Inf pattern, or -1 when the format has none */
  readonly inf: number;
  /** sign bit */
  readonly sign: number;
  /** largest finite value */
  readonly max: number;
}

const F16: Fmt = {
  m: 10,
  emin: -14,
  maxBits: 0x7bff,
  nan: 0x7e00,
  inf: 0x7c00,
  sign: 0x8000,
  max: 65504,
};
const BF16: Fmt = {
  m: 7,
  emin: -126,
  maxBits: 0x7f7f,
  nan: 0x7fc0,
  inf: 0x7f80,
  sign: 0x8000,
  max: (2 - pow2(-7)) * pow2(127),
};
const E4M3: Fmt = { m: 3, emin: -6, maxBits: 0x7e, nan: 0x7f, inf: -1, sign: 0x80, max: 448 };
const E5M2: Fmt = { m: 2, emin: -14, maxBits: 0x7b, nan: 0x7e, inf: 0x7c, sign: 0x80, max: 57344 };

// Scratch f64 with a u32 view, to read the sign and exponent of a number exactly.
const F64S = new Float64Array(1);
const F64S_U32 = new Uint32Array(F64S.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;
// Scratch f32 with a u32 view, for bf16 decode and bit reading.
const F32S = new Float32Array(1);
const F32S_U32 = new Uint32Array(F32S.buffer);

/**
 * Rounds the f64 value x to format f, RNE, once: q = 2^(e-M) with
 * e = max(floor(log2|x|), emin); n = |x|/q is exact; round n ties-to-even.
 */
function roundBits(x: number, f: Fmt, saturate: boolean): number {
  F64S[0] = x;
  const hi = F64S_U32[HI];
  const s = hi >>> 31 === 1 ? f.sign : 0;
  const be = (hi >>> 20) & 0x7ff;
  if (be === 0x7ff) {
    if (x !== x) return s | f.nan;
    if (saturate) return s | f.maxBits;
    return s | (f.inf >= 0 ? f.inf : f.nan);
  }
  const a = s === 0 ? x : -x;
  if (saturate && a >= f.max) return s | f.maxBits;
  let e = be - 1023; // floor(log2 a) for normal f64; f64 subnormals are far below any emin
  if (e < f.emin) e = f.emin;
  const n = a * POW2[POW2_BIAS + f.m - e]; // exact power-of-two scaling
  let r = Math.floor(n);
  const frac = n - r;
  if (frac > 0.5 || (frac === 0.5 && (r & 1) === 1)) r += 1;
  // biased exponent and hidden bit combine: bits = (e - emin) * 2^M + r (carry included).
  const bits = (e - f.emin) * (1 << f.m) + r;
  if (bits > f.maxBits) return s | (f.inf >= 0 ? f.inf : f.nan);
  return s | bits;
}

/** Exact value of bit pattern b in format f (software). */
function bitsToValue(b: number, f: Fmt): number {
  const mag = b & (f.sign - 1);
  const neg = (b & f.sign) !== 0;
  if (mag > f.maxBits) {
    if (mag === f.inf) return neg ? -Infinity : Infinity;
    return NaN;
  }
  const ef = mag >>> f.m;
  const mant = mag & ((1 << f.m) - 1);
  const v = ef === 0
    ? mant * pow2(f.emin - f.m)
    : (mant + (1 << f.m)) * pow2(ef - 1 + f.emin - f.m);
  return neg ? -v : v;
}

// ---------------------------------------------------------------------------
// f16
// ---------------------------------------------------------------------------

/** Native Float16Array / Math.f16round, used only if they round f64 once and keep NaN. */
function detectNativeF16(): boolean {
  const g = globalThis as { Float16Array?: unknown; Math: { f16round?: unknown } };
  if (typeof g.Float16Array !== "function" || typeof g.Math.f16round !== "function") return false;
  try {
    const probe = 1 + pow2(-11) + pow2(-40); // rounding via f32 first would give 0x3C00
    if (Math.f16round(probe) !== 1 + pow2(-10)) return false;
    const nanSrc = new Float32Array(new Uint32Array([0x7f800001, 0xffc00001]).buffer);
    const h = new Float16Array(6);
    h.set([probe, 65520, pow2(-25), pow2(-25) + pow2(-35)]);
    h.set(nanSrc, 4);
    const u = new Uint16Array(h.buffer);
    return u[0] === 0x3c01 && u[1] === 0x7c00 && u[2] === 0 && u[3] === 1 &&
      (u[4] & 0x7fff) > 0x7c00 && (u[5] & 0x7fff) > 0x7c00;
  } catch {
    return false;
  }
}

const NATIVE_F16 = detectNativeF16();
const H16S: Float16Array | null = NATIVE_F16 ? new Float16Array(1) : null;
const H16S_U16: Uint16Array | null = H16S === null ? null : new Uint16Array(H16S.buffer);
let f16Table: Float32Array | null = null; // software decode table (fallback only)

function f16DecodeTable(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    const u = new Uint32Array(f16Table.buffer);
    for (let b = 0; b < 65536; b++) {
      // NaN: quiet f32 NaN with the same sign and payload, as a native Float16Array widens it.
      if ((b & 0x7fff) > 0x7c00) u[b] = ((b & 0x8000) << 16) | 0x7fc00000 | ((b & 0x3ff) << 13);
      else f16Table[b] = bitsToValue(b, F16);
    }
  }
  return f16Table;
}

/**
 * Rounds a number to f16 (RNE, once from the f64 value) and returns the 16
 * raw bits. Overflow (≥ 65520) gives Inf, NaN gives 0x7E00 (sign kept).
 *
 * @example
 * ```ts
 * roundToF16Bits(1); // 0x3C00
 * roundToF16Bits(1 + 2 ** -11 + 2 ** -40); // 0x3C01
 * ```
 */
export function roundToF16Bits(x: number): number {
  // A NaN is canonicalized here: a JIT-compiled Float16Array store may keep payload bits.
  if (H16S !== null && x === x) {
    H16S[0] = x;
    return H16S_U16![0];
  }
  return roundBits(x, F16, false);
}

/**
 * The exact value of 16 f16 bits (only the low 16 bits of `b` are used).
 *
 * @example
 * ```ts
 * f16BitsToNumber(0x3C00); // 1
 * f16BitsToNumber(0x7C00); // Infinity
 * ```
 */
export function f16BitsToNumber(b: number): number {
  if (H16S !== null) {
    H16S_U16![0] = b;
    return H16S[0];
  }
  return bitsToValue(b & 0xffff, F16);
}

// ---------------------------------------------------------------------------
// bf16
// ---------------------------------------------------------------------------

/**
 * Rounds a number to bf16 (RNE, once from the f64 value) and returns the 16
 * raw bits. NaN gives quiet NaN 0x7FC0 / 0xFFC0 (sign kept); values from the
 * overflow midpoint up (including the largest f32) give Inf.
 *
 * @example
 * ```ts
 * roundToBf16Bits(1); // 0x3F80
 * roundToBf16Bits(1 + 2 ** -8 + 2 ** -40); // 0x3F81 (not 0x3F80: no double rounding)
 * ```
 */
export function roundToBf16Bits(x: number): number {
  return roundBits(x, BF16, false);
}

/**
 * The exact value of 16 bf16 bits (only the low 16 bits of `b` are used).
 *
 * @example
 * ```ts
 * bf16BitsToNumber(0x3F80); // 1
 * ```
 */
export function bf16BitsToNumber(b: number): number {
  F32S_U32[0] = (b & 0xffff) << 16;
  return F32S[0];
}

// ---------------------------------------------------------------------------
// fp8
// ---------------------------------------------------------------------------

function decodeTable8(f: Fmt): Float32Array {
  const t = new Float32Array(256);
  const u = new Uint32Array(t.buffer);
  for (let b = 0; b < 256; b++) {
    const v = bitsToValue(b, f);
    if (v !== v) u[b] = (b & 0x80) !== 0 ? 0xffc00000 : 0x7fc00000; // NaN keeps its sign
    else t[b] = v;
  }
  return t;
}

const E4M3_VALUES = decodeTable8(E4M3);
const E5M2_VALUES = decodeTable8(E5M2);

/**
 * Rounds a number to OCP f8e4m3 (ml_dtypes `float8_e4m3fn`; max 448, no Inf)
 * and returns the 8 raw bits. Non-saturating (default): 464 (the overflow
 * midpoint) → 448, above → NaN 0x7F/0xFF, ±Inf → NaN. Saturating: clip to
 * ±448 first (±Inf → ±448), NaN stays NaN.
 *
 * @example
 * ```ts
 * roundToF8e4m3Bits(1); // 0x38
 * roundToF8e4m3Bits(500); // 0x7F (NaN)
 * roundToF8e4m3Bits(500, true); // 0x7E (448)
 * ```
 */
export function roundToF8e4m3Bits(x: number, saturate = false): number {
  return roundBits(x, E4M3, saturate);
}

/**
 * The exact value of 8 f8e4m3 bits (only the low 8 bits of `b` are used).
 *
 * @example
 * ```ts
 * f8e4m3BitsToNumber(0x7E); // 448
 * f8e4m3BitsToNumber(0x7F); // NaN
 * ```
 */
export function f8e4m3BitsToNumber(b: number): number {
  return E4M3_VALUES[b & 0xff];
}

/**
 * Rounds a number to OCP f8e5m2 (max 57344, has Inf) and returns the 8 raw
 * bits. Non-saturating (default): from 61440 (the overflow midpoint) up →
 * Inf 0x7C. Saturating: clip to ±57344 first (±Inf → ±57344), NaN stays NaN
 * (0x7E/0xFE).
 *
 * @example
 * ```ts
 * roundToF8e5m2Bits(1); // 0x3C
 * roundToF8e5m2Bits(61440); // 0x7C (Inf)
 * roundToF8e5m2Bits(61440, true); // 0x7B (57344)
 * ```
 */
export function roundToF8e5m2Bits(x: number, saturate = false): number {
  return roundBits(x, E5M2, saturate);
}

/**
 * The exact value of 8 f8e5m2 bits (only the low 8 bits of `b` are used).
 *
 * @example
 * ```ts
 * f8e5m2BitsToNumber(0x3C); // 1
 * f8e5m2BitsToNumber(0x7C); // Infinity
 * ```
 */
export function f8e5m2BitsToNumber(b: number): number {
  return E5M2_VALUES[b & 0xff];
}

// Fast f32 → fp8 tables. Rounding an f32 to fp8 depends only on the exponent,
// the top 4 mantissa bits (3 kept + round bit at most) and a sticky bit for the
// other 19, so index = (exponent << 5) | (top4 << 1) | sticky; sign added apart.
const f8Tables: (Uint8Array | undefined)[] = [undefined, undefined, undefined, undefined];

function f8Table(f: Fmt, saturate: boolean): Uint8Array {
  const k = (f === E4M3 ? 0 : 2) + (saturate ? 1 : 0);
  let t = f8Tables[k];
  if (t === undefined) {
    t = new Uint8Array(8192);
    for (let i = 0; i < 8192; i++) {
      F32S_U32[0] = ((i >>> 1) << 19) | (i & 1); // representative f32 with sticky in bit 0
      t[i] = roundBits(F32S[0], f, saturate);
    }
    f8Tables[k] = t;
  }
  return t;
}

// ---------------------------------------------------------------------------
// Integer conversions
// ---------------------------------------------------------------------------

function toI32(x: number): number {
  if (x !== x) return 0;
  if (x >= 2147483647) return 2147483647;
  if (x <= -2147483648) return -2147483648;
  return x | 0; // truncates toward zero in range; -0 → 0
}

function toU8(x: number): number {
  if (!(x > 0)) return 0; // NaN, negatives, ±0
  if (x >= 255) return 255;
  return x | 0;
}

// ---------------------------------------------------------------------------
// roundTo, encode, decode
// ---------------------------------------------------------------------------

/**
 * The value `x` becomes when stored as `d`, as a JS number. Floats round to
 * nearest, ties to even, once from `x`. i32 truncates toward zero and
 * saturates to [-2^31, 2^31-1] (NaN → 0); u8 truncates toward zero and clamps
 * to [0, 255] (NaN → 0); bool is `x !== 0` as 0/1 (NaN → 1, as NumPy).
 *
 * @example
 * ```ts
 * roundTo("f16", 0.1); // 0.0999755859375
 * roundTo("i32", -2.7); // -2
 * roundTo("f8e4m3", 1e6, { saturate: true }); // 448
 * ```
 */
export function roundTo(d: DType, x: number, opts?: CastOptions): number {
  switch (d) {
    case "f64":
      return +x;
    case "f32":
      return Math.fround(x);
    case "f16":
      return NATIVE_F16 ? Math.f16round(x) : bitsToValue(roundBits(x, F16, false), F16);
    case "bf16":
      return bf16BitsToNumber(roundBits(x, BF16, false));
    case "f8e4m3":
      return E4M3_VALUES[roundBits(x, E4M3, opts?.saturate === true)];
    case "f8e5m2":
      return E5M2_VALUES[roundBits(x, E5M2, opts?.saturate === true)];
    case "i32":
      return toI32(x);
    case "u8":
      return toU8(x);
    case "bool":
      return x !== 0 ? 1 : 0;
  }
  return unknownDType(d);
}

function storageName(s: unknown): string {
  if (s === null || typeof s !== "object") return String(s);
  return (s as { constructor?: { name?: string } }).constructor?.name ?? "object";
}

function checkStorage(fn: string, d: DType, s: Storage): void {
  let ok: boolean;
  switch (d) {
    case "f64":
      ok = s instanceof Float64Array;
      break;
    case "f32":
      ok = s instanceof Float32Array;
      break;
    case "f16":
    case "bf16":
      ok = s instanceof Uint16Array;
      break;
    case "i32":
      ok = s instanceof Int32Array;
      break;
    case "f8e4m3":
    case "f8e5m2":
    case "u8":
    case "bool":
      ok = s instanceof Uint8Array;
      break;
    default:
      return unknownDType(d);
  }
  if (!ok) {
    const want = storageName(storageFor(d, 0));
    throw new TypeError(`${fn}("${d}"): expected ${want} storage, got ${storageName(s)}`);
  }
}

/**
 * Encodes `src` as a new storage array of dtype `d` (see `encodeInto`).
 *
 * @example
 * ```ts
 * encode("bf16", [1, 1 + 2 ** -8 + 2 ** -40]); // Uint16Array [0x3F80, 0x3F81]
 * encode("f8e4m3", new Float32Array([1000]), { saturate: true }); // Uint8Array [0x7E]
 * ```
 */
export function encode(d: DType, src: ArrayLike<number>, opts?: CastOptions): Storage {
  const out = storageFor(d, src.length);
  encodeInto(d, src, out, opts);
  return out;
}

/**
 * Encodes `src` into the first `src.length` elements of `out` (the storage
 * type of `d`, at least as long as `src`). Each value is rounded once from
 * its source value, exactly as `roundTo` does; `Float32Array` sources take
 * fast bit-level paths for f16, bf16 and fp8.
 *
 * @example
 * ```ts
 * const out = storageFor("f16", 2) as Uint16Array;
 * encodeInto("f16", new Float32Array([1, 65520]), out); // out = [0x3C00, 0x7C00]
 * ```
 */
export function encodeInto(
  d: DType,
  src: ArrayLike<number>,
  out: Storage,
  opts?: CastOptions,
): void {
  checkStorage("encodeInto", d, out);
  const n = src.length;
  if (out.length < n) {
    throw new RangeError(`encodeInto("${d}"): output has ${out.length} elements, source ${n}`);
  }
  const saturate = opts?.saturate === true;
  switch (d) {
    case "f64":
    case "f32":
      if (out.length === n) (out as Float64Array | Float32Array).set(src);
      else (out as Float64Array | Float32Array).subarray(0, n).set(src);
      return;
    case "f16":
      encodeF16(src, out as Uint16Array, n);
      return;
    case "bf16":
      encodeBf16(src, out as Uint16Array, n);
      return;
    case "f8e4m3":
      encodeF8(src, out as Uint8Array, n, E4M3, saturate);
      return;
    case "f8e5m2":
      encodeF8(src, out as Uint8Array, n, E5M2, saturate);
      return;
    case "i32": {
      const o = out as Int32Array;
      for (let i = 0; i < n; i++) o[i] = toI32(src[i]);
      return;
    }
    case "u8": {
      const o = out as Uint8Array;
      for (let i = 0; i < n; i++) o[i] = toU8(src[i]);
      return;
    }
    case "bool": {
      const o = out as Uint8Array;
      for (let i = 0; i < n; i++) o[i] = src[i] !== 0 ? 1 : 0;
      return;
    }
  }
}

function encodeF16(src: ArrayLike<number>, out: Uint16Array, n: number): void {
  if (NATIVE_F16) {
    new Float16Array(out.buffer, out.byteOffset, n).set(src);
    return;
  }
  for (let i = 0; i < n; i++) out[i] = roundBits(src[i], F16, false);
}

function encodeBf16(src: ArrayLike<number>, out: Uint16Array, n: number): void {
  if (src instanceof Float32Array) {
    // The RNE bit trick of `pytorch/pytorch c10/util/BFloat16.h` (round_to_nearest_even) on the
    // f32 bits, after the NaN check.
    const u = new Int32Array(src.buffer, src.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const w = u[i];
      if ((w & 0x7fffffff) > 0x7f800000) out[i] = ((w >>> 16) & 0x8000) | 0x7fc0;
      else out[i] = (w + 0x7fff + ((w >>> 16) & 1)) >>> 16;
    }
    return;
  }
  for (let i = 0; i < n; i++) out[i] = roundBits(src[i], BF16, false);
}

function encodeF8(
  src: ArrayLike<number>,
  out: Uint8Array,
  n: number,
  f: Fmt,
  saturate: boolean,
): void {
  if (src instanceof Float32Array) {
    const t = f8Table(f, saturate);
    const u = new Uint32Array(src.buffer, src.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const w = u[i];
      out[i] = ((w >>> 24) & 0x80) |
        t[((w >>> 18) & 0x1ffe) | (((w & 0x7ffff) + 0x7ffff) >>> 19)];
    }
    return;
  }
  for (let i = 0; i < n; i++) out[i] = roundBits(src[i], f, saturate);
}

/**
 * Widens a storage of dtype `d` to exact values: f64 → Float64Array; f32,
 * f16, bf16, fp8 → Float32Array; i32 → Int32Array; u8/bool → Uint8Array. For
 * f64, f32, i32, u8 and bool it returns `s` itself (do not mutate the result).
 * Throws a TypeError if `s` is not the storage type of `d`.
 *
 * @example
 * ```ts
 * decode("bf16", new Uint16Array([0x3F80, 0xC000])); // Float32Array [1, -2]
 * ```
 */
export function decode(d: DType, s: Storage): Widened {
  checkStorage("decode", d, s);
  switch (d) {
    case "f64":
    case "f32":
    case "i32":
    case "u8":
    case "bool":
      return s as Widened;
    case "f16": {
      const u = s as Uint16Array;
      if (NATIVE_F16) return new Float32Array(new Float16Array(u.buffer, u.byteOffset, u.length));
      const t = f16DecodeTable();
      const out = new Float32Array(u.length);
      for (let i = 0; i < u.length; i++) out[i] = t[u[i]];
      return out;
    }
    case "bf16": {
      const u = s as Uint16Array;
      const out = new Float32Array(u.length);
      const o = new Uint32Array(out.buffer);
      for (let i = 0; i < u.length; i++) o[i] = u[i] << 16;
      return out;
    }
    case "f8e4m3":
    case "f8e5m2": {
      const u = s as Uint8Array;
      const t = d === "f8e4m3" ? E4M3_VALUES : E5M2_VALUES;
      const out = new Float32Array(u.length);
      for (let i = 0; i < u.length; i++) out[i] = t[u[i]];
      return out;
    }
  }
  return unknownDType(d);
}

// ---------------------------------------------------------------------------
// Promotion
// ---------------------------------------------------------------------------

const INT_RANK: Readonly<Record<string, number>> = { bool: 0, u8: 1, i32: 2 };

/**
 * The dtype of a binary op's result. The table is symmetric; read row `a`,
 * column `b`:
 *
 * | a \ b  | f64 | f32 | f16 | bf16 | f8e4m3 | f8e5m2 | i32    | u8     | bool   |
 * |--------|-----|-----|-----|------|--------|--------|--------|--------|--------|
 * | f64    | f64 | f64 | f64 | f64  | f64    | f64    | f64    | f64    | f64    |
 * | f32    | f64 | f32 | f32 | f32  | f32    | f32    | f32    | f32    | f32    |
 * | f16    | f64 | f32 | f16 | f32  | f16    | f16    | f16    | f16    | f16    |
 * | bf16   | f64 | f32 | f32 | bf16 | bf16   | bf16   | bf16   | bf16   | bf16   |
 * | f8e4m3 | f64 | f32 | f16 | bf16 | f8e4m3 | f16    | f8e4m3 | f8e4m3 | f8e4m3 |
 * | f8e5m2 | f64 | f32 | f16 | bf16 | f16    | f8e5m2 | f8e5m2 | f8e5m2 | f8e5m2 |
 * | i32    | f64 | f32 | f16 | bf16 | f8e4m3 | f8e5m2 | i32    | i32    | i32    |
 * | u8     | f64 | f32 | f16 | bf16 | f8e4m3 | f8e5m2 | i32    | u8     | u8     |
 * | bool   | f64 | f32 | f16 | bf16 | f8e4m3 | f8e5m2 | i32    | u8     | bool   |
 *
 * Rules: same → same; among bool < u8 < i32 the bigger wins; a float with an
 * int or bool gives the float; f16 with bf16 → f32; f8e4m3 with f8e5m2 → f16;
 * an fp8 with f16 or bf16 → that 16-bit type; f32 and f64 absorb narrower floats.
 *
 * @example
 * ```ts
 * promoteTypes("f16", "bf16"); // "f32"
 * promoteTypes("i32", "f16"); // "f16"
 * ```
 */
export function promoteTypes(a: DType, b: DType): DType {
  parseDType(a);
  parseDType(b);
  if (a === b) return a;
  const fa = isFloating(a);
  const fb = isFloating(b);
  if (!fa && !fb) return INT_RANK[a] >= INT_RANK[b] ? a : b;
  if (!fb) return a;
  if (!fa) return b;
  if (a === "f64" || b === "f64") return "f64";
  if (a === "f32" || b === "f32") return "f32";
  const a8 = a === "f8e4m3" || a === "f8e5m2";
  const b8 = b === "f8e4m3" || b === "f8e5m2";
  if (a8 && b8) return "f16"; // e4m3 with e5m2
  if (a8) return b; // fp8 with f16 or bf16
  if (b8) return a;
  return "f32"; // f16 with bf16
}

/**
 * The result dtype of `tensor op scalar` for a JS-number scalar (JAX-style
 * weak typing): a float tensor keeps its dtype; an i32/u8/bool tensor with a
 * non-integer scalar (including NaN and ±Inf) gives f32; an i32/u8 tensor with
 * an integer scalar keeps its dtype; a bool tensor with an integer scalar
 * gives i32.
 *
 * @example
 * ```ts
 * weakScalarType("f16", 2.5); // "f16"
 * weakScalarType("i32", 2.5); // "f32"
 * weakScalarType("bool", 3); // "i32"
 * ```
 */
export function weakScalarType(tensorDtype: DType, scalar: number): DType {
  const d = parseDType(tensorDtype);
  if (isFloating(d)) return d;
  if (!Number.isInteger(scalar)) return "f32";
  return d === "bool" ? "i32" : d;
}
