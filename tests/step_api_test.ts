/**
 * The Step API: a loss's aux scalars become metrics (and reach `fit`'s log), and each step gets
 * its own key `foldIn(state.key, state.step)` as `ctx.key`, so dropout needs no key in the
 * batch; jit ≡ eager bitwise with dropout driven by it, and the key checkpoints.
 */
import assert from "node:assert/strict";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import * as nb from "../mod.ts";
import type { Tensor } from "../mod.ts";

const { jit, trainStep, optim, nn, random, tensor } = nb;

type Batch = { x: Tensor; y: Tensor };
function setup() {
  const [kx, kp] = random.split(random.key(3), 2);
  const batch: Batch = {
    x: random.normal(kx, [32, 6]),
    y: tensor(Int32Array.from({ length: 32 }, (_, i) => i % 3), { dtype: "i32" }),
  };
  return { batch, params: nn.mlpInit(kp, [6, 16, 3]) };
}

/** A dropout MLP whose dropout key is the step's, with accuracy and a nested aux. */
const loss = (p: nb.nn.MlpParams, b: Batch, ctx: nb.StepContext): [Tensor, unknown] => {
  const [l0, l1] = p.layers;
  const h = nn.dropout(ctx.key, nb.relu(nn.linear(l0, b.x)), 0.5);
  const logits = nn.linear(l1, h);
  const acc = nb.mean(nb.astype(nb.equal(nb.argmax(logits), b.y), "f32"));
  return [nn.crossEntropy(logits, b.y), { acc, parts: [nb.mean(h)] }];
};

function freeAll(...xs: unknown[]) {
  const seen = new Set<Tensor>();
  for (const t of nb.tree.leaves(xs)) if (!seen.has(t) && !t.disposed) seen.add(t);
  for (const t of seen) t.dispose();
}

Deno.test("aux scalars become metrics named by tree path, equal to the loss's own values", async () => {
  const before = nb.memory().tensors;
  const { batch, params } = setup();
  const step = trainStep({ loss, optimizer: optim.adam({ lr: 1e-2 }), key: random.key(7) });
  const s0 = step.init(params);
  const [s1, m] = step(s0, batch);
  assert.deepEqual(Object.keys(m), ["loss", "acc", "parts.0"]);
  // The same values computed outside the step with the same key.
  const [l, aux] = nb.tidy(() => loss(params, batch, { key: random.foldIn(random.key(7), 0) }));
  const a = aux as { acc: Tensor; parts: Tensor[] };
  assert.deepEqual(await m.loss.bits(), await l.bits());
  assert.deepEqual(await m.acc.bits(), await a.acc.bits());
  assert.deepEqual(await m["parts.0"].bits(), await a.parts[0].bits());
  freeAll(s0, s1, m, l, aux, batch);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("each step gets foldIn(state.key, state.step): new per step, the same when repeated", async () => {
  const before = nb.memory().tensors;
  const seen: nb.random.Key[] = [];
  const { batch, params } = setup();
  const step = trainStep({
    loss: (p: nb.nn.MlpParams, b: Batch, ctx) => {
      seen.push(ctx.key);
      return nn.crossEntropy(nn.mlp(p, b.x), b.y);
    },
    optimizer: optim.sgd({ lr: 0.1 }),
    key: random.key(11),
  });
  const s0 = step.init(params);
  assert.deepEqual(s0.key, random.key(11));
  const [s1, m1] = step(s0, batch);
  const [s2, m2] = step(s1, batch);
  const [s1b, m1b] = step(s0, batch);
  assert.deepEqual(s2.key, random.key(11)); // the run's key is carried unchanged
  assert.equal(s2.stepKey, undefined); // the step key is never in a returned state
  assert.deepEqual(seen, [0, 1, 0].map((n) => random.foldIn(random.key(11), n)));
  assert.notDeepEqual(seen[0], seen[1]);
  assert.deepEqual(await bitsOf(s1b), await bitsOf(s1));
  freeAll(s0, s1, s2, s1b, m1, m2, m1b, batch);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("jit ≡ eager bitwise over 6 dropout steps keyed by the state; one trace", async () => {
  const before = nb.memory().tensors;
  const { batch, params } = setup();
  const eager = trainStep({ loss, optimizer: optim.adam({ lr: 1e-2 }), key: random.key(5) });
  const jitted = jit(eager);
  let a = eager.init(params);
  let b = jitted.init(params);
  const states: unknown[] = [a, b];
  const metricsA: unknown[] = [], metricsB: unknown[] = [];
  for (let i = 0; i < 6; i++) {
    const [na, ma] = eager(a, batch);
    const [nbState, mb] = jitted(b, batch);
    metricsA.push(ma);
    metricsB.push(mb);
    states.push(na, nbState);
    [a, b] = [na, nbState];
  }
  assert.equal(jitted.traces, 1);
  assert.equal(b.step, 6);
  assert.deepEqual(b.key, random.key(5));
  assertSameBits(await bitsOf(a), await bitsOf(b), "state");
  assertSameBits(await bitsOf(metricsA), await bitsOf(metricsB), "metrics");
  // Dropout really depends on the step key: two steps' losses on the same batch differ from
  // a run whose key differs.
  const other = trainStep({ loss, optimizer: optim.adam({ lr: 1e-2 }), key: random.key(6) });
  const o0 = other.init(params);
  const [o1, mo] = other(o0, batch);
  assert.notDeepEqual(await mo.loss.bits(), await (metricsA[0] as nb.Metrics).loss.bits());
  jitted.clear();
  freeAll(states, metricsA, metricsB, o0, o1, mo, batch);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("fit logs the aux metrics (the last step's values) with jit and without", async () => {
  const before = nb.memory().tensors;
  const { batch, params } = setup();
  const step = trainStep({ loss, optimizer: optim.adam({ lr: 1e-2 }), key: random.key(1) });
  const s0 = step.init(params);
  const logs: nb.LogEntry[][] = [];
  for (const useJit of [true, false]) {
    const { state, history } = await nb.fit(step, s0, [batch, batch, batch], {
      logEvery: 3,
      jit: useJit,
    });
    logs.push(history);
    nb.disposeReplaced(state, s0);
  }
  assert.deepEqual(Object.keys(logs[0][0].metrics).sort(), ["acc", "parts.0"]);
  assert.deepEqual(logs[0], logs[1]);
  const acc = logs[0][0].metrics.acc;
  assert.ok(acc >= 0 && acc <= 1);
  freeAll(s0, batch);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("the state's key checkpoints: a restored run continues bit for bit", async () => {
  const before = nb.memory().tensors;
  const { batch, params } = setup();
  const step = trainStep({ loss, optimizer: optim.adam({ lr: 1e-2 }), key: random.key(9) });
  const s0 = step.init(params);
  const [s1, m1] = step(s0, batch);
  const bytes = await nb.encodeState(s1);
  const r1 = await nb.loadState(bytes, step);
  assert.deepEqual({ ...r1.key }, { ...s1.key });
  assert.equal(r1.step, 1);
  const [s2, m2] = step(s1, batch);
  const [r2, mr2] = step(r1, batch);
  assertSameBits(await bitsOf([s2, m2]), await bitsOf([r2, mr2]), "resumed");
  // A stateless-key checkpoint restores without a key.
  const plain = trainStep({
    loss: (p: nb.nn.MlpParams, b: Batch) => nb.nn.crossEntropy(nb.nn.mlp(p, b.x), b.y),
    optimizer: optim.sgd({ lr: 0.1 }),
  });
  const p0 = plain.init(params);
  const rp = await nb.loadState(await nb.encodeState(p0), plain);
  assert.equal(rp.key, undefined);
  freeAll(s0, s1, s2, m1, m2, r1, r2, mr2, p0, rp, batch);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("Step API errors name the problem and the fix", () => {
  const before = nb.memory().tensors;
  const { batch, params } = setup();
  const run = (lossFn: nb.LossFn<nb.nn.MlpParams, Batch>, key?: nb.random.Key) => {
    const step = trainStep({ loss: lossFn, optimizer: optim.sgd({ lr: 0.1 }), key });
    const s = step.init(params);
    try {
      step(s, batch);
    } finally {
      nb.disposeReplaced(s, params);
    }
  };
  const ce = (p: nb.nn.MlpParams, b: Batch) => nn.crossEntropy(nn.mlp(p, b.x), b.y);
  assert.throws(
    () => run((p, b, ctx) => (ctx.key, ce(p, b))),
    /the loss read ctx.key but the state has no key; make the step with trainStep\(\{ loss, optimizer, key/,
  );
  assert.throws(
    () => run((p, b) => [ce(p, b), { logits: nn.mlp(p, b.x) }]),
    /aux output "logits" has shape \[32,3\]; aux metrics must be scalars/,
  );
  assert.throws(
    () => run((p, b) => [ce(p, b), { n: 3 }]),
    /aux output "n" is a number, not a tensor/,
  );
  assert.throws(
    () => run((p, b) => [ce(p, b), { loss: nb.sum(b.x) }]),
    /aux output "loss" has the name of a step metric/,
  );
  assert.throws(
    () => trainStep({ loss: ce, optimizer: optim.sgd({ lr: 0.1 }), key: 3 as never }),
    /trainStep: key must be a PRNG key/,
  );
  freeAll(params, batch);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("the step key flows through plugins (16-mixed: castParams, autocast, gradScale), jit ≡ eager", async () => {
  const before = nb.memory().tensors;
  const { batch, params } = setup();
  const base = trainStep({ loss, optimizer: optim.adam({ lr: 1e-2 }), key: random.key(13) });
  const eager = nb.precision("16-mixed")(base);
  const jitted = jit(eager);
  let a = eager.init(params);
  let b = jitted.init(params);
  const all: unknown[] = [a, b];
  for (let i = 0; i < 4; i++) {
    const [na, ma] = eager(a, batch);
    const [nb2, mb] = jitted(b, batch);
    all.push(na, ma, nb2, mb);
    assertSameBits(await bitsOf(ma), await bitsOf(mb), `metrics of step ${i}`);
    [a, b] = [na, nb2];
  }
  assert.deepEqual(Object.keys(a).sort(), ["key", "opt", "params", "plugins", "step"]);
  assert.deepEqual(Object.keys(b).sort(), ["key", "opt", "params", "plugins", "step"]);
  assertSameBits(await bitsOf(a), await bitsOf(b), "state");
  assert.equal(jitted.traces, 1);
  jitted.clear();
  freeAll(all, batch);
  assert.equal(nb.memory().tensors, before);
});
