/**
 * CPU batched matrix product with f64 accumulation, rounded once to the output's compute
 * array. Layouts: `a` is `[m, k]` (or `[k, m]` with `transA`), `b` is `[k, n]` (or `[n, k]`).
 *
 * Each batch packs `a` as `[m, k]` and `b` as `bᵀ` (`[n, k]`) in f64, so every product is a
 * dot product of two contiguous rows; a 4×4 register tile then reads each packed value once
 * per four products. Every output sums its k products in order p = 0, 1, …, k−1 in f64,
 * whatever the tiling, so results do not depend on the shape's remainder handling.
 *
 * With `g.aCast` / `g.bCast` (f16 or bf16) the packed f32 values are rounded to that dtype, so
 * the result is the one of casting the operand first (a cast folded into the product).
 *
 * @module
 */
import type { MatmulGeometry } from "../backend.ts";
import { type DType, roundTo } from "../../dtype.ts";

type Num = Float64Array | Float32Array | Int32Array | Uint8Array;
type Out = Float32Array | Float64Array;

/** Element offset of batch `b` of a product with batch dims `shape` and per-dim `strides`. */
export function batchOffset(
  b: number,
  shape: readonly number[],
  strides: readonly number[],
): number {
  let off = 0;
  for (let d = shape.length - 1; d >= 0; d--) {
    const i = b % shape[d];
    b = (b - i) / shape[d];
    off += i * strides[d];
  }
  return off;
}

/** Pack `a` (from offset `ao`) as row-major `[m, k]` f64. */
function packA(a: Num, ao: number, m: number, k: number, trans: boolean, to: Float64Array): void {
  if (!trans) {
    for (let i = 0; i < m * k; i++) to[i] = a[ao + i];
    return;
  }
  // a is [k, m]
  for (let p = 0; p < k; p++) {
    const row = ao + p * m;
    for (let i = 0; i < m; i++) to[i * k + p] = a[row + i];
  }
}

/** Pack `b` (from offset `bo`) as row-major `bᵀ`, `[n, k]` f64. */
function packBt(b: Num, bo: number, k: number, n: number, trans: boolean, to: Float64Array): void {
  if (trans) {
    for (let i = 0; i < n * k; i++) to[i] = b[bo + i];
    return;
  }
  // b is [k, n]
  for (let p = 0; p < k; p++) {
    const row = bo + p * n;
    for (let j = 0; j < n; j++) to[j * k + p] = b[row + j];
  }
}

/**
 * Check `g.aCast` / `g.bCast` against the operand dtypes: a folded cast rounds an f32 operand
 * to f16 or bf16, nothing else.
 *
 * @example
 * ```ts
 * checkCasts("f16", "f32", g); // throws when g.aCast is set (a is not f32)
 * ```
 */
export function checkCasts(aType: DType, bType: DType, g: MatmulGeometry): void {
  for (const [which, type, cast] of [["a", aType, g.aCast], ["b", bType, g.bCast]] as const) {
    if (cast === undefined || (type === "f32" && (cast === "f16" || cast === "bf16"))) continue;
    throw new TypeError(
      `matmul: ${which}Cast folds a cast f32 → f16|bf16 into the product, got ${type} → ` +
        `${cast}; cast the operand first instead`,
    );
  }
}

/** Round packed values in place to `d` (nearest, ties to even), as a cast to `d` would. */
function roundPacked(to: Float64Array, d: DType | undefined): void {
  if (d === undefined) return;
  for (let i = 0; i < to.length; i++) to[i] = roundTo(d, to[i]);
}

/** `out[o + i·n + j] = Σ_p A[i, p] · Bt[j, p]` for a packed batch. */
function product(
  A: Float64Array,
  Bt: Float64Array,
  m: number,
  k: number,
  n: number,
  out: Float64Array,
  o: number,
) {
  const m4 = m - (m % 4);
  const n4 = n - (n % 4);
  for (let i = 0; i < m4; i += 4) {
    const a0 = i * k, a1 = a0 + k, a2 = a1 + k, a3 = a2 + k;
    for (let j = 0; j < n4; j += 4) {
      const b0 = j * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let p = 0; p < k; p++) {
        const x0 = Bt[b0 + p], x1 = Bt[b1 + p], x2 = Bt[b2 + p], x3 = Bt[b3 + p];
        let y = A[a0 + p];
        c00 += y * x0, c01 += y * x1, c02 += y * x2, c03 += y * x3;
        y = A[a1 + p];
        c10 += y * x0, c11 += y * x1, c12 += y * x2, c13 += y * x3;
        y = A[a2 + p];
        c20 += y * x0, c21 += y * x1, c22 += y * x2, c23 += y * x3;
        y = A[a3 + p];
        c30 += y * x0, c31 += y * x1, c32 += y * x2, c33 += y * x3;
      }
      let r = o + i * n + j;
      out[r] = c00, out[r + 1] = c01, out[r + 2] = c02, out[r + 3] = c03, r += n;
      out[r] = c10, out[r + 1] = c11, out[r + 2] = c12, out[r + 3] = c13, r += n;
      out[r] = c20, out[r + 1] = c21, out[r + 2] = c22, out[r + 3] = c23, r += n;
      out[r] = c30, out[r + 1] = c31, out[r + 2] = c32, out[r + 3] = c33;
    }
    for (let j = n4; j < n; j++) {
      const b0 = j * k;
      let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (let p = 0; p < k; p++) {
        const x = Bt[b0 + p];
        c0 += A[a0 + p] * x, c1 += A[a1 + p] * x, c2 += A[a2 + p] * x, c3 += A[a3 + p] * x;
      }
      const r = o + i * n + j;
      out[r] = c0, out[r + n] = c1, out[r + 2 * n] = c2, out[r + 3 * n] = c3;
    }
  }
  for (let i = m4; i < m; i++) {
    const a0 = i * k;
    for (let j = 0; j < n; j++) {
      const b0 = j * k;
      let c = 0;
      for (let p = 0; p < k; p++) c += A[a0 + p] * Bt[b0 + p];
      out[o + i * n + j] = c;
    }
  }
}

/**
 * `out[batch, m, n] = Σ_k a[batch, m, k] · b[batch, k, n]`.
 *
 * @example
 * ```ts
 * const out = new Float32Array(1);
 * const g = { batch: 1, m: 1, k: 2, n: 1, batchShape: [], aBatchStride: [], bBatchStride: [],
 *   transA: false, transB: false };
 * matmulKernel(new Float32Array([1, 2]), new Float32Array([3, 4]), g, out); // out = [11]
 * ```
 */
export function matmulKernel(a: Num, b: Num, g: MatmulGeometry, out: Out): void {
  const { m, k, n } = g;
  const A = new Float64Array(m * k);
  const Bt = new Float64Array(n * k);
  // The tile loop always writes f64 (one array type keeps the JIT's code monomorphic).
  const C = out instanceof Float64Array ? undefined : new Float64Array(m * n);
  let packedA = -1;
  let packedB = -1;
  for (let bt = 0; bt < g.batch; bt++) {
    const ao = batchOffset(bt, g.batchShape, g.aBatchStride);
    const bo = batchOffset(bt, g.batchShape, g.bBatchStride);
    // A broadcast operand (batch stride 0) is packed once.
    if (ao !== packedA) packA(a, packedA = ao, m, k, g.transA, A), roundPacked(A, g.aCast);
    if (bo !== packedB) packBt(b, packedB = bo, k, n, g.transB, Bt), roundPacked(Bt, g.bCast);
    const o = bt * m * n;
    if (C) {
      product(A, Bt, m, k, n, C, 0);
      out.set(C, o);
    } else product(A, Bt, m, k, n, out as Float64Array, o);
  }
}
