/**
 * Neural-network layers and losses as pure functions, with init functions that take an
 * explicit PRNG key.
 *
 * @example
 * ```ts
 * import { crossEntropy, mlp, mlpInit } from "./mod.ts";
 * const p = mlpInit(key(0), [784, 128, 10]);
 * const loss = crossEntropy(mlp(p, x), labels);
 * ```
 *
 * @module
 */
export { type InitOptions, kaimingNormal, xavierUniform } from "./init.ts";
export { linear, linearInit, type LinearInitOptions, type LinearParams } from "./linear.ts";
export { type Activation, mlp, mlpInit, type MlpParams } from "./mlp.ts";
export { layerNorm, layerNormInit, type LayerNormParams } from "./layer_norm.ts";
export { embedding, embeddingInit, type EmbeddingParams } from "./embedding.ts";
export { dropout } from "./dropout.ts";
export {
  conv2d,
  conv2dInit,
  type Conv2dInitOptions,
  type Conv2dLayerOptions,
  type Conv2dParams,
} from "./conv.ts";
export {
  binaryCrossEntropyWithLogits,
  crossEntropy,
  type CrossEntropyOptions,
  mse,
  nllLoss,
} from "./losses.ts";
