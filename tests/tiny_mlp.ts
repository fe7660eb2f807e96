/**
 * A tiny classification task shared by the plugin tests: a [6, 16, 3] MLP, one batch of 32
 * normal inputs with labels 0, 1, 2, …, cross-entropy, and a plain Adam (lr 1e-2) train step.
 */
import type { Tensor } from "../lib/tensor.ts";
import { tensor } from "../lib/tensor.ts";
import * as random from "../lib/random.ts";
import { type Step, trainStep } from "../lib/train.ts";
import { crossEntropy, mlp, mlpInit, type MlpParams } from "../lib/nn/mod.ts";
import { adam } from "../lib/optim/mod.ts";

/** One batch of the task. */
export interface Batch {
  x: Tensor;
  y: Tensor;
}

/** The task's batch, initial params, loss and base step, all drawn from `seed`. */
export function tinyMlp(seed: number): {
  batch: Batch;
  params: MlpParams;
  loss: (p: MlpParams, b: Batch) => Tensor;
  base: Step<Batch>;
} {
  const [kx, kp] = random.split(random.key(seed), 2);
  const batch: Batch = {
    x: random.normal(kx, [32, 6]),
    y: tensor(Int32Array.from({ length: 32 }, (_, i) => i % 3), { dtype: "i32" }),
  };
  const params = mlpInit(kp, [6, 16, 3]);
  const loss = (p: MlpParams, b: Batch) => crossEntropy(mlp(p, b.x), b.y);
  return { batch, params, loss, base: trainStep({ loss, optimizer: adam({ lr: 1e-2 }) }) };
}
