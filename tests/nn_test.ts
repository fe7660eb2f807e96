import assert from "node:assert/strict";
import fc from "./fc.ts";
import { dispose, memory, type Tensor, tensor, tidy, zeros } from "../lib/tensor.ts";
import { intercept } from "../lib/op.ts";
import { grad, valueAndGrad } from "../lib/autodiff.ts";
import { mul } from "../lib/ops/elementwise.ts";
import { sum } from "../lib/ops/reduce.ts";
import { key, split } from "../lib/random.ts";
import {
  crossEntropy,
  dropout,
  embedding,
  embeddingInit,
  kaimingNormal,
  layerNorm,
  layerNormInit,
  linear,
  linearInit,
  mlp,
  mlpInit,
  mse,
  xavierUniform,
} from "../lib/nn/mod.ts";

const values = async (t: Tensor) => Array.from(await t.data());

/** Deterministic pseudo-random numbers in [-scale, scale). */
function numbers(n: number, seed: number, scale = 1): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 * 2 - 1) * scale;
  });
}

function stats(xs: ArrayLike<number>): { mean: number; std: number } {
  const a = Array.from(xs);
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
  return { mean, std: Math.sqrt(variance) };
}

/** The names of the top-level ops `body` calls, with their tags. */
function seenOps(body: () => unknown): string[] {
  const seen: string[] = [];
  tidy(() => {
    intercept((call, inputs, next) => {
      seen.push(`${call.op.name}:${call.op.tags.join(",")}`);
      return next(inputs);
    }, body);
  });
  return seen;
}

/** Central finite differences of a host function of a flat f64 vector. */
function numericGrad(f: (x: number[]) => number, x: number[], h = 1e-6): number[] {
  return x.map((_, i) => {
    const up = x.slice();
    const down = x.slice();
    up[i] += h;
    down[i] -= h;
    return (f(up) - f(down)) / (2 * h);
  });
}

function maxRelErr(got: number[], want: number[]): number {
  return Math.max(...got.map((g, i) => Math.abs(g - want[i]) / Math.max(1e-3, Math.abs(want[i]))));
}

// ---------------------------------------------------------------------------------------------
// Init

Deno.test("kaimingNormal has std ≈ √(2/fanIn); xavierUniform is bounded by √(6/(in+out))", async () => {
  const w = kaimingNormal(key(0), [200, 300], 200);
  const k = stats(await w.data());
  assert.ok(Math.abs(k.mean) < 0.003, `mean ${k.mean}`);
  assert.ok(Math.abs(k.std / Math.sqrt(2 / 200) - 1) < 0.02, `std ${k.std}`);
  const u = xavierUniform(key(1), [200, 300], 200, 300);
  const a = Math.sqrt(6 / 500);
  const data = await u.data();
  assert.ok(data.every((v) => Math.abs(v) <= a));
  const x = stats(data);
  assert.ok(Math.abs(x.std / (a / Math.sqrt(3)) - 1) < 0.02, `std ${x.std}`);
  dispose([w, u]);
  const w16 = kaimingNormal(key(0), [4], 2, { dtype: "bf16" });
  assert.equal(w16.dtype, "bf16");
  w16.dispose();
  assert.throws(() => kaimingNormal(key(0), [2], 0), /fanIn must be a positive integer/);
});

Deno.test("linearInit: w is [in, out], zero bias, dtype and init options", async () => {
  const p = linearInit(key(0), 5, 3);
  assert.deepEqual(p.w.shape, [5, 3]);
  assert.deepEqual(await values(p.b!), [0, 0, 0]);
  const q = linearInit(key(0), 5, 3, { dtype: "f16", init: "xavier", bias: false });
  assert.equal(q.w.dtype, "f16");
  assert.equal(q.b, undefined);
  assert.ok((await q.w.data()).every((v) => Math.abs(v) <= Math.sqrt(6 / 8) + 1e-3));
  assert.throws(() => linearInit(key(0), 2, 2, { init: "he" as never }), /init must be/);
  dispose([p, q]);
});

// ---------------------------------------------------------------------------------------------
// Layers

Deno.test("linear computes x @ w + b as one op tagged matmul", async () => {
  const p = { w: tensor([[1, 2], [3, 4], [5, 6]]), b: tensor([0.5, -1]) };
  const x = tensor([[1, 0, -1], [2, 1, 0]]);
  assert.deepEqual(await linear(p, x).toArray(), [[-3.5, -5], [5.5, 7]]);
  assert.deepEqual(await linear({ w: p.w }, x).toArray(), [[-4, -4], [5, 8]]);
  assert.deepEqual(seenOps(() => linear(p, x)), ["linear:matmul"]);
  assert.throws(() => linear(p, tensor([[1, 2]])), /last dimension must equal the weight's first/);
});

Deno.test("mlp applies the activation between layers only", async () => {
  const layers = [
    { w: tensor([[1, -1]]), b: tensor([0, 0]) },
    { w: tensor([[1], [1]]), b: tensor([-10]) },
  ];
  const x = tensor([[2], [-3]]);
  // relu([2, -2]) = [2, 0] → 2 − 10 = −8 (no relu after the last layer); relu([-3, 3]) → 3 − 10
  assert.deepEqual(await mlp({ layers }, x).toArray(), [[-8], [-7]]);
  // tanh between layers
  const t = await values(mlp({ layers }, x, { activation: "tanh" }));
  assert.ok(Math.abs(t[0] - (Math.tanh(2) + Math.tanh(-2) - 10)) < 1e-6);
  const p = mlpInit(key(3), [6, 5, 4, 2], { dtype: "bf16" });
  assert.equal(p.layers.length, 3);
  assert.deepEqual(p.layers.map((l) => l.w.shape), [[6, 5], [5, 4], [4, 2]]);
  const y = mlp(p, zeros([7, 6], { dtype: "bf16" }), { activation: "gelu" });
  assert.deepEqual([y.shape, y.dtype], [[7, 2], "bf16"]);
  assert.throws(() => mlp(p, x, { activation: "swish" as never }), /activation must be/);
  assert.throws(() => mlpInit(key(0), [3]), /at least \[in, out\]/);
});

function layerNormRef(x: number[], rows: number, d: number, g: number[], b: number[], eps: number) {
  const out: number[] = [];
  for (let r = 0; r < rows; r++) {
    const row = x.slice(r * d, r * d + d);
    const m = row.reduce((s, v) => s + v, 0) / d;
    const v = row.reduce((s, u) => s + (u - m) ** 2, 0) / d;
    row.forEach((u, i) => out.push(((u - m) / Math.sqrt(v + eps)) * g[i] + b[i]));
  }
  return out;
}

Deno.test("layerNorm matches a reference, is one op tagged norm, keeps x's dtype", async () => {
  const xs = numbers(12, 7, 3);
  const g = [1.5, -0.5, 2, 1];
  const b = [0.1, 0.2, -0.3, 0];
  const p = { gamma: tensor(g, { dtype: "f64" }), beta: tensor(b, { dtype: "f64" }) };
  const x = tensor(xs, { dtype: "f64", shape: [3, 4] });
  const want = layerNormRef(xs, 3, 4, g, b, 1e-5);
  assert.ok(maxRelErr(await values(layerNorm(p, x)), want) < 1e-12);
  assert.deepEqual(seenOps(() => layerNorm(p, x)), ["layerNorm:norm"]);
  const init = layerNormInit(4, { dtype: "bf16" });
  const y = layerNorm(init, tensor(xs, { dtype: "bf16", shape: [3, 4] }));
  assert.equal(y.dtype, "bf16");
  const plain = layerNormRef(xs, 3, 4, [1, 1, 1, 1], [0, 0, 0, 0], 1e-5);
  assert.ok(maxRelErr(await values(y), plain) < 2e-2);
  assert.throws(
    () => layerNorm(layerNormInit(5), x),
    /does not match the input's last dimension 4/,
  );
  dispose([p, x, init, y]);
});

Deno.test("layerNorm gradient matches finite differences in f64", async () => {
  const xs = numbers(8, 11, 2);
  const g = [1.2, -0.7, 0.4, 2];
  const b = [0.3, -0.1, 0, 0.5];
  const weights = numbers(8, 5);
  const loss = (p: { x: Tensor; gamma: Tensor; beta: Tensor }) =>
    sum(
      mul(
        layerNorm({ gamma: p.gamma, beta: p.beta }, p.x),
        tensor(weights, { dtype: "f64", shape: [2, 4] }),
      ),
    );
  const params = {
    x: tensor(xs, { dtype: "f64", shape: [2, 4] }),
    gamma: tensor(g, { dtype: "f64" }),
    beta: tensor(b, { dtype: "f64" }),
  };
  const analytic = grad(loss)(params);
  const host = (x: number[], gg: number[], bb: number[]) =>
    layerNormRef(x, 2, 4, gg, bb, 1e-5).reduce((s, v, i) => s + v * weights[i], 0);
  const checks: [Tensor, number[]][] = [
    [analytic.x, numericGrad((v) => host(v, g, b), xs)],
    [analytic.gamma, numericGrad((v) => host(xs, v, b), g)],
    [analytic.beta, numericGrad((v) => host(xs, g, v), b)],
  ];
  for (const [t, want] of checks) assert.ok(maxRelErr(await values(t), want) < 1e-6);
  dispose([params, analytic]);
});

Deno.test("embedding looks up rows and accumulates gradients of repeated ids", async () => {
  const p = { table: tensor([[1, 2], [3, 4], [5, 6]]) };
  const ids = tensor([[2, 0], [2, 2]], { dtype: "i32" });
  assert.deepEqual(await embedding(p, ids).toArray(), [[[5, 6], [1, 2]], [[5, 6], [5, 6]]]);
  const g = grad((q: typeof p) => sum(embedding(q, ids)))(p);
  assert.deepEqual(await g.table.toArray(), [[1, 1], [0, 0], [3, 3]]);
  const e = embeddingInit(key(0), 10, 4, { dtype: "f16" });
  assert.deepEqual([e.table.shape, e.table.dtype], [[10, 4], "f16"]);
  assert.throws(() => embeddingInit(key(0), 0, 4), /vocab must be a positive integer/);
  dispose([p, ids, g, e]);
});

Deno.test("dropout keeps the expected value: kept entries scale by 1/(1−rate)", async () => {
  const x = tensor(new Float32Array(20000).fill(1));
  assert.equal(dropout(key(0), x, 0), x);
  const rate = 0.3;
  const y = await values(dropout(key(1), x, rate));
  const kept = y.filter((v) => v !== 0);
  assert.ok(kept.every((v) => v === Math.fround(1 / 0.7)));
  const dropped = 1 - kept.length / y.length;
  assert.ok(Math.abs(dropped - rate) < 0.015, `dropped fraction ${dropped}`);
  assert.ok(Math.abs(stats(y).mean - 1) < 0.03);
  // Different keys drop different entries; the same key is reproducible.
  assert.notDeepEqual(await values(dropout(key(2), x, rate)), y);
  assert.deepEqual(await values(dropout(key(1), x, rate)), y);
  assert.deepEqual(await values(dropout(key(1), tensor([1, 2]), 1)), [0, 0]);
  // The gradient flows through kept entries only, with the same scale.
  const small = tensor([1, 2, 3, 4, 5, 6]);
  const [k] = split(key(4), 1);
  const out = await values(dropout(k, small, 0.5));
  const g = await values(grad((v: Tensor) => sum(dropout(k, v, 0.5)))(small));
  assert.deepEqual(g, out.map((v) => (v === 0 ? 0 : 2)));
  assert.throws(() => dropout(key(0), x, 1.5), /rate must be a number in \[0, 1\]/);
});

// ---------------------------------------------------------------------------------------------
// Losses

function crossEntropyRef(logits: number[], labels: number[], classes: number): number {
  let total = 0;
  labels.forEach((y, r) => {
    const row = logits.slice(r * classes, r * classes + classes);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    total += lse - row[y];
  });
  return total / labels.length;
}

Deno.test("crossEntropy matches a naive f64 reference and is one op tagged loss", async () => {
  const logits = numbers(15, 3, 4);
  const labels = [4, 0, 2];
  const lt = tensor(logits, { dtype: "f64", shape: [3, 5] });
  const yt = tensor(labels, { dtype: "i32" });
  const loss = crossEntropy(lt, yt);
  assert.deepEqual([loss.shape, loss.dtype], [[], "f64"]);
  assert.ok(Math.abs((await loss.item()) - crossEntropyRef(logits, labels, 5)) < 1e-14);
  assert.deepEqual(seenOps(() => crossEntropy(lt, yt)), ["crossEntropy:loss"]);
  // Any leading shape: labels [2, 3] for logits [2, 3, 5] average over all 6 positions.
  const big = numbers(30, 9, 3);
  const bigLabels = [0, 1, 2, 3, 4, 0];
  const l2 = crossEntropy(
    tensor(big, { dtype: "f64", shape: [2, 3, 5] }),
    tensor(bigLabels, { dtype: "i32", shape: [2, 3] }),
  );
  assert.ok(Math.abs((await l2.item()) - crossEntropyRef(big, bigLabels, 5)) < 1e-14);
  // Stable for huge logits.
  const huge = crossEntropy(tensor([[1000, 0], [0, -1000]]), tensor([1, 1], { dtype: "i32" }));
  assert.ok(Math.abs((await huge.item()) - 1000) < 1e-3);
});

Deno.test("crossEntropy gradient matches finite differences in f64 (rel err < 1e-6)", async () => {
  const logits = numbers(12, 21, 3);
  const labels = [1, 3, 0];
  const yt = tensor(labels, { dtype: "i32" });
  const g = grad((l: Tensor) => crossEntropy(l, yt))(
    tensor(logits, { dtype: "f64", shape: [3, 4] }),
  );
  const want = numericGrad((v) => crossEntropyRef(v, labels, 4), logits);
  const err = maxRelErr(await values(g), want);
  assert.ok(err < 1e-6, `rel err ${err}`);
  // And against the closed form (softmax − onehot) / batch.
  const closed = logits.map((_, i) => {
    const r = Math.floor(i / 4);
    const row = logits.slice(r * 4, r * 4 + 4);
    const z = row.reduce((s, v) => s + Math.exp(v), 0);
    return (Math.exp(logits[i]) / z - (i % 4 === labels[r] ? 1 : 0)) / 3;
  });
  assert.ok(maxRelErr(await values(g), closed) < 1e-12);
});

Deno.test("crossEntropy of f16/bf16 logits returns f32, close to the reference", async () => {
  const logits = numbers(20, 5, 5);
  const labels = [0, 3, 1, 2];
  const yt = tensor(labels, { dtype: "i32" });
  for (const dtype of ["f16", "bf16", "f32"] as const) {
    const lt = tensor(logits, { dtype, shape: [4, 5] });
    const loss = crossEntropy(lt, yt);
    assert.equal(loss.dtype, "f32", dtype);
    const rounded = Array.from(await lt.data());
    assert.ok(Math.abs((await loss.item()) - crossEntropyRef(rounded, labels, 5)) < 1e-5, dtype);
    const g = grad((l: Tensor) => crossEntropy(l, yt))(lt);
    assert.equal(g.dtype, dtype);
  }
  assert.throws(
    () => crossEntropy(tensor([[1, 2]]), tensor([0])),
    /labels must be integer class ids/,
  );
  assert.throws(
    () => crossEntropy(tensor([[1, 2]]), tensor([0, 1], { dtype: "i32" })),
    /labels must have the logits' shape without the last/,
  );
});

Deno.test("property: crossEntropy matches the reference for random logits and labels", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 2, max: 6 }),
      fc.integer({ min: 0, max: 2 ** 31 }),
      async (rows, classes, seed) => {
        const logits = numbers(rows * classes, seed, 10);
        const labels = numbers(rows, seed + 1).map((v) =>
          Math.floor((v + 1) / 2 * classes) % classes
        );
        const [lt, yt] = [
          tensor(logits, { dtype: "f64", shape: [rows, classes] }),
          tensor(labels, { dtype: "i32" }),
        ];
        const loss = crossEntropy(lt, yt);
        const got = await loss.item();
        dispose([lt, yt, loss]);
        return Math.abs(got - crossEntropyRef(logits, labels, classes)) < 1e-12 && got >= 0;
      },
    ),
    { numRuns: 50 },
  );
});

Deno.test("mse: mean squared error in f32, its gradient, and one op tagged loss", async () => {
  const pred = tensor([1, 2, 3, 4], { dtype: "f16" });
  const target = tensor([0, 2, 5, 1], { dtype: "f16" });
  const loss = mse(pred, target);
  assert.deepEqual([loss.dtype, await loss.item()], ["f32", (1 + 0 + 4 + 9) / 4]);
  assert.deepEqual(seenOps(() => mse(pred, target)), ["mse:loss"]);
  const g = grad((p: Tensor) => mse(p, target))(pred);
  assert.deepEqual([g.dtype, await values(g)], ["f16", [0.5, 0, -1, 1.5]]);
  assert.throws(
    () => mse(pred, tensor([1, 2])),
    /pred of shape \[4\] and target of shape \[2\] differ/,
  );
});

Deno.test("a training loss and its gradient free every intermediate", () => {
  const p = mlpInit(key(0), [8, 16, 4]);
  const x = tensor(numbers(40, 1), { shape: [5, 8] });
  const y = tensor([0, 1, 2, 3, 0], { dtype: "i32" });
  const f = (q: typeof p) => crossEntropy(layerNorm(layerNormInit(4), mlp(q, x)), y);
  const run = () => {
    const [loss, g] = valueAndGrad(f)(p);
    dispose([loss, g]);
  };
  run();
  const before = memory();
  for (let i = 0; i < 5; i++) run();
  assert.equal(memory().tensors, before.tensors);
  assert.equal(memory().bytes, before.bytes);
  dispose([p, x, y]);
});
