/**
 * A multi-layer perceptron: dense layers with an activation between them.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { relu, tanh } from "../ops/elementwise.ts";
import { gelu } from "../ops/activation.ts";
import { type Key, split } from "../random.ts";
import { linear, linearInit, type LinearInitOptions, type LinearParams } from "./linear.ts";

/** Parameters of {@linkcode mlp}. */
export interface MlpParams {
  /** The dense layers, input side first. */
  readonly layers: readonly LinearParams[];
}

/** Activations {@linkcode mlp} can apply between layers. */
export type Activation = "relu" | "gelu" | "tanh";

const activations: Record<Activation, (x: Tensor) => Tensor> = { relu, gelu, tanh };

/**
 * Initialise an MLP with layer sizes `sizes` (input first): `sizes.length − 1` dense layers,
 * each made by {@linkcode linearInit} with its own key.
 *
 * @example
 * ```ts
 * const p = mlpInit(key(0), [784, 128, 10]);
 * ```
 */
export function mlpInit(k: Key, sizes: readonly number[], opts: LinearInitOptions = {}): MlpParams {
  if (!Array.isArray(sizes) || sizes.length < 2) {
    throw new Error(`mlpInit: sizes needs at least [in, out], got ${JSON.stringify(sizes)}`);
  }
  const keys = split(k, sizes.length - 1);
  return { layers: keys.map((ki, i) => linearInit(ki, sizes[i], sizes[i + 1], opts)) };
}

/**
 * Run an MLP: dense layers with `activation` (default relu) between them and none after the
 * last.
 *
 * @example
 * ```ts
 * const logits = mlp(p, x, { activation: "gelu" });
 * ```
 */
export function mlp(p: MlpParams, x: Tensor, opts: { activation?: Activation } = {}): Tensor {
  const name = opts.activation ?? "relu";
  const act = activations[name];
  if (!act) {
    throw new Error(
      `mlp: activation must be "relu", "gelu" or "tanh", got ${JSON.stringify(name)}`,
    );
  }
  if (!p || !Array.isArray(p.layers) || p.layers.length === 0) {
    throw new Error("mlp: params must be { layers: [...] } as made by mlpInit");
  }
  let h = x;
  p.layers.forEach((layer, i) => {
    h = linear(layer, h);
    if (i < p.layers.length - 1) h = act(h);
  });
  return h;
}
