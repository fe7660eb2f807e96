/**
 * WebGPU kernels that fold work into another kernel, each bitwise equal to the unfolded kernels
 * on the same device: a matmul that rounds an f32 operand to f16/bf16 while loading it
 * (`MatmulGeometry.aCast`/`bCast`) against cast-then-matmul.
 */
import nodeAssert from "node:assert/strict";
import fc from "./fc.ts";
import type { DType } from "../lib/dtype.ts";
import type { Handle, MatmulGeometry } from "../lib/backend/backend.ts";
import type { WebGPUBackend } from "../lib/backend/webgpu/webgpu.ts";
import { gtest } from "./webgpu_setup.ts";

const assertEquals = (a: unknown, b: unknown, msg?: string) =>
  nodeAssert.deepStrictEqual(a, b, msg);

/**
 * f32 values dense in rounding ties of f16 and bf16 (a 16-bit integer times a power of two),
 * with f16 overflow, f16 and f32 subnormals, signed zeros and infinities mixed in.
 */
const valueArb = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.tuple(fc.integer({ min: -65535, max: 65535 }), fc.integer({ min: -40, max: 0 }))
      .map(([m, e]) => m * 2 ** e),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      0,
      -0,
      65520,
      -65520,
      65519,
      2 ** -24,
      3 * 2 ** -25,
      1e-40,
      Infinity,
      -Infinity,
      1 + 2 ** -11,
      1 + 2 ** -8,
    ),
  },
);

/** Bits of a buffer of `n` elements. */
async function bits(g: WebGPUBackend, h: Handle, dtype: DType, n: number): Promise<number[]> {
  return Array.from(await g.read({ h, dtype, size: n }));
}

gtest("matmul aCast/bCast ≡ cast then matmul, bitwise (property)", async (g) => {
  nodeAssert.equal(g.matmulCasts, true);
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        m: fc.integer({ min: 1, max: 70 }),
        k: fc.integer({ min: 1, max: 40 }),
        n: fc.integer({ min: 1, max: 70 }),
        transA: fc.boolean(),
        transB: fc.boolean(),
        aCast: fc.constantFrom<DType | undefined>("f16", "bf16", undefined),
        bCast: fc.constantFrom<DType | undefined>("f16", "bf16", undefined),
        out: fc.constantFrom<DType>("f32", "f16", "bf16"),
      }).chain((c) =>
        fc.record({
          c: fc.constant(c),
          a: fc.array(valueArb, { minLength: c.m * c.k, maxLength: c.m * c.k }),
          b: fc.array(valueArb, { minLength: c.k * c.n, maxLength: c.k * c.n }),
        })
      ),
      async ({ c, a, b }) => {
        const geo: MatmulGeometry = {
          batch: 1,
          m: c.m,
          k: c.k,
          n: c.n,
          aBatchStride: [],
          bBatchStride: [],
          batchShape: [],
          transA: c.transA,
          transB: c.transB,
        };
        const ha = g.upload("f32", new Float32Array(a));
        const hb = g.upload("f32", new Float32Array(b));
        const folded = g.matmul(
          { h: ha, dtype: "f32", size: a.length },
          { h: hb, dtype: "f32", size: b.length },
          { ...geo, aCast: c.aCast, bCast: c.bCast },
          c.out,
        );
        const ca = c.aCast ? g.cast({ h: ha, dtype: "f32", size: a.length }, c.aCast) : ha;
        const cb = c.bCast ? g.cast({ h: hb, dtype: "f32", size: b.length }, c.bCast) : hb;
        const ref = g.matmul(
          { h: ca, dtype: c.aCast ?? "f32", size: a.length },
          { h: cb, dtype: c.bCast ?? "f32", size: b.length },
          geo,
          c.out,
        );
        const n = c.m * c.n;
        assertEquals(
          await bits(g, folded, c.out, n),
          await bits(g, ref, c.out, n),
          JSON.stringify(c),
        );
        for (const h of new Set([ha, hb, ca, cb, folded, ref])) g.free(h, "f32", 0);
      },
    ),
    { numRuns: 25 },
  );
});

gtest("matmul aCast: a clear error for a non-f32 operand or a non-f16/bf16 target", (g) => {
  const h = g.upload("f16", new Uint16Array(4));
  const f = g.upload("f32", new Float32Array(4));
  const geo: MatmulGeometry = {
    batch: 1,
    m: 2,
    k: 2,
    n: 2,
    aBatchStride: [],
    bBatchStride: [],
    batchShape: [],
    transA: false,
    transB: false,
  };
  const x = { h, dtype: "f16" as const, size: 4 };
  const y = { h: f, dtype: "f32" as const, size: 4 };
  nodeAssert.throws(() => g.matmul(x, y, { ...geo, aCast: "bf16" }, "f32"), /aCast.*f16 operand/);
  nodeAssert.throws(() => g.matmul(y, y, { ...geo, bCast: "f8e4m3" }, "f32"), /bCast f8e4m3/);
  g.free(h, "f16", 4);
  g.free(f, "f32", 4);
});
