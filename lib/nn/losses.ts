/**
 * Losses. Each is one op declaration tagged `loss` (so interceptors see it as a loss) whose
 * body computes in f32 (f64 for f64 inputs) and returns an f32 (f64) scalar.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { apply, expectTensor, type OpDef } from "../op.ts";
import { add, astype, div, mul, neg, notEqual, square, sub, where } from "../ops/elementwise.ts";
import { softplus } from "../ops/smooth.ts";
import { mean, sum } from "../ops/reduce.ts";
import { logSoftmax } from "../ops/activation.ts";
import { oneHot } from "../ops/index.ts";

const lossDtype = (...ds: DType[]): DType => (ds.includes("f64") ? "f64" : "f32");

interface CrossEntropyAttrs {
  readonly ignoreIndex: number | undefined;
  readonly labelSmoothing: number;
}

/**
 * The mean over kept rows of `−((1 − ε)·logp[label] + ε/C · Σ_c logp[c])` (torch's label
 * smoothing; ε = 0 is plain NLL): `logProbs` `[..., C]` in the loss dtype, `labels` `[...]`.
 */
function smoothedNll(
  logProbs: Tensor,
  labels: Tensor,
  ignoreIndex: number | undefined,
  eps: number,
): Tensor {
  const classes = logProbs.shape[logProbs.ndim - 1];
  const perRow = (isLabel: Tensor) => {
    const picked = sum(where(isLabel, logProbs, 0), -1);
    return eps === 0 ? picked : add(mul(picked, 1 - eps), mul(sum(logProbs, -1), eps / classes));
  };
  if (ignoreIndex === undefined) return neg(mean(perRow(oneHot(labels, classes, "bool"))));
  // torch's ignore_index: ignored rows add 0 and are left out of the mean.
  const ids = astype(labels, "i32");
  const kept = notEqual(ids, ignoreIndex);
  const picked = where(kept, perRow(oneHot(where(kept, ids, 0), classes, "bool")), 0);
  return neg(div(sum(picked), sum(astype(kept, logProbs.dtype))));
}

const crossEntropyOp: OpDef<CrossEntropyAttrs> = {
  name: "crossEntropy",
  tags: ["loss"],
  compose: ([logits, labels], { ignoreIndex, labelSmoothing }) => {
    const logProbs = logSoftmax(astype(logits, lossDtype(logits.dtype)), -1);
    return smoothedNll(logProbs, labels, ignoreIndex, labelSmoothing);
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
  /**
   * Label smoothing ε in [0, 1] (torch's `label_smoothing`, default 0): the target is
   * `(1 − ε)·onehot + ε/C`, i.e. the loss is `(1 − ε)·nll + ε·mean_c(−logp)`.
   */
  labelSmoothing?: number;
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
 * const smooth = crossEntropy(logits, labels, { labelSmoothing: 0.1 });
 * ```
 */
export function crossEntropy(
  logits: Tensor,
  labels: Tensor,
  opts: CrossEntropyOptions = {},
): Tensor {
  const ignoreIndex = checkIgnoreIndex("crossEntropy", opts?.ignoreIndex);
  const labelSmoothing = opts?.labelSmoothing ?? 0;
  if (!(labelSmoothing >= 0 && labelSmoothing <= 1)) {
    throw new Error(
      `crossEntropy: labelSmoothing must be in [0, 1] (e.g. 0.1), got ${labelSmoothing}`,
    );
  }
  checkLabels("crossEntropy", logits, labels, "logits");
  return apply(crossEntropyOp, [logits, labels], { ignoreIndex, labelSmoothing });
}

function checkIgnoreIndex(op: string, ignoreIndex: number | undefined): number | undefined {
  if (ignoreIndex !== undefined && !Number.isInteger(ignoreIndex)) {
    throw new Error(`${op}: ignoreIndex must be an integer (e.g. -100), got ${ignoreIndex}`);
  }
  return ignoreIndex;
}

/** Tensors, integer labels, and labels shaped like the scores without the class axis. */
function checkLabels(op: string, scores: Tensor, labels: Tensor, what: string): void {
  expectTensor(op, scores, `argument 1 (${what})`);
  expectTensor(op, labels, "argument 2 (labels)");
  if (labels.dtype !== "i32" && labels.dtype !== "u8") {
    throw new Error(
      `${op}: labels must be integer class ids (i32 or u8), got ${labels.dtype}; ` +
        `use astype(labels, "i32")`,
    );
  }
  const want = scores.shape.slice(0, -1);
  if (
    scores.ndim === 0 || labels.ndim !== want.length || want.some((d, i) => d !== labels.shape[i])
  ) {
    throw new Error(
      `${op}: labels of shape [${labels.shape}] do not match ${what} of shape ` +
        `[${scores.shape}]; labels must have the ${what}' shape without the last (class) axis`,
    );
  }
}

const nllOp: OpDef<{ readonly ignoreIndex: number | undefined }> = {
  name: "nllLoss",
  tags: ["loss"],
  compose: ([logProbs, labels], { ignoreIndex }) =>
    smoothedNll(astype(logProbs, lossDtype(logProbs.dtype)), labels, ignoreIndex, 0),
};

/**
 * Negative log-likelihood of log-probabilities `logProbs` `[..., classes]` (e.g. from
 * `logSoftmax`) at integer `labels` `[...]`, averaged over the rows, as `torch.nn.functional.
 * nll_loss`; rows labelled `ignoreIndex` add 0 and are left out of the mean (unlike torch
 * there is no default -100: pass it). Computed in f32 (f64 for f64 input).
 *
 * @example
 * ```ts
 * const loss = nllLoss(logSoftmax(logits), tensor([2, -100], { dtype: "i32" }), { ignoreIndex: -100 });
 * ```
 */
export function nllLoss(
  logProbs: Tensor,
  labels: Tensor,
  opts: { ignoreIndex?: number } = {},
): Tensor {
  const ignoreIndex = checkIgnoreIndex("nllLoss", opts?.ignoreIndex);
  checkLabels("nllLoss", logProbs, labels, "logProbs");
  return apply(nllOp, [logProbs, labels], { ignoreIndex });
}

const bceOp: OpDef<undefined> = {
  name: "binaryCrossEntropyWithLogits",
  tags: ["loss"],
  compose: ([logits, targets]) => {
    const c = lossDtype(logits.dtype, targets.dtype);
    const x = astype(logits, c);
    // softplus(x) − x·t = max(x, 0) − x·t + log1p(exp(−|x|)): stable; gradient sigmoid(x) − t.
    return mean(sub(softplus(x, { threshold: Infinity }), mul(x, astype(targets, c))));
  },
};

/**
 * Binary cross-entropy of `logits` against `targets` (probabilities in [0, 1], same shape),
 * averaged over all elements, computed stably as `softplus(x) − x·t` in f32 (f64 for f64
 * inputs), as `torch.nn.functional.binary_cross_entropy_with_logits`.
 *
 * @example
 * ```ts
 * const loss = binaryCrossEntropyWithLogits(linear(p, x), tensor([1, 0, 1]));
 * ```
 */
export function binaryCrossEntropyWithLogits(logits: Tensor, targets: Tensor): Tensor {
  expectTensor("binaryCrossEntropyWithLogits", logits, "argument 1 (logits)");
  expectTensor("binaryCrossEntropyWithLogits", targets, "argument 2 (targets)");
  if (logits.ndim !== targets.ndim || logits.shape.some((d, i) => d !== targets.shape[i])) {
    throw new Error(
      `binaryCrossEntropyWithLogits: logits of shape [${logits.shape}] and targets of shape ` +
        `[${targets.shape}] differ; give one target probability per logit`,
    );
  }
  return apply(
    bceOp,
    [logits, astype(targets, targets.dtype === "bool" ? "f32" : targets.dtype)],
    undefined,
  );
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
