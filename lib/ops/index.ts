/**
 * Indexing ops: `take` (gather along an axis), `scatterAdd` and `oneHot`.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { apply, expectTensor, type OpDef, temporaries } from "../op.ts";
import { arange, type Tensor, zeros } from "../tensor.ts";
import { normAxis, prod } from "./util.ts";
import { astype, equal } from "./elementwise.ts";
import { expandDims } from "./shape.ts";

interface AxisAttrs {
  readonly axis: number;
}

function checkIndices(op: string, idx: { dtype: DType }): void {
  if (idx.dtype !== "i32" && idx.dtype !== "u8") {
    throw new Error(`${op}: indices must be i32 or u8, got ${idx.dtype}; use astype(idx, "i32")`);
  }
}

const takeOp: OpDef<AxisAttrs> = {
  name: "take",
  tags: ["gather"],
  infer: ([x, idx], a) => {
    checkIndices("take", idx);
    const shape = [...x.shape.slice(0, a.axis), ...idx.shape, ...x.shape.slice(a.axis + 1)];
    return { shape, dtype: x.dtype };
  },
  kernel: (be, [x, idx], a) =>
    be.gather(
      { h: x.handle, dtype: x.dtype, size: x.size },
      { h: idx.handle, dtype: idx.dtype, size: idx.size },
      prod(x.shape, 0, a.axis),
      x.shape[a.axis],
      prod(x.shape, a.axis + 1),
    ),
  vjp: (g, [x, idx], _o, a) => [
    scatterAdd(zeros(x.shape, { dtype: g.dtype, device: g.device }), idx, g, a.axis),
    null,
  ],
};

/**
 * Gather entries along `axis` at integer `indices` (negative indices count from the end).
 * The result's shape replaces that axis with the indices' shape.
 *
 * @example
 * ```ts
 * take(tensor([[1, 2], [3, 4], [5, 6]]), tensor([2, 0], { dtype: "i32" }), 0); // [[5, 6], [1, 2]]
 * ```
 */
export function take(x: Tensor, indices: Tensor, axis = 0): Tensor {
  expectTensor("take", x, 1);
  expectTensor("take", indices, 2);
  return apply(takeOp, [x, indices], { axis: normAxis("take", axis, x.ndim) });
}

const scatterAddOp: OpDef<AxisAttrs> = {
  name: "scatterAdd",
  tags: ["scatter"],
  infer: ([base, idx, upd], a) => {
    checkIndices("scatterAdd", idx);
    const want = [...base.shape.slice(0, a.axis), ...idx.shape, ...base.shape.slice(a.axis + 1)];
    if (want.length !== upd.shape.length || want.some((d, i) => d !== upd.shape[i])) {
      throw new Error(
        `scatterAdd: updates of shape [${upd.shape}] do not match [${want}] ` +
          `(base [${base.shape}] with indices [${idx.shape}] on axis ${a.axis})`,
      );
    }
    if (upd.dtype !== base.dtype) throw new Error("scatterAdd: internal error, dtypes differ");
    return { shape: base.shape, dtype: base.dtype };
  },
  kernel: (be, [base, idx, upd], a) =>
    be.scatterAdd(
      { h: base.handle, dtype: base.dtype, size: base.size },
      { h: idx.handle, dtype: idx.dtype, size: idx.size },
      { h: upd.handle, dtype: upd.dtype, size: upd.size },
      prod(base.shape, 0, a.axis),
      base.shape[a.axis],
      prod(base.shape, a.axis + 1),
    ),
  vjp: (g, [_b, idx], _o, a) => [g, null, take(g, idx, a.axis)],
};

/**
 * `base` with `updates` added at `indices` along `axis` (repeated indices accumulate).
 *
 * @example
 * ```ts
 * scatterAdd(zeros([3]), tensor([0, 0, 2], { dtype: "i32" }), tensor([1, 1, 5])); // [2, 0, 5]
 * ```
 */
export function scatterAdd(base: Tensor, indices: Tensor, updates: Tensor, axis = 0): Tensor {
  expectTensor("scatterAdd", base, 1);
  expectTensor("scatterAdd", indices, 2);
  expectTensor("scatterAdd", updates, 3);
  const attrs = { axis: normAxis("scatterAdd", axis, base.ndim) };
  if (updates.dtype === base.dtype) return apply(scatterAddOp, [base, indices, updates], attrs);
  return temporaries(() =>
    apply(scatterAddOp, [base, indices, astype(updates, base.dtype)], attrs)
  );
}

/** The labels themselves, read through a range-checked gather (no wrap of negatives). */
const checkLabelsOp: OpDef<undefined> = {
  name: "oneHot",
  tags: ["gather"],
  infer: ([classes, labels]) => ({ shape: labels.shape, dtype: classes.dtype }),
  kernel: (be, [classes, labels]) =>
    be.gather(
      { h: classes.handle, dtype: classes.dtype, size: classes.size },
      { h: labels.handle, dtype: labels.dtype, size: labels.size },
      1,
      classes.size,
      1,
      { op: "oneHot", wrap: false },
    ),
};

/**
 * One-hot encoding of integer labels: shape `[...labels.shape, depth]`, dtype f32 by default.
 * A label outside `[0, depth)` (negative ones included) is an error naming it, on every device
 * (on WebGPU it is reported by the next readback).
 *
 * @example
 * ```ts
 * oneHot(tensor([0, 2], { dtype: "i32" }), 3); // [[1, 0, 0], [0, 0, 1]]
 * ```
 */
export function oneHot(labels: Tensor, depth: number, dtype: DType = "f32"): Tensor {
  expectTensor("oneHot", labels, 1);
  checkIndices("oneHot", labels);
  if (!Number.isInteger(depth) || depth < 0) {
    throw new Error(`oneHot: depth must be an integer ≥ 0, got ${depth}`);
  }
  return temporaries(() => {
    const classes = arange(depth, undefined, 1, { device: labels.device, dtype: "i32" });
    const checked = apply(checkLabelsOp, [classes, labels], undefined);
    return astype(equal(expandDims(checked, -1), classes), dtype);
  });
}
