/**
 * An exact-arithmetic oracle for `scatterAdd`, shared by tests/scatter_add_test.ts (CPU) and
 * tests/webgpu_scatter_test.ts: every addition is done exactly in BigInt and rounded once to
 * nearest, ties to even, in the accumulator's format; the result is then rounded once to the
 * dtype. Independent of the backends (no Float32Array, no Math.fround).
 */
import type { DType } from "../lib/dtype.ts";

/** A binary floating-point format: precision `p` (with the hidden bit), `emin`, largest finite. */
interface Format {
  p: number;
  emin: number;
  max: number;
}

/** The formats of the float dtypes (IEEE binary64/32/16, bfloat16). */
export const FORMATS: Readonly<Record<"f64" | "f32" | "f16" | "bf16", Format>> = {
  f64: { p: 53, emin: -1022, max: Number.MAX_VALUE },
  f32: { p: 24, emin: -126, max: (2 - 2 ** -23) * 2 ** 127 },
  f16: { p: 11, emin: -14, max: 65504 },
  bf16: { p: 8, emin: -126, max: (2 - 2 ** -7) * 2 ** 127 },
};

/** Fixed-point scale: every finite double is an integer multiple of 2^-SCALE. */
const SCALE = 1100n;

/** A finite double as an exact BigInt times 2^-SCALE. */
function exact(x: number): bigint {
  if (!Number.isFinite(x)) throw new Error(`oracle: ${x} is not finite`);
  if (x === 0) return 0n;
  const v = new DataView(new ArrayBuffer(8));
  v.setFloat64(0, x);
  const bits = v.getBigUint64(0);
  const e = Number((bits >> 52n) & 0x7ffn);
  let m = bits & ((1n << 52n) - 1n);
  if (e !== 0) m |= 1n << 52n;
  const shift = BigInt(Math.max(e, 1) - 1075) + SCALE; // x = m · 2^(max(e,1) − 1075)
  const mag = m << shift;
  return bits >> 63n ? -mag : mag;
}

const bitLength = (n: bigint) => n.toString(2).length;

/** Round `X · 2^-SCALE` (exact) to `f`, ties to even; ±Infinity past the largest finite. */
function roundExact(X: bigint, f: Format, negZero = false): number {
  if (X === 0n) return negZero ? -0 : 0;
  const neg = X < 0n;
  const mag = neg ? -X : X;
  const e = bitLength(mag) - 1 - Number(SCALE); // 2^e ≤ |x| < 2^(e+1)
  const q = Math.max(e, f.emin) - (f.p - 1); // the quantum's exponent
  const shift = BigInt(q) + SCALE;
  let r: bigint;
  if (shift <= 0n) r = mag << -shift;
  else {
    r = mag >> shift;
    const rem = mag - (r << shift);
    const half = 1n << (shift - 1n);
    if (rem > half || (rem === half && (r & 1n) === 1n)) r++;
  }
  const value = Number(r) * 2 ** q;
  const out = value > f.max ? Infinity : value;
  return neg ? -out : out;
}

/** `x` rounded to format `f` (exactly, from the double `x`). */
export function roundTo(x: number, f: Format): number {
  if (Number.isNaN(x) || !Number.isFinite(x)) return x;
  return roundExact(exact(x), f, Object.is(x, -0));
}

/** `a + b` rounded once to `f` (IEEE: an exact zero sum is +0 unless both are −0). */
export function addIn(a: number, b: number, f: Format): number {
  if (!Number.isFinite(a) || !Number.isFinite(b)) return a + b; // Inf/NaN rules are exact
  const X = exact(a) + exact(b);
  return roundExact(X, f, X === 0n && Object.is(a, -0) && Object.is(b, -0));
}

/**
 * The expected `scatterAdd(base, idx, upd, axis)` of a float dtype laid out as
 * `[outer, axis, inner]`: each output starts from `base` and adds the updates of the indices
 * that hit it in increasing order, each addition rounded once in the accumulator (f32 for f32
 * and narrower, f64 for f64), then the result is rounded once to `dtype`.
 */
export function scatterAddOracle(
  dtype: "f64" | "f32" | "f16" | "bf16",
  base: ArrayLike<number>,
  idx: ArrayLike<number>,
  upd: ArrayLike<number>,
  outer: number,
  axis: number,
  inner: number,
): number[] {
  const acc = dtype === "f64" ? FORMATS.f64 : FORMATS.f32;
  const out = Array.from(base, (x) => roundTo(x, acc));
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < idx.length; j++) {
      const k = idx[j] < 0 ? idx[j] + axis : idx[j];
      for (let i = 0; i < inner; i++) {
        const t = (o * axis + k) * inner + i;
        out[t] = addIn(out[t], roundTo(upd[(o * idx.length + j) * inner + i], acc), acc);
      }
    }
  }
  return out.map((x) => roundTo(x, FORMATS[dtype]));
}

/** The float dtypes the oracle covers. */
export const ORACLE_DTYPES: readonly ("f64" | "f32" | "f16" | "bf16")[] = [
  "f64",
  "f32",
  "f16",
  "bf16",
];

/** Whether `d` is one of {@linkcode ORACLE_DTYPES}. */
export const isOracleDtype = (d: DType): d is "f64" | "f32" | "f16" | "bf16" =>
  (ORACLE_DTYPES as readonly string[]).includes(d);
