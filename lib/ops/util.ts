/**
 * Shared shape helpers for op declarations: broadcasting, strides, axes, scalars.
 *
 * @module
 */
import { type DType, isFloating, promoteTypes, weakScalarType } from "../dtype.ts";
import type { View } from "../backend/backend.ts";
import { full, Tensor } from "../tensor.ts";
import { expectTensor } from "../op.ts";

/** A tensor or a JS number used as a (weakly typed) scalar. */
export type TensorLike = Tensor | number;

/** Row-major strides of a contiguous shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d];
  }
  return s;
}

/**
 * NumPy broadcasting of two shapes; throws naming the op and both shapes.
 *
 * @example
 * ```ts
 * broadcastShapes("add", [2, 1, 3], [4, 1]); // [2, 4, 3]
 * ```
 */
export function broadcastShapes(
  op: string,
  a: readonly number[],
  b: readonly number[],
): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(
        `${op}: shapes [${a}] and [${b}] cannot be broadcast together ` +
          `(dimension ${i} of the result: ${da} vs ${db})`,
      );
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** A strided view of `t` broadcast to `shape` (no copy). */
export function broadcastView(t: Tensor, shape: readonly number[]): View {
  const own = stridesOf(t.shape);
  const n = shape.length;
  const strides = new Array(n).fill(0);
  for (let i = 0; i < t.shape.length; i++) {
    const d = n - t.shape.length + i;
    strides[d] = t.shape[i] === 1 && shape[d] !== 1 ? 0 : own[i];
  }
  return { h: t.handle, dtype: t.dtype, size: t.size, shape, strides, offset: 0 };
}

/** Normalise an axis (negative counts from the end); throws naming the op. */
export function normAxis(op: string, axis: number, ndim: number): number {
  if (!Number.isInteger(axis) || axis < -ndim || axis >= Math.max(ndim, 1)) {
    throw new Error(`${op}: axis ${axis} is out of range for a tensor with ${ndim} dimensions`);
  }
  return axis < 0 ? axis + ndim : axis;
}

/** Normalise an optional axis list (all axes when undefined), sorted and unique. */
export function normAxes(
  op: string,
  axis: number | readonly number[] | undefined,
  ndim: number,
): number[] {
  if (axis === undefined) return Array.from({ length: ndim }, (_, i) => i);
  const list = typeof axis === "number" ? [axis] : axis;
  const out = [...new Set(list.map((a) => normAxis(op, a, ndim)))].sort((x, y) => x - y);
  if (out.length !== list.length) throw new Error(`${op}: repeated axis in [${list}]`);
  return out;
}

/** Product of dims in `[from, to)`. */
export function prod(shape: readonly number[], from = 0, to = shape.length): number {
  let p = 1;
  for (let i = from; i < to; i++) p *= shape[i];
  return p;
}

/** Result dtype of a binary op with JAX-style weak scalars. */
export function resultType(a: TensorLike, b: TensorLike): DType {
  if (a instanceof Tensor && b instanceof Tensor) return promoteTypes(a.dtype, b.dtype);
  if (a instanceof Tensor) return weakScalarType(a.dtype, b as number);
  if (b instanceof Tensor) return weakScalarType(b.dtype, a as number);
  throw new Error("expected at least one tensor argument, got two numbers");
}

/** Integer ranges of the integer dtypes a weak scalar may take. */
const INT_RANGE: Partial<Record<DType, readonly [number, number]>> = {
  i32: [-(2 ** 31), 2 ** 31 - 1],
  u8: [0, 255],
};

/** Throw unless `x` is a Tensor or a JS number (naming the op and argument position). */
function checkTensorLike(op: string, x: unknown, arg: number): void {
  if (x instanceof Tensor || typeof x === "number") return;
  expectTensor(op, x, arg, "a Tensor or a number"); // throws, saying what x is
}

/**
 * Turn JS-number scalars into 0-d tensors of the op's result dtype on the tensor's device.
 * Scalars are weakly typed, as in JAX: a float tensor keeps its dtype (f16 + 1e6 is +Inf, as
 * any f16 overflow); an integer tensor with a non-integer scalar promotes to f32; an integer
 * scalar that the integer dtype cannot hold (`add(u8, 300)`, `add(i32, 3e9)`) is an error,
 * as JAX's OverflowError, never a wrapped or saturated value. Anything else than a tensor or a
 * number (a string, an array, undefined) is an error naming the argument (`firstArg` is the
 * 1-based position of `a` in the op's call).
 */
export function asTensors(
  op: string,
  a: TensorLike,
  b: TensorLike,
  firstArg = 1,
): [Tensor, Tensor] {
  checkTensorLike(op, a, firstArg);
  checkTensorLike(op, b, firstArg + 1);
  if (typeof a === "number" && typeof b === "number") {
    throw new Error(`${op}: expected at least one tensor argument, got two numbers`);
  }
  const dtype = resultType(a, b);
  const device = (a instanceof Tensor ? a : b as Tensor).device;
  const scalar = (v: number, arg: number) => {
    const range = INT_RANGE[dtype];
    if (range && !(v >= range[0] && v <= range[1])) {
      throw new RangeError(
        `${op}: the scalar ${v} (argument ${arg}) does not fit the tensor's dtype ${dtype} ` +
          `(integers ${range[0]}…${range[1]}); cast the tensor first (e.g. astype(x, "${
            dtype === "u8" ? "i32" : "f32"
          }")) or pass a value in range`,
      );
    }
    return full([], v, { dtype, device });
  };
  const ta = a instanceof Tensor ? a : scalar(a, firstArg);
  const tb = b instanceof Tensor ? b : scalar(b, firstArg + 1);
  return [ta, tb];
}

/** The float dtype an op computes in for `d` (ints and bool → f32). */
export function floatOf(d: DType): DType {
  return isFloating(d) ? d : "f32";
}
