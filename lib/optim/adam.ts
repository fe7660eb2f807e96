/**
 * Adam and AdamW with PyTorch's update rules (`torch.optim.Adam`, `torch.optim.AdamW`).
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { unflatten } from "../tree.ts";
import { add, astype, div, mul, sqrt, square, sub } from "../ops/elementwise.ts";
import type { LearningRate, Optimizer } from "./types.ts";
import {
  biasCorrections,
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

/** Options of {@linkcode adam} and {@linkcode adamw}. */
export interface AdamOptions {
  /** Learning rate: a number or a schedule of the applied-update count (default 1e-3). */
  lr?: LearningRate;
  /** Decay of the first moment (default 0.9). */
  b1?: number;
  /** Decay of the second moment (default 0.999). */
  b2?: number;
  /** Added to the bias-corrected √v (default 1e-8). */
  eps?: number;
  /** Weight decay: L2 (added to the grad) for `adam`, decoupled for `adamw` (default 0 / 1e-2). */
  weightDecay?: number;
  /** Which params get weight decay (default all; e.g. `decayMatrices`: not biases or norms). */
  mask?: DecayMask;
  /** dtype of the moments `mu` and `nu` (default: each param's dtype, as optax). */
  stateDtype?: DType;
}

/** The state of {@linkcode adam} / {@linkcode adamw}. */
export interface AdamState<P = unknown> {
  /** Applied updates so far (f32 scalar); bias correction uses `count + 1`. */
  readonly count: Tensor;
  /** First moments, shaped like the params. */
  readonly mu: P;
  /** Second moments, shaped like the params. */
  readonly nu: P;
}

function adamLike(name: string, opts: AdamOptions, decoupled: boolean): Optimizer<AdamState> {
  const {
    lr = 1e-3,
    b1 = 0.9,
    b2 = 0.999,
    eps = 1e-8,
    weightDecay = decoupled ? 1e-2 : 0,
    stateDtype,
    mask,
  } = opts ?? {};
  checkLearningRate(name, lr);
  checkNumber(name, "b1", b1, 0, false, 1);
  checkNumber(name, "b2", b2, 0, false, 1);
  checkNumber(name, "eps", eps, 0);
  checkNumber(name, "weightDecay", weightDecay, 0);
  return {
    init: (params) => ({
      count: initCount(params),
      mu: zerosLike(params, stateDtype),
      nu: zerosLike(params, stateDtype),
    }),
    update<P>(grads: P, state: AdamState, params: P): [P, AdamState] {
      const [ps, gs, ms, vs] = matchingLeaves(
        name,
        ["params", "grads", "state.mu", "state.nu"],
        params,
        grads,
        state.mu,
        state.nu,
      );
      const decays = decayFlags(name, params, mask);
      const rate = learningRateAt(lr, state.count);
      const t = add(state.count, 1);
      // Per compute dtype (f32, or f64 for f64 params): bias corrections, the step size and
      // AdamW's decay factor, each computed once per update.
      const scalars = new Map<
        DType,
        { stepSize: Tensor; sqrtBc2: Tensor; decay: number | Tensor }
      >();
      const scalarsFor = (c: DType) => {
        let s = scalars.get(c);
        if (!s) {
          const rc = typeof rate === "number" ? rate : astype(rate, c);
          const [bc1, bc2] = biasCorrections([b1, b2], t, c);
          const decay = !decoupled || weightDecay === 0
            ? 1
            : typeof rc === "number"
            ? 1 - rc * weightDecay
            : sub(1, mul(rc, weightDecay));
          s = { stepSize: div(rc, bc1), sqrtBc2: sqrt(bc2), decay };
          scalars.set(c, s);
        }
        return s;
      };
      const newParams: Tensor[] = [];
      const newMu: Tensor[] = [];
      const newNu: Tensor[] = [];
      ps.forEach((p, i) => {
        const c = computeDtype(p.dtype);
        const { stepSize, sqrtBc2, decay } = scalarsFor(c);
        let pc = astype(p, c);
        let g = astype(gs[i], c);
        if (decay !== 1 && decays[i]) pc = mul(pc, decay);
        if (!decoupled && weightDecay !== 0 && decays[i]) g = add(g, mul(pc, weightDecay));
        const m = add(mul(astype(ms[i], c), b1), mul(g, 1 - b1));
        const v = add(mul(astype(vs[i], c), b2), mul(square(g), 1 - b2));
        const denom = add(div(sqrt(v), sqrtBc2), eps);
        newParams.push(astype(sub(pc, mul(stepSize, div(m, denom))), p.dtype));
        newMu.push(astype(m, stateDtype ?? p.dtype));
        newNu.push(astype(v, stateDtype ?? p.dtype));
      });
      return [unflatten(params, newParams), {
        count: t,
        mu: unflatten(state.mu, newMu),
        nu: unflatten(state.nu, newNu),
      }];
    },
  };
}

/**
 * Adam as `torch.optim.Adam`: L2 weight decay `g += wd·p`; `m = b1·m + (1−b1)·g`,
 * `v = b2·v + (1−b2)·g²`; `p -= lr/(1−b1ᵗ) · m / (√v/√(1−b2ᵗ) + eps)` with `t = count + 1`.
 * Updates compute in f32 (f64 for f64 params) and round once to each param's dtype; the
 * moments are stored in `stateDtype`, by default the param's dtype (as optax: under
 * "16-true" params, grads and moments are all f16). The count and the bias corrections live
 * on the device, so a skipped step (selected away) does not advance them.
 *
 * @example
 * ```ts
 * const opt = adam({ lr: 1e-3, stateDtype: "f32" });
 * let s = opt.init(params);
 * [params, s] = opt.update(grads, s, params);
 * ```
 */
export function adam(opts: AdamOptions = {}): Optimizer<AdamState> {
  return defineOptimizer(adamLike("adam", opts, false));
}

/**
 * AdamW as `torch.optim.AdamW`: decoupled weight decay `p *= 1 − lr·wd` (default wd 1e-2),
 * then the {@linkcode adam} step without L2. Same dtypes and state as `adam`.
 *
 * @example
 * ```ts
 * const opt = adamw({ lr: warmup(1e-3, 100), weightDecay: 0.05 });
 * ```
 */
export function adamw(opts: AdamOptions = {}): Optimizer<AdamState> {
  return defineOptimizer(adamLike("adamw", opts, true));
}
