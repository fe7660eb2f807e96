/**
 * The optimizer contract (optax style): pure `init` and `update` over trees of tensors.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";

/**
 * A pure optimizer. States are trees of tensors (so they checkpoint, quantize and select like
 * any tree); `update` never mutates its inputs and returns new params and a new state.
 *
 * Ownership: `init` and `update` free every intermediate they make (no `tidy` needed around
 * them); the new params and state they return are the caller's, and the inputs stay the
 * caller's too. In a hand-written loop free what was replaced (`disposeReplaced`); under
 * `trainStep`/`fit` that is done for you.
 *
 * @example
 * ```ts
 * const opt = adam({ lr: 1e-3 });
 * let s = opt.init(params);
 * for (const batch of batches) {
 *   const g = grad(loss)(params, batch);
 *   const [p2, s2] = opt.update(g, s, params);
 *   disposeReplaced([params, s, g], [p2, s2]); // the old params, state and grads
 *   [params, s] = [p2, s2];
 * }
 * ```
 */
export interface Optimizer<S = unknown> {
  /** The initial state for `params` (on the params' device and in their dtype, unless noted). */
  init<P>(params: P): S;
  /** One step: new params and new state from gradients (same tree structure as params). */
  update<P>(grads: P, state: S, params: P): [P, S];
}

/**
 * A learning-rate schedule: a function of the number of applied updates (an f32 scalar tensor,
 * 0 for the first update), evaluated on the device so skipped steps do not advance it.
 */
export type Schedule = (count: Tensor) => Tensor;

/** A constant learning rate or a {@linkcode Schedule}. */
export type LearningRate = number | Schedule;
