/**
 * CPU elementwise maps over widened values. Results are written to a compute array whose
 * element type does the first rounding (f32 arithmetic for every float below f64).
 *
 * @module
 */
import type { BinaryOp, UnaryOp } from "../backend.ts";

type Num = Float64Array | Float32Array | Int32Array | Uint8Array;

/** The scalar function of each unary op (the reference every CPU kernel computes). */
export const unaryMaps: Readonly<Record<UnaryOp, (x: number) => number>> = {
  neg: (x) => -x,
  abs: Math.abs,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  square: (x) => x * x,
  tanh: Math.tanh,
  sigmoid: (x) => x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)),
  relu: (x) => (x > 0 ? x : x === x ? 0 : x),
  sign: (x) => (x > 0 ? 1 : x < 0 ? -1 : x),
  isfinite: (x) => (Number.isFinite(x) ? 1 : 0),
  not: (x) => (x ? 0 : 1),
};

/** Apply a unary op: `out[i] = f(src[i])`. */
export function unaryFn(op: UnaryOp, src: Num, out: Num): void {
  const n = out.length;
  switch (op) {
    case "neg":
      for (let i = 0; i < n; i++) out[i] = -src[i];
      return;
    case "exp":
      for (let i = 0; i < n; i++) out[i] = Math.exp(src[i]);
      return;
    case "relu":
      for (let i = 0; i < n; i++) {
        const x = src[i];
        out[i] = x > 0 ? x : x === x ? 0 : x;
      }
      return;
    default: {
      const f = unaryMaps[op];
      for (let i = 0; i < n; i++) out[i] = f(src[i]);
    }
  }
}

/** The scalar function of each binary op (the reference every CPU kernel computes). */
export const binaryMaps: Readonly<Record<BinaryOp, (a: number, b: number) => number>> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  maximum: (a, b) => (a !== a || b !== b ? NaN : a > b ? a : b),
  minimum: (a, b) => (a !== a || b !== b ? NaN : a < b ? a : b),
  equal: (a, b) => (a === b ? 1 : 0),
  notEqual: (a, b) => (a !== b ? 1 : 0),
  less: (a, b) => (a < b ? 1 : 0),
  lessEqual: (a, b) => (a <= b ? 1 : 0),
  greater: (a, b) => (a > b ? 1 : 0),
  greaterEqual: (a, b) => (a >= b ? 1 : 0),
};

/** Apply a binary op; `a` or `b` may be a single number (a broadcast scalar). */
export function binaryFn(op: BinaryOp, a: Num | number, b: Num | number, out: Num): void {
  const n = out.length;
  const sa = typeof a === "number";
  const sb = typeof b === "number";
  // Hot paths written out so the JIT sees monomorphic loops.
  if (op === "add" && !sa && !sb) {
    for (let i = 0; i < n; i++) out[i] = a[i] + b[i];
    return;
  }
  if (op === "mul" && !sa && !sb) {
    for (let i = 0; i < n; i++) out[i] = a[i] * b[i];
    return;
  }
  if (op === "mul" && !sa && sb) {
    for (let i = 0; i < n; i++) out[i] = a[i] * b;
    return;
  }
  if (op === "sub" && !sa && !sb) {
    for (let i = 0; i < n; i++) out[i] = a[i] - b[i];
    return;
  }
  const f = binaryMaps[op];
  if (sa && sb) out.fill(f(a, b) as never);
  else if (sa) { for (let i = 0; i < n; i++) out[i] = f(a, (b as Num)[i]); }
  else if (sb) { for (let i = 0; i < n; i++) out[i] = f((a as Num)[i], b); }
  else for (let i = 0; i < n; i++) out[i] = f(a[i], b[i]);
}
