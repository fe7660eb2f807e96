/**
 * Composite ops (softmax, logSoftmax, logsumexp, gelu, mean) behave like single ops in narrow
 * dtypes: they compute in f32 and round once, so an f16/bf16 result equals the f32 result
 * rounded once (checked with Math.f16round and the bf16 bit trick, independent of lib/dtype.ts).
 * Also: f32 gelu keeps its relative accuracy in the negative tail, where 1 + tanh(u) cancels.
 */
import assert from "node:assert/strict";
import type { DType } from "../lib/dtype.ts";
import { type Tensor, tensor } from "../lib/tensor.ts";
import { astype, gelu, logSoftmax, logsumexp, mean, softmax } from "../lib/ops/mod.ts";

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** Round an f32 value to bf16 (RNE on the f32 bits; NaN stays NaN). */
function bf16(v: number): number {
  if (v !== v) return NaN;
  F32[0] = v;
  const u = U32[0];
  U32[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16;
  return F32[0];
}

const ORACLES: [DType, (v: number) => number][] = [["f16", Math.f16round], ["bf16", bf16]];

const COMPOSITES: [string, (x: Tensor) => Tensor][] = [
  ["softmax", (x) => softmax(x)],
  ["softmax axis 0", (x) => softmax(x, 0)],
  ["logSoftmax", (x) => logSoftmax(x, 1)],
  ["logsumexp", (x) => logsumexp(x, 1)],
  ["logsumexp all", (x) => logsumexp(x)],
  ["gelu", (x) => gelu(x)],
  ["mean", (x) => mean(x, 0)],
  ["mean all", (x) => mean(x)],
];

// Values whose f16/bf16 composites round differently from a chain of rounded steps.
const X = [
  [0.1, -2.3, 3.7, 0.45, -0.8, 1.9, 2.2, -3.1],
  [5.5, 5.25, -0.3, 1.1, 0.77, -1.6, 4.4, 2.05],
  [-7.5, 0.33, 0.66, -0.05, 3.3, 2.9, -4.2, 1.3],
];

Deno.test("composites in f16/bf16 equal the f32 result rounded once", async () => {
  for (const [dtype, round] of ORACLES) {
    const x = tensor(X, { dtype });
    const x32 = tensor(await x.data(), { shape: [3, 8] }); // the same (rounded) inputs in f32
    for (const [name, f] of COMPOSITES) {
      const y = f(x);
      assert.equal(y.dtype, dtype, `${name} keeps ${dtype}`);
      const want = Array.from(await f(x32).data(), round);
      assert.deepEqual(Array.from(await y.data()), want, `${name} ${dtype}`);
    }
  }
});

Deno.test("composites in fp8 equal the f32 result cast once", async () => {
  for (const dtype of ["f8e4m3", "f8e5m2"] as const) {
    const x = tensor(X, { dtype });
    const x32 = tensor(await x.data(), { shape: [3, 8] });
    for (const [name, f] of COMPOSITES) {
      const y = f(x);
      assert.equal(y.dtype, dtype);
      const want = await astype(f(x32), dtype).data();
      assert.deepEqual(await y.data(), want, `${name} ${dtype}`);
    }
  }
});

Deno.test("gelu in f32 stays relatively accurate in the negative tail", async () => {
  const xs = [-6, -5.5, -5, -4.5, -4, -3.5, -3, -2, -1, -0.5, 0.5, 1, 3];
  const ref = (x: number) =>
    0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  // Reference in f64 through the sigmoid form (no cancellation): 0.5·(1 + tanh u) = σ(2u).
  const stable = (x: number) =>
    x / (1 + Math.exp(-2 * Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  const got = await gelu(tensor(xs)).data();
  xs.forEach((x, i) => {
    const want = stable(Math.fround(x));
    // The identity holds; the tanh form itself cancels in f64 beyond |x| ≈ 3.
    if (Math.abs(x) <= 3) assert.ok(Math.abs(ref(x) - want) <= 1e-12 * Math.abs(want));
    const rel = Math.abs(got[i] - want) / Math.abs(want);
    assert.ok(rel < 1e-5, `gelu(${x}) = ${got[i]}, want ${want} (relative error ${rel})`);
  });
});
