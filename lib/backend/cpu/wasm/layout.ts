/**
 * Input layouts of the SIMD fused kernels: which strided views a kernel reads directly (see
 * `InputLayout` in `fused.ts`), and the parameters that start a read at a given element, so
 * that any range of whole vectors can run on its own (the worker pool splits kernels so).
 *
 * @module
 */
import type { InputLayout } from "./fused.ts";

/** A view's layout and the length of its period (`p`) or row (`r`), 0 otherwise. */
export interface Layout {
  /** How the kernel reads it. */
  readonly layout: InputLayout;
  /** Elements per period (`p`) or per row (`r`); a multiple of 4. */
  readonly len: number;
}

const SCALAR: Layout = { layout: "s", len: 0 };
/** The contiguous layout. */
export const CONTIGUOUS: Layout = { layout: "c", len: 0 };

/**
 * The layout a SIMD kernel reads a view of `shape` with element `strides` in, or `undefined`
 * (then the TypeScript loop gathers it): all strides 0 is a scalar; C order is contiguous;
 * leading broadcast axes over contiguous trailing ones of ≥ 4·k elements are a period; C-order
 * leading axes over broadcast trailing ones of 4·k elements are row scalars.
 */
export function layoutOf(shape: readonly number[], strides: readonly number[]): Layout | undefined {
  // From the last axis: the run of broadcast axes, then the run of C-order axes.
  let d = shape.length - 1;
  let tail = 1; // elements of the trailing broadcast axes
  while (d >= 0 && (strides[d] === 0 || shape[d] === 1)) tail *= shape[d--];
  if (d < 0) return SCALAR;
  let expect = 1; // the stride a C-order axis has here
  while (d >= 0 && (strides[d] === expect || shape[d] === 1)) expect *= shape[d--];
  if (d < 0) {
    return tail === 1 ? CONTIGUOUS : tail % 4 === 0 ? { layout: "r", len: tail } : undefined;
  }
  if (tail !== 1) return undefined;
  // A period: the rest must be broadcast.
  while (d >= 0 && (strides[d] === 0 || shape[d] === 1)) d--;
  return d < 0 && expect % 4 === 0 ? { layout: "p", len: expect } : undefined;
}

/**
 * Append the kernel parameters that read an input in layout `l` from output element `e0` (a
 * multiple of 4) on: `at` is the byte address of the view's element 0 (`value` the f32 bits of
 * a scalar), `bytes` its element size.
 */
export function pushParams(
  args: number[],
  l: Layout,
  at: number,
  bytes: number,
  e0: number,
): void {
  switch (l.layout) {
    case "s":
    case "c":
      args.push(at);
      return;
    case "p":
      args.push(at, l.len * bytes, (e0 % l.len) * bytes);
      return;
    case "r":
      args.push(at + Math.floor(e0 / l.len) * bytes, l.len, e0 % l.len);
  }
}
