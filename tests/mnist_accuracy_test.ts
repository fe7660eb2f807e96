/**
 * The MNIST demo's accuracy claims, in a smaller configuration that runs in seconds: an MLP
 * 784-128-10, batch 32, 2 epochs, Adam lr 3e-3 (5% warmup, cosine), no image shifts, seed 0,
 * on the 8,000 / 2,000 split of the demo.
 *
 * Measured with this configuration (test accuracy, seed 0 / 1 / 2):
 *
 * | preset     | seed 0 | seed 1 | seed 2 |
 * | ---------- | -----: | -----: | -----: |
 * | 32-true    | 93.05  | 94.60  | 94.25  |
 * | 64-true    | 93.05  | 94.60  | 94.25  |
 * | 16-mixed   | 92.95  | 94.75  | 94.10  |
 * | bf16-mixed | 92.90  | 94.75  | 94.35  |
 * | 16-true    | 92.75  | 94.60  | 93.95  |
 * | bf16-true  | 92.45  | 94.40  | 93.90  |
 * | fp8-mixed  | 93.10  | 94.80  | 94.05  |
 * | O2         | 92.95  | 94.75  | 94.10  |
 *
 * adam8bit (seed 0 / 1): 92.90 / 94.55 under "32-true", 92.90 / 94.65 under "bf16-mixed".
 *
 * Every preset must land within 0.3 points of "32-true" at seed 0 (the run is deterministic),
 * except "bf16-true", with a wider, measured margin of 1.0 point: params and Adam moments
 * stored in bf16 lose small updates to rounding, 0.2–0.6 points lower at every seed. "16-true"
 * (f16 storage, Adam's eps raised to 1e-4 as Lightning advises) is 0.0–0.3 points lower.
 */
import assert from "node:assert/strict";
import { loadMnist } from "../examples/data/mnist.ts";
import { DEFAULTS, type OptimizerName } from "../examples/lib/options.ts";
import { CANONICAL_PRESETS } from "../examples/lib/precision.ts";
import { type MnistResult, trainMnist } from "../examples/lib/train_mnist.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { memory } from "../lib/tensor.ts";

const SMALL = {
  ...DEFAULTS,
  device: cpu,
  hidden: [128],
  batch: 32,
  epochs: 2,
  lr: 3e-3,
  shift: 0,
  seed: 0,
  logEvery: 50,
};
/** 32-true reaches 93.05% here; the floor leaves half a point. */
const FLOOR = 0.925;
/** Allowed shortfall against "32-true", in points of accuracy. */
const MARGIN: Record<string, number> = { "bf16-true": 1.0 };
const DEFAULT_MARGIN = 0.3;

const data = loadMnist({ seed: SMALL.seed, train: SMALL.train, test: SMALL.test });
const results = new Map<string, Promise<MnistResult>>();

/** Train once per (preset, optimizer) and share the result between tests. */
function run(precision: string, optimizer: OptimizerName = "adam"): Promise<MnistResult> {
  const k = `${precision}/${optimizer}`;
  if (!results.has(k)) results.set(k, trainMnist({ ...SMALL, precision, optimizer }, { data }));
  return results.get(k)!;
}

/** Right answers out of the 2,000 test digits (exact, so margins compare integers). */
const right = (r: MnistResult) => Math.round(r.testAccuracy * SMALL.test);
const points = (n: number) => (100 * n) / SMALL.test;

Deno.test(`32-true reaches ${100 * FLOOR}% (784-128-10, 2 epochs) and frees everything`, async () => {
  const before = memory();
  const r = await run("32-true");
  assert.ok(r.testAccuracy >= FLOOR, `test accuracy ${r.testAccuracy}`);
  assert.equal(r.steps, 500);
  assert.equal(r.skippedSteps, 0);
  assert.ok(r.epochs[1].loss < r.epochs[0].loss);
  assert.equal(r.bytesPerParam.toFixed(2), "12.00"); // f32 params + two f32 Adam moments
  assert.equal(memory().tensors, before.tensors);
  assert.equal(memory().bytes, before.bytes);
});

for (const preset of CANONICAL_PRESETS.filter((p) => p !== "32-true")) {
  const margin = MARGIN[preset] ?? DEFAULT_MARGIN;
  Deno.test(`${preset} is within ${margin} points of 32-true`, async () => {
    const [ref, r] = [await run("32-true"), await run(preset)];
    const short = points(right(ref) - right(r));
    assert.ok(
      short <= margin + 1e-9,
      `${preset}: ${points(right(r))}% vs 32-true ${points(right(ref))}% (${short} points short)`,
    );
    assert.ok(Number.isFinite(r.finalLoss));
  });
}

for (const preset of ["32-true", "bf16-mixed"]) {
  Deno.test(`adam8bit is within 0.3 points of adam under ${preset}, in half the state`, async () => {
    const [adam, a8] = [await run(preset), await run(preset, "adam8bit")];
    const short = points(right(adam) - right(a8));
    assert.ok(
      short <= 0.3 + 1e-9,
      `adam8bit ${points(right(a8))}% vs adam ${points(right(adam))}%`,
    );
    // f32 params (4 bytes) + two 8-bit moments with block absmax, vs 4 + 8 for adam.
    assert.ok(a8.bytesPerParam < 6.5, `adam8bit: ${a8.bytesPerParam} bytes/param`);
    assert.ok(a8.optimizerStateBytes < adam.optimizerStateBytes / 3);
  });
}
