/**
 * Helpers shared by the optimizers: the ownership wrapper every optimizer goes through, the
 * dtype an update computes in, the applied-update counter, learning rates that are numbers or
 * schedules, and leaf-wise tree walking.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { type Tensor, tidy, zeros } from "../tensor.ts";
import { cpu } from "../backend/cpu/cpu.ts";
import { leaves, unflatten } from "../tree.ts";
import type { LearningRate, Optimizer } from "./types.ts";
import { astype, pow, sub } from "../ops/elementwise.ts";
import { oneMinusPow, oneMinusPows } from "./bias_correction.ts";

/**
 * The ownership rule of every optimizer: `init` and `update` run inside `tidy`, so each frees
 * the intermediates it made (casts, moments before requantization, schedule values …) and the
 * caller needs no `tidy` of its own. What they return (the new params and state) is the
 * caller's; tensors they pass through unchanged stay whoever's they were; inputs are never
 * freed (free a replaced state yourself, or let `fit`/`trainStep` do it).
 *
 * @example
 * ```ts
 * const double = defineOptimizer({
 *   init: () => ({}),
 *   update: (g, s, p) => [tree.map((x, i) => sub(x, mul(tree.leaves(g)[i], 2)), p), s],
 * });
 * ```
 */
export function defineOptimizer<S>(opt: Optimizer<S>): Optimizer<S> {
  return {
    init: <P>(params: P): S => tidy(() => opt.init(params)),
    update: <P>(grads: P, state: S, params: P): [P, S] =>
      tidy(() => opt.update(grads, state, params)),
  };
}

/**
 * The dtype an optimizer computes a parameter's update in: f64 for f64, f32 for everything
 * else (narrow values are widened, updated, and rounded once when stored).
 *
 * @example
 * ```ts
 * computeDtype("bf16"); // "f32"
 * ```
 */
export function computeDtype(d: DType): "f64" | "f32" {
  return d === "f64" ? "f64" : "f32";
}

/**
 * A fresh applied-update counter: an f32 scalar 0 on the device of the first param.
 *
 * @example
 * ```ts
 * const count = initCount({ w: ones([2]) }); // f32 scalar 0
 * ```
 */
export function initCount(params: unknown): Tensor {
  const first = leaves(params)[0];
  return zeros([], { dtype: "f32", device: first?.device ?? cpu });
}

/**
 * The learning rate for this update: the number itself, or the schedule evaluated at `count`
 * (an f32 scalar tensor on the device).
 *
 * @example
 * ```ts
 * const lr = learningRateAt(cosine(1e-3, 1000), state.count);
 * ```
 */
export function learningRateAt(lr: LearningRate, count: Tensor): number | Tensor {
  return typeof lr === "number" ? lr : lr(count);
}

/**
 * Adam's bias correction `1 − bᵗ` for the update count `t` (an f32 tensor on the device), in
 * the compute dtype `c` (f64, else f32): in f32 it is the exact value rounded once ({@linkcode oneMinusPow});
 * in f64 it is `1 − pow(b, t)` in f64, as `torch.optim.Adam` computes it in Python floats.
 *
 * @example
 * ```ts
 * const bc2 = biasCorrection(0.999, add(state.count, 1), "f32"); // 0.001 at t = 1
 * ```
 */
export function biasCorrection(b: number, t: Tensor, c: DType): Tensor {
  return c === "f64" ? sub(1, pow(b, astype(t, "f64"))) : oneMinusPow(b, t);
}

/**
 * {@linkcode biasCorrection} for several betas at once (one table lookup in f32).
 *
 * @example
 * ```ts
 * const [bc1, bc2] = biasCorrections([0.9, 0.999], add(state.count, 1), "f32");
 * ```
 */
export function biasCorrections(bs: readonly number[], t: Tensor, c: DType): Tensor[] {
  return c === "f64" ? bs.map((b) => biasCorrection(b, t, c)) : oneMinusPows(bs, t);
}

/**
 * Throw a clear error unless `value` is a finite number ≥ `min` (or > `min` when `strict`).
 *
 * @example
 * ```ts
 * checkNumber("adam", "b1", 0.9, 0);
 * ```
 */
export function checkNumber(
  op: string,
  name: string,
  value: unknown,
  min: number,
  strict = false,
  max = Infinity,
): void {
  const ok = typeof value === "number" && Number.isFinite(value) &&
    (strict ? value > min : value >= min) && value <= max;
  if (!ok) {
    const lo = strict ? `> ${min}` : `≥ ${min}`;
    const hi = max === Infinity ? "" : ` and ≤ ${max}`;
    throw new Error(`${op}: ${name} must be a finite number ${lo}${hi}, got ${value}`);
  }
}

/**
 * Throw a clear error unless `lr` is a number ≥ 0 or a schedule function.
 *
 * @example
 * ```ts
 * checkLearningRate("sgd", 0.1);
 * ```
 */
export function checkLearningRate(op: string, lr: unknown): void {
  if (typeof lr === "function") return;
  checkNumber(op, "lr", lr, 0);
}

/**
 * The tensor leaves of `trees` (all of one structure), checked to have the same count.
 *
 * @example
 * ```ts
 * const [ps, gs] = matchingLeaves("adam", ["params", "grads"], params, grads);
 * ```
 */
export function matchingLeaves(
  op: string,
  names: readonly string[],
  ...trees: unknown[]
): Tensor[][] {
  const lists = trees.map(leaves);
  lists.forEach((l, i) => {
    if (l.length !== lists[0].length) {
      throw new Error(
        `${op}: ${names[i]} has ${l.length} tensors but ${names[0]} has ${lists[0].length}; ` +
          "pass trees of the same structure (and the state made by init(params))",
      );
    }
    l.forEach((t, j) => {
      const p = lists[0][j];
      if (t.shape.length !== p.shape.length || t.shape.some((d, k) => d !== p.shape[k])) {
        throw new Error(
          `${op}: tensor ${j} of ${names[i]} has shape [${t.shape}] but in ${
            names[0]
          } [${p.shape}]`,
        );
      }
    });
  });
  return lists;
}

/**
 * A tree shaped like `like` whose leaves are `fn(leaf, i)` (leaves in `tree.leaves` order).
 *
 * @example
 * ```ts
 * const mu = mapLeaves(params, (p) => zeros(p.shape, { dtype: p.dtype, device: p.device }));
 * ```
 */
export function mapLeaves<T>(like: T, fn: (t: Tensor, i: number) => Tensor): T {
  return unflatten(like, leaves(like).map(fn));
}

/**
 * Zeros shaped like each leaf of `params`, in `dtype` (default: each leaf's own dtype).
 *
 * @example
 * ```ts
 * const mu = zerosLike(params, "f32");
 * ```
 */
export function zerosLike<T>(params: T, dtype?: DType): T {
  return mapLeaves(params, (p) => zeros(p.shape, { dtype: dtype ?? p.dtype, device: p.device }));
}
