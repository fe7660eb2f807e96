import assert from "node:assert/strict";
import type { DType } from "../lib/dtype.ts";
import { full, type Tensor, tensor } from "../lib/tensor.ts";
import { leaves } from "../lib/tree.ts";
import { intercept } from "../lib/op.ts";
import { astype, square, sub, sum } from "../lib/ops/mod.ts";
import { valueAndGrad } from "../lib/autodiff.ts";
import { disposeReplaced, pipe, type Step, trainStep } from "../lib/train.ts";
import type { MlpParams } from "../lib/nn/mod.ts";
import { adam, sgd } from "../lib/optim/mod.ts";
import { precision, presetNames } from "../plugins/presets.ts";
import { castParams } from "../plugins/cast_params.ts";
import { gradScale } from "../plugins/grad_scale.ts";
import { castFloating } from "../plugins/plugin.ts";
import type { Transformer } from "../lib/train.ts";
import { type Batch, tinyMlp } from "./tiny_mlp.ts";

const { batch, params, loss, base } = tinyMlp(42);

/** Run `steps` steps, recording the losses and the dtype the linear layers computed in. */
async function train(step: Step<Batch>, steps: number) {
  let state = step.init(params);
  const losses: number[] = [];
  const computeDtypes = new Set<DType>();
  for (let i = 0; i < steps; i++) {
    const [next, m] = intercept((call, xs, nxt) => {
      if (call.op.name === "linear") computeDtypes.add(xs[1].dtype);
      return nxt(xs);
    }, () => step(state, batch));
    losses.push(await m.loss.item());
    if (i > 0) disposeReplaced(state, next);
    state = next;
  }
  return { state, losses, computeDtypes: [...computeDtypes] };
}

const expected: Record<string, { params: DType; compute: DType; scaler: boolean }> = {
  "64-true": { params: "f64", compute: "f64", scaler: false },
  "32-true": { params: "f32", compute: "f32", scaler: false },
  "16-mixed": { params: "f32", compute: "f16", scaler: true },
  "bf16-mixed": { params: "f32", compute: "bf16", scaler: false },
  "fp8-mixed": { params: "f32", compute: "bf16", scaler: false },
  "16-true": { params: "f16", compute: "f16", scaler: false },
  "bf16-true": { params: "bf16", compute: "bf16", scaler: false },
  "64": { params: "f64", compute: "f64", scaler: false },
  "32": { params: "f32", compute: "f32", scaler: false },
  "16": { params: "f32", compute: "f16", scaler: true },
  "bf16": { params: "f32", compute: "bf16", scaler: false },
  "O0": { params: "f32", compute: "f32", scaler: false },
  "O1": { params: "f32", compute: "f16", scaler: true },
  "O2": { params: "f32", compute: "f16", scaler: true },
  "O3": { params: "f16", compute: "f16", scaler: false },
};

Deno.test("precision: every preset trains an MLP with crossEntropy and adam", async () => {
  assert.deepEqual([...presetNames].sort(), Object.keys(expected).sort());
  for (const name of presetNames) {
    const want = expected[name];
    const { state, losses, computeDtypes } = await train(precision(name)(base), 15);
    assert.deepEqual(computeDtypes, [want.compute], name);
    for (const t of leaves(state.params)) assert.equal(t.dtype, want.params, name);
    const opt = state.opt as { mu: unknown; count: Tensor };
    for (const t of leaves(opt.mu)) assert.equal(t.dtype, want.params, name);
    assert.equal("gradScale" in state.plugins, want.scaler, name);
    assert.ok(losses.every(Number.isFinite), `${name}: ${losses}`);
    assert.ok(losses[14] < losses[0] * 0.8, `${name} should train: ${losses[0]} → ${losses[14]}`);
    assert.equal(await opt.count.item(), 15, name);
  }
});

Deno.test("precision: numbers 64, 32, 16 are accepted", () => {
  for (const n of [64, 32, 16] as const) assert.equal(typeof precision(n), "function");
});

Deno.test("precision: an unknown name is an error listing the valid ones", () => {
  for (const bad of ["fp4", "16-MIXED", "toString", 8]) {
    assert.throws(
      () => precision(bad as string),
      (e: Error) =>
        e.message.startsWith(`precision: unknown preset ${JSON.stringify(bad)}`) &&
        presetNames.every((n) => e.message.includes(n)),
    );
  }
});

Deno.test("precision: mixed presets stay close to 32-true", async () => {
  const ref = (await train(precision("32-true")(base), 10)).losses;
  for (const name of ["64-true", "16-mixed", "bf16-mixed", "O2"]) {
    const losses = (await train(precision(name)(base), 10)).losses;
    const tol = name === "64-true" ? 1e-5 : name === "bf16-mixed" ? 0.05 : 0.01;
    losses.forEach((l, i) =>
      assert.ok(Math.abs(l - ref[i]) < tol, `${name} step ${i}: ${l} vs ${ref[i]}`)
    );
  }
});

// ---------------------------------------------------------------------------------------------
// castParams

Deno.test("castParams: f32 masters, f16 compute copies, grads back in f32", async () => {
  const step = pipe(trainStep({ loss, optimizer: sgd({ lr: 0.1 }) }), castParams("f16"));
  const state = step.init(castFloating(params, "f64"));
  for (const t of leaves(state.params)) assert.equal(t.dtype, "f32");
  const { grads } = step.parts.gradient(step.parts.objective, state, batch);
  for (const t of leaves(grads)) assert.equal(t.dtype, "f32");
  // They are the f16 model's gradients, widened (astype's VJP).
  const half = castFloating(state.params, "f16") as MlpParams;
  const [, direct] = valueAndGrad((p: MlpParams) =>
    loss(p, { x: astype(batch.x, "f16"), y: batch.y })
  )(half);
  const widened = leaves(direct).map((t) => astype(t, "f32"));
  assert.deepEqual(await bitsOf(grads), await bitsOf(widened));
});

Deno.test("castParams: without a master, params, grads and optimizer state share the dtype", () => {
  const step = pipe(trainStep({ loss, optimizer: adam() }), castParams("bf16", { master: null }));
  const state = step.init(params);
  const { grads } = step.parts.gradient(step.parts.objective, state, batch);
  const [next] = step(state, batch);
  for (const tree of [state.params, grads, next.params, (next.opt as { mu: unknown }).mu]) {
    for (const t of leaves(tree)) assert.equal(t.dtype, "bf16");
  }
});

Deno.test("castParams: castInputs casts floating batch leaves only, and can be turned off", () => {
  for (const castInputs of [true, false]) {
    const step = pipe(
      trainStep({ loss, optimizer: sgd({ lr: 0.1 }) }),
      castParams("f16", { castInputs }),
    );
    const seen: DType[] = [];
    intercept((call, xs, nxt) => {
      if (call.op.name === "linear") seen.push(xs[0].dtype);
      if (call.op.name === "crossEntropy") seen.push(xs[1].dtype);
      return nxt(xs);
    }, () => step(step.init(params), batch));
    assert.deepEqual(seen, castInputs ? ["f16", "f16", "i32"] : ["f32", "f32", "i32"]);
  }
});

Deno.test("castParams: bad dtypes are clear errors", () => {
  assert.throws(() => castParams("i32"), /compute dtype must be a float dtype/);
  assert.throws(() => castParams("f16", { master: "u8" }), /master must be a float dtype/);
});

// ---------------------------------------------------------------------------------------------
// The custom plugin example of docs/plugins.md, run as written

async function loadDocExample() {
  const md = await Deno.readTextFile(new URL("../docs/plugins.md", import.meta.url));
  const after = md.split("<!-- custom-plugin-example -->")[1];
  const code = after.slice(
    after.indexOf("```ts") + 5,
    after.indexOf("```", after.indexOf("```ts") + 5),
  );
  assert.ok(code.split("\n").filter((l) => l.trim()).length < 30, "the example is under 30 lines");
  const dir = await Deno.makeTempDir();
  const lib = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
  await Deno.writeTextFile(
    `${dir}/mod.ts`,
    [
      `export * from ${lib("../lib/ops/mod.ts")};`,
      `export * from ${lib("../lib/tensor.ts")};`,
      `export * as tree from ${lib("../lib/tree.ts")};`,
      `export * from ${lib("../plugins/plugin.ts")};`,
    ].join("\n"),
  );
  await Deno.mkdir(`${dir}/docs`);
  await Deno.writeTextFile(`${dir}/docs/example.ts`, code);
  try {
    return await import(`file://${dir}/docs/example.ts`) as {
      clipGrads: (maxNorm: number) => Transformer;
      countSkipped: Transformer;
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("docs/plugins.md: clipGrads clips unscaled grads; countSkipped counts skips", async () => {
  const { clipGrads, countSkipped } = await loadDocExample();
  const w = { w: tensor([3, -4]) };
  const scalar = (p: { w: Tensor }, b: { t: Tensor }) => sum(square(sub(p.w, b.t)));
  const step = pipe(
    trainStep({ loss: scalar, optimizer: sgd({ lr: 1 }) }),
    clipGrads(0.5),
    gradScale({ initScale: 1024 }),
    countSkipped,
  );
  let state = step.init(w);
  const batches = [full([2], 0), full([2], NaN), full([2], 0), full([2], Infinity)];
  let totals: number[] = [];
  for (const t of batches) {
    const before = await (state.params as { w: Tensor }).w.data();
    const [next, m] = step(state, { t });
    totals = [...totals, await m.skippedTotal.item()];
    const after = await (next.params as { w: Tensor }).w.data();
    const moved = Math.hypot(after[0] - before[0], after[1] - before[1]);
    // Clipped after unscaling: the step is lr · 0.5 (clipping the scaled grads would give 0.5/1024).
    if (t === batches[0] || t === batches[2]) {
      assert.ok(Math.abs(moved - 0.5) < 1e-5, `moved ${moved}`);
    } else assert.equal(moved, 0);
    state = next;
  }
  assert.deepEqual(totals, [0, 1, 1, 2]);
});

// helpers

async function bitsOf(tree: unknown): Promise<number[][]> {
  return await Promise.all(leaves(tree).map(async (t) => Array.from(await t.bits())));
}
