/**
 * `variance` and `std` over axes, with torch's `correction` (Bessel's by default): composites
 * of `mean`, `sub`, `square`, `sum`, so their gradients come from those parts.
 *
 * @module
 */
import { apply, expectTensor, type OpDef } from "../op.ts";
import { isFloating } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { astype, div, sqrt, square, sub } from "./elementwise.ts";
import { type Axis, mean, sum } from "./reduce.ts";
import { narrowInF32 } from "./narrow.ts";
import { normAxes, prod } from "./util.ts";

/** Options of {@linkcode variance} and {@linkcode std}. */
export interface MomentOptions {
  /** Axes to reduce (default: all). */
  axis?: Axis;
  /** Subtracted from the count in the divisor (default 1, unbiased; 0: population), as torch. */
  correction?: number;
  /** Keep the reduced axes with size 1 (default false). */
  keepdims?: boolean;
}

interface MomentAttrs {
  readonly axes: readonly number[];
  readonly correction: number;
  readonly keepdims: boolean;
}

const varianceBody = (x0: Tensor, a: MomentAttrs): Tensor =>
  narrowInF32(isFloating(x0.dtype) ? x0 : astype(x0, "f32"), (x) => {
    const n = prod(a.axes.map((i) => x.shape[i]));
    const d = sub(x, mean(x, a.axes, true));
    // As torch: divide by max(0, n − correction) (0 gives ±Inf or NaN).
    return div(sum(square(d), a.axes, a.keepdims), Math.max(0, n - a.correction));
  });

const varianceOp: OpDef<MomentAttrs> = {
  name: "variance",
  tags: ["reduction"],
  compose: ([x], a) => varianceBody(x, a),
};

const stdOp: OpDef<MomentAttrs> = {
  name: "std",
  tags: ["reduction"],
  compose: ([x], a) => narrowInF32(varianceBody(x, a), sqrt),
};

function attrs(op: string, x: Tensor, opts: MomentOptions): MomentAttrs {
  expectTensor(op, x, 1);
  const correction = opts.correction ?? 1;
  if (!Number.isFinite(correction) || correction < 0) {
    throw new Error(
      `${op}: correction must be a number ≥ 0 (1: unbiased, 0: population), got ${correction}`,
    );
  }
  return { axes: normAxes(op, opts.axis, x.ndim), correction, keepdims: opts.keepdims ?? false };
}

/**
 * Variance over `axis`: `Σ (x − mean)² / max(0, n − correction)`, as `torch.var` (correction
 * 1 by default). Narrow floats compute in f32 and round once; integers give f32.
 *
 * @example
 * ```ts
 * variance(tensor([1, 2, 3, 4])); // 1.6667
 * variance(x, { axis: -1, correction: 0, keepdims: true }); // a layer norm's variance
 * ```
 */
export const variance = (x: Tensor, opts: MomentOptions = {}): Tensor =>
  apply(varianceOp, [x], attrs("variance", x, opts));

/**
 * Standard deviation: `√variance(x, opts)`, as `torch.std` (correction 1 by default).
 *
 * @example
 * ```ts
 * std(tensor([1, 2, 3, 4])); // 1.2910
 * ```
 */
export const std = (x: Tensor, opts: MomentOptions = {}): Tensor =>
  apply(stdOp, [x], attrs("std", x, opts));
