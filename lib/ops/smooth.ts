/**
 * `softplus` (stable, with an explicit gradient) and `silu` (gradient from its parts).
 *
 * @module
 */
import { apply, expectTensor, type OpDef } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import {
  abs,
  add,
  div,
  equal,
  exp,
  greater,
  isFinite,
  log,
  maximum,
  mul,
  neg,
  sigmoid,
  stopGradient,
  sub,
  where,
} from "./elementwise.ts";
import { narrowInF32 } from "./narrow.ts";

/**
 * `value` in the forward pass whose gradient with respect to `x` is `g · slope` (elementwise;
 * `value`, `x` and `slope` have one shape): `stop(value) + (x′ − stop(x′)) · stop(slope)` with
 * `x′ = x` where finite, else 0, so the forward value is `value` exactly. Non-finite `x` gets
 * no gradient.
 */
function withSlope(value: Tensor, x: Tensor, slope: Tensor): Tensor {
  const xf = where(isFinite(x), x, 0);
  return add(stopGradient(value), mul(sub(xf, stopGradient(xf)), stopGradient(slope)));
}

/** log(1 + u) for u ≥ 0, accurate for tiny u (Goldberg: u·log(w)/(w − 1), w = 1 + u). */
function log1pNonNegative(u: Tensor): Tensor {
  const w = add(u, 1);
  return where(equal(w, 1), u, div(mul(u, log(w)), sub(w, 1)));
}

const softplusOp: OpDef<{ readonly threshold: number }> = {
  name: "softplus",
  tags: ["elementwise", "transcendental"],
  compose: ([x0], { threshold }) =>
    narrowInF32(x0, (x) => {
      // max(x, 0) + log1p(exp(−|x|)): no overflow for large x, no loss for very negative x;
      // x itself (slope 1) above the threshold (torch's: 20).
      const linear = greater(x, threshold);
      const value = where(linear, x, add(maximum(x, 0), log1pNonNegative(exp(neg(abs(x))))));
      return withSlope(value, x, where(linear, 1, sigmoid(x)));
    }),
};

/**
 * `log(1 + exp(x))`, computed stably, and `x` itself for `x > threshold` (default 20), as
 * `torch.nn.functional.softplus` (beta 1; up to a few ulps). `threshold: Infinity` never
 * switches (what `binaryCrossEntropyWithLogits` uses). Its gradient is
 * `sigmoid(x)` (1 above the threshold), given explicitly: the parts' would lose precision for
 * large |x|. Runs in f32 under autocast, as torch's.
 *
 * @example
 * ```ts
 * softplus(tensor([0, 100, -100])); // [0.6931, 100, 3.7e-44]
 * ```
 */
export function softplus(x: Tensor, opts: { threshold?: number } = {}): Tensor {
  expectTensor("softplus", x, 1);
  const threshold = opts.threshold ?? 20;
  if (Number.isNaN(threshold)) throw new Error("softplus: threshold is NaN; give a number (20)");
  return apply(softplusOp, [x], { threshold });
}

const siluOp: OpDef<undefined> = {
  name: "silu",
  tags: ["elementwise", "transcendental"],
  compose: ([x0]) => narrowInF32(x0, (x) => mul(x, sigmoid(x))),
};

/**
 * SiLU (swish): `x · sigmoid(x)`, as `torch.nn.functional.silu` (which computes
 * `x / (1 + exp(−x))`: for very negative x torch underflows to −0 where this gives the tiny
 * true value).
 *
 * @example
 * ```ts
 * silu(tensor([0, 1])); // [0, 0.7311]
 * ```
 */
export const silu = (x: Tensor): Tensor => (
  expectTensor("silu", x, 1), apply(siluOp, [x], undefined)
);
