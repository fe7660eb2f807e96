/**
 * Elementwise ops: unary maps, binary arithmetic with NumPy broadcasting, comparisons, `where`,
 * `astype` and `stopGradient`. Narrow float dtypes compute in f32 and round once.
 *
 * @module
 */
import { type CastOptions, type DType, isFloating, parseDType } from "../dtype.ts";
import type { BinaryOp, UnaryOp } from "../backend/backend.ts";
import { apply, expectTensor, type Meta, type OpDef, type OpTag, temporaries } from "../op.ts";
import { full, Tensor } from "../tensor.ts";
import { asTensors, broadcastShapes, broadcastView, floatOf, type TensorLike } from "./util.ts";
import { sumTo } from "./reduce.ts";

// ---------------------------------------------------------------------------------------------
// Unary

type UnaryVjp = (g: Tensor, x: Tensor, out: Tensor) => Tensor;

function unaryOp(
  name: string,
  kernel: UnaryOp,
  tags: readonly OpTag[],
  outDtype: (d: DType) => DType,
  vjp?: UnaryVjp,
): OpDef<undefined> {
  return {
    name,
    tags,
    infer: ([x]) => ({ shape: x.shape, dtype: outDtype(x.dtype) }),
    kernel: (b, [x], _a, out) =>
      b.unary(kernel, { h: x.handle, dtype: x.dtype, size: x.size }, out.dtype),
    vjp: vjp && ((g, [x], out) => [vjp(g, x, out)]),
  };
}

const same = (d: DType) => d;
const toBool = (): DType => "bool";
const EW: readonly OpTag[] = ["elementwise"];
const TR: readonly OpTag[] = ["elementwise", "transcendental"];

/** Unary op declarations. */
const unaryOps = {
  neg: unaryOp("neg", "neg", EW, same, (g) => neg(g)),
  abs: unaryOp("abs", "abs", EW, same, (g, x) => mul(g, sign(x))),
  sign: unaryOp("sign", "sign", EW, same, (g) => mul(g, 0)),
  exp: unaryOp("exp", "exp", TR, floatOf, (g, _x, out) => mul(g, out)),
  log: unaryOp("log", "log", TR, floatOf, (g, x) => div(g, x)),
  sqrt: unaryOp("sqrt", "sqrt", TR, floatOf, (g, _x, out) => div(mul(g, 0.5), out)),
  rsqrt: unaryOp("rsqrt", "rsqrt", TR, floatOf, (g, x, out) => mul(mul(g, -0.5), div(out, x))),
  square: unaryOp("square", "square", EW, same, (g, x) => mul(g, mul(x, 2))),
  tanh: unaryOp("tanh", "tanh", TR, floatOf, (g, _x, out) => mul(g, sub(1, square(out)))),
  sigmoid: unaryOp(
    "sigmoid",
    "sigmoid",
    TR,
    floatOf,
    (g, _x, out) => mul(g, mul(out, sub(1, out))),
  ),
  relu: unaryOp("relu", "relu", EW, same, (g, x) => where(greater(x, 0), g, 0)),
  isFinite: unaryOp("isFinite", "isfinite", ["compare"], toBool),
  logicalNot: unaryOp("logicalNot", "not", ["compare"], toBool),
};

/** −x. @example `neg(tensor([1, -2]))` → `[-1, 2]` */
export const neg = (x: Tensor): Tensor => apply(unaryOps.neg, [x], undefined);
/** |x|. @example `abs(tensor([-1.5]))` → `[1.5]` */
export const abs = (x: Tensor): Tensor => apply(unaryOps.abs, [x], undefined);
/** Sign of x (−1, 0 or 1). @example `sign(tensor([-3, 0, 2]))` → `[-1, 0, 1]` */
export const sign = (x: Tensor): Tensor => apply(unaryOps.sign, [x], undefined);
/** eˣ. @example `exp(tensor([0]))` → `[1]` */
export const exp = (x: Tensor): Tensor => apply(unaryOps.exp, [x], undefined);
/** Natural logarithm. @example `log(tensor([1]))` → `[0]` */
export const log = (x: Tensor): Tensor => apply(unaryOps.log, [x], undefined);
/** Square root. @example `sqrt(tensor([4]))` → `[2]` */
export const sqrt = (x: Tensor): Tensor => apply(unaryOps.sqrt, [x], undefined);
/** 1/√x. @example `rsqrt(tensor([4]))` → `[0.5]` */
export const rsqrt = (x: Tensor): Tensor => apply(unaryOps.rsqrt, [x], undefined);
/** x². @example `square(tensor([3]))` → `[9]` */
export const square = (x: Tensor): Tensor => apply(unaryOps.square, [x], undefined);
/** Hyperbolic tangent. @example `tanh(tensor([0]))` → `[0]` */
export const tanh = (x: Tensor): Tensor => apply(unaryOps.tanh, [x], undefined);
/** Logistic sigmoid 1/(1+e⁻ˣ). @example `sigmoid(tensor([0]))` → `[0.5]` */
export const sigmoid = (x: Tensor): Tensor => apply(unaryOps.sigmoid, [x], undefined);
/** max(x, 0). @example `relu(tensor([-1, 2]))` → `[0, 2]` */
export const relu = (x: Tensor): Tensor => apply(unaryOps.relu, [x], undefined);
/** Whether each element is finite (bool). @example `isFinite(tensor([1, Infinity]))` → `[true, false]` */
export const isFinite = (x: Tensor): Tensor => apply(unaryOps.isFinite, [x], undefined);
/** Logical not (bool). @example `logicalNot(tensor([true, false]))` → `[false, true]` */
export const logicalNot = (x: Tensor): Tensor => apply(unaryOps.logicalNot, [x], undefined);

// ---------------------------------------------------------------------------------------------
// Binary

type BinaryVjp = (
  g: Tensor,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  needs: readonly boolean[],
) => [Tensor | null, Tensor | null];

function binaryOp(
  name: string,
  kernel: BinaryOp,
  tags: readonly OpTag[],
  outDtype: (d: DType) => DType,
  vjp?: BinaryVjp,
): OpDef<undefined> {
  return {
    name,
    tags,
    infer: ([a, b]) => binaryMeta(name, a, b, outDtype),
    kernel: (be, [a, b], _attrs, out) =>
      be.binary(kernel, broadcastView(a, out.shape), broadcastView(b, out.shape), out.dtype),
    vjp: vjp &&
      ((g, [a, b], out, _attrs, needs) => {
        const [ga, gb] = vjp(g, a, b, out, needs);
        return [ga && needs[0] ? sumTo(ga, a) : null, gb && needs[1] ? sumTo(gb, b) : null];
      }),
  };
}

function binaryMeta(
  name: string,
  a: Meta,
  b: Meta,
  outDtype: (d: DType) => DType,
): Meta {
  if (a.dtype !== b.dtype) {
    throw new Error(`${name}: internal error, inputs must be promoted to one dtype first`);
  }
  return { shape: broadcastShapes(name, a.shape, b.shape), dtype: outDtype(a.dtype) };
}

/**
 * VJP of maximum/minimum, as JAX's balanced rule: the argument equal to the output gets the
 * gradient, and a tie splits it evenly (g/2 each, as torch and nbit's own `max` reduction).
 * When the output is NaN from one side, that side equals nothing and both get 0. Only the
 * arguments in `needs` are computed.
 */
function extremeVjp(
  g: Tensor,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  needs: readonly boolean[],
): [Tensor | null, Tensor | null] {
  const isA = equal(a, out);
  const isB = equal(b, out);
  const half = mul(g, 0.5);
  const share = (mine: Tensor, other: Tensor) => where(mine, where(other, half, g), 0);
  return [needs[0] ? share(isA, isB) : null, needs[1] ? share(isB, isA) : null];
}

/** Binary op declarations. */
const binaryOps = {
  add: binaryOp("add", "add", EW, same, (g) => [g, g]),
  sub: binaryOp("sub", "sub", EW, same, (g, _a, _b, _o, n) => [g, n[1] ? neg(g) : null]),
  mul: binaryOp("mul", "mul", EW, same, (g, a, b, _o, n) => [
    n[0] ? mul(g, b) : null,
    n[1] ? mul(g, a) : null,
  ]),
  div: binaryOp("div", "div", EW, floatOf, (g, _a, b, out, n) => [
    n[0] ? div(g, b) : null,
    n[1] ? neg(div(mul(g, out), b)) : null,
  ]),
  pow: binaryOp("pow", "pow", TR, floatOf, (g, a, b, out, n) => [
    n[0] ? mul(g, mul(b, pow(a, sub(b, 1)))) : null,
    n[1] ? where(greater(a, 0), mul(g, mul(out, log(a))), 0) : null,
  ]),
  maximum: binaryOp("maximum", "maximum", EW, same, extremeVjp),
  minimum: binaryOp("minimum", "minimum", EW, same, extremeVjp),
  equal: binaryOp("equal", "equal", ["compare"], toBool),
  notEqual: binaryOp("notEqual", "notEqual", ["compare"], toBool),
  less: binaryOp("less", "less", ["compare"], toBool),
  lessEqual: binaryOp("lessEqual", "lessEqual", ["compare"], toBool),
  greater: binaryOp("greater", "greater", ["compare"], toBool),
  greaterEqual: binaryOp("greaterEqual", "greaterEqual", ["compare"], toBool),
};

function binary(op: OpDef<undefined>, a: TensorLike, b: TensorLike): Tensor {
  if (a instanceof Tensor && b instanceof Tensor && a.dtype === b.dtype) {
    return apply(op, [a, b], undefined);
  }
  return temporaries(() => {
    let [ta, tb] = asTensors(op.name, a, b);
    if (ta.dtype !== tb.dtype) {
      const d = promoteOf(ta.dtype, tb.dtype);
      if (ta.dtype !== d) ta = astype(ta, d);
      if (tb.dtype !== d) tb = astype(tb, d);
    }
    return apply(op, [ta, tb], undefined);
  });
}

import { promoteTypes as promoteOf } from "../dtype.ts";

/** a + b with broadcasting. @example `add(tensor([1, 2]), 1)` → `[2, 3]` */
export const add = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.add, a, b);
/** a − b. @example `sub(tensor([3]), 1)` → `[2]` */
export const sub = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.sub, a, b);
/** a · b. @example `mul(tensor([2]), tensor([3]))` → `[6]` */
export const mul = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.mul, a, b);
/** a / b (true division: ints give f32). @example `div(tensor([1]), 4)` → `[0.25]` */
export const div = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.div, a, b);
/** aᵇ. @example `pow(tensor([2]), 3)` → `[8]` */
export const pow = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.pow, a, b);
/** Elementwise maximum (NaN wins). @example `maximum(tensor([1, 5]), 3)` → `[3, 5]` */
export const maximum = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.maximum, a, b);
/** Elementwise minimum (NaN wins). @example `minimum(tensor([1, 5]), 3)` → `[1, 3]` */
export const minimum = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.minimum, a, b);
/** a == b (bool). @example `equal(tensor([1, 2]), 2)` → `[false, true]` */
export const equal = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.equal, a, b);
/** a != b (bool). @example `notEqual(tensor([1, 2]), 2)` → `[true, false]` */
export const notEqual = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.notEqual, a, b);
/** a < b (bool). @example `less(tensor([1, 2]), 2)` → `[true, false]` */
export const less = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.less, a, b);
/** a ≤ b (bool). @example `lessEqual(tensor([1, 3]), 2)` → `[true, false]` */
export const lessEqual = (a: TensorLike, b: TensorLike): Tensor =>
  binary(binaryOps.lessEqual, a, b);
/** a > b (bool). @example `greater(tensor([1, 3]), 2)` → `[false, true]` */
export const greater = (a: TensorLike, b: TensorLike): Tensor => binary(binaryOps.greater, a, b);
/** a ≥ b (bool). @example `greaterEqual(tensor([1, 2]), 2)` → `[false, true]` */
export const greaterEqual = (a: TensorLike, b: TensorLike): Tensor =>
  binary(binaryOps.greaterEqual, a, b);

// ---------------------------------------------------------------------------------------------
// where

const whereOp: OpDef<undefined> = {
  name: "where",
  tags: ["elementwise", "multi-input"],
  infer: ([c, a, b]) => {
    if (c.dtype !== "bool") {
      throw new Error(
        `where: the condition must be bool, got ${c.dtype}; compare first (e.g. greater(x, 0))`,
      );
    }
    if (a.dtype !== b.dtype) throw new Error("where: internal error, branches must share a dtype");
    const s = broadcastShapes("where", broadcastShapes("where", c.shape, a.shape), b.shape);
    return { shape: s, dtype: a.dtype };
  },
  kernel: (be, [c, a, b], _x, out) =>
    be.where(
      broadcastView(c, out.shape),
      broadcastView(a, out.shape),
      broadcastView(b, out.shape),
      out.dtype,
    ),
  vjp: (g, [c, a, b], _out, _x, needs) => [
    null,
    needs[1] ? sumTo(where(c, g, 0), a) : null,
    needs[2] ? sumTo(where(c, 0, g), b) : null,
  ],
};

/**
 * `cond ? a : b` elementwise, with broadcasting; the branches promote to one dtype (two JS
 * numbers give f32).
 *
 * @example
 * ```ts
 * where(greater(x, 0), x, 0); // relu
 * ```
 */
export function where(cond: Tensor, a: TensorLike, b: TensorLike): Tensor {
  expectTensor("where", cond, "argument 1 (the condition)");
  if (a instanceof Tensor && b instanceof Tensor && a.dtype === b.dtype) {
    return apply(whereOp, [cond, a, b], undefined);
  }
  return temporaries(() => {
    // Two JS numbers: weak f32 scalars on the condition's device.
    if (typeof a === "number" && typeof b === "number") a = full([], a, { device: cond.device });
    let [ta, tb] = asTensors("where", a, b, 2);
    if (ta.dtype !== tb.dtype) {
      const d = promoteOf(ta.dtype, tb.dtype);
      if (ta.dtype !== d) ta = astype(ta, d);
      if (tb.dtype !== d) tb = astype(tb, d);
    }
    return apply(whereOp, [cond, ta, tb], undefined);
  });
}

// ---------------------------------------------------------------------------------------------
// astype, stopGradient

interface CastAttrs {
  readonly dtype: DType;
  readonly opts?: CastOptions;
}

const astypeOp: OpDef<CastAttrs> = {
  name: "astype",
  tags: ["cast"],
  infer: ([x], a) => ({ shape: x.shape, dtype: a.dtype }),
  kernel: (be, [x], a) => be.cast({ h: x.handle, dtype: x.dtype, size: x.size }, a.dtype, a.opts),
  vjp: (g, [x]) => [isFloating(x.dtype) ? astype(g, x.dtype) : null],
};

/**
 * Convert to another dtype, rounding once to nearest-even. `opts.saturate` clips fp8 values to
 * ±max first (Transformer Engine style); by default fp8 follows OCP's non-saturating mode.
 * Returns `x` itself when the dtype already matches.
 *
 * @example
 * ```ts
 * astype(tensor([65520]), "f16"); // [Infinity]
 * astype(tensor([500]), "f8e4m3", { saturate: true }); // [448]
 * ```
 */
export function astype(x: Tensor, dtype: DType, opts?: CastOptions): Tensor {
  expectTensor("astype", x, 1);
  const d = parseDType(dtype);
  if (d === x.dtype) return x;
  return apply(astypeOp, [x], { dtype: d, opts });
}

const stopGradientOp: OpDef<undefined> = {
  name: "stopGradient",
  tags: ["movement"],
  infer: ([x]) => x,
  view: true,
  vjp: () => [null],
};

/** The same values, but no gradient flows through. @example `stopGradient(max(x))` */
export const stopGradient = (x: Tensor): Tensor => apply(stopGradientOp, [x], undefined);
