/**
 * A WebGPU matmul with an elementwise epilogue (`Backend.matmulFused`): the fused kernel runs
 * inside the matmul's store, on each product already rounded to the output dtype, so bias adds,
 * activations and casts after a matmul need no dispatch and no round trip through memory of
 * their own. Where the store cannot write an epilogue output in whole words (a row length that
 * is not a multiple of an output's elements per word) or there is nothing to multiply, it runs
 * as the matmul kernel then the fused kernel: the same bits either way.
 *
 * @example
 * ```ts
 * const [y] = matmulEpilogue(ctx, a, b, geometry, "f16", relu, [], true);
 * ```
 *
 * @module
 */
import type { DType } from "../../dtype.ts";
import type { Arg, MatmulGeometry, View } from "../backend.ts";
import type { FusedKernel } from "../fused.ts";
import { output } from "./elementwise.ts";
import { prepare, runFused } from "./fused.ts";
import { matmul, product } from "./matmul.ts";
import { checkAlive, type Ctx, dispatch } from "./runtime.ts";
import { perWord } from "./wgsl/dtype.ts";
import { matmulKernel } from "./wgsl/matmul.ts";

/**
 * Whether the matmul's store can run `k` (`Backend.matmulFusedFits`): every output, and the
 * product, packs whole words into a row, and there is something to multiply.
 *
 * @example
 * ```ts
 * epilogueFits(g, "f16", k); // false when g.n is odd
 * ```
 */
export function epilogueFits(g: MatmulGeometry, outDtype: DType, k: FusedKernel): boolean {
  const words = [outDtype, ...k.outputs.map((o) => k.ops[o].dtype)].every((d) =>
    g.n % perWord(d) === 0
  );
  return words && g.batch * g.m * g.n > 0 && g.k > 0 && k.outputs.length > 0;
}

/**
 * `runFused(k, [matmul(a, b, g, outDtype), ...inputs])` as one dispatch where possible; returns
 * `k`'s outputs (the product itself is not kept unless `k` outputs it).
 *
 * @example
 * ```ts
 * const outs = matmulEpilogue(ctx, a, b, g, "f32", k, [biasView], false);
 * ```
 */
export function matmulEpilogue(
  ctx: Ctx,
  a: Arg,
  b: Arg,
  g: MatmulGeometry,
  outDtype: DType,
  k: FusedKernel,
  inputs: readonly View[],
  opaque: boolean,
): GPUBuffer[] {
  checkAlive(ctx);
  const size = g.batch * g.m * g.n;
  if (k.inputs[0] !== outDtype || k.size !== size || inputs.length !== k.inputs.length - 1) {
    throw new Error(
      `webgpu matmul epilogue: the epilogue must take the ${outDtype}[${size}] product as ` +
        `input 0 and ${k.inputs.length - 1} more views; got ${k.inputs[0]}[${k.size}] and ` +
        `${inputs.length} views`,
    );
  }
  if (k.reduce) throw new Error("webgpu matmul epilogue: an epilogue cannot reduce");
  if (!epilogueFits(g, outDtype, k)) {
    const h = matmul(ctx, a, b, g, outDtype);
    const v: View = { h, dtype: outDtype, size, shape: [size], strides: [1], offset: 0 };
    const outs = runFused(ctx, k, [v, ...inputs], opaque);
    ctx.pool.release(h);
    return outs;
  }
  const productView: View = {
    h: undefined,
    dtype: outDtype,
    size,
    shape: [size],
    strides: [1],
    offset: 0,
  };
  const ep = prepare(k, [productView, ...inputs], opaque);
  const { sig, params, groups } = product(ctx, a, b, g, outDtype);
  const outs = k.outputs.map((o) => output(ctx, k.ops[o].dtype, size));
  dispatch(
    ctx,
    matmulKernel({ ...sig, epilogue: ep.spec }),
    [a.h as GPUBuffer, b.h as GPUBuffer, ...inputs.map((v) => v.h as GPUBuffer)],
    outs,
    [...params, ...ep.params],
    groups,
  );
  return outs;
}
