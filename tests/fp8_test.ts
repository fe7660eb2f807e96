import assert from "node:assert/strict";
import fc from "./fc.ts";
import { roundTo } from "../lib/dtype.ts";
import { dispose, full, memory, ones, type Tensor, tensor, zeros } from "../lib/tensor.ts";
import { leaves } from "../lib/tree.ts";
import { intercept } from "../lib/op.ts";
import * as random from "../lib/random.ts";
import { astype, div, matmul, mul, sum } from "../lib/ops/mod.ts";
import { disposeReplaced, pipe, type Step, type TrainState, trainStep } from "../lib/train.ts";
import type { MlpParams } from "../lib/nn/mod.ts";
import { sgd } from "../lib/optim/mod.ts";
import { encodeState, loadState } from "../lib/checkpoint.ts";
import { precision, presetNames } from "../plugins/presets.ts";
import { gradScale } from "../plugins/grad_scale.ts";
import {
  fakeQuantize,
  FP8,
  fp8,
  FP8_ROLES,
  type Fp8DType,
  type Fp8State,
  updateFp8Scale,
} from "../plugins/fp8.ts";
import { type Batch, tinyMlp } from "./tiny_mlp.ts";

// ---------------------------------------------------------------------------------------------
// helpers

const fp8Of = (s: TrainState) => s.plugins[FP8] as Fp8State;

/** Raw bits of every tensor leaf, for bitwise comparisons. */
async function bitsOf(tree: unknown): Promise<number[][]> {
  return await Promise.all(leaves(tree).map(async (t) => Array.from(await t.bits())));
}

/** f32 values as numbers, compared with Object.is (NaN equals NaN, −0 differs from 0). */
async function valuesOf(t: Tensor): Promise<number[]> {
  return Array.from(await t.data());
}

/** The host reference of fake quantization: one f32 multiply, one saturating RNE, one divide. */
function hostFakeQuantize(x: number, s: number, d: Fp8DType): number {
  const q = roundTo(d, Math.fround(Math.fround(x) * s), { saturate: true });
  return Math.fround(q / s);
}

const { batch, params, loss, base } = tinyMlp(7);

/** Run `steps` steps, returning the losses and the final state (intermediates freed). */
async function train(step: Step<Batch>, steps: number, start?: TrainState) {
  let state = start ?? step.init(params);
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    const [next, m] = step(state, batch);
    losses.push(await m.loss.item());
    dispose(m);
    if (i > 0 || start) disposeReplaced(state, next, params);
    state = next;
  }
  return { state, losses };
}

// ---------------------------------------------------------------------------------------------
// fakeQuantize

Deno.test("fakeQuantize: equals astype(astype(x·s, fp8, saturate), f32) / s, bitwise", async () => {
  const f32 = fc.float({ noDefaultInfinity: false });
  const scale = fc.float({ min: 2 ** -20, max: 2 ** 20, noNaN: true });
  await fc.assert(
    fc.asyncProperty(
      fc.array(f32, { minLength: 1, maxLength: 40 }),
      scale,
      fc.constantFrom<Fp8DType>("f8e4m3", "f8e5m2"),
      async (xs, s, d) => {
        const x = tensor(xs);
        const st = full([], s);
        const got = await valuesOf(fakeQuantize(x, st, d));
        const viaOps = div(astype(astype(mul(x, st), d, { saturate: true }), "f32"), st);
        assert.deepEqual(await bitsOf(fakeQuantize(x, st, d)), await bitsOf(viaOps));
        xs.forEach((v, i) => {
          const want = hostFakeQuantize(v, s, d);
          assert.ok(Object.is(got[i], want), `${d} x=${v} s=${s}: ${got[i]} vs ${want}`);
        });
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("fakeQuantize: saturates, keeps NaN, keeps the input dtype", async () => {
  const x = tensor([0.3, 1000, -1e30, Infinity, NaN, 0.35]);
  assert.deepEqual(await valuesOf(fakeQuantize(x, 2, "f8e4m3")), [
    0.3125,
    224,
    -224,
    224,
    NaN,
    0.34375,
  ]);
  assert.deepEqual(await valuesOf(fakeQuantize(x, 1, "f8e5m2")), [
    0.3125,
    1024,
    -57344,
    57344,
    NaN,
    0.375,
  ]);
  const h = fakeQuantize(tensor([1.1, 3], { dtype: "bf16" }), 3, "f8e4m3");
  assert.equal(h.dtype, "bf16");
  assert.throws(() => fakeQuantize(x, 1, "f16" as Fp8DType), /"f8e4m3" or "f8e5m2"/);
});

// ---------------------------------------------------------------------------------------------
// updateFp8Scale

Deno.test("updateFp8Scale: TE's update on a hand sequence (keep on 0/NaN, roll)", async () => {
  // One slot, a window of 3, fp8 max 448: [amax this step, scale after, history after].
  const steps: [number, number, number[]][] = [
    [0, 1, [0, 0, 0]], // amax 0: keep the initial scale 1
    [2, 224, [0, 0, 2]], // 448 / 2; history[0] = 2, rolled to the end
    [0, 224, [0, 2, 0]], // window max still 2
    [4, 112, [0, 0, 4]],
    [1, 112, [0, 4, 1]], // 4 is still in the window
    [1, 112, [0, 1, 1]], // window [1, 4, 1]: 4 leaves after this step
    [1, 448, [0, 1, 1]],
    [NaN, 448, [0, 1, NaN]], // NaN: keep the old scale
    [1, 448, [0, NaN, 1]], // NaN still in the window: keep
    [2, 448, [0, 1, 2]], // window [2, NaN, 1]: keep
    [0.5, 224, [0, 2, 0.5]], // NaN gone: 448 / 2
    [Infinity, 224, [0, 0.5, Infinity]], // Inf: keep
  ];
  let s = { amaxHistory: zeros([3, 1]), scale: ones([1]) };
  for (const [amax, scale, history] of steps) {
    s = updateFp8Scale(s, tensor([amax]), { fp8Max: 448 });
    assert.deepEqual(await valuesOf(s.scale), [scale], `amax ${amax}`);
    assert.deepEqual(await valuesOf(s.amaxHistory), history, `amax ${amax}`);
  }
});

Deno.test("updateFp8Scale: most_recent, margin, length 1, per-column maxima", async () => {
  const h = tensor([[0], [8]]);
  const recent = updateFp8Scale({ amaxHistory: h, scale: ones([1]) }, tensor([2]), {
    fp8Max: 448,
    amaxComputeAlgo: "most_recent",
  });
  assert.deepEqual(await valuesOf(recent.scale), [224]); // 8 is ignored
  assert.deepEqual(await valuesOf(recent.amaxHistory), [0, 2]);
  const margin = updateFp8Scale({ amaxHistory: h, scale: ones([1]) }, tensor([2]), {
    fp8Max: 448,
    margin: 2,
  });
  assert.deepEqual(await valuesOf(margin.scale), [14]); // 448 / 8 / 4
  const one = updateFp8Scale({ amaxHistory: zeros([1, 2]), scale: ones([2]) }, tensor([4, 0]), {
    fp8Max: tensor([448, 57344]),
  });
  assert.deepEqual(await valuesOf(one.scale), [112, 1]);
  assert.deepEqual(await valuesOf(one.amaxHistory), [0, 0]);
  const tiny = updateFp8Scale({ amaxHistory: zeros([1, 1]), scale: ones([1]) }, tensor([1e-44]), {
    fp8Max: 448,
  });
  assert.deepEqual(await valuesOf(tiny.scale), [3.4028234663852886e38]); // clamped to f32 max
  assert.throws(
    () =>
      updateFp8Scale({ amaxHistory: zeros([2, 3]), scale: ones([2]) }, ones([2]), {
        fp8Max: 448,
      }),
    /must have the scale's shape/,
  );
});

// ---------------------------------------------------------------------------------------------
// The plugin on a one-weight model

/** loss = sum(x @ w · c): its output cotangent is c. */
const tiny = (p: { w: Tensor }, b: { x: Tensor; c: Tensor }) => sum(mul(matmul(b.x, p.w), b.c));

Deno.test("fp8: the scale used at step t comes from the amaxes up to t−1 (delayed)", async () => {
  const step = pipe(trainStep({ loss: tiny, optimizer: sgd({ lr: 0 }) }), fp8());
  const c = tensor([[1]]);
  let state = step.init({ w: tensor([[1]]) });
  assert.deepEqual(fp8Of(state).scale.shape, [16, 3]);
  assert.deepEqual(fp8Of(state).amaxHistory.shape, [16, 16, 3]);
  const losses: number[] = [];
  const inputScales: number[] = [];
  for (const x of [2, 1000, 1000]) {
    const [next, m] = step(state, { x: tensor([[x]]), c });
    losses.push(await m.loss.item());
    state = next;
    inputScales.push((await valuesOf(fp8Of(state).scale))[0]);
  }
  // Step 0 quantizes with the initial scale 1 (2 is exact), then scale = 448 / 2.
  // Step 1 quantizes 1000 with 224 from step 0: 224000 saturates to 448, dequantized to 2.
  // A current (non-delayed) scale would have given 1000. Then the window max is 1000.
  // Step 2 quantizes 1000 with 0.448: 448 / 0.448 ≈ 1000.
  assert.deepEqual(losses.slice(0, 2), [2, 2]);
  assert.ok(Math.abs(losses[2] - 1000) < 1e-3, `${losses[2]}`);
  assert.deepEqual(inputScales, [224, Math.fround(448 / 1000), Math.fround(448 / 1000)]);
  const s = await valuesOf(fp8Of(state).scale);
  assert.deepEqual([...FP8_ROLES], ["input", "weight", "gradOutput"]); // the last axis
  assert.deepEqual(s.slice(0, 3), [Math.fround(448 / 1000), 448, 57344]); // weight 1, grad 1
  assert.deepEqual(s.slice(3), new Array(45).fill(1)); // unused slots keep scale 1
  const hist = await fp8Of(state).amaxHistory.toArray() as number[][][];
  assert.deepEqual(hist.slice(-3).map((h) => h[0]), [[2, 1, 1], [1000, 1, 1], [1000, 1, 1]]);
  assert.deepEqual(hist[0][0], [0, 0, 0]);
});

Deno.test("fp8: the cotangent is fake-quantized in e5m2 (hybrid) or e4m3, with its own scale", async () => {
  const x = tensor([[1, 2]]);
  const c = tensor([[0.35, -0.35]]);
  for (const format of ["hybrid", "e4m3"] as const) {
    const step = pipe(trainStep({ loss: tiny, optimizer: sgd({ lr: 0 }) }), fp8({ format }));
    const gradW = (state: TrainState) => {
      const { grads, extras } = step.parts.gradient(step.parts.objective, state, { x, c });
      const next = step.parts.update(state, grads, extras).state; // consumes this step's amaxes
      return { w: (grads as { w: Tensor }).w, next };
    };
    const first = gradW(step.init({ w: tensor([[1, 0], [0, 1]]) }));
    // dL/dw = xᵀ · q(c): 0.35 → 0.375 in e5m2, 0.34375 in e4m3 (scale 1 at step 0).
    const q = format === "hybrid" ? 0.375 : 0.34375;
    assert.deepEqual(await first.w.toArray(), [[q, -q], [2 * q, -2 * q]]);
    // Then the gradOutput scale is fp8Max / 0.35: 0.35 maps onto the format's max, ≈ exact.
    const fmax = format === "hybrid" ? 57344 : 448;
    assert.equal((await valuesOf(fp8Of(first.next).scale))[2], Math.fround(fmax / 0.35));
    const second = await valuesOf(gradW(first.next).w);
    second.forEach((g, i) =>
      assert.ok(Math.abs(Math.abs(g) - (i < 2 ? 0.35 : 0.7)) < 1e-6, `${g}`)
    );
  }
});

Deno.test("fp8: only the two operands of matmul-tagged ops change; a bias does not", async () => {
  const kp = random.split(random.key(7), 2)[1]; // the tiny task's params key
  const [k1, k2] = random.split(kp, 2);
  const layer = (k: random.Key, i: number, o: number) => ({
    w: random.normal(k, [i, o]),
    b: full([o], 0.1),
  });
  const p: MlpParams = { layers: [layer(k1, 6, 4), layer(k2, 4, 3)] };
  const step = pipe(trainStep({ loss, optimizer: sgd({ lr: 0 }) }), fp8());
  const state = step.init(p);
  const seen: { name: string; inputs: Promise<number[]>[] }[] = [];
  const { grads, extras } = intercept((call, xs, next) => {
    seen.push({ name: call.op.name, inputs: xs.map(valuesOf) });
    return next(xs);
  }, () => step.parts.gradient(step.parts.objective, state, batch));
  step.parts.update(state, grads, extras);
  const linears = seen.filter((s) => s.name === "linear");
  assert.equal(linears.length, 2);
  for (const l of linears) {
    const [x, w, b] = await Promise.all(l.inputs);
    // The outer interceptor sees the operands quantized with scale 1: e4m3 values only.
    for (const v of [...x, ...w]) assert.equal(v, roundTo("f8e4m3", v, { saturate: true }));
    assert.ok(b.every((v) => v === Math.fround(0.1))); // 0.1 is not an e4m3 value (0.1015625)
  }
  const ce = seen.find((s) => s.name === "crossEntropy")!;
  assert.equal((await ce.inputs[0]).length, 32 * 3); // other ops run as they are
});

// ---------------------------------------------------------------------------------------------
// The preset, training, checkpoints, memory

Deno.test('precision("fp8-mixed"): autocast bf16 + fp8; trains and stays close to bf16-mixed', async () => {
  assert.ok(presetNames.includes("fp8-mixed"));
  const step = precision("fp8-mixed")(base);
  const dtypes = new Set<string>();
  const [first] = intercept((call, xs, next) => {
    if (call.op.name === "linear") dtypes.add(xs[1].dtype);
    return next(xs);
  }, () => step(step.init(params), batch));
  assert.deepEqual([...dtypes], ["bf16"]); // the quantized operands keep autocast's dtype
  disposeReplaced(first, {}, params);
  const { state, losses } = await train(step, 15);
  assert.ok(FP8 in state.plugins && !("gradScale" in state.plugins));
  for (const t of leaves(state.params)) assert.equal(t.dtype, "f32");
  assert.ok(losses.every(Number.isFinite), `${losses}`);
  assert.ok(losses[14] < losses[0] * 0.8, `should train: ${losses[0]} → ${losses[14]}`);
  const ref = (await train(precision("bf16-mixed")(base), 15)).losses;
  losses.forEach((l, i) => assert.ok(Math.abs(l - ref[i]) < 0.05, `step ${i}: ${l} vs ${ref[i]}`));
});

Deno.test("fp8: state round-trips through a checkpoint and the run continues bitwise", async () => {
  const step = pipe(base, fp8({ amaxHistoryLen: 4, margin: 1, amaxComputeAlgo: "most_recent" }));
  const { state } = await train(step, 3);
  const loaded = await loadState(await encodeState(state), step);
  const s = fp8Of(loaded);
  assert.deepEqual([s.format, s.margin, s.amaxComputeAlgo], ["hybrid", 1, "most_recent"]);
  assert.deepEqual(await bitsOf(loaded), await bitsOf(state));
  const [a] = step(state, batch);
  const [b] = step(loaded, batch);
  assert.deepEqual(await bitsOf(b), await bitsOf(a));
  assert.notDeepEqual(await bitsOf(fp8Of(a).scale), await bitsOf(fp8Of(state).scale));
});

Deno.test("fp8: no memory growth over steps", async () => {
  const step = precision("fp8-mixed")(base);
  const { state: warm } = await train(step, 2);
  const before = memory();
  const { state } = await train(step, 10, warm);
  const after = memory();
  assert.equal(after.tensors, before.tensors);
  assert.equal(after.bytes, before.bytes);
  disposeReplaced(state, {});
});

Deno.test("fp8: composes with gradScale (the cotangents it quantizes are scaled)", async () => {
  const step = pipe(base, fp8(), gradScale({ initScale: 1024 }));
  const { losses, state } = await train(step, 10);
  assert.ok(losses[9] < losses[0] * 0.9, `${losses}`);
  const grad = (await valuesOf(fp8Of(state).amaxHistory)).filter((_, i) => i % 3 === 2);
  assert.ok(Math.max(...grad) > 1, "gradOutput amaxes carry the loss scale"); // ~1024 · 1e-2
});

// ---------------------------------------------------------------------------------------------
// Errors

Deno.test("fp8: bad options, too many matmul calls, an update without its objective", () => {
  assert.throws(() => fp8({ format: "e5m2" as "e4m3" }), /pure e5m2 training is not supported/);
  assert.throws(() => fp8({ amaxHistoryLen: 0 }), /amaxHistoryLen must be an integer ≥ 1/);
  assert.throws(() => fp8({ margin: NaN }), /margin must be finite/);
  assert.throws(() => fp8({ amaxComputeAlgo: "mean" as "max" }), /"max" or "most_recent"/);
  assert.throws(() => fp8({ maxGemms: 1.5 }), /maxGemms must be an integer ≥ 1/);
  const small = pipe(base, fp8({ maxGemms: 1 }));
  const state = small.init(params);
  const live = memory().tensors;
  assert.throws(() => small(state, batch), /more than 1 calls of matmul-tagged ops.*maxGemms/);
  assert.equal(memory().tensors, live); // nothing kept by the failed step
  const step = pipe(base, fp8());
  const fresh = step.init(params);
  assert.throws(
    () => step.parts.update(fresh, params),
    /the update ran without this step's objective/,
  );
  assert.throws(() => pipe(base, fp8(), fp8()).init(params), /applied twice/);
});
