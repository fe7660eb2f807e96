/**
 * The dense (fully connected) layer and its initialiser.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Backend } from "../backend/backend.ts";
import { type Tensor, zeros } from "../tensor.ts";
import { apply, expectTensor, type OpDef } from "../op.ts";
import { add } from "../ops/elementwise.ts";
import { matmul } from "../ops/matmul.ts";
import type { Key } from "../random.ts";
import { kaimingNormal, xavierUniform } from "./init.ts";

/** Parameters of {@linkcode linear}: `w` is `[in, out]`, `b` is `[out]` (absent without bias). */
export interface LinearParams {
  /** The weight, `[in, out]`. */
  readonly w: Tensor;
  /** The bias, `[out]`. */
  readonly b?: Tensor;
}

/** Options of {@linkcode linearInit}. */
export interface LinearInitOptions {
  /** Float dtype of the params (default f32). */
  dtype?: DType;
  /** Weight initialiser (default "kaiming": N(0, 2/in), for ReLU nets). */
  init?: "kaiming" | "xavier";
  /** Whether to add a bias, initialised to zero (default true). */
  bias?: boolean;
  /** Device (default cpu). */
  device?: Backend;
}

/**
 * Initialise a dense layer: `w` of shape `[inDim, outDim]`, `b` zeros of shape `[outDim]`.
 *
 * @example
 * ```ts
 * const p = linearInit(key(0), 784, 128, { init: "xavier" });
 * ```
 */
export function linearInit(
  k: Key,
  inDim: number,
  outDim: number,
  opts: LinearInitOptions = {},
): LinearParams {
  const { dtype = "f32", init = "kaiming", bias = true, device } = opts;
  if (init !== "kaiming" && init !== "xavier") {
    throw new Error(`linearInit: init must be "kaiming" or "xavier", got ${JSON.stringify(init)}`);
  }
  const w = init === "kaiming"
    ? kaimingNormal(k, [inDim, outDim], inDim, { dtype, device })
    : xavierUniform(k, [inDim, outDim], inDim, outDim, { dtype, device });
  return bias ? { w, b: zeros([outDim], { dtype, device }) } : { w };
}

const linearOp: OpDef<undefined> = {
  name: "linear",
  tags: ["matmul"],
  compose: ([x, w, b]) => (b ? add(matmul(x, w), b) : matmul(x, w)),
};

/**
 * `x @ w + b` over the last axis of `x` (any leading dims). One op tagged `matmul`, so
 * interceptors (autocast) see it as a matrix product, bias included.
 *
 * @example
 * ```ts
 * const y = linear(p, x); // x: [batch, in] → y: [batch, out]
 * ```
 */
export function linear(p: LinearParams, x: Tensor): Tensor {
  if (!p || !p.w) throw new Error("linear: params must be { w, b? } as made by linearInit");
  expectTensor("linear", x, "argument 2 (x)");
  if (x.ndim === 0 || p.w.ndim !== 2 || x.shape[x.ndim - 1] !== p.w.shape[0]) {
    throw new Error(
      `linear: input of shape [${x.shape}] does not fit a weight of shape [${p.w.shape}]; ` +
        "the input's last dimension must equal the weight's first (w is [in, out])",
    );
  }
  return apply(linearOp, p.b ? [x, p.w, p.b] : [x, p.w], undefined);
}
