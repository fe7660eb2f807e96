/**
 * WebGPU kernels for fill, cast, copy, unary, binary and where, built on the generic map kernel.
 *
 * @example
 * ```ts
 * const h = unary(ctx, "exp", { h: buf, dtype: "f32", size: 4 }, "f32");
 * ```
 *
 * @module
 */
import { type CastOptions, type DType, encode } from "../../dtype.ts";
import type { Arg, BinaryOp, UnaryOp, View } from "../backend.ts";
import { allocate, checkAlive, commandEncoder, type Ctx, dispatch } from "./runtime.ts";
import { coalesce } from "./views.ts";
import { perWord } from "./wgsl/dtype.ts";
import { binaryLane, castLane, unaryLane, whereLane } from "./wgsl/elementwise.ts";
import { type Lane, mapGroups, mapKernel, mapParams, type MapSpec, type Vals } from "./wgsl/map.ts";

/**
 * Bytes of GPU storage for `size` elements of `d` (rounded up to whole words).
 *
 * @example
 * ```ts
 * storageBytes("f16", 3); // 8
 * ```
 */
export function storageBytes(d: DType, size: number): number {
  return Math.ceil(size / perWord(d)) * 4;
}

/**
 * A new output buffer for `size` elements of `d`.
 *
 * @example
 * ```ts
 * const buf = output(ctx, "bf16", 10); // 20 bytes
 * ```
 */
export function output(ctx: Ctx, d: DType, size: number): GPUBuffer {
  return allocate(ctx, storageBytes(d, size));
}

/**
 * Run a map kernel over views of an output shape; returns the new buffer.
 *
 * @example
 * ```ts
 * runMap(ctx, "neg", [flat(x)], [x.size], "f32", unaryLane("neg", "f32", "f32"));
 * ```
 */
export function runMap(
  ctx: Ctx,
  key: string,
  views: readonly View[],
  shape: readonly number[],
  out: DType,
  lane: (v: Vals) => Lane,
  extras: readonly number[] = [],
): GPUBuffer {
  checkAlive(ctx);
  const n = shape.reduce((a, b) => a * b, 1);
  const buf = output(ctx, out, n);
  if (n === 0) return buf;
  const c = coalesce(shape, views);
  const ins = views.map((v, k) => ({ dtype: v.dtype, mode: c.modes[k] }));
  const spec: MapSpec = { key, ins, rank: c.shape.length, out, extras: extras.length, lane };
  const k = mapKernel(spec);
  const params = mapParams(spec, n, c.shape, c.strides, c.offsets, extras);
  dispatch(ctx, k, views.map((v) => v.h as GPUBuffer), buf, params, mapGroups(n, out));
  return buf;
}

/**
 * A contiguous view of a whole buffer.
 *
 * @example
 * ```ts
 * flat({ h, dtype: "f32", size: 6 }); // shape [6], strides [1]
 * ```
 */
export function flat(x: Arg): View {
  return { ...x, shape: [x.size], strides: [1], offset: 0 };
}

/**
 * `size` elements of `value` rounded once to `dtype`.
 *
 * @example
 * ```ts
 * fill(ctx, "f16", 4, 0.1); // four 0x2E66
 * ```
 */
export function fill(ctx: Ctx, dtype: DType, size: number, value: number): GPUBuffer {
  checkAlive(ctx);
  const raw = new Uint8Array(encode(dtype, [value]).buffer);
  let lane = 0;
  for (let i = raw.length - 1; i >= 0; i--) lane = lane * 256 + raw[i];
  if (lane === 0) {
    const buf = output(ctx, dtype, size);
    commandEncoder(ctx).clearBuffer(buf);
    return buf;
  }
  return runMap(ctx, "fill", [], [size], dtype, (v) => ({
    deps: [],
    code: "",
    bits: v.extra(0),
  }), [lane >>> 0]);
}

/**
 * Convert to `to`, rounding once; same-dtype casts copy the buffer.
 *
 * @example
 * ```ts
 * cast(ctx, x, "f8e4m3", { saturate: true });
 * ```
 */
export function cast(ctx: Ctx, x: Arg, to: DType, opts?: CastOptions): GPUBuffer {
  checkAlive(ctx);
  if (x.dtype === to) {
    const bytes = storageBytes(to, x.size);
    const buf = output(ctx, to, x.size);
    if (bytes > 0) commandEncoder(ctx).copyBufferToBuffer(x.h as GPUBuffer, 0, buf, 0, bytes);
    return buf;
  }
  const sat = opts?.saturate === true;
  return runMap(
    ctx,
    `cast${sat ? ".sat" : ""}`,
    [flat(x)],
    [x.size],
    to,
    castLane(x.dtype, to, opts),
  );
}

/**
 * Materialise a strided view; a different `outDtype` converts like a cast.
 *
 * @example
 * ```ts
 * copy(ctx, { ...x, shape: [3, 2], strides: [1, 3], offset: 0 }, x.dtype); // transpose
 * ```
 */
export function copy(ctx: Ctx, x: View, outDtype: DType): GPUBuffer {
  return runMap(ctx, "copy", [x], x.shape, outDtype, castLane(x.dtype, outDtype));
}

/**
 * Elementwise unary map.
 *
 * @example
 * ```ts
 * unary(ctx, "tanh", x, "f32");
 * ```
 */
export function unary(ctx: Ctx, op: UnaryOp, x: Arg, outDtype: DType): GPUBuffer {
  return runMap(ctx, `u.${op}`, [flat(x)], [x.size], outDtype, unaryLane(op, x.dtype, outDtype));
}

/**
 * Elementwise binary map over broadcast views.
 *
 * @example
 * ```ts
 * binary(ctx, "add", a, b, "f16");
 * ```
 */
export function binary(ctx: Ctx, op: BinaryOp, a: View, b: View, outDtype: DType): GPUBuffer {
  return runMap(
    ctx,
    `b.${op}`,
    [a, b],
    a.shape,
    outDtype,
    binaryLane(op, [a.dtype, b.dtype], outDtype),
  );
}

/**
 * `cond ? a : b` over broadcast views.
 *
 * @example
 * ```ts
 * where(ctx, cond, a, b, "f32");
 * ```
 */
export function where(ctx: Ctx, cond: View, a: View, b: View, outDtype: DType): GPUBuffer {
  return runMap(
    ctx,
    "where",
    [cond, a, b],
    a.shape,
    outDtype,
    whereLane([cond.dtype, a.dtype, b.dtype], outDtype),
  );
}
