/**
 * The contract of `Backend.blockwise8bitUpdate`: one 8-bit optimizer update of one tensor (its
 * param, gradient and block-wise quantized moments) in one pass per block, bitwise equal to the
 * composed ops of `lib/optim/optim8bit.ts` in f32 (which stay the reference and the fallback).
 *
 * Inputs, in order (all flat, on the device; scalars are f32 tensors of one element):
 * - adam: `p, g, mCodes, mAbsmax, mMap, vCodes, vAbsmax, vMap, stepSize, epsHat[, decay]`
 * - sgd: `p, g, codes, absmax, map, rate`
 *
 * `p` and `g` are f32, bf16 or f16; codes u8; absmax f32 of ⌈n / blockSize⌉; maps f32 of 256.
 * Outputs, in order: the new param (p's dtype), then codes and absmax of each moment.
 *
 * Per element (every step rounded to f32, as the composed ops; `ok` false zeroes the moments
 * and keeps the param):
 * - adam: `g += l2·p` (when `l2` ≠ 0); `m = m̂·b1 + g·(1−b1)`; `v = v̂·b2 + g²·(1−b2)`;
 *   `ok = isFinite(v)`; `p' = p − stepSize·(m / (√v + epsHat))`, then `p' ·= decay` (when
 *   present).
 * - sgd: `g += l2·p`; `m = m̂·momentum + g`; `ok = isFinite(m)`; `p' = p − m·rate`.
 *
 * Then each moment's block absmax (`max |x|`, NaN if any is NaN) and its codes, exactly as
 * `Backend.quantize` with the sign guard.
 *
 * @module
 */
import type { DType } from "../dtype.ts";

/** The attributes of one fused 8-bit optimizer update (plain data). */
export interface Blockwise8bitUpdate {
  /** `"adam"` (two moments: signed m, unsigned v) or `"sgd"` (one signed momentum). */
  readonly kind: "adam" | "sgd";
  /** Elements per quantization block. */
  readonly blockSize: number;
  /** Coupled (L2) weight decay added to the gradient; 0 for none. Rounded to f32. */
  readonly l2: number;
  /** adam: decay of m (rounded to f32); sgd: the momentum factor. */
  readonly b1: number;
  /** adam: decay of v (rounded to f32); sgd: unused (0). */
  readonly b2: number;
  /** adam: whether a `decay` scalar input follows `epsHat` (decoupled weight decay). */
  readonly decay: boolean;
}

/** Dtypes of `p` and `g` the fused update reads. */
export const BLOCKWISE8BIT_DTYPES: readonly DType[] = ["f32", "bf16", "f16"];

/** How many inputs an update takes. */
export function blockwise8bitInputCount(u: Blockwise8bitUpdate): number {
  return u.kind === "sgd" ? 6 : u.decay ? 11 : 10;
}

/**
 * Dtype and size of each output of `u` for a param of `n` elements stored as `paramDtype`.
 *
 * @example
 * ```ts
 * blockwise8bitOutputs(u, "f32", 300); // adam, blockSize 256: f32[300], u8[300], f32[2], u8[300], f32[2]
 * ```
 */
export function blockwise8bitOutputs(
  u: Blockwise8bitUpdate,
  paramDtype: DType,
  n: number,
): { dtype: DType; size: number }[] {
  const blocks = Math.ceil(n / u.blockSize);
  const moment = [{ dtype: "u8" as DType, size: n }, { dtype: "f32" as DType, size: blocks }];
  return [
    { dtype: paramDtype, size: n },
    ...moment,
    ...(u.kind === "adam" ? moment : []),
  ];
}
