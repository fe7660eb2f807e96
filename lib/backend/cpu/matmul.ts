/**
 * CPU batched matrix product with f64 accumulation, rounded once to the output's compute
 * array. Layouts: `a` is `[m, k]` (or `[k, m]` with `transA`), `b` is `[k, n]` (or `[n, k]`).
 *
 * @module
 */
import type { MatmulGeometry } from "../backend.ts";

type Num = Float64Array | Float32Array | Int32Array | Uint8Array;

function batchOffset(b: number, shape: readonly number[], strides: readonly number[]): number {
  let off = 0;
  for (let d = shape.length - 1; d >= 0; d--) {
    const i = b % shape[d];
    b = (b - i) / shape[d];
    off += i * strides[d];
  }
  return off;
}

/** `out[batch, m, n] = Σ_k a[batch, m, k] · b[batch, k, n]`. */
export function matmulKernel(
  a: Num,
  b: Num,
  g: MatmulGeometry,
  out: Float32Array | Float64Array,
): void {
  const { m, k, n } = g;
  const row = new Float64Array(n);
  // Row-major copies of a (m×k) and b (k×n or n×k), so every inner loop is contiguous.
  const aT = new Float64Array(m * k);
  for (let bt = 0; bt < g.batch; bt++) {
    const ao = batchOffset(bt, g.batchShape, g.aBatchStride);
    const bo = batchOffset(bt, g.batchShape, g.bBatchStride);
    const oo = bt * m * n;
    let A: Num = a;
    let aOff = ao;
    if (g.transA) {
      for (let p = 0; p < k; p++) for (let i = 0; i < m; i++) aT[i * k + p] = a[ao + p * m + i];
      A = aT;
      aOff = 0;
    }
    if (g.transB) {
      // b is [n, k]: out[i, j] = dot(A[i, :], B[j, :]).
      for (let i = 0; i < m; i++) {
        const ar = aOff + i * k;
        for (let j = 0; j < n; j++) {
          const br = bo + j * k;
          let s = 0;
          for (let p = 0; p < k; p++) s += A[ar + p] * b[br + p];
          out[oo + i * n + j] = s;
        }
      }
      continue;
    }
    for (let i = 0; i < m; i++) {
      row.fill(0);
      const ar = aOff + i * k;
      for (let p = 0; p < k; p++) {
        const av = A[ar + p];
        const br = bo + p * n;
        for (let j = 0; j < n; j++) row[j] += av * b[br + j];
      }
      out.set(row, oo + i * n);
    }
  }
}
