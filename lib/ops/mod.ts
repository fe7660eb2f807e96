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
export { broadcastShapes, type TensorLike } from "./util.ts";
