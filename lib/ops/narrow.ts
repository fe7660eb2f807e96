/**
 * The shared rule of composite ops on narrow floats: compute in f32, round the result once.
 *
 * @module
 */
import { isFloating } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { astype } from "./elementwise.ts";

/**
 * Run a composite op's body in f32 for f16/bf16/fp8 inputs and round its result once to the
 * input's dtype, as a single op would; f32, f64 and integer inputs run as they are.
 *
 * @example
 * ```ts
 * const y = narrowInF32(x, (x) => sub(x, logsumexp(x, -1, true)));
 * ```
 */
export function narrowInF32(x: Tensor, body: (x: Tensor) => Tensor): Tensor {
  if (x.dtype === "f64" || x.dtype === "f32" || !isFloating(x.dtype)) return body(x);
  return astype(body(astype(x, "f32")), x.dtype);
}
