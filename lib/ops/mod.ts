/**
 * Every op function, re-exported.
 *
 * @module
 */
export * from "./elementwise.ts";
export * from "./reduce.ts";
export * from "./shape.ts";
export * from "./matmul.ts";
export * from "./index.ts";
export * from "./activation.ts";
export * from "./pad.ts";
export {
  conv1d,
  type Conv1dOptions,
  conv2d,
  type Conv2dOptions,
  type ConvPadding,
} from "./conv.ts";
export * from "./pool.ts";
export { broadcastShapes, type TensorLike } from "./util.ts";
export { tril, triu } from "./triangle.ts";
export { chunk, split } from "./split.ts";
export { clip } from "./clip.ts";
export { type MomentOptions, std, variance } from "./moments.ts";
export { cumsum } from "./cumsum.ts";
export { logicalAnd, logicalOr } from "./logical.ts";
export { silu, softplus } from "./smooth.ts";
