/**
 * Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; as optax's `lion`).
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { unflatten } from "../tree.ts";
import { add, astype, mul, sign, sub } from "../ops/elementwise.ts";
import type { LearningRate, Optimizer } from "./types.ts";
import {
  checkLearningRate,
  checkNumber,
  computeDtype,
  defineOptimizer,
  initCount,
  learningRateAt,
  matchingLeaves,
  zerosLike,
} from "./common.ts";
import { decayFlags, type DecayMask } from "./mask.ts";

/** Options of {@linkcode lion} (defaults as optax's). */
export interface LionOptions {
  /** Learning rate: a number or a schedule of the applied-update count (default 1e-4). */
  lr?: LearningRate;
  /** Interpolation between momentum and gradient for the update's sign (default 0.9). */
  b1?: number;
  /** Decay of the momentum (default 0.99). */
  b2?: number;
  /** Decoupled weight decay: `p −= lr·wd·p` (default 1e-3, as optax). */
  weightDecay?: number;
  /** Which params get weight decay (default all; e.g. {@linkcode decayMatrices}). */
  mask?: DecayMask;
  /** dtype of the momentum (default: each param's dtype). */
  stateDtype?: DType;
}

/** The state of {@linkcode lion}. */
export interface LionState<P = unknown> {
  /** Applied updates so far (f32 scalar). */
  readonly count: Tensor;
  /** Momentum, shaped like the params. */
  readonly mu: P;
}

/**
 * Lion: `u = sign(b1·m + (1−b1)·g)`, `p −= lr·(u + wd·p)` (wd where the mask allows),
 * `m = b2·m + (1−b2)·g`. Updates compute in f32 (f64 for f64 params) and round once to each
 * param's dtype.
 *
 * @example
 * ```ts
 * const opt = lion({ lr: 3e-4, weightDecay: 0.1, mask: decayMatrices });
 * let s = opt.init(params);
 * [params, s] = opt.update(grads, s, params);
 * ```
 */
export function lion(opts: LionOptions = {}): Optimizer<LionState> {
  const { lr = 1e-4, b1 = 0.9, b2 = 0.99, weightDecay = 1e-3, mask, stateDtype } = opts ?? {};
  checkLearningRate("lion", lr);
  checkNumber("lion", "b1", b1, 0, false, 1);
  checkNumber("lion", "b2", b2, 0, false, 1);
  checkNumber("lion", "weightDecay", weightDecay, 0);
  return defineOptimizer({
    init: (params) => ({ count: initCount(params), mu: zerosLike(params, stateDtype) }),
    update<P>(grads: P, state: LionState, params: P): [P, LionState] {
      const [ps, gs, ms] = matchingLeaves(
        "lion",
        ["params", "grads", "state.mu"],
        params,
        grads,
        state.mu,
      );
      const decays = decayFlags("lion", params, mask);
      const rate = learningRateAt(lr, state.count);
      const newParams: Tensor[] = [];
      const newMu: Tensor[] = [];
      ps.forEach((p, i) => {
        const c = computeDtype(p.dtype);
        const rc = typeof rate === "number" ? rate : astype(rate, c);
        const pc = astype(p, c);
        const g = astype(gs[i], c);
        const m = astype(ms[i], c);
        let u = sign(add(mul(m, b1), mul(g, 1 - b1)));
        if (weightDecay !== 0 && decays[i]) u = add(u, mul(pc, weightDecay));
        newParams.push(astype(sub(pc, mul(u, rc)), p.dtype));
        newMu.push(astype(add(mul(m, b2), mul(g, 1 - b2)), stateDtype ?? p.dtype));
      });
      return [unflatten(params, newParams), {
        count: add(state.count, 1),
        mu: unflatten(state.mu, newMu),
      }];
    },
  });
}
