/**
 * `split` and `chunk` (as `torch.split` / `torch.chunk`): consecutive slices along an axis.
 *
 * @module
 */
import { expectTensor } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import { slice } from "./shape.ts";
import { normAxis } from "./util.ts";

function pieces(x: Tensor, sizes: readonly number[], axis: number): Tensor[] {
  let at = 0;
  return sizes.map((s) => {
    const begin = x.shape.map((_, i) => (i === axis ? at : 0));
    const size = x.shape.map((d, i) => (i === axis ? s : d));
    at += s;
    return slice(x, begin, size);
  });
}

/**
 * Split `x` along `axis` (default 0): a number gives pieces of that size (the last one
 * smaller if it does not divide), a list gives pieces of those sizes, which must add up to the
 * axis length (as `torch.split`).
 *
 * @example
 * ```ts
 * const [q, k, v] = split(qkv, 3, -1); // qkv: [batch, seq, 9] → three [batch, seq, 3]
 * split(arange(5), [2, 3]); // [0, 1], [2, 3, 4]
 * ```
 */
export function split(x: Tensor, sizes: number | readonly number[], axis = 0): Tensor[] {
  expectTensor("split", x, 1);
  if (x.ndim === 0) throw new Error("split: cannot split a scalar (shape []); reshape it first");
  const ax = normAxis("split", axis, x.ndim);
  const n = x.shape[ax];
  let list: number[];
  if (typeof sizes === "number") {
    if (!Number.isInteger(sizes) || sizes <= 0) {
      throw new Error(`split: the piece size must be an integer ≥ 1, got ${sizes}`);
    }
    list = Array.from(
      { length: Math.max(1, Math.ceil(n / sizes)) },
      (_, i) => Math.min(sizes, n - i * sizes),
    );
  } else {
    list = [...sizes];
    if (list.some((s) => !Number.isInteger(s) || s < 0)) {
      throw new Error(`split: sizes must be integers ≥ 0, got [${list}]`);
    }
    const total = list.reduce((a, b) => a + b, 0);
    if (total !== n) {
      throw new Error(
        `split: sizes [${list}] add up to ${total} but axis ${ax} of [${x.shape}] has ${n}; ` +
          "give sizes that add up to the axis length",
      );
    }
  }
  return pieces(x, list, ax);
}

/**
 * Split `x` into `chunks` pieces along `axis` of size ⌈n / chunks⌉ (the last smaller; fewer
 * pieces when n is small, as `torch.chunk`).
 *
 * @example
 * ```ts
 * const [a, b] = chunk(x, 2, -1); // the two halves of the last axis
 * ```
 */
export function chunk(x: Tensor, chunks: number, axis = 0): Tensor[] {
  expectTensor("chunk", x, 1);
  if (!Number.isInteger(chunks) || chunks <= 0) {
    throw new Error(`chunk: chunks must be an integer ≥ 1, got ${chunks}`);
  }
  if (x.ndim === 0) throw new Error("chunk: cannot split a scalar (shape []); reshape it first");
  const ax = normAxis("chunk", axis, x.ndim);
  return split(x, Math.max(1, Math.ceil(x.shape[ax] / chunks)), ax);
}
