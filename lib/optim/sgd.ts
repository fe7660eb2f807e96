/**
 * Stochastic gradient descent with PyTorch's update rules (momentum, Nesterov, coupled weight
 * decay).
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { unflatten } from "../tree.ts";
import { add, astype, mul, sub } from "../ops/elementwise.ts";
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

/** Options of {@linkcode sgd}. */
export interface SgdOptions {
  /** Learning rate: a number or a schedule of the applied-update count. */
  lr: LearningRate;
  /** Momentum factor (default 0: no momentum buffer is kept). */
  momentum?: number;
  /** Nesterov momentum (needs `momentum > 0`). */
  nesterov?: boolean;
  /** Coupled L2 weight decay: `g += weightDecay · p` (default 0). */
  weightDecay?: number;
  /** dtype of the momentum buffers (default: each param's dtype, as optax). */
  stateDtype?: DType;
}

/** The state of {@linkcode sgd}: the applied-update count and, with momentum, the buffers. */
export interface SgdState<P = unknown> {
  /** Applied updates so far (f32 scalar). */
  readonly count: Tensor;
  /** Momentum buffers shaped like the params (only when `momentum > 0`). */
  readonly momentum?: P;
}

/**
 * SGD as `torch.optim.SGD` (dampening 0): `g += wd·p`; with momentum `buf = momentum·buf + g`
 * (the first step gives `buf = g`) and `g = buf`, or `g + momentum·buf` with Nesterov; then
 * `p -= lr·g`. Updates compute in f32 (f64 for f64 params) and round once to each param's
 * dtype; momentum buffers are stored in `stateDtype`, by default the param's dtype.
 *
 * @example
 * ```ts
 * const opt = sgd({ lr: 0.1, momentum: 0.9, nesterov: true });
 * let s = opt.init(params);
 * [params, s] = opt.update(grads, s, params);
 * ```
 */
export function sgd(opts: SgdOptions): Optimizer<SgdState> {
  const { lr, momentum = 0, nesterov = false, weightDecay = 0, stateDtype } = opts ?? {};
  checkLearningRate("sgd", lr);
  checkNumber("sgd", "momentum", momentum, 0);
  checkNumber("sgd", "weightDecay", weightDecay, 0);
  if (nesterov && momentum === 0) {
    throw new Error("sgd: nesterov needs momentum > 0, e.g. sgd({ lr, momentum: 0.9, nesterov })");
  }
  return defineOptimizer({
    init: (params) => ({
      count: initCount(params),
      ...(momentum > 0 ? { momentum: zerosLike(params, stateDtype) } : {}),
    }),
    update<P>(grads: P, state: SgdState, params: P): [P, SgdState] {
      const trees = momentum > 0 ? [params, grads, state.momentum] : [params, grads];
      const [ps, gs, bufs] = matchingLeaves("sgd", ["params", "grads", "state.momentum"], ...trees);
      const rate = learningRateAt(lr, state.count);
      const newParams: Tensor[] = [];
      const newBufs: Tensor[] = [];
      ps.forEach((p, i) => {
        const c = computeDtype(p.dtype);
        const pc = astype(p, c);
        let g = astype(gs[i], c);
        if (weightDecay !== 0) g = add(g, mul(pc, weightDecay));
        if (momentum > 0) {
          const buf = add(mul(astype(bufs[i], c), momentum), g);
          newBufs.push(astype(buf, stateDtype ?? p.dtype));
          g = nesterov ? add(g, mul(buf, momentum)) : buf;
        }
        newParams.push(astype(sub(pc, mul(g, rate)), p.dtype));
      });
      const count = add(state.count, 1);
      const next: SgdState = momentum > 0
        ? { count, momentum: unflatten(state.momentum, newBufs) }
        : { count };
      return [unflatten(params, newParams), next];
    },
  });
}
