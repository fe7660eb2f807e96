/**
 * Weight initialisers that take an explicit PRNG key.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Backend } from "../backend/backend.ts";
import { type Tensor, tidy } from "../tensor.ts";
import { astype, mul } from "../ops/elementwise.ts";
import { type Key, normal, uniform } from "../random.ts";

/** Options of the initialisers. */
export interface InitOptions {
  /** Float dtype of the result (default f32); values are drawn and scaled in f32, rounded once. */
  dtype?: DType;
  /** Device (default cpu). */
  device?: Backend;
}

function checkFan(op: string, name: string, fan: number): void {
  if (!Number.isInteger(fan) || fan <= 0) {
    throw new Error(`${op}: ${name} must be a positive integer, got ${fan}`);
  }
}

const drawDtype = (d: DType | undefined): DType => (d === "f64" ? "f64" : "f32");

/**
 * He/Kaiming normal initialisation for ReLU layers: N(0, 2/fanIn).
 *
 * @example
 * ```ts
 * const w = kaimingNormal(key(0), [784, 256], 784); // std ≈ 0.0505
 * ```
 */
export function kaimingNormal(
  k: Key,
  shape: readonly number[],
  fanIn: number,
  opts: InitOptions = {},
): Tensor {
  checkFan("kaimingNormal", "fanIn", fanIn);
  return tidy(() => {
    const z = normal(k, shape, { dtype: drawDtype(opts.dtype), device: opts.device });
    return astype(mul(z, Math.sqrt(2 / fanIn)), opts.dtype ?? "f32");
  });
}

/**
 * Glorot/Xavier uniform initialisation: U(−a, a) with a = √(6 / (fanIn + fanOut)).
 *
 * @example
 * ```ts
 * const w = xavierUniform(key(0), [128, 64], 128, 64); // |w| < 0.177
 * ```
 */
export function xavierUniform(
  k: Key,
  shape: readonly number[],
  fanIn: number,
  fanOut: number,
  opts: InitOptions = {},
): Tensor {
  checkFan("xavierUniform", "fanIn", fanIn);
  checkFan("xavierUniform", "fanOut", fanOut);
  const a = Math.sqrt(6 / (fanIn + fanOut));
  return tidy(() => {
    const u = uniform(k, shape, {
      dtype: drawDtype(opts.dtype),
      device: opts.device,
      lo: -a,
      hi: a,
    });
    return astype(u, opts.dtype ?? "f32");
  });
}
