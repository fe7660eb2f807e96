/**
 * Inverted dropout with an explicit key.
 *
 * @module
 */
import { type Tensor, zeros } from "../tensor.ts";
import { mul, where } from "../ops/elementwise.ts";
import { bernoulli, type Key } from "../random.ts";

/**
 * Zero each element with probability `rate` and scale the kept ones by `1 / (1 − rate)`, so
 * the expected value is unchanged. `rate` 0 returns `x` itself; `rate` 1 gives zeros. Pass a
 * fresh key each step (e.g. `foldIn(key, step)`); leave dropout out at evaluation.
 *
 * @example
 * ```ts
 * const h = dropout(foldIn(k, step), relu(linear(p, x)), 0.1);
 * ```
 */
export function dropout(k: Key, x: Tensor, rate: number): Tensor {
  if (typeof rate !== "number" || !(rate >= 0 && rate <= 1)) {
    throw new Error(`dropout: rate must be a number in [0, 1], got ${rate}`);
  }
  if (rate === 0) return x;
  if (rate === 1) return where(zeros([], { dtype: "bool", device: x.device }), x, 0);
  const keepMask = bernoulli(k, 1 - rate, x.shape, { device: x.device });
  return where(keepMask, mul(x, 1 / (1 - rate)), 0);
}
