/**
 * The WebGPU reduce kernel entry: picks the serial or tree kernel shape (see
 * `wgsl/reduce.ts`) and dispatches it.
 *
 * @example
 * ```ts
 * const h = reduce(ctx, "sum", x, 4, 100, 1, "f32"); // row sums of a [4, 100] matrix
 * ```
 *
 * @module
 */
import type { DType } from "../../dtype.ts";
import type { Arg, ReduceOp } from "../backend.ts";
import { checkAlive, type Ctx, dispatch } from "./runtime.ts";
import { output } from "./elementwise.ts";
import { perWord } from "./wgsl/dtype.ts";
import { mapGroups } from "./wgsl/map.ts";
import { reduceKernel } from "./wgsl/reduce.ts";

/**
 * Reduce the middle axis of `[outer, reduce, inner]` (see `Backend.reduce`).
 *
 * @example
 * ```ts
 * reduce(ctx, "sum", x, 4, 100, 1, "f32"); // row sums of a [4, 100] matrix
 * ```
 */
export function reduce(
  ctx: Ctx,
  op: ReduceOp,
  x: Arg,
  outer: number,
  r: number,
  inner: number,
  outDtype: DType,
): GPUBuffer {
  checkAlive(ctx);
  const n = outer * inner;
  const buf = output(ctx, outDtype, n);
  if (n === 0) return buf;
  const tree = inner === 1 && r > 64;
  const k = reduceKernel(op, x.dtype, outDtype, tree ? "tree" : "serial");
  const groups = tree ? Math.ceil(n / perWord(outDtype)) : mapGroups(n, outDtype);
  dispatch(ctx, k, [x.h as GPUBuffer], buf, [n, r, inner], groups);
  return buf;
}
