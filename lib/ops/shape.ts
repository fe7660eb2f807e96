/**
 * Movement ops: `reshape`, `transpose`, `broadcastTo`, `expandDims`, `squeeze`, `concat`,
 * `stack`, `slice`. `reshape` shares the buffer; the others copy once.
 *
 * @module
 */
import { apply, expectTensor, type OpDef, temporaries } from "../op.ts";
import { type Tensor, zeros } from "../tensor.ts";
import { broadcastShapes, broadcastView, normAxis, prod, stridesOf } from "./util.ts";
import { promoteTypes } from "../dtype.ts";
import { astype } from "./elementwise.ts";
import { sumTo } from "./reduce.ts";

interface ShapeAttrs {
  readonly shape: readonly number[];
}

const reshapeOp: OpDef<ShapeAttrs> = {
  name: "reshape",
  tags: ["movement"],
  view: true,
  infer: ([x], a) => ({ shape: a.shape, dtype: x.dtype }),
  vjp: (g, [x]) => [reshape(g, x.shape)],
};

/**
 * The same values with a new shape of the same size (one dimension may be −1). Shares the
 * buffer; no copy.
 *
 * @example
 * ```ts
 * reshape(arange(6), [2, -1]); // shape [2, 3]
 * ```
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  expectTensor("reshape", x, 1);
  const s = [...shape];
  const unknown = s.indexOf(-1);
  if (unknown >= 0) {
    const known = prod(s.filter((_, i) => i !== unknown));
    if (known === 0 || x.size % known !== 0) {
      throw new Error(`reshape: cannot reshape [${x.shape}] (size ${x.size}) to [${shape}]`);
    }
    s[unknown] = x.size / known;
  }
  if (s.some((d) => !Number.isInteger(d) || d < 0) || prod(s) !== x.size) {
    throw new Error(
      `reshape: cannot reshape [${x.shape}] (size ${x.size}) to [${shape}] (size ${prod(s)})`,
    );
  }
  if (s.length === x.ndim && s.every((d, i) => d === x.shape[i])) return x;
  return apply(reshapeOp, [x], { shape: s });
}

interface PermAttrs {
  readonly perm: readonly number[];
}

const transposeOp: OpDef<PermAttrs> = {
  name: "transpose",
  tags: ["movement"],
  infer: ([x], a) => ({ shape: a.perm.map((p) => x.shape[p]), dtype: x.dtype }),
  kernel: (be, [x], a, out) => {
    const st = stridesOf(x.shape);
    return be.copy({
      h: x.handle,
      dtype: x.dtype,
      size: x.size,
      shape: out.shape,
      strides: a.perm.map((p) => st[p]),
      offset: 0,
    }, x.dtype);
  },
  vjp: (g, _x, _o, a) => {
    const inv = new Array(a.perm.length);
    a.perm.forEach((p, i) => (inv[p] = i));
    return [transpose(g, inv)];
  },
};

/**
 * Permute the axes (reverse them by default).
 *
 * @example
 * ```ts
 * transpose(zeros([2, 3, 4]), [0, 2, 1]).shape; // [2, 4, 3]
 * ```
 */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  expectTensor("transpose", x, 1);
  const p = perm ?? x.shape.map((_, i) => x.ndim - 1 - i);
  const norm = p.map((a) => normAxis("transpose", a, x.ndim));
  if (norm.length !== x.ndim || new Set(norm).size !== x.ndim) {
    throw new Error(`transpose: [${p}] is not a permutation of the ${x.ndim} axes of [${x.shape}]`);
  }
  if (norm.every((a, i) => a === i)) return x;
  return apply(transposeOp, [x], { perm: norm });
}

const broadcastToOp: OpDef<ShapeAttrs> = {
  name: "broadcastTo",
  tags: ["movement"],
  infer: ([x], a) => {
    const s = broadcastShapes("broadcastTo", x.shape, a.shape);
    if (s.length !== a.shape.length || s.some((d, i) => d !== a.shape[i])) {
      throw new Error(`broadcastTo: cannot broadcast [${x.shape}] to [${a.shape}]`);
    }
    return { shape: a.shape, dtype: x.dtype };
  },
  kernel: (be, [x], a) => be.copy(broadcastView(x, a.shape), x.dtype),
  vjp: (g, [x]) => [sumTo(g, x)],
};

/** Repeat `x` along broadcast dimensions to `shape` (a copy). @example `broadcastTo(tensor([1, 2]), [3, 2])` */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  expectTensor("broadcastTo", x, 1);
  if (shape.length === x.ndim && shape.every((d, i) => d === x.shape[i])) return x;
  return apply(broadcastToOp, [x], { shape: [...shape] });
}

/** Insert a length-1 axis at `axis`. @example `expandDims(zeros([3]), 0).shape` → `[1, 3]` */
export function expandDims(x: Tensor, axis: number): Tensor {
  expectTensor("expandDims", x, 1);
  const a = normAxis("expandDims", axis, x.ndim + 1);
  const s = [...x.shape];
  s.splice(a, 0, 1);
  return reshape(x, s);
}

/** Remove length-1 axes (all of them, or those listed). @example `squeeze(zeros([1, 3, 1])).shape` → `[3]` */
export function squeeze(x: Tensor, axis?: number | readonly number[]): Tensor {
  expectTensor("squeeze", x, 1);
  const axes = axis === undefined
    ? x.shape.flatMap((d, i) => (d === 1 ? [i] : []))
    : (typeof axis === "number" ? [axis] : axis).map((a) => normAxis("squeeze", a, x.ndim));
  for (const a of axes) {
    if (x.shape[a] !== 1) {
      throw new Error(`squeeze: axis ${a} of shape [${x.shape}] has size ${x.shape[a]}, not 1`);
    }
  }
  return reshape(x, x.shape.filter((_, i) => !axes.includes(i)));
}

interface AxisAttrs {
  readonly axis: number;
}

const concatOp: OpDef<AxisAttrs> = {
  name: "concat",
  tags: ["movement", "multi-input"],
  infer: (xs, a) => {
    const first = xs[0];
    for (const x of xs) {
      if (x.dtype !== first.dtype) throw new Error("concat: internal error, dtypes must match");
      if (
        x.shape.length !== first.shape.length ||
        x.shape.some((d, i) => i !== a.axis && d !== first.shape[i])
      ) {
        throw new Error(
          `concat: shapes [${first.shape}] and [${x.shape}] differ outside axis ${a.axis}`,
        );
      }
    }
    const shape = [...first.shape];
    shape[a.axis] = xs.reduce((s, x) => s + x.shape[a.axis], 0);
    return { shape, dtype: first.dtype };
  },
  kernel: (be, xs, a, out) =>
    be.concat(
      xs.map((x) => ({ h: x.handle, dtype: x.dtype, size: x.size })),
      prod(out.shape, 0, a.axis),
      xs.map((x) => x.shape[a.axis]),
      prod(out.shape, a.axis + 1),
      out.dtype,
    ),
  vjp: (g, xs, _o, a) => {
    let start = 0;
    return xs.map((x) => {
      const begin = g.shape.map(() => 0);
      const size = [...g.shape];
      begin[a.axis] = start;
      size[a.axis] = x.shape[a.axis];
      start += x.shape[a.axis];
      return slice(g, begin, size);
    });
  },
};

/**
 * Join tensors along an existing axis; dtypes promote.
 *
 * @example
 * ```ts
 * concat([ones([2, 3]), zeros([1, 3])], 0).shape; // [3, 3]
 * ```
 */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (!Array.isArray(xs as unknown)) {
    throw new TypeError(`concat: argument 1 must be an array of tensors, got ${typeof xs}`);
  }
  xs.forEach((x, i) => expectTensor("concat", x, `tensor ${i} of argument 1`));
  if (xs.length === 0) throw new Error("concat: needs at least one tensor");
  if (xs[0].ndim === 0) {
    throw new Error("concat: cannot join 0-d tensors along an axis; use stack(xs) instead");
  }
  const a = normAxis("concat", axis, xs[0].ndim);
  const d = xs.map((x) => x.dtype).reduce(promoteTypes);
  if (xs.every((x) => x.dtype === d)) return apply(concatOp, xs, { axis: a });
  return temporaries(() => apply(concatOp, xs.map((x) => astype(x, d)), { axis: a }));
}

/**
 * Join same-shaped tensors along a new axis.
 *
 * @example
 * ```ts
 * stack([ones([3]), zeros([3])]).shape; // [2, 3]
 * ```
 */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  if (!Array.isArray(xs as unknown)) {
    throw new TypeError(`stack: argument 1 must be an array of tensors, got ${typeof xs}`);
  }
  xs.forEach((x, i) => expectTensor("stack", x, `tensor ${i} of argument 1`));
  if (xs.length === 0) throw new Error("stack: needs at least one tensor");
  for (const x of xs) {
    if (x.shape.length !== xs[0].shape.length || x.shape.some((d, i) => d !== xs[0].shape[i])) {
      throw new Error(`stack: shapes [${xs[0].shape}] and [${x.shape}] differ`);
    }
  }
  const a = normAxis("stack", axis, xs[0].ndim + 1);
  return temporaries(() => concat(xs.map((x) => expandDims(x, a)), a));
}

interface SliceAttrs {
  readonly begin: readonly number[];
  readonly size: readonly number[];
}

const sliceOp: OpDef<SliceAttrs> = {
  name: "slice",
  tags: ["movement"],
  infer: ([x], a) => ({ shape: a.size, dtype: x.dtype }),
  kernel: (be, [x], a) => {
    const st = stridesOf(x.shape);
    const offset = a.begin.reduce((s, b, i) => s + b * st[i], 0);
    return be.copy({
      h: x.handle,
      dtype: x.dtype,
      size: x.size,
      shape: a.size,
      strides: st,
      offset,
    }, x.dtype);
  },
  vjp: (g, [x], _o, a) => {
    // Pad the cotangent back with zeros, one axis at a time.
    let r = g;
    for (let d = 0; d < x.ndim; d++) {
      const before = a.begin[d];
      const after = x.shape[d] - a.begin[d] - a.size[d];
      if (before === 0 && after === 0) continue;
      const parts: Tensor[] = [];
      const padShape = (n: number) => r.shape.map((s, i) => (i === d ? n : s));
      if (before) parts.push(zeros(padShape(before), { dtype: g.dtype, device: g.device }));
      parts.push(r);
      if (after) parts.push(zeros(padShape(after), { dtype: g.dtype, device: g.device }));
      r = concat(parts, d);
    }
    return [r];
  },
};

/**
 * A rectangular block: `size[i]` elements from `begin[i]` along each axis (−1 = to the end).
 *
 * @example
 * ```ts
 * slice(arange(10), [2], [3]); // [2, 3, 4]
 * ```
 */
export function slice(x: Tensor, begin: readonly number[], size?: readonly number[]): Tensor {
  expectTensor("slice", x, 1);
  if (begin.length !== x.ndim || (size && size.length !== x.ndim)) {
    throw new Error(
      `slice: begin [${begin}] and size [${size ?? ""}] need one entry per axis of [${x.shape}]`,
    );
  }
  const b = begin.map((v, i) => (v < 0 ? v + x.shape[i] : v));
  const s = b.map((v, i) => {
    const want = size?.[i] ?? -1;
    return want === -1 ? x.shape[i] - v : want;
  });
  b.forEach((v, i) => {
    if (!(v >= 0 && s[i] >= 0 && v + s[i] <= x.shape[i])) {
      throw new Error(
        `slice: begin [${begin}] size [${size ?? ""}] is out of bounds for shape [${x.shape}]`,
      );
    }
  });
  if (s.every((v, i) => v === x.shape[i])) return x;
  return apply(sliceOp, [x], { begin: b, size: s });
}
