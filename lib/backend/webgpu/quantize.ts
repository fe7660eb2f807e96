/**
 * WebGPU kernels of block-wise 8-bit quantization (`Backend.quantize` / `Backend.dequantize`),
 * bitwise equal to the CPU kernels: see wgsl/quantize.ts for how the WGSL stays exact. Both
 * only enqueue a dispatch; the map stays on the device (each workgroup derives the midpoints).
 *
 * @example
 * ```ts
 * const codes = quantize(ctx, x, absmax, map, 256, true); // u8 buffer of x.size
 * const back = dequantize(ctx, { h: codes, dtype: "u8", size: x.size }, absmax, map, 256, "f32");
 * ```
 *
 * @module
 */
import type { DType } from "../../dtype.ts";
import type { Arg } from "../backend.ts";
import { checkAlive, type Ctx, dispatch, type Kernel } from "./runtime.ts";
import { output } from "./elementwise.ts";
import { mapGroups } from "./wgsl/map.ts";
import { dequantizeKernel, quantizeKernel } from "./wgsl/quantize.ts";

function run(
  ctx: Ctx,
  k: Kernel,
  ins: readonly Arg[],
  n: number,
  out: DType,
  params: readonly number[],
): GPUBuffer {
  checkAlive(ctx);
  const buf = output(ctx, out, n);
  if (n === 0) return buf;
  dispatch(ctx, k, ins.map((a) => a.h as GPUBuffer), buf, [n, ...params], mapGroups(n, out));
  return buf;
}

/**
 * u8 codes of `x` (any float dtype) by block: the index of the `map` entry nearest to
 * `clamp(x / absmax[block], −1, 1)`, ties to the lower index (see `Backend.quantize`).
 *
 * @example
 * ```ts
 * quantize(ctx, x, absmax, map, 2048, false); // GPUBuffer of ⌈n / 4⌉ words
 * ```
 */
export function quantize(
  ctx: Ctx,
  x: Arg,
  absmax: Arg,
  map: Arg,
  blockSize: number,
  signGuard: boolean,
): GPUBuffer {
  const params = [blockSize, signGuard ? 1 : 0];
  return run(ctx, quantizeKernel(x.dtype), [x, absmax, map], x.size, "u8", params);
}

/**
 * `map[codes[i]] · absmax[⌊i / blockSize⌋]` rounded once to f32, then to `outDtype`.
 *
 * @example
 * ```ts
 * dequantize(ctx, codes, absmax, map, 256, "bf16"); // GPUBuffer of bf16 values
 * ```
 */
export function dequantize(
  ctx: Ctx,
  codes: Arg,
  absmax: Arg,
  map: Arg,
  blockSize: number,
  outDtype: DType,
): GPUBuffer {
  const k = dequantizeKernel(outDtype);
  return run(ctx, k, [codes, absmax, map], codes.size, outDtype, [blockSize]);
}
