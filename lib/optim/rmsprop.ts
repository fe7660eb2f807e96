/**
 * RMSprop with PyTorch's update rule (`torch.optim.RMSprop`: alpha, eps, momentum, centered,
 * coupled weight decay).
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { unflatten } from "../tree.ts";
import { add, astype, div, mul, sqrt, square, sub } from "../ops/elementwise.ts";
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

/** Options of {@linkcode rmsprop} (defaults as torch's). */
export interface RmspropOptions {
  /** Learning rate: a number or a schedule of the applied-update count (default 1e-2). */
  lr?: LearningRate;
  /** Decay of the running mean of g² (default 0.99). */
  alpha?: number;
  /** Added to the root mean square (default 1e-8). */
  eps?: number;
  /** Momentum factor (default 0: no buffer is kept). */
  momentum?: number;
  /** Normalize by the estimated variance `E[g²] − E[g]²` instead of `E[g²]` (default false). */
  centered?: boolean;
  /** Coupled L2 weight decay: `g += weightDecay · p` (default 0). */
  weightDecay?: number;
  /** dtype of the state buffers (default: each param's dtype). */
  stateDtype?: DType;
}

/** The state of {@linkcode rmsprop}. */
export interface RmspropState<P = unknown> {
  /** Applied updates so far (f32 scalar). */
  readonly count: Tensor;
  /** Running mean of g², shaped like the params. */
  readonly squareAvg: P;
  /** Running mean of g (only when `centered`). */
  readonly gradAvg?: P;
  /** Momentum buffers (only when `momentum > 0`). */
  readonly momentum?: P;
}

/**
 * RMSprop as `torch.optim.RMSprop`: `g += wd·p`; `s = α·s + (1−α)·g²`; with `centered`,
 * `a = α·a + (1−α)·g` and `rms = √(s − a²) + eps`, else `rms = √s + eps`; with momentum
 * `buf = momentum·buf + g/rms` and `p −= lr·buf`, else `p −= lr·g/rms`. Updates compute in f32
 * (f64 for f64 params) and round once to each param's dtype.
 *
 * @example
 * ```ts
 * const opt = rmsprop({ lr: 1e-3, momentum: 0.9, centered: true });
 * let s = opt.init(params);
 * [params, s] = opt.update(grads, s, params);
 * ```
 */
export function rmsprop(opts: RmspropOptions = {}): Optimizer<RmspropState> {
  const {
    lr = 1e-2,
    alpha = 0.99,
    eps = 1e-8,
    momentum = 0,
    centered = false,
    weightDecay = 0,
    stateDtype,
  } = opts ?? {};
  checkLearningRate("rmsprop", lr);
  checkNumber("rmsprop", "alpha", alpha, 0, false, 1);
  checkNumber("rmsprop", "eps", eps, 0);
  checkNumber("rmsprop", "momentum", momentum, 0);
  checkNumber("rmsprop", "weightDecay", weightDecay, 0);
  return defineOptimizer({
    init: (params) => ({
      count: initCount(params),
      squareAvg: zerosLike(params, stateDtype),
      ...(centered ? { gradAvg: zerosLike(params, stateDtype) } : {}),
      ...(momentum > 0 ? { momentum: zerosLike(params, stateDtype) } : {}),
    }),
    update<P>(grads: P, state: RmspropState, params: P): [P, RmspropState] {
      const names = ["params", "grads", "state.squareAvg"];
      const trees: unknown[] = [params, grads, state.squareAvg];
      if (centered) names.push("state.gradAvg"), trees.push(state.gradAvg);
      if (momentum > 0) names.push("state.momentum"), trees.push(state.momentum);
      const lists = matchingLeaves("rmsprop", names, ...trees);
      const [ps, gs, ss] = lists;
      const as = centered ? lists[3] : [];
      const bufs = momentum > 0 ? lists[centered ? 4 : 3] : [];
      const rate = learningRateAt(lr, state.count);
      const out: { p: Tensor[]; s: Tensor[]; a: Tensor[]; m: Tensor[] } = {
        p: [],
        s: [],
        a: [],
        m: [],
      };
      ps.forEach((p, i) => {
        const c = computeDtype(p.dtype);
        const store = stateDtype ?? p.dtype;
        const rc = typeof rate === "number" ? rate : astype(rate, c);
        const pc = astype(p, c);
        let g = astype(gs[i], c);
        if (weightDecay !== 0) g = add(g, mul(pc, weightDecay));
        const s = add(mul(astype(ss[i], c), alpha), mul(square(g), 1 - alpha));
        out.s.push(astype(s, store));
        let variance = s;
        if (centered) {
          const a = add(mul(astype(as[i], c), alpha), mul(g, 1 - alpha));
          out.a.push(astype(a, store));
          variance = sub(s, square(a));
        }
        const step = div(g, add(sqrt(variance), eps));
        let delta = step;
        if (momentum > 0) {
          delta = add(mul(astype(bufs[i], c), momentum), step);
          out.m.push(astype(delta, store));
        }
        out.p.push(astype(sub(pc, mul(delta, rc)), p.dtype));
      });
      return [unflatten(params, out.p), {
        count: add(state.count, 1),
        squareAvg: unflatten(state.squareAvg, out.s),
        ...(centered ? { gradAvg: unflatten(state.gradAvg, out.a) } : {}),
        ...(momentum > 0 ? { momentum: unflatten(state.momentum, out.m) } : {}),
      }];
    },
  });
}
