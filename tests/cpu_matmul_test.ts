/**
 * The CPU matmul kernel (packed, register-tiled) against the definition: every output is the
 * f64 sum over k in ascending order, rounded once to the output array. Random geometries cover
 * every transpose layout, sizes that are not multiples of the 4×4 tile (including 0), batch
 * broadcasting through zero strides, and NaN/±Inf inputs.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { MatmulGeometry } from "../lib/backend/backend.ts";
import { matmulKernel } from "../lib/backend/cpu/matmul.ts";

/** The definition, written out with explicit indexing. */
function reference(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  g: MatmulGeometry,
  aBatch: readonly number[],
  bBatch: readonly number[],
): number[] {
  const { m, k, n } = g;
  const out: number[] = [];
  for (let bt = 0; bt < g.batch; bt++) {
    // Unravel the batch index, then map it into each operand's own (maybe size-1) batch dims.
    const idx: number[] = [];
    let r = bt;
    for (let d = g.batchShape.length - 1; d >= 0; d--) {
      idx[d] = r % g.batchShape[d];
      r = Math.floor(r / g.batchShape[d]);
    }
    const flat = (own: readonly number[]) =>
      own.reduce((acc, dim, d) => acc * dim + (dim === 1 ? 0 : idx[d]), 0);
    const ao = flat(aBatch) * m * k;
    const bo = flat(bBatch) * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          const av = g.transA ? a[ao + p * m + i] : a[ao + i * k + p];
          const bv = g.transB ? b[bo + j * k + p] : b[bo + p * n + j];
          s += av * bv;
        }
        out.push(s);
      }
    }
  }
  return out;
}

/** Contiguous batch strides of an operand's own batch dims (0 where the dim is 1). */
function strides(own: readonly number[], matrix: number): number[] {
  const s = new Array(own.length).fill(0);
  let acc = matrix;
  for (let d = own.length - 1; d >= 0; d--) {
    s[d] = own[d] === 1 ? 0 : acc;
    acc *= own[d];
  }
  return s;
}

const value = fc.oneof(
  { weight: 20, arbitrary: fc.double({ min: -4, max: 4, noNaN: true }) },
  { weight: 1, arbitrary: fc.constantFrom(NaN, Infinity, -Infinity, -0) },
);

const geometry = fc.record({
  m: fc.integer({ min: 0, max: 9 }),
  k: fc.integer({ min: 0, max: 9 }),
  n: fc.integer({ min: 0, max: 9 }),
  transA: fc.boolean(),
  transB: fc.boolean(),
  batchShape: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
  aOnes: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  bOnes: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  f64: fc.boolean(),
  seed: fc.array(value, { minLength: 64, maxLength: 64 }),
});

Deno.test("property: matmulKernel equals the definition for every layout, bit for bit", () => {
  fc.assert(
    fc.property(geometry, (c) => {
      const aBatch = c.batchShape.map((d, i) => (c.aOnes[i] ? 1 : d));
      const bBatch = c.batchShape.map((d, i) => (c.bOnes[i] ? 1 : d));
      const size = (own: number[], mat: number) => own.reduce((x, y) => x * y, 1) * mat;
      const make = (xs: number[]) => (c.f64 ? Float64Array.from(xs) : Float32Array.from(xs));
      const fill = (len: number, f: (i: number) => number) =>
        Array.from({ length: len }, (_, i) => f(i));
      const a = make(fill(size(aBatch, c.m * c.k), (i) => c.seed[i % 64]));
      const b = make(fill(size(bBatch, c.k * c.n), (i) => c.seed[(7 * i + 3) % 64]));
      const g: MatmulGeometry = {
        batch: c.batchShape.reduce((x, y) => x * y, 1),
        m: c.m,
        k: c.k,
        n: c.n,
        batchShape: c.batchShape,
        aBatchStride: strides(aBatch, c.m * c.k),
        bBatchStride: strides(bBatch, c.k * c.n),
        transA: c.transA,
        transB: c.transB,
      };
      const out = make(fill(g.batch * c.m * c.n, () => 0));
      matmulKernel(a, b, g, out);
      const want = make(reference(a, b, g, aBatch, bBatch));
      assert.equal(out.length, want.length);
      for (let i = 0; i < out.length; i++) {
        if (!Object.is(out[i], want[i])) {
          assert.fail(`element ${i}: ${out[i]} vs ${want[i]} for ${JSON.stringify(g)}`);
        }
      }
    }),
    { numRuns: 400 },
  );
});

Deno.test("matmulKernel: a larger product with every layout matches the definition", () => {
  const m = 37, k = 70, n = 29;
  let s = 12345;
  const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;
  const a = Float32Array.from({ length: m * k }, rand);
  const b = Float32Array.from({ length: k * n }, rand);
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const g: MatmulGeometry = {
        batch: 1,
        m,
        k,
        n,
        batchShape: [],
        aBatchStride: [],
        bBatchStride: [],
        transA,
        transB,
      };
      const out = new Float32Array(m * n);
      matmulKernel(a, b, g, out);
      assert.deepEqual(out, Float32Array.from(reference(a, b, g, [], [])), `${transA} ${transB}`);
    }
  }
});
