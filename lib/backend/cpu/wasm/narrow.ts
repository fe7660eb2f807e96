/**
 * Narrow float formats in WebAssembly SIMD lanes, bit for bit as `lib/dtype.ts` encodes them:
 * f32 lanes rounded to f16 bits, and f32 lanes rounded to f8e4m3/f8e5m2 values (with and without
 * `saturate`), f8 values to their bits, and f16/f8 bits widened to f32 lanes. Every rounding is
 * to nearest, ties to even, once from the f32 value: in the normal range by an integer add at the
 * format's last mantissa bit (the carry moves into the exponent), in the subnormal range by the
 * exact f32 addition and subtraction of a power of two whose ulp is the format's subnormal step
 * (WebAssembly never flushes subnormals). The overflow and NaN rules are `dtype.ts`'s: f16 gives
 * Inf from 65520 up; f8e4m3 (no Inf) gives NaN past the overflow midpoint 464 (`saturate`: 448),
 * f8e5m2 Inf from 61440 (`saturate`: 57344); ±Inf saturates to ±max; NaN stays NaN with its sign.
 *
 * Constants come from {@link Konst}: a kernel hoists each one into a local before its loop (a
 * splat inside the loop body costs three instructions per use).
 *
 * Spec: WebAssembly Core 2.0 SIMD (§4.4.3; opcodes from the binary format).
 *
 * @module
 */
import { type Code, I } from "./emit.ts";

const op = (n: number): Code => [0xfd, n < 128 ? n : [n & 0x7f | 0x80, n >> 7]];
const X = {
  eq: op(0x37),
  gtS: op(0x3b),
  gtU: op(0x3c),
  and: op(0x4e),
  or: op(0x50),
  xor: op(0x51),
  bitselect: op(0x52),
  shl: op(0xab),
  shrU: op(0xad),
  add: op(0xae),
  sub: op(0xb1),
  minU: op(0xb7),
  fabs: op(0xe0),
  feq: op(0x41),
  fne: op(0x42),
  fadd: op(0xe4),
  fsub: op(0xe5),
  fmul: op(0xe6),
};

/** The code that pushes a v128 with `bits` (an i32) in every lane (a hoisted constant). */
export type Konst = (bits: number) => Code;

/** An f8 format: its mantissa bits and exponent bias, and the f32 bits of a few values. */
interface F8 {
  /** Stored mantissa bits. */
  readonly m: number;
  /** f32 bits of the smallest normal value. */
  readonly minNormal: number;
  /** f32 bits of the largest finite value. */
  readonly max: number;
  /** f32 bits of a power of two whose ulp is the subnormal step. */
  readonly step: number;
  /** f32 bits of 2^(bias − 127) (value → code scale) and of 2^(127 − bias) (code → value). */
  readonly down: number;
  readonly up: number;
  /** Whether the format has ±Inf (f8e5m2). */
  readonly inf: boolean;
  /** Largest code magnitude (the NaN of f8e4m3, Inf of f8e5m2) and the NaN code. */
  readonly top: number;
  readonly nan: number;
}

const pow2 = (e: number) => (e + 127) << 23;
/** The f8 formats (OCP: ml_dtypes `float8_e4m3fn`, `float8_e5m2`). */
export const F8: Readonly<Record<"f8e4m3" | "f8e5m2", F8>> = {
  f8e4m3: {
    m: 3,
    minNormal: pow2(-6),
    max: 0x43e00000, // 448
    step: pow2(-6 - 3 + 23),
    down: pow2(7 - 127),
    up: pow2(127 - 7),
    inf: false,
    top: 0x7f,
    nan: 0x7f,
  },
  f8e5m2: {
    m: 2,
    minNormal: pow2(-14),
    max: 0x47600000, // 57344
    step: pow2(-14 - 2 + 23),
    down: pow2(15 - 127),
    up: pow2(127 - 15),
    inf: true,
    top: 0x7c,
    nan: 0x7e,
  },
};

const NAN = 0x7fc00000;
const INF = 0x7f800000;

/**
 * The f32 lanes in local `x` rounded to the f8 format `f` as values (f32 lanes), as `roundTo`
 * (`saturate` clips first). `a`, `t` are scratch v128 locals. A NaN lane gives the quiet NaN
 * with its sign, as the decoded f8 NaN.
 */
export function f8Round(f: F8, saturate: boolean, x: number, a: number, t: number, k: Konst): Code {
  const s = 23 - f.m;
  const overflowInf: Code = [k(INF), I.get(t), I.get(t), k(f.max), X.gtU, X.bitselect];
  return [
    [I.get(x), X.fabs, I.set(a)],
    // normal: (a + 2^(s−1) − 1 + ((a >>> s) & 1)) & −2^s
    [I.get(a), k((1 << (s - 1)) - 1), X.add, I.get(a), I.i32(s), X.shrU, k(1), X.and, X.add],
    [k(-(1 << s)), X.and],
    // subnormal: (a + step) − step, exact and rounded once by the f32 addition
    [I.get(a), k(f.step), X.fadd, k(f.step), X.fsub],
    [I.get(a), k(f.minNormal - 1), X.gtS, X.bitselect, I.set(t)],
    saturate
      ? [k(NAN), I.get(t), k(f.max), X.minU, I.get(x), I.get(x), X.fne, X.bitselect]
      : f.inf
      ? [k(NAN), overflowInf, I.get(x), I.get(x), X.fne, X.bitselect]
      : [k(NAN), I.get(t), I.get(t), k(f.max), X.gtU, X.bitselect], // NaN and Inf overflow too
    [I.get(x), I.get(a), X.xor, X.or], // sign
  ];
}

/**
 * f8 values (f32 lanes in local `v`, each already a value of `f`, ±Inf or NaN) as their codes
 * in i32 lanes: the value scaled by 2^(bias − 127), exact (a subnormal code lands on an f32
 * subnormal), shifted down; Inf and NaN patched. `a` is a scratch v128 local.
 */
export function f8Encode(f: F8, v: number, a: number, k: Konst): Code {
  const s = 23 - f.m;
  const code: Code = [I.get(a), k(f.down), X.fmul, I.i32(s), X.shrU, k(f.top), X.minU];
  return [
    [I.get(v), X.fabs, I.set(a)],
    f.inf ? [k(f.nan), code, I.get(v), I.get(v), X.fne, X.bitselect] : code,
    [I.get(v), I.get(a), X.xor, I.i32(24), X.shrU, X.or],
  ];
}

/**
 * f8 codes (i32 lanes, zero-extended bytes, in local `h`) widened to f32 lanes exactly: the
 * magnitude placed as an f32 and scaled by 2^(127 − bias); NaN codes give the quiet NaN with
 * its sign, as `dtype.ts`'s decode table. `x`, `a` are scratch v128 locals.
 */
export function f8Decode(f: F8, h: number, x: number, a: number, k: Konst): Code {
  const top = f.top << 24;
  const value: Code = [I.get(a), I.i32(1 + f.m), X.shrU, k(f.up), X.fmul];
  return [
    [I.get(h), I.i32(24), X.shl, I.tee(x), X.fabs, I.set(a)],
    f.inf
      ? [k(NAN), k(INF), value, I.get(a), k(top), X.eq, X.bitselect, I.get(a), k(top), X.gtS]
      : [k(NAN), value, I.get(a), k(top), X.eq],
    [X.bitselect, I.get(x), I.get(a), X.xor, X.or],
  ];
}

/**
 * f32 lanes (local `w`) rounded to f16 bits in i32 lanes, as `encode`: normal results by a
 * rebiasing rounding add, subnormal ones by the exact f32 addition of 0.5 (whose ulp, 2^−24, is
 * the f16 subnormal step), from 65520 up Inf, NaN 0x7E00; sign kept. `a` is a scratch local.
 */
export function f16Round(w: number, a: number, k: Konst): Code {
  return [
    [I.get(w), X.fabs, I.set(a)],
    // normal: (a + 0xfff + ((a >>> 13) & 1) − (112 << 23)) >>> 13
    [I.get(a), k(0xfff - 0x38000000), X.add, I.get(a), I.i32(13), X.shrU, k(1), X.and, X.add],
    [I.i32(13), X.shrU],
    // subnormal: bits(a + 0.5) − bits(0.5)
    [I.get(a), k(0x3f000000), X.fadd, k(0x3f000000), X.sub],
    [I.get(a), k(0x38800000 - 1), X.gtS, X.bitselect, k(0x7c00), X.minU], // overflow and Inf
    [k(0x7e00), I.get(w), I.get(w), X.feq, X.bitselect], // NaN lanes
    [I.get(w), I.get(a), X.xor, I.i32(16), X.shrU, X.or],
  ];
}

/**
 * f16 bits (i32 lanes, zero-extended, in local `h`) widened to f32 lanes exactly: the 15 low
 * bits placed as an f32 and scaled by 2^112; a NaN keeps its payload, quieted (as a native
 * `Float16Array` widens it). `x`, `a` are
 * scratch v128 locals.
 */
export function f16Decode(h: number, x: number, a: number, k: Konst): Code {
  const t: Code = [I.get(a), I.i32(3), X.shrU];
  return [
    [I.get(h), I.i32(16), X.shl, I.tee(x), X.fabs, I.set(a)],
    [t, k(INF), X.or, I.get(a), k(0x7c000000), X.gtS, k(0x400000), X.and, X.or], // NaN: quiet
    [t, k(pow2(112)), X.fmul, I.get(a), k(0x7bffffff), X.gtS, X.bitselect],
    [I.get(x), I.get(a), X.xor, X.or],
  ];
}
