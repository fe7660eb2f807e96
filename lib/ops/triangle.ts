/**
 * `tril` / `triu`: the lower / upper triangle of the last two axes (as `torch.tril`/`triu`),
 * composites of a position mask and `where` (their gradient is the same mask).
 *
 * @module
 */
import { apply, expectTensor, type OpDef } from "../op.ts";
import { arange, type Tensor, zeros } from "../tensor.ts";
import { greaterEqual, lessEqual, sub, where } from "./elementwise.ts";
import { reshape } from "./shape.ts";

interface TriAttrs {
  readonly k: number;
  readonly lower: boolean;
}

const triOp = (name: string): OpDef<TriAttrs> => ({
  name,
  tags: ["movement"],
  compose: ([x], { k, lower }) => {
    const [n, m] = x.shape.slice(-2);
    const device = x.device;
    const rows = reshape(arange(n, undefined, 1, { dtype: "i32", device }), [n, 1]);
    const cols = reshape(arange(m, undefined, 1, { dtype: "i32", device }), [1, m]);
    const offset = sub(cols, rows); // j − i
    const keep = lower ? lessEqual(offset, k) : greaterEqual(offset, k);
    return where(keep, x, zeros([], { dtype: x.dtype, device }));
  },
});
const trilOp = triOp("tril");
const triuOp = triOp("triu");

function tri(op: OpDef<TriAttrs>, x: Tensor, k: number, lower: boolean): Tensor {
  expectTensor(op.name, x, 1);
  if (x.ndim < 2) {
    throw new Error(
      `${op.name}: needs a tensor with at least 2 dimensions (a matrix or a batch of them), ` +
        `got shape [${x.shape}]; reshape a vector to [1, n] first`,
    );
  }
  if (!Number.isInteger(k)) throw new Error(`${op.name}: k must be an integer, got ${k}`);
  return apply(op, [x], { k, lower });
}

/**
 * The lower triangle of the last two axes: elements with `j − i ≤ k` kept, the rest 0 (`k`:
 * diagonal offset, 0 the main one, as `torch.tril(x, diagonal=k)`).
 *
 * @example
 * ```ts
 * tril(ones([3, 3])); // [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
 * ```
 */
export const tril = (x: Tensor, k = 0): Tensor => tri(trilOp, x, k, true);

/**
 * The upper triangle of the last two axes: elements with `j − i ≥ k` kept, the rest 0 (as
 * `torch.triu(x, diagonal=k)`; `triu(ones([n, n]), 1)` is a causal attention mask's
 * "masked" part).
 *
 * @example
 * ```ts
 * triu(ones([3, 3]), 1); // [[0, 1, 1], [0, 0, 1], [0, 0, 0]]
 * ```
 */
export const triu = (x: Tensor, k = 0): Tensor => tri(triuOp, x, k, false);
