/**
 * Per-element WGSL of the unary, binary, where, cast and copy kernels, with the CPU backend's
 * semantics: NaN/Inf handled by bit tests (WGSL may assume they never occur), `div` correctly
 * rounded by integer long division, `pow` with JS special cases, fp8 `saturate` in casts.
 *
 * @example
 * ```ts
 * const lane = binaryLane("add", ["f16", "f16"], "f16"); // (v) => Lane
 * ```
 *
 * @module
 */
import type { CastOptions, DType } from "../../../dtype.ts";
import type { BinaryOp, UnaryOp } from "../../backend.ts";
import { isFloatDtype, storeF32, storeI32, toF32Bits, toI32 } from "./dtype.ts";
import type { Lane, Vals } from "./map.ts";

type Res = { t: "f" | "i"; e: string; deps?: readonly string[] };

function unaryF(op: UnaryOp, x: string): Res {
  switch (op) {
    case "neg":
      return { t: "f", e: `bitcast<f32>(bitcast<u32>(${x}) ^ 0x80000000u)` };
    case "abs":
      return { t: "f", e: `bitcast<f32>(bitcast<u32>(${x}) & 0x7fffffffu)` };
    case "exp":
      return { t: "f", e: `exp_js(${x})`, deps: ["exp_js"] };
    case "log":
      return { t: "f", e: `log_js(${x})`, deps: ["log_js"] };
    case "sqrt":
      return { t: "f", e: `sqrt_js(${x})`, deps: ["sqrt_js"] };
    case "rsqrt":
      return { t: "f", e: `rsqrt_js(${x})`, deps: ["rsqrt_js"] };
    case "square":
      return { t: "f", e: `(${x} * ${x})` };
    case "tanh":
      return { t: "f", e: `tanh_js(${x})`, deps: ["tanh_js"] };
    case "sigmoid":
      return { t: "f", e: `sigmoid_js(${x})`, deps: ["sigmoid_js"] };
    case "relu":
      return {
        t: "f",
        e: `select(select(0.0, ${x}, is_nan(${x})), ${x}, ${x} > 0.0)`,
        deps: ["is_nan"],
      };
    case "sign":
      return { t: "f", e: `select(select(${x}, -1.0, ${x} < 0.0), 1.0, ${x} > 0.0)` };
    case "isfinite":
      return { t: "i", e: `select(0, 1, (bitcast<u32>(${x}) & 0x7f800000u) != 0x7f800000u)` };
    case "not":
      return { t: "i", e: `select(1, 0, truthy(${x}))`, deps: ["truthy"] };
  }
}

function unaryI(op: UnaryOp, v: string): Res | undefined {
  switch (op) {
    case "neg":
      return { t: "i", e: `(0 - ${v})` };
    case "abs":
      return { t: "i", e: `abs(${v})` };
    case "square":
      return { t: "i", e: `(${v} * ${v})` };
    case "relu":
      return { t: "i", e: `max(${v}, 0)` };
    case "sign":
      return { t: "i", e: `sign(${v})` };
    case "isfinite":
      return { t: "i", e: "1" };
    case "not":
      return { t: "i", e: `select(1, 0, ${v} != 0)` };
  }
  return undefined;
}

function finish(r: Res, out: DType): Lane {
  const s = r.t === "f" ? storeF32(out, "y") : storeI32(out, "y");
  return {
    deps: [...(r.deps ?? []), ...s.deps],
    code: `  let y = ${r.e};`,
    bits: s.expr,
  };
}

/**
 * Lane code of a unary op from `x` to `out`.
 *
 * @example
 * ```ts
 * mapKernel({ key: "u.exp", ins, rank: 1, out: "f32", extras: 0, lane: unaryLane("exp", "f32", "f32") });
 * ```
 */
export function unaryLane(op: UnaryOp, x: DType, out: DType): (v: Vals) => Lane {
  return (v) => {
    const int = !isFloatDtype(x) && !isFloatDtype(out) ? unaryI(op, v.i(0)) : undefined;
    return finish(int ?? unaryF(op, v.f(0)), out);
  };
}

const CMP: Partial<Record<BinaryOp, string>> = {
  equal: "==",
  notEqual: "!=",
  less: "<",
  lessEqual: "<=",
  greater: ">",
  greaterEqual: ">=",
};

function binaryF(op: BinaryOp, a: string, b: string): Res {
  switch (op) {
    case "add":
      return { t: "f", e: `(${a} + ${b})` };
    case "sub":
      return { t: "f", e: `(${a} - ${b})` };
    case "mul":
      return { t: "f", e: `(${a} * ${b})` };
    case "div":
      return { t: "f", e: `div_rne(${a}, ${b})`, deps: ["div_rne"] };
    case "pow":
      return { t: "f", e: `pow_js(${a}, ${b})`, deps: ["pow_js"] };
    case "maximum":
      return { t: "f", e: `max_js(${a}, ${b})`, deps: ["max_js"] };
    case "minimum":
      return { t: "f", e: `min_js(${a}, ${b})`, deps: ["min_js"] };
    case "notEqual":
      return {
        t: "i",
        e: `select(0, 1, is_nan(${a}) || is_nan(${b}) || ${a} != ${b})`,
        deps: ["is_nan"],
      };
    default:
      return {
        t: "i",
        e: `select(0, 1, !is_nan(${a}) && !is_nan(${b}) && ${a} ${CMP[op]} ${b})`,
        deps: ["is_nan"],
      };
  }
}

function binaryI(op: BinaryOp, a: string, b: string): Res | undefined {
  switch (op) {
    case "add":
      return { t: "i", e: `(${a} + ${b})` };
    case "sub":
      return { t: "i", e: `(${a} - ${b})` };
    case "mul":
      return { t: "i", e: `(${a} * ${b})` };
    case "maximum":
      return { t: "i", e: `max(${a}, ${b})` };
    case "minimum":
      return { t: "i", e: `min(${a}, ${b})` };
    case "div":
    case "pow":
      return undefined;
    default:
      return { t: "i", e: `select(0, 1, ${a} ${CMP[op]} ${b})` };
  }
}

/**
 * Lane code of a binary op on inputs of dtypes `ins` producing `out`.
 *
 * @example
 * ```ts
 * binaryLane("add", ["f16", "f16"], "f16");
 * ```
 */
export function binaryLane(op: BinaryOp, ins: readonly DType[], out: DType): (v: Vals) => Lane {
  return (v) => {
    const int = !ins.some(isFloatDtype) && !isFloatDtype(out)
      ? binaryI(op, v.i(0), v.i(1))
      : undefined;
    return finish(int ?? binaryF(op, v.f(0), v.f(1)), out);
  };
}

/**
 * A WGSL u32 expression converting raw bits `r` of `from` to raw bits of `to` (astype rules).
 *
 * @example
 * ```ts
 * convert("f32", "bf16", "r").expr; // "enc_bf16(r)"
 * ```
 */
export function convert(
  from: DType,
  to: DType,
  r: string,
  opts?: CastOptions,
): { deps: string[]; expr: string } {
  const sat = opts?.saturate === true;
  if (from === to) return { deps: [], expr: r };
  if (isFloatDtype(from)) {
    const t = toF32Bits(from, r);
    const b = t.expr;
    const f = `bitcast<f32>(${b})`;
    switch (to) {
      case "f32":
        return t;
      case "f16":
        return { deps: [...t.deps, "enc_f16"], expr: `enc_f16(${b})` };
      case "bf16":
        return { deps: [...t.deps, "enc_bf16"], expr: `enc_bf16(${b})` };
      case "f8e4m3":
        return { deps: [...t.deps, "enc_e4m3"], expr: `enc_e4m3(${b}, ${sat})` };
      case "f8e5m2":
        return { deps: [...t.deps, "enc_e5m2"], expr: `enc_e5m2(${b}, ${sat})` };
      case "i32":
        return { deps: [...t.deps, "sat_i32"], expr: `bitcast<u32>(sat_i32(${f}))` };
      case "u8":
        return { deps: [...t.deps, "sat_u8"], expr: `sat_u8(${f})` };
      case "bool":
        return { deps: t.deps, expr: `select(0u, 1u, ((${b}) & 0x7fffffffu) != 0u)` };
    }
  }
  const v = toI32(from, r);
  const fmt = (m: number, emin: number, max: number, inf: number, sgn: number) => ({
    deps: ["int_fmt"],
    expr: `int_fmt(${v}, ${m}u, ${emin}, ${hex(max)}, ${hex(sat ? max : inf)}, ${hex(sgn)})`,
  });
  switch (to) {
    case "f32":
      return fmt(23, -126, 0x7f7fffff, 0x7f800000, 0x80000000);
    case "f16":
      return fmt(10, -14, 0x7bff, 0x7c00, 0x8000);
    case "bf16":
      return fmt(7, -126, 0x7f7f, 0x7f80, 0x8000);
    case "f8e4m3":
      return fmt(3, -6, 0x7e, 0x7f, 0x80);
    case "f8e5m2":
      return fmt(2, -14, 0x7b, 0x7c, 0x80);
    case "i32":
      return { deps: [], expr: `bitcast<u32>(${v})` };
    case "u8":
      return { deps: [], expr: `u32(clamp(${v}, 0, 255))` };
    case "bool":
      return { deps: [], expr: `select(0u, 1u, ${v} != 0)` };
  }
  throw new Error(`webgpu: cannot cast ${from} to ${to}`);
}

function hex(x: number): string {
  return `0x${x.toString(16)}u`;
}

/**
 * Lane code of a cast (or a copy when the dtypes are equal) of input 0.
 *
 * @example
 * ```ts
 * castLane("f32", "f8e4m3", { saturate: true });
 * ```
 */
export function castLane(from: DType, to: DType, opts?: CastOptions): (v: Vals) => Lane {
  return (v) => {
    const c = convert(from, to, v.raw(0), opts);
    return { deps: c.deps, code: "", bits: c.expr };
  };
}

/**
 * Lane code of `where(cond, a, b)`: a raw select when a, b and the output share a dtype.
 *
 * @example
 * ```ts
 * whereLane(["bool", "f32", "f32"], "f32");
 * ```
 */
export function whereLane(ins: readonly DType[], out: DType): (v: Vals) => Lane {
  return (v) => {
    const c = isFloatDtype(ins[0]) ? `truthy(${v.f(0)})` : `${v.raw(0)} != 0u`;
    const ca = convert(ins[1], out, v.raw(1));
    const cb = convert(ins[2], out, v.raw(2));
    return {
      deps: ["truthy", ...ca.deps, ...cb.deps],
      code: "",
      bits: `select(${cb.expr}, ${ca.expr}, ${c})`,
    };
  };
}
