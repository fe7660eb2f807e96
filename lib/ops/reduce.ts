/**
 * Reductions over any set of axes (`sum`, `mean`, `max`, `min`, `argmax`, `argmin`, `all`,
 * `any`, `logsumexp`, `allFinite`). Sums accumulate in at least f32 (f64 for f64) and round
 * once to the output dtype; bool/u8/i32 sums give i32.
 *
 * @module
 */
import { type DType, isFloating } from "../dtype.ts";
import type { ReduceOp } from "../backend/backend.ts";
import { apply, expectTensor, type Meta, type OpDef, temporaries } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import { normAxes, prod, stridesOf } from "./util.ts";
import {
  add,
  astype,
  div,
  equal,
  exp,
  isFinite,
  log,
  mul,
  stopGradient,
  sub,
  where,
} from "./elementwise.ts";
import { broadcastTo, reshape } from "./shape.ts";
import { narrowInF32 } from "./narrow.ts";

interface ReduceAttrs {
  readonly axes: readonly number[];
  readonly keepdims: boolean;
}

function reducedShape(shape: readonly number[], axes: readonly number[], keep: boolean): number[] {
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (!axes.includes(i)) out.push(d);
    else if (keep) out.push(1);
  });
  return out;
}

function runReduce(
  op: ReduceOp,
  be: Parameters<NonNullable<OpDef["kernel"]>>[0],
  x: Tensor,
  axes: readonly number[],
  outDtype: DType,
) {
  const contiguous = axes.every((a, i) => i === 0 || a === axes[i - 1] + 1);
  if (axes.length === 0) {
    return be.reduce(op, { h: x.handle, dtype: x.dtype, size: x.size }, x.size, 1, 1, outDtype);
  }
  if (contiguous) {
    const first = axes[0];
    const last = axes[axes.length - 1] + 1;
    return be.reduce(
      op,
      { h: x.handle, dtype: x.dtype, size: x.size },
      prod(x.shape, 0, first),
      prod(x.shape, first, last),
      prod(x.shape, last),
      outDtype,
    );
  }
  // Move the reduced axes last (one strided copy, freed here), then reduce them together.
  const perm = [...x.shape.map((_, i) => i).filter((i) => !axes.includes(i)), ...axes];
  const strides = stridesOf(x.shape);
  const moved = be.copy({
    h: x.handle,
    dtype: x.dtype,
    size: x.size,
    shape: perm.map((p) => x.shape[p]),
    strides: perm.map((p) => strides[p]),
    offset: 0,
  }, x.dtype);
  const r = prod(axes.map((a) => x.shape[a]));
  try {
    return be.reduce(
      op,
      { h: moved, dtype: x.dtype, size: x.size },
      prod(perm.slice(0, perm.length - axes.length).map((p) => x.shape[p])),
      r,
      1,
      outDtype,
    );
  } finally {
    be.free(moved, x.dtype, x.size);
  }
}

function reduceOp(
  name: string,
  kernel: ReduceOp,
  outDtype: (d: DType) => DType,
  vjp?: OpDef<ReduceAttrs>["vjp"],
): OpDef<ReduceAttrs> {
  return {
    name,
    tags: ["reduction"],
    infer: ([x], a): Meta => {
      for (const ax of a.axes) {
        if (x.shape[ax] === 0 && kernel !== "sum" && kernel !== "all" && kernel !== "any") {
          throw new Error(`${name}: cannot reduce an empty axis ${ax} of shape [${x.shape}]`);
        }
      }
      return { shape: reducedShape(x.shape, a.axes, a.keepdims), dtype: outDtype(x.dtype) };
    },
    kernel: (be, [x], a, out) => runReduce(kernel, be, x, a.axes, out.dtype),
    vjp,
  };
}

const sumDtype = (d: DType): DType => (d === "bool" || d === "u8" ? "i32" : d);

/** Reshape a reduced cotangent back to keepdims form and broadcast it to `shape`. */
function expandBack(g: Tensor, x: Tensor, a: ReduceAttrs): Tensor {
  const kept = reducedShape(x.shape, a.axes, true);
  return broadcastTo(reshape(g, kept), x.shape);
}

/** Reduction op declarations. */
const reduceOps = {
  sum: reduceOp("sum", "sum", sumDtype, (g, [x], _o, a) => [expandBack(g, x, a)]),
  max: reduceOp("max", "max", (d) => d, (g, [x], out, a) => [extremeGrad(g, x, out, a)]),
  min: reduceOp("min", "min", (d) => d, (g, [x], out, a) => [extremeGrad(g, x, out, a)]),
  argmax: reduceOp("argmax", "argmax", () => "i32"),
  argmin: reduceOp("argmin", "argmin", () => "i32"),
  all: reduceOp("all", "all", () => "bool"),
  any: reduceOp("any", "any", () => "bool"),
};

/** Gradient of max/min: split evenly between tied extremes. */
function extremeGrad(g: Tensor, x: Tensor, out: Tensor, a: ReduceAttrs): Tensor {
  const mask = equal(x, expandBack(out, x, a));
  const count = expandBack(sum(mask, a.axes, true), x, { axes: a.axes, keepdims: true });
  return div(where(mask, expandBack(g, x, a), 0), count);
}

/** Reduction options: `axis` (number, list, or all when omitted) and `keepdims`. */
export type Axis = number | readonly number[] | undefined;

function reduce(op: OpDef<ReduceAttrs>, x: Tensor, axis: Axis, keepdims: boolean): Tensor {
  expectTensor(op.name, x, 1);
  return apply(op, [x], { axes: normAxes(op.name, axis, x.ndim), keepdims });
}

/** Sum over `axis` (all axes by default). @example `sum(tensor([[1, 2], [3, 4]]), 0)` → `[4, 6]` */
export const sum = (x: Tensor, axis?: Axis, keepdims = false): Tensor =>
  reduce(reduceOps.sum, x, axis, keepdims);
/** Maximum over `axis` (NaN wins). @example `max(tensor([1, 5, 3]))` → `5` */
export const max = (x: Tensor, axis?: Axis, keepdims = false): Tensor =>
  reduce(reduceOps.max, x, axis, keepdims);
/** Minimum over `axis` (NaN wins). @example `min(tensor([1, 5, 3]))` → `1` */
export const min = (x: Tensor, axis?: Axis, keepdims = false): Tensor =>
  reduce(reduceOps.min, x, axis, keepdims);
/** Index of the first maximum along `axis` (i32). @example `argmax(tensor([1, 5, 3]))` → `1` */
export const argmax = (x: Tensor, axis = -1, keepdims = false): Tensor =>
  reduce(reduceOps.argmax, x, axis, keepdims);
/** Index of the first minimum along `axis` (i32). @example `argmin(tensor([4, 1, 3]))` → `1` */
export const argmin = (x: Tensor, axis = -1, keepdims = false): Tensor =>
  reduce(reduceOps.argmin, x, axis, keepdims);
/** Whether every element is truthy (bool). @example `all(tensor([true, false]))` → `false` */
export const all = (x: Tensor, axis?: Axis, keepdims = false): Tensor =>
  reduce(reduceOps.all, x, axis, keepdims);
/** Whether any element is truthy (bool). @example `any(tensor([true, false]))` → `true` */
export const any = (x: Tensor, axis?: Axis, keepdims = false): Tensor =>
  reduce(reduceOps.any, x, axis, keepdims);

/** A sum that gives f32 for narrow floats (f16, bf16, fp8), so a mean cannot overflow. */
const wideSumOp = reduceOp(
  "sum",
  "sum",
  (d) => (d === "f64" || !isFloating(d) ? sumDtype(d) : "f32"),
  (g, [x], _o, a) => [expandBack(g, x, a)],
);

const meanOp: OpDef<ReduceAttrs> = {
  name: "mean",
  tags: ["reduction"],
  compose: ([x], a) => {
    // Narrow floats: sum and divide in f32, round once to x's dtype.
    const n = prod(a.axes.map((i) => x.shape[i]));
    const m = div(apply(wideSumOp, [x], a), n);
    return isFloating(x.dtype) ? astype(m, x.dtype) : m;
  },
};

/**
 * Arithmetic mean over `axis`; ints give f32. Narrow floats compute in f32 like every narrow
 * composite (the sum rounded once to f32, divided in f32) and round once to their dtype.
 *
 * @example `mean(tensor([1, 2, 3, 4]))` → `2.5`
 */
export const mean = (x: Tensor, axis?: Axis, keepdims = false): Tensor =>
  reduce(meanOp, x, axis, keepdims);

const logsumexpOp: OpDef<ReduceAttrs> = {
  name: "logsumexp",
  tags: ["reduction", "softmax"],
  compose: ([x0], a) =>
    narrowInF32(x0, (x) => {
      const m = stopGradient(apply(reduceOps.max, [x], { axes: a.axes, keepdims: true }));
      const safe = where(isFinite(m), m, 0);
      const s = apply(reduceOps.sum, [exp(sub(x, safe))], a);
      const mOut = a.keepdims ? safe : reshape(safe, reducedShape(x.shape, a.axes, false));
      return add(log(s), mOut);
    }),
};

/**
 * log Σ exp(x) over `axis`, computed stably (the max is subtracted first).
 *
 * @example
 * ```ts
 * logsumexp(tensor([0, 0])); // log 2
 * ```
 */
export const logsumexp = (x: Tensor, axis?: Axis, keepdims = false): Tensor =>
  reduce(logsumexpOp, x, axis, keepdims);

const allFiniteOp: OpDef<undefined> = {
  name: "allFinite",
  tags: ["reduction"],
  compose: ([x]) => all(isFinite(x)),
};

/**
 * A bool scalar: whether every element of every given tensor is finite (true for none). Runs
 * on the device; nothing is read back.
 *
 * @example
 * ```ts
 * await allFinite(tensor([1, NaN])).item(); // 0 (false)
 * ```
 */
export function allFinite(...xs: Tensor[]): Tensor {
  if (xs.length === 0) throw new Error("allFinite: needs at least one tensor");
  if (xs.length === 1) return apply(allFiniteOp, [xs[0]], undefined);
  return temporaries(() => {
    let acc = apply(allFiniteOp, [xs[0]], undefined);
    for (let i = 1; i < xs.length; i++) {
      acc = mul(acc, apply(allFiniteOp, [xs[i]], undefined));
    }
    return acc;
  });
}

/**
 * Sum `g` down to `like`'s shape (undoing broadcasting), in `like`'s dtype. Used by VJPs.
 *
 * @example
 * ```ts
 * sumTo(ones([4, 3]), zeros([3])); // [4, 4, 4]
 * ```
 */
export function sumTo(g: Tensor, like: { shape: readonly number[]; dtype: DType }): Tensor {
  const lead = g.ndim - like.shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.ndim; i++) {
    if (i < lead || (like.shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  let r = axes.length ? sum(g, axes, true) : g;
  if (lead > 0 || axes.length) r = reshape(r, like.shape);
  return r;
}
