/**
 * Optimizers (optax style, PyTorch update rules), gradient transforms and learning-rate
 * schedules.
 *
 * @example
 * ```ts
 * import { adamw, chain, clipByGlobalNorm, cosine } from "./mod.ts";
 * const opt = chain(clipByGlobalNorm(1), adamw({ lr: cosine(1e-3, 10_000, { warmupSteps: 500 }) }));
 * ```
 *
 * @module
 */
export type { LearningRate, Optimizer, Schedule } from "./types.ts";
export { chain, defineTransform, type GradientTransform } from "./transform.ts";
export { sgd, type SgdOptions, type SgdState } from "./sgd.ts";
export { adam, type AdamOptions, type AdamState, adamw } from "./adam.ts";
export { clipByGlobalNorm, globalNorm } from "./clip.ts";
export { rmsprop, type RmspropOptions, type RmspropState } from "./rmsprop.ts";
export { lion, type LionOptions, type LionState } from "./lion.ts";
export { decayFlags, type DecayMask, decayMatrices } from "./mask.ts";
export { constant, cosine, type CosineOptions, warmup } from "./schedule.ts";
export {
  computeDtype,
  defineOptimizer,
  initCount,
  learningRateAt,
  mapLeaves,
  matchingLeaves,
  zerosLike,
} from "./common.ts";
export {
  adam8bit,
  type Adam8bitOptions,
  type Adam8bitState,
  adamw8bit,
  type Blockwise8bitOptions,
  type Moment,
  sgd8bit,
  type Sgd8bitOptions,
  type Sgd8bitState,
} from "./optim8bit.ts";
export {
  blockAbsmax,
  dequantizeBlockwise,
  dynamicMap,
  quantizeBlockwise,
  type Quantized,
  type QuantizeOptions,
} from "./quantize.ts";
