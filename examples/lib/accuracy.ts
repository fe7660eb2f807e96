/**
 * Classification accuracy computed on the device: per batch, the number of rows whose argmax
 * equals the label, summed by `evaluate` and read back once.
 *
 * @example
 * ```ts
 * const acc = await accuracy((x) => mlp(params, x), inOrder(test, 500)); // e.g. 0.975
 * ```
 *
 * @module
 */
import type { Tensor } from "../../lib/tensor.ts";
import { evaluate } from "../../lib/train.ts";
import { argmax, sum } from "../../lib/ops/reduce.ts";
import { equal } from "../../lib/ops/elementwise.ts";
import type { Batch } from "./batches.ts";

/**
 * How many rows of `logits` (`[n, classes]`) have their argmax equal to `labels` (`[n]` i32), as
 * an i32 scalar tensor.
 *
 * @example
 * ```ts
 * await correct(tensor([[0, 1], [1, 0]]), tensor([1, 1], { dtype: "i32" })).item(); // 1
 * ```
 */
export function correct(logits: Tensor, labels: Tensor): Tensor {
  return sum(equal(argmax(logits, -1), labels));
}

/**
 * The fraction of `batches` that `predict` (images → logits) classifies right, and the count.
 *
 * @example
 * ```ts
 * const { accuracy: acc, count } = await accuracy((x) => mlp(params, x), inOrder(test, 500));
 * ```
 */
export async function accuracy(
  predict: (x: Tensor) => Tensor,
  batches: Iterable<Batch>,
): Promise<{ accuracy: number; correct: number; count: number }> {
  let count = 0;
  const counted = function* () {
    for (const b of batches) {
      count += b.y.shape[0];
      yield b;
    }
  };
  const { sum: totals } = await evaluate(
    (b: Batch) => ({ correct: correct(predict(b.x), b.y) }),
    counted(),
  );
  const right = totals.correct ?? 0;
  return { accuracy: count ? right / count : NaN, correct: right, count };
}
