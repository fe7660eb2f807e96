/**
 * `pad`: constant padding in PyTorch's `F.pad` argument order. One composite op made of
 * `concat` (with constant blocks) and `slice` (negative amounts crop), so its VJP is a slice of
 * the cotangent and every backend runs it with its existing kernels.
 *
 * @module
 */
import { apply, expectTensor, type OpDef } from "../op.ts";
import { full, type Tensor } from "../tensor.ts";
import { concat, slice } from "./shape.ts";

interface PadAttrs {
  /** `[before, after]` per axis, in axis order (already converted from torch's order). */
  readonly widths: readonly (readonly [number, number])[];
  readonly value: number;
}

const padOp: OpDef<PadAttrs> = {
  name: "pad",
  tags: ["movement"],
  compose: ([x], a) => {
    let r = x;
    a.widths.forEach(([before, after], d) => {
      if (before < 0 || after < 0) {
        const begin = r.shape.map((_, i) => (i === d ? Math.max(0, -before) : 0));
        const size = r.shape.map((s, i) =>
          i === d ? s - Math.max(0, -before) - Math.max(0, -after) : s
        );
        r = slice(r, begin, size);
      }
      const lo = Math.max(0, before);
      const hi = Math.max(0, after);
      if (lo === 0 && hi === 0) return;
      const block = (n: number) =>
        full(r.shape.map((s, i) => (i === d ? n : s)), a.value, {
          dtype: r.dtype,
          device: r.device,
        });
      const parts: Tensor[] = [];
      if (lo) parts.push(block(lo));
      parts.push(r);
      if (hi) parts.push(block(hi));
      r = concat(parts, d);
    });
    return r;
  },
};

/** Options of {@linkcode pad}. */
export interface PadOptions {
  /** Only `"constant"` is implemented. */
  mode?: "constant";
  /** The fill value (default 0), rounded once to `x`'s dtype. */
  value?: number;
}

/**
 * Pad `x` with a constant, as PyTorch's `F.pad(x, pads, value=…)`: `pads` lists
 * `[before, after]` pairs starting from the LAST axis (`[left, right, top, bottom, …]` for an
 * NCHW image pads W then H). Negative amounts crop. Differentiable (the VJP is a slice).
 *
 * @example
 * ```ts
 * pad(ones([1, 1, 2, 2]), [1, 1, 2, 0]).shape; // [1, 1, 4, 4]
 * ```
 */
export function pad(x: Tensor, pads: readonly number[], opts: PadOptions = {}): Tensor {
  expectTensor("pad", x, 1);
  const { mode = "constant", value = 0 } = opts;
  if (mode !== "constant") {
    throw new Error(`pad: mode ${JSON.stringify(mode)} is not implemented; use "constant"`);
  }
  if (typeof value !== "number") {
    throw new TypeError(`pad: value must be a number, got ${typeof value}`);
  }
  if (
    !Array.isArray(pads) || pads.length % 2 !== 0 || pads.length / 2 > x.ndim ||
    pads.some((p) => !Number.isInteger(p))
  ) {
    throw new Error(
      `pad: pads must be an even-length list of integers with at most 2 per axis of [${x.shape}] ` +
        `(torch order: [left, right] of the last axis first), got ${JSON.stringify(pads)}`,
    );
  }
  const widths: [number, number][] = x.shape.map(() => [0, 0]);
  for (let i = 0; i < pads.length / 2; i++) widths[x.ndim - 1 - i] = [pads[2 * i], pads[2 * i + 1]];
  widths.forEach(([b, e], d) => {
    if (x.shape[d] + b + e < 0) {
      throw new Error(
        `pad: pads ${JSON.stringify(pads)} crop axis ${d} of [${x.shape}] below zero length`,
      );
    }
  });
  if (widths.every(([b, e]) => b === 0 && e === 0)) return x;
  return apply(padOp, [x], { widths, value });
}
