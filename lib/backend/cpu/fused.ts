/**
 * The CPU's fused elementwise kernel: a {@linkcode FusedKernel} evaluated in chunks that stay in
 * cache, each operation through the same array function (`unaryFn`, `binaryFn`) and the same
 * rounding (`encode`/`decode` to its dtype) as the eager kernel, so it gives the same bits while
 * touching each input and output once.
 *
 * @module
 */
import { decode, type DType, encode } from "../../dtype.ts";
import { type FusedKernel, type FusedOperand, operandDtype } from "../fused.ts";
import { binaryFn, unaryFn } from "./elementwise.ts";

type Num = Float64Array | Float32Array | Int32Array | Uint8Array;

const CHUNK = 2048;

/** The compute array eager kernels use for `d`: f64, i32, u8 keep theirs, floats use f32. */
export function computeArrayFor(d: DType, n: number): Num {
  switch (d) {
    case "f64":
      return new Float64Array(n);
    case "i32":
      return new Int32Array(n);
    case "u8":
    case "bool":
      return new Uint8Array(n);
    default:
      return new Float32Array(n);
  }
}

/** Whether storing a compute array of `d` rounds (eager `store` encodes) or keeps it as is. */
function rounds(d: DType): boolean {
  return !(d === "f64" || d === "f32" || d === "i32" || d === "u8");
}

/**
 * Evaluate `k` over widened inputs (`srcs[i]`: the whole materialized view, or the one value
 * of a broadcast scalar). Returns one compute array per output (values already rounded to the
 * output's dtype; encode them to store).
 *
 * @example
 * ```ts
 * const [y] = runFused(kernel, [new Float32Array([1, -2])]);
 * ```
 */
export function runFused(k: FusedKernel, srcs: readonly (Num | number)[]): Num[] {
  const n = k.size;
  const outs = k.outputs.map((o) => computeArrayFor(k.ops[o].dtype, n));
  const outOf = new Map(k.outputs.map((o, j) => [o, j]));
  const tmp = k.ops.map((op) => computeArrayFor(op.dtype, Math.min(CHUNK, n)));
  const splat = new Map<number, Num>();
  for (let start = 0; start < n; start += CHUNK) {
    const end = Math.min(n, start + CHUNK);
    const len = end - start;
    const get = (o: FusedOperand): Num | number => {
      if (o.kind === "imm") return k.immediates[o.index].value;
      if (o.kind === "op") {
        return len === tmp[o.index].length ? tmp[o.index] : tmp[o.index].subarray(0, len);
      }
      const s = srcs[o.index];
      return typeof s === "number" ? s : s.subarray(start, end);
    };
    // unaryFn needs an array: broadcast scalars to a chunk once per operand.
    const arrayOf = (o: FusedOperand, i: number): Num => {
      const v = get(o);
      if (typeof v !== "number") return v;
      let a = splat.get(i);
      if (!a || a.length !== len) {
        a = new Float64Array(len).fill(v);
        splat.set(i, a);
      }
      return a;
    };
    k.ops.forEach((op, i) => {
      const out = len === tmp[i].length ? tmp[i] : tmp[i].subarray(0, len);
      switch (op.op) {
        case "unary":
          unaryFn(op.kind, arrayOf(op.x, i), out);
          break;
        case "binary":
          binaryFn(op.kind, get(op.a), get(op.b), out);
          break;
        case "where": {
          const c = arrayOf(op.c, i);
          const a = get(op.a);
          const b = get(op.b);
          for (let e = 0; e < len; e++) {
            out[e] = c[e] ? (typeof a === "number" ? a : a[e]) : (typeof b === "number" ? b : b[e]);
          }
          break;
        }
        case "cast": {
          const x = arrayOf(op.x, i);
          const from = operandDtype(k, op.x);
          out.set(from === op.dtype ? x : decode(op.dtype, encode(op.dtype, x, op.opts)) as never);
          break;
        }
      }
      if (op.op !== "cast" && rounds(op.dtype)) {
        out.set(decode(op.dtype, encode(op.dtype, out)) as never);
      }
      const j = outOf.get(i);
      if (j !== undefined) outs[j].set(out as never, start);
    });
  }
  return outs;
}
