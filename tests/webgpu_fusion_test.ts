/**
 * WebGPU kernels that fold work into another kernel, each bitwise equal to the unfolded kernels
 * on the same device: a matmul that rounds an f32 operand to f16/bf16 while loading it
 * (`MatmulGeometry.aCast`/`bCast`) against cast-then-matmul, and a fused kernel with a
 * reduction (`FusedKernel.reduce`) against the fused elementwise kernel followed by the eager
 * reduce kernel, and a matmul with an elementwise epilogue (`matmulFused`) against the matmul
 * followed by the fused kernel.
 */
import nodeAssert from "node:assert/strict";
import fc from "./fc.ts";
import { type DType, encode } from "../lib/dtype.ts";
import type { Handle, MatmulGeometry, ReduceOp, View } from "../lib/backend/backend.ts";
import type { FusedKernel, FusedOp } from "../lib/backend/fused.ts";
import { SPECIAL } from "./elementwise_graphs.ts";
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
    // Without shader-f16 (wgpu's GL backend) each further pipeline of this family compiled ever
    // more slowly in one process (10 s, then 50 s, by the 14th case), so GL runs fewer cases.
    { numRuns: g.features.shaderF16 ? 25 : 8 },
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

// ---------------------------------------------------------------------------------------------
// Fused kernels with a reduction

const inp = (index: number) => ({ kind: "input", index }) as const;
const op = (index: number) => ({ kind: "op", index }) as const;
const imm = (index: number) => ({ kind: "imm", index }) as const;

/**
 * Prologue chains like those of a train step: [ops, index of the reduced op, side outputs].
 * Input 0 has dtype `d`, input 1 is f32; immediate 0 is an f32.
 */
function chain(t: number, d: DType): [FusedOp[], number, number[]] {
  switch (t) {
    case 0: // gradScale's finite check: isfinite(f32(g) * inv) → all, the unscaled grad kept
      return [
        [
          { op: "cast", x: inp(0), dtype: "f32" },
          { op: "binary", kind: "mul", a: op(0), b: imm(0), dtype: "f32" },
          { op: "unary", kind: "isfinite", x: op(1), dtype: "bool" },
        ],
        2,
        [1],
      ];
    case 1: // softmax's exp(x - y) → sum
      return [
        [
          { op: "binary", kind: "sub", a: inp(0), b: inp(1), dtype: "f32" },
          { op: "unary", kind: "exp", x: op(0), dtype: "f32" },
        ],
        1,
        [],
      ];
    case 2: // a norm's abs → max, in the input dtype
      return [[{ op: "unary", kind: "abs", x: inp(0), dtype: d }], 0, []];
    case 3: // a dot product x*y → sum, the product kept
      return [[{ op: "binary", kind: "mul", a: inp(0), b: inp(1), dtype: "f32" }], 0, [0]];
    default: // where(x == y, x, c) cast to i32 → sum, the f32 select kept
      return [
        [
          { op: "binary", kind: "equal", a: inp(0), b: inp(1), dtype: "bool" },
          { op: "where", c: op(0), a: inp(1), b: imm(0), dtype: "f32" },
          { op: "cast", x: op(1), dtype: "i32" },
        ],
        2,
        [1],
      ];
  }
}

gtest("fused reduce ≡ fused kernel then eager reduce, bitwise (property)", async (g) => {
  nodeAssert.equal(g.fusedReduce, true);
  // Finite values, with at most two special ones (NaN, ±Inf, ±0, …) at random places: a NaN
  // in every sum would hide a wrong value.
  const vals = fc.oneof(
    fc.float({ min: -100, max: 100, noNaN: true, noDefaultInfinity: true }),
    fc.integer({ min: -4, max: 4 }),
  );
  const specials = fc.array(
    fc.record({ at: fc.nat(), v: fc.constantFrom(...SPECIAL) }),
    { maxLength: 2 },
  );
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        t: fc.integer({ min: 0, max: 4 }),
        d: fc.constantFrom<DType>("f32", "f16", "bf16"),
        red: fc.constantFrom<ReduceOp>("sum", "max", "min", "argmax", "argmin", "all", "any"),
        out: fc.constantFrom<DType>("f32", "f16", "i32", "bool"),
        outer: fc.integer({ min: 1, max: 4 }),
        reduce: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 60, max: 600 })),
        inner: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 5 })),
        c: fc.constantFrom(0.5, 3, 1e-3, Infinity),
        seed: fc.integer({ min: 0, max: 1000 }),
      }),
      fc.array(vals, { minLength: 64, maxLength: 64 }),
      specials,
      async (c, pool, sp) => {
        const [ops, x, side] = chain(c.t, c.d);
        const size = c.outer * c.reduce * c.inner;
        const outDtype: DType = c.red === "argmax" || c.red === "argmin"
          ? "i32"
          : c.red === "all" || c.red === "any"
          ? "bool"
          : c.out === "bool" || c.out === "i32"
          ? (ops[x].dtype === "i32" || ops[x].dtype === "bool" ? "i32" : "f32")
          : c.out;
        const pick = (i: number, s: number) => pool[(i * 7 + s * 13 + c.seed) % pool.length];
        const v0 = Array.from({ length: size }, (_, i) => pick(i, 1));
        for (const { at, v } of sp) v0[at % size] = v;
        const v1 = Array.from({ length: size }, (_, i) => (i % 3 ? pick(i, 2) : v0[i]));
        const h0 = g.upload(c.d, encode(c.d, v0));
        const h1 = g.upload("f32", new Float32Array(v1));
        const views: View[] = [
          { h: h0, dtype: c.d, size, shape: [size], strides: [1], offset: 0 },
          { h: h1, dtype: "f32", size, shape: [size], strides: [1], offset: 0 },
        ];
        const base: FusedKernel = {
          shape: [size],
          size,
          inputs: [c.d, "f32"],
          immediates: [{ value: c.c, dtype: "f32" }],
          ops,
          outputs: side,
        };
        const k: FusedKernel = {
          ...base,
          reduce: {
            op: c.red,
            x,
            outer: c.outer,
            reduce: c.reduce,
            inner: c.inner,
            dtype: outDtype,
          },
        };
        const got = g.fused!(k, views);
        const ref = g.fused!({ ...base, outputs: [...side, x] }, views);
        const xr = ref[side.length];
        const want = g.reduce(
          c.red,
          { h: xr, dtype: ops[x].dtype, size },
          c.outer,
          c.reduce,
          c.inner,
          outDtype,
        );
        const what = JSON.stringify(c);
        for (let j = 0; j < side.length; j++) {
          const d = ops[side[j]].dtype;
          assertEquals(await bits(g, got[j], d, size), await bits(g, ref[j], d, size), what);
        }
        const n = c.outer * c.inner;
        assertEquals(
          await bits(g, got[side.length], outDtype, n),
          await bits(g, want, outDtype, n),
          what,
        );
        for (const h of [h0, h1, ...got, ...ref, want]) g.free(h, "f32", 0);
      },
    ),
    { numRuns: 40 },
  );
});

// ---------------------------------------------------------------------------------------------
// Matmul epilogues

/**
 * Epilogues like those of a train step over a `[m, n]` product (input 0) of dtype `d`, with
 * input 1 a bias of `n` (dtype `d`, broadcast over rows) and input 2 an f32 `[m, n]`.
 */
function epilogue(t: number, d: DType): FusedOp[] {
  switch (t) {
    case 0: // bias + relu, the pre-activation kept
      return [
        { op: "binary", kind: "add", a: inp(0), b: inp(1), dtype: d },
        { op: "unary", kind: "relu", x: op(0), dtype: d },
      ];
    case 1: // logits: bias add, then f32
      return [
        { op: "binary", kind: "add", a: inp(0), b: inp(1), dtype: d },
        { op: "cast", x: op(0), dtype: "f32" },
      ];
    case 2: // relu backward: where(a > 0, product, 0)
      return [
        { op: "binary", kind: "greater", a: inp(2), b: imm(0), dtype: "bool" },
        { op: "where", c: op(0), a: inp(0), b: imm(0), dtype: d },
      ];
    default: // the product itself, and a scaled copy in bf16
      return [
        { op: "cast", x: inp(0), dtype: d },
        { op: "binary", kind: "mul", a: inp(0), b: imm(1), dtype: "bf16" },
      ];
  }
}

gtest("matmul epilogue ≡ matmul then fused kernel, bitwise (property)", async (g) => {
  nodeAssert.equal(typeof g.matmulFused, "function");
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        m: fc.integer({ min: 1, max: 70 }),
        k: fc.integer({ min: 0, max: 24 }),
        n: fc.oneof(fc.integer({ min: 1, max: 70 }), fc.constantFrom(4, 8, 32, 68)),
        t: fc.integer({ min: 0, max: 3 }),
        d: fc.constantFrom<DType>("f32", "f16", "bf16"),
        both: fc.boolean(),
        transB: fc.boolean(),
        seed: fc.nat(1000),
      }),
      async (c) => {
        const val = (i: number, s: number) => {
          const k = (i * 31 + s * 17 + c.seed) % 89;
          return k === 3 ? SPECIAL[(i + s) % SPECIAL.length] : (k - 44) / 8;
        };
        const arr = (n: number, s: number) => Array.from({ length: n }, (_, i) => val(i, s));
        const size = c.m * c.n;
        const ha = g.upload(c.d, encode(c.d, arr(c.m * c.k, 1)));
        const hb = g.upload(c.d, encode(c.d, arr(c.k * c.n, 2)));
        const hbias = g.upload(c.d, encode(c.d, arr(c.n, 3)));
        const hz = g.upload("f32", new Float32Array(arr(size, 4)));
        const geo: MatmulGeometry = {
          batch: 1,
          m: c.m,
          k: c.k,
          n: c.n,
          aBatchStride: [],
          bBatchStride: [],
          batchShape: [],
          transA: false,
          transB: c.transB,
        };
        const ops = epilogue(c.t, c.d);
        const k: FusedKernel = {
          shape: [size],
          size,
          inputs: [c.d, c.d, "f32"],
          immediates: [{ value: 0, dtype: "f32" }, { value: 0.375, dtype: "f32" }],
          ops,
          outputs: c.both ? [0, 1] : [1],
        };
        const views: View[] = [
          { h: hbias, dtype: c.d, size: c.n, shape: [c.m, c.n], strides: [0, 1], offset: 0 },
          { h: hz, dtype: "f32", size, shape: [c.m, c.n], strides: [c.n, 1], offset: 0 },
        ];
        const a = { h: ha, dtype: c.d, size: c.m * c.k };
        const b = { h: hb, dtype: c.d, size: c.k * c.n };
        const got = g.matmulFused!(a, b, geo, c.d, k, views);
        const p = g.matmul(a, b, geo, c.d);
        const pv: View = { h: p, dtype: c.d, size, shape: [size], strides: [1], offset: 0 };
        const want = g.fused!(k, [pv, ...views]);
        for (let j = 0; j < k.outputs.length; j++) {
          const d = ops[k.outputs[j]].dtype;
          assertEquals(
            await bits(g, got[j], d, size),
            await bits(g, want[j], d, size),
            `${JSON.stringify(c)} output ${j}`,
          );
        }
        for (const h of [ha, hb, hbias, hz, p, ...got, ...want]) g.free(h, "f32", 0);
      },
    ),
    { numRuns: g.features.shaderF16 ? 16 : 6 }, // GL: see the matmul-cast property above
  );
});
