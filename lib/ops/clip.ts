/**
 * `clip` (as `torch.clamp`): a composite of comparisons and `where`, so the gradient passes
 * where `lo ≤ x ≤ hi` (bounds included, as torch) and goes to a tensor bound elsewhere.
 *
 * @module
 */
import { apply, expectTensor, type OpDef } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import { greater, less, where } from "./elementwise.ts";
import type { TensorLike } from "./util.ts";

/** Each bound: a number, a tensor input (the next one after `x`), or none. */
interface ClipAttrs {
  readonly lo: number | "tensor" | null;
  readonly hi: number | "tensor" | null;
}

const clipOp: OpDef<ClipAttrs> = {
  name: "clip",
  tags: ["elementwise"],
  compose: ([x, ...bounds], a) => {
    const tensors = [...bounds];
    const bound = (b: ClipAttrs["lo"]) => (b === "tensor" ? tensors.shift()! : b);
    const lo = bound(a.lo);
    const hi = bound(a.hi);
    // min(max(x, lo), hi), as torch: hi wins where lo > hi; NaN compares false and stays.
    let y = x;
    if (lo !== null) y = where(less(y, lo), lo, y);
    if (hi !== null) y = where(greater(y, hi), hi, y);
    return y;
  },
};

/**
 * Clamp to `[lo, hi]`: `lo` where `x < lo`, `hi` where `x > hi`, else `x` (NaN stays NaN); a
 * bound may be a number, a tensor (broadcast) or `undefined` (no bound). As `torch.clamp`
 * (`min(max(x, lo), hi)`), `hi` wins where `lo > hi`. The result has `x`'s dtype for number bounds.
 *
 * @example
 * ```ts
 * clip(tensor([-2, 0.5, 3]), 0, 1); // [0, 0.5, 1]
 * clip(x, undefined, 6); // relu6 without the lower bound
 * ```
 */
export function clip(x: Tensor, lo?: TensorLike, hi?: TensorLike): Tensor {
  expectTensor("clip", x, 1);
  if (lo === undefined && hi === undefined) {
    throw new Error("clip: give at least one bound, e.g. clip(x, 0, 1) or clip(x, undefined, 1)");
  }
  for (const [name, b] of [["lo", lo], ["hi", hi]] as const) {
    if (b !== undefined && typeof b !== "number") expectTensor("clip", b, `argument ${name}`);
    if (typeof b === "number" && Number.isNaN(b)) throw new Error(`clip: ${name} is NaN`);
  }
  const inputs = [x];
  const kind = (b: TensorLike | undefined) => {
    if (b === undefined) return null;
    if (typeof b === "number") return b;
    inputs.push(b);
    return "tensor" as const;
  };
  const attrs: ClipAttrs = { lo: kind(lo), hi: kind(hi) };
  return apply(clipOp, inputs, attrs);
}
