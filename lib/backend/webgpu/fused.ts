/**
 * The WebGPU fused elementwise kernel: one dispatch for a whole {@linkcode FusedKernel}, built
 * from the eager kernels' own lane code (see wgsl/fused.ts), with its reduction, if any, in the
 * same dispatch (see wgsl/fused_reduce.ts), and the probe that tells whether
 * this device contracts an f32 product into a following sum (FMA) across operations.
 *
 * @example
 * ```ts
 * const [y] = runFused(ctx, kernel, [xView], false);
 * ```
 *
 * @module
 */
import { byteSize, encode } from "../../dtype.ts";
import type { View } from "../backend.ts";
import type { FusedKernel } from "../fused.ts";
import { output, storageBytes } from "./elementwise.ts";
import { checkAlive, type Ctx, dispatch, readBuffer, writeBytes } from "./runtime.ts";
import { coalesce } from "./views.ts";
import {
  fusedGroups,
  fusedKernel,
  fusedParams,
  type FusedSpec,
  fusedVec4,
  immediateBits,
} from "./wgsl/fused.ts";
import { fusedReduceKernel } from "./wgsl/fused_reduce.ts";
import { perWord } from "./wgsl/dtype.ts";
import { mapGroups } from "./wgsl/map.ts";

/**
 * Run `k` over `inputs` (views of `k.size` elements each, any shape and strides): one dispatch,
 * one new buffer per output. `opaque` keeps every result opaque (see wgsl/fused.ts);
 * `vectorize` (default) takes the vec4 form where it applies (`false`: always the scalar form,
 * the reference the vec4 form is tested against; kernels with a reduce always take it).
 *
 * @example
 * ```ts
 * const outs = runFused(ctx, kernel, views, ctx.name.includes("llvmpipe"));
 * ```
 */
export function runFused(
  ctx: Ctx,
  k: FusedKernel,
  inputs: readonly View[],
  opaque: boolean,
  vectorize = true,
): GPUBuffer[] {
  checkAlive(ctx);
  if (inputs.length !== k.inputs.length) {
    throw new Error(
      `webgpu fused: the kernel takes ${k.inputs.length} inputs, got ${inputs.length}`,
    );
  }
  inputs.forEach((v, j) => {
    const n = v.shape.reduce((a, b) => a * b, 1);
    if (v.dtype !== k.inputs[j] || n !== k.size) {
      throw new Error(
        `webgpu fused: input ${j} is a ${v.dtype} view of ${n} elements; the kernel expects ` +
          `${k.inputs[j]} over ${k.size}`,
      );
    }
  });
  if (k.reduce) return runFusedReduce(ctx, k, inputs, opaque);
  if (k.outputs.length === 0) throw new Error("webgpu fused: a kernel needs at least one output");
  const outs = k.outputs.map((o) => output(ctx, k.ops[o].dtype, k.size));
  if (k.size === 0) return outs;
  const { spec, params } = prepare(k, inputs, opaque);
  const vec4 = vectorize && fusedVec4(k, spec.ins, inputs.map((v) => v.offset));
  dispatch(
    ctx,
    fusedKernel({ ...spec, vec4 }),
    inputs.map((v) => v.h as GPUBuffer),
    outs,
    params,
    fusedGroups(k, k.size, vec4),
  );
  return outs;
}

/** The signature and uniform words of `k` over `inputs` (coalesced views). */
export function prepare(
  k: FusedKernel,
  inputs: readonly View[],
  opaque: boolean,
): { spec: FusedSpec; params: number[] } {
  const views = inputs.map((v) => {
    const c = coalesce(v.shape, [v]);
    return { mode: c.modes[0], shape: c.shape, strides: c.strides[0], offset: v.offset };
  });
  const spec: FusedSpec = {
    kernel: k,
    ins: views.map((v) => ({ mode: v.mode, rank: v.mode === "strided" ? v.shape.length : 0 })),
    opaque,
  };
  const imm = k.immediates.map((i) =>
    immediateBits(i.dtype, new Uint8Array(encode(i.dtype, [i.value]).buffer))
  );
  return { spec, params: fusedParams(spec, k.size, views, imm) };
}

/**
 * A fused kernel with a reduction: the eager reduce kernel's shape (tree when `inner` is 1 and
 * the axis longer than 64, else serial) and workgroups, its values from the fused lanes.
 */
function runFusedReduce(
  ctx: Ctx,
  k: FusedKernel,
  inputs: readonly View[],
  opaque: boolean,
): GPUBuffer[] {
  const r = k.reduce!;
  if (r.outer * r.reduce * r.inner !== k.size || !(r.x >= 0 && r.x < k.ops.length)) {
    throw new Error(
      `webgpu fused: the reduce over [${r.outer}, ${r.reduce}, ${r.inner}] of op ${r.x} does ` +
        `not fit a kernel of ${k.size} elements and ${k.ops.length} operations`,
    );
  }
  for (const o of k.outputs) {
    if (byteSize(k.ops[o].dtype) !== 4) {
      throw new Error(
        `webgpu fused: a kernel with a reduce writes only 4-byte outputs; op ${o} is ` +
          `${k.ops[o].dtype} (run its reduce as a separate kernel)`,
      );
    }
  }
  const n = r.outer * r.inner;
  const outs = [
    ...k.outputs.map((o) => output(ctx, k.ops[o].dtype, k.size)),
    output(ctx, r.dtype, n),
  ];
  if (n === 0) return outs;
  const { spec, params } = prepare(k, inputs, opaque);
  const tree = r.inner === 1 && r.reduce > 64;
  dispatch(
    ctx,
    fusedReduceKernel(spec, tree ? "tree" : "serial"),
    inputs.map((v) => v.h as GPUBuffer),
    outs,
    [...params, n, r.reduce, r.inner],
    tree ? Math.ceil(n / perWord(r.dtype)) : mapGroups(n, r.dtype),
  );
  return outs;
}

/** The probe kernel: `a * b + c` as two fused operations (mul, then add) on f32 inputs. */
export const FMA_PROBE: FusedKernel = {
  shape: [1],
  size: 1,
  inputs: ["f32", "f32", "f32"],
  immediates: [],
  ops: [
    {
      op: "binary",
      kind: "mul",
      a: { kind: "input", index: 0 },
      b: { kind: "input", index: 1 },
      dtype: "f32",
    },
    {
      op: "binary",
      kind: "add",
      a: { kind: "op", index: 0 },
      b: { kind: "input", index: 2 },
      dtype: "f32",
    },
  ],
  outputs: [1],
};

/**
 * Run the FMA probe: a = b = 1 + 2^-12, c = −(1 + 2^-11). Rounded separately the product is
 * 1 + 2^-11 and the sum 0; contracted into one FMA the sum is 2^-24. Returns the f32 result
 * (one readback).
 *
 * @example
 * ```ts
 * const contracts = (await probeFma(ctx, false)) !== 0;
 * ```
 */
export async function probeFma(ctx: Ctx, opaque: boolean): Promise<number> {
  const v = 1 + 2 ** -12;
  const data = [v, v, -(1 + 2 ** -11)];
  const bufs = data.map((x) => {
    const b = output(ctx, "f32", 1);
    writeBytes(ctx, b, new Uint8Array(new Float32Array([x]).buffer));
    return b;
  });
  const views = bufs.map((h) => ({
    h,
    dtype: "f32" as const,
    size: 1,
    shape: [1],
    strides: [1],
    offset: 0,
  }));
  const [out] = runFused(ctx, FMA_PROBE, views, opaque);
  const bytes = await readBuffer(ctx, out, storageBytes("f32", 1));
  for (const b of [...bufs, out]) ctx.pool.release(b);
  return new Float32Array(bytes.buffer)[0];
}
