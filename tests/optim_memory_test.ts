/**
 * Every optimizer, transform, chain and schedule frees its own intermediates: `update` called
 * outside any `tidy` leaves only the new params and state alive (issue 13, item 10).
 */
import assert from "node:assert/strict";
import {
  adam,
  adam8bit,
  adamw,
  adamw8bit,
  chain,
  clipByGlobalNorm,
  cosine,
  type GradientTransform,
  type Optimizer,
  sgd,
  sgd8bit,
  warmup,
} from "../lib/optim/mod.ts";
import { memory, type Tensor, tensor } from "../lib/tensor.ts";
import { leaves } from "../lib/tree.ts";
import { mul } from "../lib/ops/elementwise.ts";

type P = { w: Tensor; b: Tensor };
const small8 = { blockSize: 64, minSize: 0 };
const optimizers: [string, () => Optimizer][] = [
  ["sgd", () => sgd({ lr: 0.1 })],
  [
    "sgd momentum nesterov wd",
    () => sgd({ lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 }),
  ],
  ["adam", () => adam({ lr: 1e-3 })],
  ["adam wd f32 state", () => adam({ lr: 1e-3, weightDecay: 0.1, stateDtype: "f32" })],
  ["adamw cosine", () => adamw({ lr: cosine(1e-3, 100, { warmupSteps: 3 }) })],
  ["adam8bit", () => adam8bit({ lr: 1e-3, ...small8 })],
  ["adamw8bit warmup", () => adamw8bit({ lr: warmup(1e-3, 5), ...small8 })],
  ["sgd8bit", () => sgd8bit({ lr: 0.1, ...small8 })],
  ["chain(clip, adam)", () => chain(clipByGlobalNorm(0.5), adam({ lr: 1e-2 }))],
  [
    "chain(clip, chain(clip), sgd8bit)",
    () => chain(clipByGlobalNorm(1), chain(clipByGlobalNorm(2)), sgd8bit({ lr: 0.1, ...small8 })),
  ],
];

const params = (): P => ({
  w: tensor(Float32Array.from({ length: 256 }, (_, i) => Math.sin(i)), { shape: [16, 16] }),
  b: tensor(Float32Array.from({ length: 16 }, (_, i) => i / 16), { dtype: "bf16" }),
});
const gradsFor = (p: P, k: number): P => ({ w: mul(p.w, 0.1 * k), b: mul(p.b, -0.2) });

/** Live tensors of a set of trees, counting a shared tensor once. */
const count = (...trees: unknown[]) => new Set(trees.flatMap((t) => leaves(t))).size;

for (const [name, make] of optimizers) {
  Deno.test(`${name}: ten updates outside tidy leave only the new params and state`, () => {
    const before = memory().tensors;
    const opt = make();
    let p = params();
    let s = opt.init(p);
    assert.equal(memory().tensors - before, count(p, s), "init leaves only its state");
    for (let k = 1; k <= 10; k++) {
      const g = gradsFor(p, k);
      const [p2, s2] = opt.update(g, s, p);
      const keepers = new Set([...leaves(p2), ...leaves(s2)]);
      for (const t of [...leaves(p), ...leaves(s), ...leaves(g)]) if (!keepers.has(t)) t.dispose();
      [p, s] = [p2, s2];
      assert.equal(memory().tensors - before, count(p, s), `after update ${k}`);
    }
    for (const t of new Set([...leaves(p), ...leaves(s)])) t.dispose();
    assert.equal(memory().tensors, before);
  });
}

Deno.test("a chain of transforms only (and clipByGlobalNorm alone) frees its intermediates", () => {
  const before = memory().tensors;
  const parts: GradientTransform[] = [
    clipByGlobalNorm(0.1),
    chain(clipByGlobalNorm(1), clipByGlobalNorm(2)),
  ];
  for (const t of parts) {
    const p = params();
    const s = t.init(p);
    const g = gradsFor(p, 3);
    const [g2, s2] = t.transform(g, s, p);
    assert.equal(
      memory().tensors - before,
      count(p, g, g2, s2),
      "grads in, grads out, nothing else",
    );
    for (const x of new Set(leaves([p, g, g2, s2]))) x.dispose();
  }
  assert.equal(memory().tensors, before);
});
