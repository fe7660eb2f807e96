/**
 * Layer normalisation over the last axis.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Backend } from "../backend/backend.ts";
import { ones, type Tensor, zeros } from "../tensor.ts";
import { apply, type OpDef } from "../op.ts";
import { add, astype, mul, rsqrt, square, sub } from "../ops/elementwise.ts";
import { mean } from "../ops/reduce.ts";

/** Parameters of {@linkcode layerNorm}: scale `gamma` and shift `beta`, both `[dim]`. */
export interface LayerNormParams {
  /** The scale, `[dim]` (init ones). */
  readonly gamma: Tensor;
  /** The shift, `[dim]` (init zeros). */
  readonly beta: Tensor;
}

/**
 * Initialise a layer norm: `gamma` ones, `beta` zeros, of shape `[dim]`.
 *
 * @example
 * ```ts
 * const ln = layerNormInit(128);
 * ```
 */
export function layerNormInit(
  dim: number,
  opts: { dtype?: DType; device?: Backend } = {},
): LayerNormParams {
  if (!Number.isInteger(dim) || dim <= 0) {
    throw new Error(`layerNormInit: dim must be a positive integer, got ${dim}`);
  }
  return { gamma: ones([dim], opts), beta: zeros([dim], opts) };
}

const layerNormOp: OpDef<{ eps: number }> = {
  name: "layerNorm",
  tags: ["norm"],
  compose: ([x, gamma, beta], { eps }) => {
    const c = x.dtype === "f64" ? "f64" : "f32";
    const xc = astype(x, c);
    const centered = sub(xc, mean(xc, -1, true));
    const variance = mean(square(centered), -1, true);
    const normed = mul(centered, rsqrt(add(variance, eps)));
    return astype(add(mul(normed, astype(gamma, c)), astype(beta, c)), x.dtype);
  },
};

/**
 * `(x − mean) / √(var + eps) · gamma + beta` over the last axis (biased variance, as PyTorch).
 * One op tagged `norm`; it computes in f32 (f64 for f64) and returns x's dtype.
 *
 * @example
 * ```ts
 * const y = layerNorm(layerNormInit(4), x); // x: [batch, 4]
 * ```
 */
export function layerNorm(p: LayerNormParams, x: Tensor, eps = 1e-5): Tensor {
  if (!p || !p.gamma || !p.beta) {
    throw new Error("layerNorm: params must be { gamma, beta } as made by layerNormInit");
  }
  const d = x.shape[x.ndim - 1];
  for (const [name, t] of [["gamma", p.gamma], ["beta", p.beta]] as const) {
    if (t.ndim !== 1 || t.shape[0] !== d) {
      throw new Error(
        `layerNorm: ${name} of shape [${t.shape}] does not match the input's last dimension ` +
          `${d} (input [${x.shape}]); make the params with layerNormInit(${d})`,
      );
    }
  }
  return apply(layerNormOp, [x, p.gamma, p.beta], { eps });
}
