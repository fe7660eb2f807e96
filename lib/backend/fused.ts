/**
 * The fused elementwise kernel that `jit` hands to a backend: a small straight-line program of
 * the Backend's own elementwise kernels (unary, binary, where, cast) over one iteration space.
 * Each operation rounds to its own output dtype exactly as the eager kernel would, so a fused
 * kernel gives the same bits as running its operations one by one; it only saves the memory
 * round trips, dispatches and allocations in between. A kernel may also reduce one of its
 * operations (a reduction prologue: `FusedKernel.reduce`).
 *
 * @module
 */
import type { CastOptions, DType } from "../dtype.ts";
import type { BinaryOp, ReduceOp, UnaryOp } from "./backend.ts";

/**
 * An operand of a fused operation: input `i` (read through its view), immediate `i` (a JS
 * number already rounded to its dtype), or the result of operation `i` of the same kernel.
 */
export type FusedOperand =
  | { readonly kind: "input"; readonly index: number }
  | { readonly kind: "imm"; readonly index: number }
  | { readonly kind: "op"; readonly index: number };

/** One operation of a fused kernel; `dtype` is its output dtype (it rounds there). */
export type FusedOp =
  | {
    readonly op: "unary";
    readonly kind: UnaryOp;
    readonly x: FusedOperand;
    readonly dtype: DType;
  }
  | {
    readonly op: "binary";
    readonly kind: BinaryOp;
    readonly a: FusedOperand;
    readonly b: FusedOperand;
    readonly dtype: DType;
  }
  | {
    readonly op: "where";
    readonly c: FusedOperand;
    readonly a: FusedOperand;
    readonly b: FusedOperand;
    readonly dtype: DType;
  }
  | {
    readonly op: "cast";
    readonly x: FusedOperand;
    readonly dtype: DType;
    readonly opts?: CastOptions;
  };

/**
 * A fused elementwise kernel over `size` elements of shape `shape`. Inputs arrive as views of
 * that shape (broadcast strides allowed); each output is the value of one operation, written
 * contiguously in that operation's dtype.
 *
 * @example
 * ```ts
 * // relu(x * 2) as one kernel: op 0 = mul(input 0, imm 0), op 1 = relu(op 0)
 * const k: FusedKernel = {
 *   shape: [4], size: 4,
 *   inputs: ["f32"], immediates: [{ value: 2, dtype: "f32" }],
 *   ops: [
 *     { op: "binary", kind: "mul", a: { kind: "input", index: 0 }, b: { kind: "imm", index: 0 }, dtype: "f32" },
 *     { op: "unary", kind: "relu", x: { kind: "op", index: 0 }, dtype: "f32" },
 *   ],
 *   outputs: [1],
 * };
 * ```
 */
export interface FusedKernel {
  /** The iteration shape (every input view has it). */
  readonly shape: readonly number[];
  /** Number of elements (product of `shape`). */
  readonly size: number;
  /** Dtypes of the inputs, in order. */
  readonly inputs: readonly DType[];
  /** Scalars, each already rounded to its dtype (the value a 0-d tensor of it would hold). */
  readonly immediates: readonly { readonly value: number; readonly dtype: DType }[];
  /** The operations, in order; operands refer only to earlier operations. */
  readonly ops: readonly FusedOp[];
  /** Operation indices whose values are written out, in order. */
  readonly outputs: readonly number[];
  /**
   * A reduction of one operation's values, computed in the same pass (only for backends with
   * `fusedReduce`): the iteration space is `[outer, reduce, inner]` (`size` elements), and the
   * reduce's result, bitwise what `Backend.reduce` gives on that operation's values, comes after
   * the `outputs` in the returned buffers.
   */
  readonly reduce?: FusedReduce;
}

/** The reduction of a fused kernel (see `FusedKernel.reduce` and `Backend.reduce`). */
export interface FusedReduce {
  /** The reduction. */
  readonly op: ReduceOp;
  /** The operation whose values are reduced. */
  readonly x: number;
  /** Leading extent. */
  readonly outer: number;
  /** Reduced extent. */
  readonly reduce: number;
  /** Trailing extent. */
  readonly inner: number;
  /** Output dtype. */
  readonly dtype: DType;
}

/** Output dtype of a fused operand. */
export function operandDtype(k: FusedKernel, o: FusedOperand): DType {
  if (o.kind === "input") return k.inputs[o.index];
  if (o.kind === "imm") return k.immediates[o.index].dtype;
  return k.ops[o.index].dtype;
}

/**
 * A stable text key of a kernel's structure (dtypes, ops, operands; not sizes or values), for
 * caching compiled kernels.
 */
export function fusedKey(k: FusedKernel): string {
  const o = (x: FusedOperand) => `${x.kind[0]}${x.index}`;
  const ops = k.ops.map((p) => {
    switch (p.op) {
      case "unary":
        return `u:${p.kind}:${o(p.x)}:${p.dtype}`;
      case "binary":
        return `b:${p.kind}:${o(p.a)}:${o(p.b)}:${p.dtype}`;
      case "where":
        return `w:${o(p.c)}:${o(p.a)}:${o(p.b)}:${p.dtype}`;
      case "cast":
        return `c:${o(p.x)}:${p.dtype}:${p.opts?.saturate ? 1 : 0}`;
    }
  });
  const r = k.reduce ? `|r:${k.reduce.op}:${k.reduce.x}:${k.reduce.dtype}` : "";
  return `${k.inputs.join(",")}|${k.immediates.map((i) => i.dtype).join(",")}|${ops.join(";")}|${
    k.outputs.join(",")
  }${r}`;
}
