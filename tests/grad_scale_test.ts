import assert from "node:assert/strict";
import fc from "./fc.ts";
import { full, memory, type Tensor, tensor } from "../lib/tensor.ts";
import { leaves, map } from "../lib/tree.ts";
import * as random from "../lib/random.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { mul, square, sub, sum } from "../lib/ops/mod.ts";
import { disposeReplaced, pipe, type Step, type TrainState, trainStep } from "../lib/train.ts";
import { linear, mse } from "../lib/nn/mod.ts";
import { adam, sgd } from "../lib/optim/mod.ts";
import { Tensor as TensorClass } from "../lib/tensor.ts";
import {
  GRAD_SCALE,
  gradScale,
  type GradScaleOptions,
  type GradScaleState,
  updateScale,
} from "../plugins/grad_scale.ts";
import { definePlugin } from "../plugins/plugin.ts";
import { precision } from "../plugins/presets.ts";

// ---------------------------------------------------------------------------------------------
// helpers

const gs = (s: TrainState) => s.plugins[GRAD_SCALE] as GradScaleState;

async function scaleOf(s: TrainState): Promise<[number, number]> {
  return [await gs(s).scale.item(), await gs(s).tracker.item()];
}

/** Raw bits of every tensor leaf, for bitwise comparisons. */
async function bitsOf(tree: unknown): Promise<number[][]> {
  return await Promise.all(leaves(tree).map(async (t) => Array.from(await t.bits())));
}

function rawState(
  scale: number,
  tracker: number,
  cfg: Partial<GradScaleState> = {},
): GradScaleState {
  return {
    scale: full([], scale),
    tracker: full([], tracker, { dtype: "i32" }),
    dynamic: true,
    growthFactor: 2,
    backoffFactor: 0.5,
    growthInterval: 2000,
    minScale: 0,
    ...cfg,
  };
}

/**
 * Run `step` over `batches`, freeing replaced states (but not the one passed in) and metrics;
 * returns the final state, the number of skipped steps and the scales used.
 */
async function run<B>(step: Step<B>, first: TrainState, batches: B[]) {
  let skipped = 0;
  const scales: number[] = [];
  let state = first;
  for (const b of batches) {
    const [next, m] = step(state, b);
    skipped += m.skipped ? await m.skipped.item() : 0;
    if (m.scale) scales.push(await m.scale.item());
    for (const t of Object.values(m)) t.dispose();
    if (state !== first) disposeReplaced(state, next, first);
    state = next;
  }
  return { state, skipped, scales };
}

// A cheap scalar model: loss = (w·x − y)², params { w }.
interface Scalar {
  x: Tensor;
  y: Tensor;
}
const scalarLoss = (p: { w: Tensor }, b: Scalar) => sum(square(sub(mul(p.w, b.x), b.y)));
const scalarBatch = (x: number, y = 1): Scalar => ({ x: tensor([x]), y: tensor([y]) });

// ---------------------------------------------------------------------------------------------
// The raw scale-update kernel (`_amp_update_scale_`, pytorch/pytorch aten/src/ATen/native/cuda/AmpKernels.cu;
// cases from pytorch/pytorch tests test_grad_scaling_update_scale and test_grad_scale_will_not_overflow)

Deno.test("updateScale: torch test_grad_scaling_update_scale (row 1)", async () => {
  let s = rawState(4, 0, { growthFactor: 2, backoffFactor: 0.25, growthInterval: 2 });
  const seen: number[][] = [];
  for (const finite of [true, true, false]) {
    s = { ...s, ...updateScale(s, full([], finite ? 1 : 0, { dtype: "bool" })) };
    seen.push([await s.scale.item(), await s.tracker.item()]);
  }
  assert.deepEqual(seen, [[4, 1], [8, 0], [2, 0]]);
  assert.equal(s.scale.dtype, "f32");
  assert.equal(s.tracker.dtype, "i32");
});

Deno.test("updateScale: growth is refused when it would overflow (rows 6, 7)", async () => {
  const yes = full([], 1, { dtype: "bool" });
  const a = updateScale(rawState(1e38, 0, { growthFactor: 16, growthInterval: 1 }), yes);
  assert.deepEqual([await a.scale.item(), await a.tracker.item()], [Math.fround(1e38), 0]);
  const b = updateScale(rawState(2 ** 127, 0, { growthInterval: 1 }), yes);
  assert.deepEqual([await b.scale.item(), await b.tracker.item()], [2 ** 127, 0]);
});

Deno.test("updateScale: no floor by default, minScale floors back-offs (row 8)", async () => {
  const no = full([], 0, { dtype: "bool" });
  for (const [minScale, want] of [[0, [0.5, 0.25, 0.125]], [1, [1, 1, 1]]] as const) {
    let s = rawState(1, 0, { minScale });
    const seen: number[] = [];
    for (let i = 0; i < 3; i++) {
      s = { ...s, ...updateScale(s, no) };
      seen.push(await s.scale.item());
    }
    assert.deepEqual(seen, want);
  }
});

Deno.test("gradScale: bad options are clear errors", () => {
  assert.throws(() => gradScale({ growthFactor: 1 }), /growthFactor must be > 1/);
  assert.throws(() => gradScale({ backoffFactor: 1 }), /backoffFactor must be in \(0, 1\)/);
  assert.throws(() => gradScale({ growthInterval: 0.5 }), /growthInterval/);
  assert.throws(() => gradScale({ initScale: Infinity }), /initScale/);
  assert.throws(() => gradScale({ static: 0 }), /static/);
  const step = pipe(trainStep({ loss: scalarLoss, optimizer: sgd({ lr: 0.1 }) }), gradScale());
  const plain = trainStep({ loss: scalarLoss, optimizer: sgd({ lr: 0.1 }) });
  assert.throws(
    () => step(plain.init({ w: tensor([1]) }), scalarBatch(1)),
    /no state.plugins.gradScale; make the state with the wrapped step's init/,
  );
  assert.throws(() => gradScale()(step).init({ w: tensor([1]) }), /applied twice/);
});

// ---------------------------------------------------------------------------------------------
// Whole steps

Deno.test("gradScale: state is created in init, with the config stored", async () => {
  const step = pipe(trainStep({ loss: scalarLoss, optimizer: sgd({ lr: 0.1 }) }), gradScale());
  const state = step.init({ w: tensor([1]) });
  const s = gs(state);
  assert.deepEqual(await scaleOf(state), [65536, 0]);
  assert.equal(s.scale.dtype, "f32");
  assert.equal(s.tracker.dtype, "i32");
  assert.deepEqual(
    [s.dynamic, s.growthFactor, s.backoffFactor, s.growthInterval, s.minScale],
    [true, 2, 0.5, 2000, 0],
  );
});

Deno.test("gradScale: torch test_grad_scaling_autocast (row 2): 8×8 linears, SGD lr 1", async () => {
  const [k1, k2, kb] = random.split(random.key(7), 3);
  const params = {
    l1: { w: mul(random.normal(k1, [8, 8]), 0.25), b: full([8], 0) },
    l2: { w: mul(random.normal(k2, [8, 8]), 0.25), b: full([8], 0) },
  };
  type P = typeof params;
  const keys = random.split(kb, 8);
  const batches = [0, 1, 2, 3].map((i) => ({
    x: mul(random.normal(keys[2 * i], [4, 8]), 0.5),
    y: mul(random.normal(keys[2 * i + 1], [4, 8]), 0.5),
  }));
  const x2 = await batches[2].x.data();
  x2[5] = Infinity;
  const poisoned = [...batches];
  poisoned[2] = { ...batches[2], x: tensor(x2, { shape: [4, 8] }) };
  const loss = (p: P, b: { x: Tensor; y: Tensor }) => mse(linear(p.l2, linear(p.l1, b.x)), b.y);

  const scaled = pipe(
    trainStep({ loss, optimizer: sgd({ lr: 1 }) }),
    gradScale({ initScale: 128, growthFactor: 2, growthInterval: 1 }),
  );
  const out = await run(scaled, scaled.init(params), poisoned);
  assert.deepEqual(out.scales, [128, 256, 512, 256]);
  assert.deepEqual(await scaleOf(out.state), [512, 0]);
  assert.equal(out.skipped, 1);

  const plain = trainStep({ loss, optimizer: sgd({ lr: 1 }) });
  const control = await run(plain, plain.init(params), [batches[0], batches[1], batches[3]]);
  assert.deepEqual(await bitsOf(out.state.params), await bitsOf(control.state.params));
  assert.deepEqual(await bitsOf(out.state.opt), await bitsOf(control.state.opt));
  for (const t of leaves(out.state.params)) {
    assert.ok((await t.data()).every(Number.isFinite));
  }
  // Three applied steps moved the params.
  assert.notDeepEqual(await bitsOf(out.state.params), await bitsOf(params));
});

Deno.test("gradScale: init 1e38, growth 16, interval 1 never gives Inf (row 6)", async () => {
  const opts = { initScale: 1e38, growthFactor: 16, growthInterval: 1 };
  // Tiny gradients: loss·1e38 stays finite, so the step is applied and growth is refused.
  const tiny = pipe(trainStep({ loss: scalarLoss, optimizer: sgd({ lr: 1 }) }), gradScale(opts));
  const a = await run(tiny, tiny.init({ w: tensor([1e-20]) }), [scalarBatch(1e-20, 0)]);
  assert.deepEqual(await scaleOf(a.state), [Math.fround(1e38), 0]);
  assert.equal(a.skipped, 0);
  // torch's own test: ordinary values overflow, back off, and the scale stays finite.
  const adamStep = pipe(trainStep({ loss: scalarLoss, optimizer: adam() }), gradScale(opts));
  let state = adamStep.init({ w: tensor([0.3]) });
  for (let i = 0; i < 8; i++) {
    state = (await run(adamStep, state, [scalarBatch(2, 1e-30)])).state;
    const [s] = await scaleOf(state);
    assert.ok(Number.isFinite(s) && s > 0, `scale ${s} at step ${i}`);
  }
});

Deno.test("gradScale: torch defaults (rows 3–5)", async () => {
  const make = () =>
    pipe(trainStep({ loss: scalarLoss, optimizer: sgd({ lr: 1e-3 }) }), gradScale());
  const clean = Array.from({ length: 1999 }, () => scalarBatch(1));
  const step = make();
  let r = await run(step, step.init({ w: tensor([0.5]) }), clean);
  assert.deepEqual(await scaleOf(r.state), [65536, 1999]); // row 3
  r = await run(step, r.state, [scalarBatch(1)]);
  assert.deepEqual(await scaleOf(r.state), [131072, 0]); // row 4

  r = await run(step, step.init({ w: tensor([0.5]) }), clean.slice(0, 1500));
  const before = await bitsOf(r.state.params);
  r = await run(step, r.state, [scalarBatch(NaN)]);
  assert.deepEqual(await scaleOf(r.state), [32768, 0]); // row 5
  assert.equal(r.skipped, 1);
  assert.deepEqual(await bitsOf(r.state.params), before);
  r = await run(step, r.state, clean);
  assert.deepEqual(await scaleOf(r.state), [32768, 1999]);
  r = await run(step, r.state, [scalarBatch(1)]);
  assert.deepEqual(await scaleOf(r.state), [65536, 0]);
});

Deno.test("gradScale: a restored state keeps its own config (row 12)", async () => {
  const make = (o: GradScaleOptions) =>
    pipe(trainStep({ loss: scalarLoss, optimizer: sgd({ lr: 0.01 }) }), gradScale(o));
  const s0 = make({ initScale: 3, growthFactor: 4, backoffFactor: 0.5, growthInterval: 2 });
  const s1 = make({ initScale: 6, growthFactor: 7, backoffFactor: 0.8, growthInterval: 1 });
  const r = await run(s1, s0.init({ w: tensor([1]) }), [scalarBatch(1), scalarBatch(1)]);
  assert.deepEqual(await scaleOf(r.state), [12, 0]);
  const { growthFactor, backoffFactor, growthInterval } = gs(r.state);
  assert.deepEqual([growthFactor, backoffFactor, growthInterval], [4, 0.5, 2]);
});

Deno.test("gradScale: a static scale stays, and still skips non-finite steps", async () => {
  const step = pipe(
    trainStep({ loss: scalarLoss, optimizer: sgd({ lr: 0.1 }) }),
    gradScale({ static: 1024 }),
  );
  const r = await run(step, step.init({ w: tensor([1]) }), [
    scalarBatch(1),
    scalarBatch(Infinity),
    scalarBatch(1),
  ]);
  assert.deepEqual(r.scales, [1024, 1024, 1024]);
  assert.deepEqual(await scaleOf(r.state), [1024, 0]);
  assert.equal(r.skipped, 1);
});

Deno.test("gradScale: checks the exact grads the optimizer consumes (row 15)", async () => {
  // A plugin inside gradScale (applied before it) that poisons the unscaled grads.
  const poison = definePlugin("poison", {
    update: (state, grads, next) => next(state, map((g) => mul(g, NaN), grads)),
  });
  const step = pipe(
    trainStep({ loss: scalarLoss, optimizer: adam() }),
    poison,
    gradScale({ initScale: 256 }),
  );
  const state = step.init({ w: tensor([1]) });
  const [next, m] = step(state, scalarBatch(1));
  assert.equal(await m.skipped.item(), 1);
  assert.deepEqual(await scaleOf(next), [128, 0]);
  assert.deepEqual(await bitsOf(next.params), await bitsOf(state.params));
  assert.deepEqual(await bitsOf(next.opt), await bitsOf(state.opt));
});

Deno.test("gradScale: no readback inside a step, and flat memory over many steps", async () => {
  const step = precision("16-mixed")(
    trainStep({
      loss: (p: { l: { w: Tensor; b: Tensor } }, b: { x: Tensor; y: Tensor }) =>
        mse(linear(p.l, b.x), b.y),
      optimizer: adam({ lr: 1e-3 }),
    }),
  );
  const batch = { x: random.normal(random.key(1), [8, 4]), y: full([8, 2], 0.5) };
  const overflow = { ...batch, x: full([8, 4], Infinity) };
  let state = step.init({ l: { w: random.normal(random.key(2), [4, 2]), b: full([2], 0) } });
  const proto = TensorClass.prototype as unknown as Record<string, unknown>;
  const saved = { data: proto.data, bits: proto.bits, item: proto.item, read: cpu.read };
  const refuse = () => {
    throw new Error("read back inside a step");
  };
  let mem: { tensors: number; bytes: number }[] = [];
  for (let i = 0; i < 120; i++) {
    Object.assign(proto, { data: refuse, bits: refuse, item: refuse });
    (cpu as { read: unknown }).read = refuse;
    let out: [TrainState, Record<string, Tensor>];
    try {
      out = step(state, i % 7 === 3 ? overflow : batch);
    } finally {
      Object.assign(proto, saved);
      (cpu as { read: unknown }).read = saved.read;
    }
    assert.ok(Array.isArray(out) && !(out as unknown instanceof Promise));
    const [next, metrics] = out;
    if (i > 0) disposeReplaced(state, next);
    for (const t of Object.values(metrics)) t.dispose();
    state = next;
    if (i === 20 || i === 119) mem = [...mem, memory()];
  }
  assert.equal(mem[1].tensors, mem[0].tensors);
  assert.equal(mem[1].bytes, mem[0].bytes);
  assert.ok(Number.isFinite(await gs(state).scale.item()));
});

// ---------------------------------------------------------------------------------------------
// Model-based property test against a reference state machine

type Event = "clean" | "inf" | "nan";

interface Cfg {
  initScale: number;
  growthFactor: number;
  backoffFactor: number;
  growthInterval: number;
  minScale: number;
  pow2: boolean;
}

/**
 * The reference: torch's update kernel on JS numbers, with f32 rounding (Math.fround) of the
 * products and of the factors (nbit rounds the factors to f32, see docs/plugins.md).
 */
function model(cfg: Cfg, s: { scale: number; tracker: number }, finite: boolean) {
  const f32 = Math.fround;
  if (!finite) {
    const backed = f32(s.scale * f32(cfg.backoffFactor));
    return { scale: Math.max(backed, f32(cfg.minScale)), tracker: 0 };
  }
  const t = s.tracker + 1;
  if (t < cfg.growthInterval) return { scale: s.scale, tracker: t };
  const grown = f32(s.scale * f32(cfg.growthFactor));
  return { scale: Number.isFinite(grown) ? grown : s.scale, tracker: 0 };
}

const cfgArb: fc.Arbitrary<Cfg> = fc.oneof(
  fc.record({
    initScale: fc.integer({ min: 0, max: 24 }).map((e) => 2 ** e),
    growthFactor: fc.constantFrom(2, 4),
    backoffFactor: fc.constantFrom(0.5, 0.25),
    growthInterval: fc.integer({ min: 1, max: 3 }),
    minScale: fc.constantFrom(0, 2 ** -3, 1),
    pow2: fc.constant(true),
  }),
  fc.record({
    initScale: fc.double({ min: 1e-3, max: 1e30, noNaN: true }).map(Math.fround),
    growthFactor: fc.constantFrom(1.5, 3, 1e10),
    backoffFactor: fc.constantFrom(0.75, 0.125, 1e-3),
    growthInterval: fc.integer({ min: 1, max: 3 }),
    minScale: fc.constantFrom(0, 1e-6),
    pow2: fc.constant(false),
  }),
).filter((c) => c.initScale >= c.minScale);

Deno.test("gradScale: model-based: scale, skips and bitwise-equal clean steps", async () => {
  const [k1, k2, k3] = random.split(random.key(3), 3);
  type P = { w: Tensor; b: Tensor };
  const loss = (p: P, b: { x: Tensor; y: Tensor }) => mse(linear(p, b.x), b.y);
  const params = { w: random.normal(k1, [3, 2]), b: full([2], 0.1) };
  const batch = { x: random.normal(k2, [4, 3]), y: random.normal(k3, [4, 2]) };
  const bad = { inf: full([4, 3], Infinity), nan: full([4, 3], NaN) };
  const plain = trainStep({ loss, optimizer: adam({ lr: 0.01 }) });
  await fc.assert(
    fc.asyncProperty(
      cfgArb,
      fc.array(fc.constantFrom<Event>("clean", "clean", "inf", "nan"), {
        minLength: 1,
        maxLength: 10,
      }),
      async (cfg, events) => {
        const { pow2: _, ...opts } = cfg;
        const step = pipe(plain, gradScale(opts));
        let state = step.init(params);
        let ref = { scale: Math.fround(cfg.initScale), tracker: 0 };
        for (const ev of events) {
          const b = ev === "clean" ? batch : { ...batch, x: bad[ev] };
          const [next, m] = step(state, b);
          const finite = ev === "clean";
          ref = model(cfg, ref, finite);
          const [scale, tracker] = await scaleOf(next);
          assert.deepEqual([scale, tracker], [ref.scale, ref.tracker]);
          assert.ok(Number.isFinite(scale) && scale >= Math.fround(cfg.minScale));
          assert.equal(await m.skipped.item(), finite ? 0 : 1);
          if (!finite) {
            assert.deepEqual(await bitsOf(next.params), await bitsOf(state.params));
            assert.deepEqual(await bitsOf(next.opt), await bitsOf(state.opt));
          } else if (cfg.pow2) {
            const [want] = plain({ ...state, plugins: {} }, b);
            assert.deepEqual(await bitsOf(next.params), await bitsOf(want.params));
            assert.deepEqual(await bitsOf(next.opt), await bitsOf(want.opt));
            disposeReplaced(want, state);
          }
          for (const t of Object.values(m)) t.dispose();
          disposeReplaced(state, next, params);
          state = next;
        }
      },
    ),
    { numRuns: 100 },
  );
});

// ---------------------------------------------------------------------------------------------
// Underflow made visible

Deno.test("f16 gradients that flush to zero stall under 16-true and train under 16-mixed", async () => {
  const [k1, k2, k3] = random.split(random.key(11), 3);
  type P = { w: Tensor; b: Tensor };
  // A tiny loss weight: its gradients (~1e-9) are below half f16's smallest subnormal.
  const loss = (p: P, b: { x: Tensor; y: Tensor }) => mul(mse(linear(p, b.x), b.y), 1e-7);
  const params = { w: mul(random.normal(k1, [8, 4]), 0.3), b: full([4], 0) };
  const batch = { x: random.normal(k2, [16, 8]), y: random.normal(k3, [16, 4]) };
  const base = trainStep({ loss, optimizer: adam({ lr: 1e-2 }) });
  const losses: Record<string, number[]> = {};
  const finals: Record<string, TrainState> = {};
  for (const name of ["16-true", "16-mixed"]) {
    const step = precision(name)(base);
    let state = step.init(params);
    losses[name] = [];
    for (let i = 0; i < 20; i++) {
      const [next, m] = step(state, batch);
      losses[name].push(await m.loss.item());
      if (i > 0) disposeReplaced(state, next);
      state = next;
    }
    finals[name] = state;
  }
  const trueStart = await bitsOf(precision("16-true")(base).init(params).params);
  assert.deepEqual(await bitsOf(finals["16-true"].params), trueStart, "16-true should stall");
  assert.equal(losses["16-true"][19], losses["16-true"][0]);
  const mixed = losses["16-mixed"];
  assert.ok(mixed[19] < mixed[0] * 0.9, `16-mixed should train: ${mixed[0]} → ${mixed[19]}`);
});
