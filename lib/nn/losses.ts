/**
 * Losses. Each is one op declaration tagged `loss` (so interceptors see it as a loss) whose
 * body computes in f32 (f64 for f64 inputs) and returns an f32 (f64) scalar.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { apply, expectTensor, type OpDef } from "../op.ts";
import { astype, div, neg, notEqual, square, sub, where } from "../ops/elementwise.ts";
import { mean, sum } from "../ops/reduce.ts";
import { logSoftmax } from "../ops/activation.ts";
import { oneHot } from "../ops/index.ts";

const lossDtype = (...ds: DType[]): DType => (ds.includes("f64") ? "f64" : "f32");

interface CrossEntropyAttrs {
  readonly ignoreIndex: number | undefined;
}

const crossEntropyOp: OpDef<CrossEntropyAttrs> = {
  name: "crossEntropy",
  tags: ["loss"],
  compose: ([logits, labels], { ignoreIndex }) => {
    const c = lossDtype(logits.dtype);
    const classes = logits.shape[logits.ndim - 1];
    const logProbs = logSoftmax(astype(logits, c), -1);
    if (ignoreIndex === undefined) {
      const isLabel = oneHot(labels, classes, "bool");
      return neg(mean(sum(where(isLabel, logProbs, 0), -1)));
    }
    // torch's ignore_index: ignored rows add 0 and are left out of the mean.
    const ids = astype(labels, "i32");
    const kept = notEqual(ids, ignoreIndex);
    const isLabel = oneHot(where(kept, ids, 0), classes, "bool");
    const picked = where(kept, sum(where(isLabel, logProbs, 0), -1), 0);
    return neg(div(sum(picked), sum(astype(kept, c))));
  },
};

/** Options of {@linkcode crossEntropy}. */
export interface CrossEntropyOptions {
  /**
   * A label value that marks a masked row (torch's `ignore_index`, e.g. -100): such rows add 0
   * and are excluded from the mean (all rows ignored gives NaN, as torch). Without it every
   * label must be in `[0, classes)`.
   */
  ignoreIndex?: number;
}

/**
 * Softmax cross-entropy of `logits` `[..., classes]` against integer `labels` `[...]` (i32 or
 * u8), averaged over all label positions. Computed stably (log-softmax) in f32 whatever the
 * logits' dtype (f64 for f64 logits); returns an f32 (f64) scalar. A label outside
 * `[0, classes)` is an error naming it (on WebGPU reported by the next readback), except the
 * `ignoreIndex` of masked rows.
 *
 * @example
 * ```ts
 * const loss = crossEntropy(mlp(p, x), tensor([3, 1], { dtype: "i32" }));
 * const masked = crossEntropy(logits, tensor([3, -100], { dtype: "i32" }), { ignoreIndex: -100 });
 * ```
 */
export function crossEntropy(
  logits: Tensor,
  labels: Tensor,
  opts: CrossEntropyOptions = {},
): Tensor {
  const ignoreIndex = opts?.ignoreIndex;
  if (ignoreIndex !== undefined && !Number.isInteger(ignoreIndex)) {
    throw new Error(`crossEntropy: ignoreIndex must be an integer (e.g. -100), got ${ignoreIndex}`);
  }
  expectTensor("crossEntropy", logits, "argument 1 (logits)");
  expectTensor("crossEntropy", labels, "argument 2 (labels)");
  if (labels.dtype !== "i32" && labels.dtype !== "u8") {
    throw new Error(
      `crossEntropy: labels must be integer class ids (i32 or u8), got ${labels.dtype}; ` +
        `use astype(labels, "i32")`,
    );
  }
  const want = logits.shape.slice(0, -1);
  if (
    logits.ndim === 0 || labels.ndim !== want.length || want.some((d, i) => d !== labels.shape[i])
  ) {
    throw new Error(
      `crossEntropy: labels of shape [${labels.shape}] do not match logits of shape ` +
        `[${logits.shape}]; labels must have the logits' shape without the last (class) axis`,
    );
  }
  return apply(crossEntropyOp, [logits, labels], { ignoreIndex });
}

const mseOp: OpDef<undefined> = {
  name: "mse",
  tags: ["loss"],
  compose: ([pred, target]) => {
    const c = lossDtype(pred.dtype, target.dtype);
    return mean(square(sub(astype(pred, c), astype(target, c))));
  },
};

/**
 * Mean squared error over all elements, computed in f32 (f64 if an input is f64); returns an
 * f32 (f64) scalar. `pred` and `target` must have the same shape.
 *
 * @example
 * ```ts
 * const loss = mse(linear(p, x), y);
 * ```
 */
export function mse(pred: Tensor, target: Tensor): Tensor {
  expectTensor("mse", pred, "argument 1 (pred)");
  expectTensor("mse", target, "argument 2 (target)");
  if (pred.ndim !== target.ndim || pred.shape.some((d, i) => d !== target.shape[i])) {
    throw new Error(
      `mse: pred of shape [${pred.shape}] and target of shape [${target.shape}] differ; ` +
        "reshape one so both have the same shape",
    );
  }
  return apply(mseOp, [pred, target], undefined);
}
