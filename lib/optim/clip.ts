/**
 * Gradient clipping transforms.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { add, astype, div, less, mul, sqrt, square, where } from "../ops/elementwise.ts";
import { sum } from "../ops/reduce.ts";
import { defineTransform, type GradientTransform } from "./transform.ts";
import { checkNumber, computeDtype, mapLeaves } from "./common.ts";
import { leaves } from "../tree.ts";

/**
 * The global L2 norm of all leaves of a tree of tensors, as a scalar tensor (f32; f64 when a
 * leaf is f64). Narrow leaves are squared and summed in f32.
 *
 * @example
 * ```ts
 * await globalNorm({ a: tensor([3]), b: tensor([4]) }).item(); // 5
 * ```
 */
export function globalNorm(tree: unknown): Tensor {
  const gs = leaves(tree);
  if (gs.length === 0) throw new Error("globalNorm: the tree holds no tensors");
  let acc: Tensor | undefined;
  for (const g of gs) {
    const s = sum(square(astype(g, computeDtype(g.dtype))));
    acc = acc ? add(acc, s) : s;
  }
  return sqrt(acc!);
}

/**
 * Scale all gradients by one factor so that their global L2 norm is at most `maxNorm` (optax's
 * `clip_by_global_norm`: grads with norm below `maxNorm` pass unchanged, others are scaled by
 * `maxNorm / norm`). Runs on the device; grads keep their dtypes; the state is empty (`{}`).
 *
 * @example
 * ```ts
 * const opt = chain(clipByGlobalNorm(1), sgd({ lr: 0.1 }));
 * ```
 */
export function clipByGlobalNorm(maxNorm: number): GradientTransform<Record<never, never>> {
  checkNumber("clipByGlobalNorm", "maxNorm", maxNorm, 0, true);
  return defineTransform({
    init: () => ({}),
    transform: (grads, state) => {
      if (leaves(grads).length === 0) return [grads, state];
      const norm = globalNorm(grads);
      const scale = where(less(norm, maxNorm), 1, div(maxNorm, norm));
      const clipped = mapLeaves(grads, (g) => {
        const c = computeDtype(g.dtype);
        return astype(mul(astype(g, c), astype(scale, c)), g.dtype);
      });
      return [clipped, state];
    },
  });
}
