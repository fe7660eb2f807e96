/**
 * `cumsum` along any axis, a composite of slices, adds and a concat (so its gradient, the
 * reversed cumulative sum, comes from those parts).
 *
 * ## Summation order
 *
 * A Hillis–Steele scan: starting from `y = x`, for `s = 1, 2, 4, …` while `s < n`, every
 * `y[i]` with `i ≥ s` becomes `y[i] + y[i − s]` (the old values, all at once). So `y[i]` is the
 * sum of `x[0..i]` in the binary tree that order gives, not left to right (torch's CPU kernel
 * adds left to right in f64): equal for integers and exact sums, a few ulps apart otherwise.
 * `y[0]` is `x[0]` itself (−0 stays −0). Narrow floats sum in f32 and round once; bools sum
 * as i32; integers wrap as i32 adds do.
 *
 * @module
 */
import { apply, expectTensor, type OpDef } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import { add, astype } from "./elementwise.ts";
import { concat, slice } from "./shape.ts";
import { narrowInF32 } from "./narrow.ts";
import { normAxis } from "./util.ts";

interface CumsumAttrs {
  readonly axis: number;
}

const cumsumOp: OpDef<CumsumAttrs> = {
  name: "cumsum",
  tags: ["reduction"],
  compose: ([x0], { axis }) =>
    narrowInF32(x0.dtype === "bool" ? astype(x0, "i32") : x0, (x) => {
      const n = x.shape[axis];
      const part = (y: Tensor, begin: number, size: number) =>
        slice(
          y,
          y.shape.map((_, i) => (i === axis ? begin : 0)),
          y.shape.map((d, i) => (i === axis ? size : d)),
        );
      let y = x;
      for (let s = 1; s < n; s *= 2) {
        y = concat([part(y, 0, s), add(part(y, s, n - s), part(y, 0, n - s))], axis);
      }
      return y;
    }),
};

/**
 * Cumulative sum along `axis` (default the last): `y[i] = x[0] + … + x[i]`, in the order the
 * module docs give. Runs in f32 under autocast (as torch's).
 *
 * @example
 * ```ts
 * cumsum(tensor([1, 2, 3, 4])); // [1, 3, 6, 10]
 * cumsum(ones([2, 3]), 0); // [[1, 1, 1], [2, 2, 2]]
 * ```
 */
export function cumsum(x: Tensor, axis = -1): Tensor {
  expectTensor("cumsum", x, 1);
  if (x.ndim === 0) return apply(cumsumOp, [x], { axis: 0 });
  return apply(cumsumOp, [x], { axis: normAxis("cumsum", axis, x.ndim) });
}
