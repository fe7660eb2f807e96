/**
 * The optimizers the examples can train with, by flag name.
 *
 * @example
 * ```ts
 * const opt = makeOptimizer("adam8bit", cosine(3e-3, 625, { warmupSteps: 31 }));
 * ```
 *
 * @module
 */
import type { LearningRate, Optimizer } from "../../lib/optim/types.ts";
import { adam, adam8bit, adamw, adamw8bit, sgd, sgd8bit } from "../../lib/optim/mod.ts";
import type { OptimizerName } from "./options.ts";

/** SGD's momentum in the examples. */
const MOMENTUM = 0.9;

/**
 * An optimizer by flag name with learning rate `lr` (a number or a schedule); the SGDs use
 * momentum 0.9, the Adams `eps` (their default 1e-8 unless given), the rest their defaults.
 *
 * @example
 * ```ts
 * const opt = makeOptimizer("sgd", 0.05);
 * ```
 */
export function makeOptimizer(
  name: OptimizerName,
  lr: LearningRate,
  opts: { eps?: number } = {},
): Optimizer {
  const { eps } = opts;
  const make: Record<OptimizerName, () => Optimizer> = {
    adam: () => adam({ lr, eps }),
    adamw: () => adamw({ lr, eps }),
    sgd: () => sgd({ lr, momentum: MOMENTUM }),
    adam8bit: () => adam8bit({ lr, eps }),
    adamw8bit: () => adamw8bit({ lr, eps }),
    sgd8bit: () => sgd8bit({ lr, momentum: MOMENTUM }),
  };
  if (!Object.hasOwn(make, name)) {
    throw new Error(`unknown optimizer "${name}"; valid values: ${Object.keys(make).join(", ")}`);
  }
  return make[name]();
}
