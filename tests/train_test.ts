/**
 * The training loop on real MNIST digits: steps are pure, `fit` holds memory flat and reads back
 * only every `logEvery` steps, `evaluate` sums on the device.
 */
import assert from "node:assert/strict";
import { loadMnist } from "../examples/data/mnist.ts";
import {
  type Batch,
  type DeviceSplit,
  epochOrder,
  inOrder,
  shuffled,
  toDevice,
} from "../examples/lib/batches.ts";
import { shiftImages } from "../examples/lib/augment.ts";
import { take } from "../lib/ops/index.ts";
import { accuracy } from "../examples/lib/accuracy.ts";
import { initParams, mnistStep } from "../examples/lib/train_mnist.ts";
import { key } from "../lib/random.ts";
import { dispose, memory, resetPeak, Tensor, tensor, tidy } from "../lib/tensor.ts";
import { leaves } from "../lib/tree.ts";
import { disposeReplaced, evaluate, fit, type TrainState } from "../lib/train.ts";
import { mlp } from "../lib/nn/mod.ts";
import { sum } from "../lib/ops/reduce.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import type { OptimizerName } from "../examples/lib/options.ts";

const data = loadMnist({ seed: 0, train: 6400, test: 1000 });
const small = { seed: 0, hidden: [32], device: cpu };

function setup(precision: string, optimizer: OptimizerName = "adam", steps = 200) {
  const step = mnistStep({ precision, optimizer, lr: 3e-3, schedule: "cosine" }, steps);
  const params = initParams(small);
  const state = step.init(params);
  disposeReplaced(params, state);
  return { step, state };
}

async function bitsOf(tree: unknown): Promise<string[]> {
  return await Promise.all(
    leaves(tree).map(async (t) => `${t.dtype}[${t.shape}]:${Array.from(await t.bits()).join(",")}`),
  );
}

/** One shuffled, shifted batch of 64 whose tensors belong to the caller. */
function oneBatch(train: DeviceSplit): Batch {
  const idx = tensor(epochOrder(key(1), 0, train.count).subarray(0, 64), { dtype: "i32" });
  const raw = take(train.x, idx);
  const b = { x: shiftImages(raw, key(2), 1), y: take(train.y, idx) };
  dispose([idx, raw]);
  return b;
}

for (
  const [precision, optimizer] of [["32-true", "adam"], ["16-mixed", "adam"], [
    "bf16-true",
    "adam8bit",
  ]] as const
) {
  Deno.test(`a step is pure: same state and batch give bitwise-identical results (${precision}, ${optimizer})`, async () => {
    const before = memory();
    const train = toDevice(data.train);
    const { step, state } = setup(precision, optimizer);
    const b = oneBatch(train);
    // One step first, so the optimizer (and plugin) state is not fresh.
    const [s1, m1] = step(state, b);
    disposeReplaced(state, s1);
    dispose(m1);
    const inputBits = await bitsOf(s1);
    const [a, ma] = step(s1, b);
    const [c, mc] = step(s1, b);
    // The input state is untouched: alive and bit-identical.
    assert.ok(leaves(s1).every((t) => !t.disposed));
    assert.deepEqual(await bitsOf(s1), inputBits);
    assert.equal(s1.step, 1);
    assert.equal(a.step, 2);
    // Two calls agree bit for bit, in state and metrics.
    assert.deepEqual(await bitsOf(a), await bitsOf(c));
    assert.deepEqual(await bitsOf(ma), await bitsOf(mc));
    assert.deepEqual(Object.keys(a.plugins), Object.keys(s1.plugins));
    // And the step changed the params.
    assert.notDeepEqual(await bitsOf(a.params), await bitsOf(s1.params));
    dispose([a, c, ma, mc, s1, b, train]);
    const after = memory();
    assert.equal(after.tensors, before.tensors);
    assert.equal(after.bytes, before.bytes);
  });
}

for (const [precision, optimizer] of [["32-true", "adam"], ["16-mixed", "adam8bit"]] as const) {
  Deno.test(`memory() is flat over 200 steps of the MNIST loop with fit (${precision}, ${optimizer})`, async () => {
    const start = memory();
    const train = toDevice(data.train);
    const { step, state } = setup(precision, optimizer);
    const seen: { tensors: number; buffers: number; bytes: number; peak: number }[] = [];
    resetPeak();
    const out = await fit(
      step,
      state,
      shuffled(train, { batch: 32, key: key(5), epoch: 0, shift: { key: key(6), max: 1 } }),
      {
        logEvery: 20,
        onLog: () => {
          const m = memory();
          seen.push({ tensors: m.tensors, buffers: m.buffers, bytes: m.bytes, peak: m.peakBytes });
        },
      },
    );
    assert.equal(out.state.step, 200);
    assert.equal(seen.length, 10);
    // Live tensors, buffers and bytes are the same at every readback (every 20 steps) ...
    for (const s of seen) {
      assert.deepEqual(
        { tensors: s.tensors, buffers: s.buffers, bytes: s.bytes },
        { tensors: seen[0].tensors, buffers: seen[0].buffers, bytes: seen[0].bytes },
      );
    }
    // ... and the peak does not creep up after the first window.
    for (const s of seen) assert.equal(s.peak, seen[0].peak);
    // fit kept the caller's state alive and freed every other replaced state.
    assert.ok(leaves(state).every((t) => !t.disposed));
    dispose([state, out.state, train]);
    const end = memory();
    assert.equal(end.tensors, start.tensors);
    assert.equal(end.bytes, start.bytes);
  });
}

/** Count `Tensor.prototype.data` calls (every readback goes through it) while `fn` runs. */
async function countReads<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const original = Tensor.prototype.data;
  let reads = 0;
  Tensor.prototype.data = function (this: Tensor) {
    reads++;
    return original.call(this);
  };
  try {
    return [await fn(), reads];
  } finally {
    Tensor.prototype.data = original;
  }
}

// One readback per log: fit packs the loss sum (and under gradScale the last `scale` and
// `skipped` and the summed `skipped`) into one tensor.
for (const precision of ["32-true", "16-mixed"]) {
  Deno.test(`fit reads back only every logEvery steps and logs window means (${precision})`, async () => {
    const train = toDevice(data.train);
    const { step, state } = setup(precision);
    const batches = () => shuffled(train, { batch: 64, key: key(7), epoch: 0, dropLast: true });
    // The per-step losses, by stepping by hand.
    const losses: number[] = [];
    let s: TrainState = state;
    let i = 0;
    for (const b of batches()) {
      if (i++ === 12) break;
      const [next, m] = step(s, b);
      losses.push(await m.loss.item());
      if (s !== state) disposeReplaced(s, next);
      dispose(m);
      s = next;
    }
    const manual = await bitsOf(s.params);
    dispose(s !== state ? s : []);
    const logged: number[] = [];
    const [out, reads] = await countReads(() =>
      fit(step, state, first(batches(), 12), { logEvery: 5, onLog: (e) => logged.push(e.step) })
    );
    // Three logs (steps 5, 10, 12), nothing read back in between.
    assert.deepEqual(logged, [5, 10, 12]);
    assert.deepEqual(out.history.map((h) => h.step), [5, 10, 12]);
    assert.equal(reads, 3);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const windows = [losses.slice(0, 5), losses.slice(5, 10), losses.slice(10, 12)];
    out.history.forEach((h, k) => {
      assert.ok(Math.abs(h.loss - mean(windows[k])) < 1e-6 * mean(windows[k]), `window ${k}`);
    });
    if (precision === "16-mixed") {
      assert.equal(out.history[0].metrics.scale, 65536);
      assert.equal(out.history[0].metrics.skipped, 0);
    }
    // fit ran the same steps as the hand loop.
    assert.deepEqual(await bitsOf(out.state.params), manual);
    dispose([state, out.state, train]);
  });
}

function* first<T>(it: Iterable<T>, n: number): Generator<T> {
  if (n <= 0) return;
  let i = 0;
  for (const x of it) {
    yield x;
    if (++i >= n) return;
  }
}

Deno.test("evaluate sums and averages per-batch metrics on the device; accuracy matches the host", async () => {
  const before = memory();
  const test = toDevice(data.test);
  const params = initParams(small);
  const { sum: sums, mean, batches } = await evaluate(
    (b: Batch) => ({ pixels: sum(b.x), labels: sum(b.y) }),
    inOrder(test, 300),
  );
  assert.equal(batches, 4); // 300, 300, 300, 100
  const hostPixels = data.test.images.reduce((a, b) => a + b, 0);
  const hostLabels = data.test.labels.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sums.pixels - hostPixels) < 1e-4 * hostPixels);
  assert.equal(sums.labels, hostLabels);
  assert.equal(mean.labels, hostLabels / 4);
  // accuracy(): argmax vs labels on the device, summed once; compare with a host argmax.
  const acc = await accuracy((x) => mlp(params, x), inOrder(test, 300));
  const logits = tidy(() => mlp(params, test.x));
  const l = await logits.data();
  let right = 0;
  for (let i = 0; i < test.count; i++) {
    let best = 0;
    for (let c = 1; c < 10; c++) if (l[i * 10 + c] > l[i * 10 + best]) best = c;
    if (best === data.test.labels[i]) right++;
  }
  assert.equal(acc.count, 1000);
  assert.equal(acc.correct, right);
  assert.equal(acc.accuracy, right / 1000);
  dispose([logits, params, test]);
  assert.equal(memory().tensors, before.tensors);
  assert.equal(memory().bytes, before.bytes);
});
