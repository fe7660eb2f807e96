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
 * @example
 * ```ts
 * const opt = adam({ lr: 1e-3 });
 * let s = opt.init(params);
 * [params, s] = opt.update(grads, s, params);
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
