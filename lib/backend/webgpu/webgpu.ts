/**
 * The WebGPU backend: every kernel of the {@link Backend} interface as WGSL compute shaders,
 * with the CPU backend's semantics. Buffers are pooled `GPUBuffer`s holding the dtype's real
 * storage (f16/bf16 two per u32, f8/u8/bool four per u32, rounded up to whole words); every
 * kernel only enqueues work (dispatches are batched into command buffers submitted without
 * waiting), and the only readback is `read`.
 *
 * Agreement with the CPU backend (tested in tests/webgpu_test.ts):
 * - bitwise: casts between all GPU dtypes (exact RNE bit arithmetic, fp8 `saturate`), add, sub,
 *   mul, div (correctly rounded), maximum/minimum, comparisons, where, copies, gather,
 *   scatterAdd and concat, sums of exactly representable values, max/min/arg/all/any,
 *   random uniform and bernoulli, block-wise 8-bit quantize and dequantize. "Bitwise" counts any two NaNs as equal.
 * - within a few ulps: exp, log, tanh, sigmoid (≤ 2 ulp measured, 4 tested), sqrt and rsqrt
 *   (built-ins, ≤ 3 ulp), pow (exact for x², else 2 + 2·|b·ln a| ulp), normal samples.
 * - matmul and sums of arbitrary values accumulate in f32 (the CPU uses f64 and rounds once).
 * - WGSL lets a GPU flush f32 subnormals to zero in arithmetic, so f32/bf16 results below
 *   2^-126 may be 0 (casts stay exact). Float ops on i32 convert exactly rounded to f32 first,
 *   so they agree with the CPU for |x| ≤ 2^24.
 * - Out-of-range indices: a kernel cannot throw, so gather gives 0 and scatterAdd skips them,
 *   and the op and the offending index are recorded in a device-side flag that the next
 *   readback copies in the same submit and map, and throws (the CPU backend throws at once).
 *
 * @example
 * ```ts
 * import { webgpu } from "./webgpu.ts";
 * const gpu = await webgpu();
 * const t = tensor([1, 2, 3], { device: gpu });
 * ```
 *
 * @module
 */
import type { DType, Storage } from "../../dtype.ts";
import { byteSize, storageFor } from "../../dtype.ts";
import type { Arg, Backend, Handle, View } from "../backend.ts";
import type { FusedKernel } from "../fused.ts";
import {
  allocate,
  checkAlive,
  type Ctx,
  flush,
  makeCtx,
  readbackCount,
  readBuffer,
  writeBytes,
} from "./runtime.ts";
import { binary, cast, copy, fill, storageBytes, unary, where } from "./elementwise.ts";
import { matmul } from "./matmul.ts";
import { epilogueFits, matmulEpilogue } from "./matmul_epilogue.ts";
import { reduce } from "./reduce.ts";
import { concat, gather, scatterAdd } from "./indexing.ts";
import { random } from "./random.ts";
import { dequantize, quantize } from "./quantize.ts";
import type { PoolStats } from "./pool.ts";
import { probeFma, runFused } from "./fused.ts";
import { record } from "./record.ts";

export { readbackCount };

/** Options for {@link webgpu}. */
export interface WebGPUOptions {
  /** Adapter preference, passed to `navigator.gpu.requestAdapter`. */
  powerPreference?: "low-power" | "high-performance";
  /** Fail unless the adapter supports `shader-f16`. */
  requireF16?: boolean;
  /**
   * Use at most this many workgroups per grid dimension (below the device limit), e.g. to
   * exercise the 2-D dispatch that large tensors need on a small device.
   */
  maxWorkgroupsPerDimension?: number;
  /**
   * Outputs per matmul thread along each axis: 4 (64×64 tiles) or 8 (128×128 tiles). Default:
   * 8 on fallback (CPU-emulated) adapters such as lavapipe, where it measured about 2× faster,
   * and 4 on hardware GPUs, which keeps more workgroups in flight on mid-sized products.
   */
  matmulBlock?: 4 | 8;
  /**
   * Keep every operation's result inside a fused kernel opaque to the shader compiler (ORed
   * with a uniform zero), so that no rewrite across operations (FMA contraction, folding a known
   * comparison into a later op) can change bits: jit stays bitwise equal to eager. Default
   * true; `false` (for tests and measurements only) is ignored when the device was found to
   * contract products into sums.
   */
  opaqueFusion?: boolean;
}

/** Optional GPU features the backend found and enabled. */
export interface WebGPUFeatures {
  /** `shader-f16`: f16 is decoded with native f16 in shaders (storage is packed either way). */
  readonly shaderF16: boolean;
  /** `subgroups` is offered by the adapter (not used yet). */
  readonly subgroups: boolean;
  /**
   * The shader compiler contracted an f32 product and a following sum of one shader into an
   * FMA in the probe run at creation (fused kernels then keep results opaque even when
   * `opaqueFusion: false` was asked for).
   */
  readonly fmaContraction: boolean;
}

/** Device limits that matter to the kernels (requested at the adapter's maximum). */
export interface WebGPULimits {
  /** Largest buffer, in bytes. */
  readonly maxBufferSize: number;
  /** Largest storage binding, in bytes: the largest tensor the kernels can use. */
  readonly maxStorageBufferBindingSize: number;
  /** Workgroups per grid dimension; larger launches use a 2-D grid. */
  readonly maxComputeWorkgroupsPerDimension: number;
  /** Invocations per workgroup. */
  readonly maxComputeInvocationsPerWorkgroup: number;
  /** Workgroup memory, in bytes. */
  readonly maxComputeWorkgroupStorageSize: number;
}

export type { PoolStats };

/**
 * A WebGPU device: a {@link Backend} plus what it found about the GPU.
 *
 * @example
 * ```ts
 * const gpu: WebGPUBackend = await webgpu();
 * gpu.limits.maxStorageBufferBindingSize; // e.g. 134217728
 * ```
 */
export interface WebGPUBackend extends Backend {
  /** Always `"webgpu"`. */
  readonly kind: "webgpu";
  /** Optional features found and enabled. */
  readonly features: WebGPUFeatures;
  /** Device limits. */
  readonly limits: WebGPULimits;
  /** The adapter's description (e.g. `"llvmpipe (LLVM 15.0.6, 256 bits)"`). */
  readonly adapter: string;
  /** The underlying device, for interop. */
  readonly device: GPUDevice;
  /** Buffer pool counters (GPUBuffers created, reused, pooled). */
  poolStats(): Readonly<PoolStats>;
  /** Submit recorded work and wait until the GPU has finished it (for benchmarks). */
  sync(): Promise<void>;
}

const HOW_TO =
  "Install a GPU driver, or a software adapter with `apt-get install mesa-vulkan-drivers` " +
  "(then DENO_WEBGPU_BACKEND=vulkan or DENO_WEBGPU_BACKEND=gl picks one), or use the cpu backend";

const names = new Map<string, number>();

/**
 * Create a WebGPU device. Throws a clear error when WebGPU or an adapter is missing.
 *
 * @example
 * ```ts
 * const gpu = await webgpu({ powerPreference: "high-performance" });
 * gpu.features.shaderF16; // true on most GPUs
 * ```
 */
export async function webgpu(opts: WebGPUOptions = {}): Promise<WebGPUBackend> {
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) {
    throw new Error(`webgpu: this runtime has no WebGPU (navigator.gpu is missing). ${HOW_TO}.`);
  }
  const adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference });
  if (!adapter) throw new Error(`webgpu: no WebGPU adapter was found. ${HOW_TO}.`);
  const hasF16 = adapter.features.has("shader-f16");
  if (opts.requireF16 && !hasF16) {
    throw new Error(
      "webgpu: this adapter has no shader-f16 feature (requireF16 was set); drop requireF16 " +
        "(f16 then uses packed storage with f32 math) or pick another adapter, e.g. " +
        "DENO_WEBGPU_BACKEND=vulkan",
    );
  }
  const al = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxBufferSize: al.maxBufferSize,
    maxStorageBufferBindingSize: al.maxStorageBufferBindingSize,
    maxComputeWorkgroupStorageSize: al.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: al.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: al.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: al.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupsPerDimension: al.maxComputeWorkgroupsPerDimension,
    maxStorageBuffersPerShaderStage: al.maxStorageBuffersPerShaderStage,
  };
  const requiredFeatures: GPUFeatureName[] = hasF16 ? ["shader-f16"] : [];
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const desc = adapter.info?.description || adapter.info?.vendor || "unknown adapter";
  const count = (names.get(desc) ?? 0) + 1;
  names.set(desc, count);
  const name = `webgpu:${desc}${count > 1 ? `#${count}` : ""}`;
  const fallback = (adapter.info as { isFallbackAdapter?: boolean } | undefined)
    ?.isFallbackAdapter ?? /llvmpipe|lavapipe|swiftshader/i.test(desc);
  const block = opts.matmulBlock ?? (fallback ? 8 : 4);
  if (block !== 4 && block !== 8) {
    throw new Error(`webgpu: matmulBlock must be 4 or 8, got ${opts.matmulBlock}`);
  }
  const ctx = makeCtx(device, name, hasF16, opts.maxWorkgroupsPerDimension, block);
  const dl = device.limits;
  const fmaContraction = (await probeFma(ctx, false)) !== 0;
  return makeBackend(
    ctx,
    desc,
    {
      shaderF16: hasF16,
      subgroups: adapter.features.has("subgroups" as GPUFeatureName),
      fmaContraction,
    },
    fmaContraction || opts.opaqueFusion !== false,
    dl.maxStorageBuffersPerShaderStage,
    {
      maxBufferSize: dl.maxBufferSize,
      maxStorageBufferBindingSize: dl.maxStorageBufferBindingSize,
      maxComputeWorkgroupsPerDimension: dl.maxComputeWorkgroupsPerDimension,
      maxComputeInvocationsPerWorkgroup: dl.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupStorageSize: dl.maxComputeWorkgroupStorageSize,
    },
  );
}

function makeBackend(
  ctx: Ctx,
  adapter: string,
  features: WebGPUFeatures,
  opaque: boolean,
  maxFusedBuffers: number,
  limits: WebGPULimits,
): WebGPUBackend {
  return {
    kind: "webgpu",
    name: ctx.name,
    adapter,
    device: ctx.device,
    features: Object.freeze(features),
    limits: Object.freeze(limits),
    poolStats: () => ({ ...ctx.pool.stats }),
    sync: async () => {
      checkAlive(ctx);
      flush(ctx);
      await ctx.device.queue.onSubmittedWorkDone();
      checkAlive(ctx);
    },
    unsupported(dtype: DType) {
      if (dtype === "f64") {
        return "f64 cannot live on WebGPU (WGSL has no f64); keep f64 tensors on the cpu " +
          'backend, or cast to f32 first with astype(x, "f32")';
      }
      return undefined;
    },
    upload(dtype: DType, data: Storage): Handle {
      checkAlive(ctx);
      const buf = allocate(ctx, storageBytes(dtype, data.length));
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.length * byteSize(dtype));
      writeBytes(ctx, buf, bytes);
      return buf;
    },
    fill: (dtype, size, value) => fill(ctx, dtype, size, value),
    async read(x: Arg): Promise<Storage> {
      const bytes = await readBuffer(ctx, x.h as GPUBuffer, x.size * byteSize(x.dtype));
      const out = storageFor(x.dtype, x.size);
      new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes);
      return out;
    },
    free(h: Handle) {
      ctx.pool.release(h as GPUBuffer);
    },
    cast: (x, to, opts) => cast(ctx, x, to, opts),
    copy: (x, outDtype) => copy(ctx, x, outDtype),
    unary: (op, x, outDtype) => unary(ctx, op, x, outDtype),
    binary: (op, a, b, outDtype) => binary(ctx, op, a, b, outDtype),
    where: (c, a, b, outDtype) => where(ctx, c, a, b, outDtype),
    reduce: (op, x, outer, r, inner, outDtype) => reduce(ctx, op, x, outer, r, inner, outDtype),
    matmul: (a, b, g, outDtype) => matmul(ctx, a, b, g, outDtype),
    concat: (xs, outer, sizes, inner, outDtype) => concat(ctx, xs, outer, sizes, inner, outDtype),
    gather: (x, idx, outer, axis, inner, check) => gather(ctx, x, idx, outer, axis, inner, check),
    scatterAdd: (base, idx, upd, outer, axis, inner) =>
      scatterAdd(ctx, base, idx, upd, outer, axis, inner),
    random: (key, size, dtype, dist) => random(ctx, key, size, dtype, dist),
    quantize: (x, absmax, map, bs, guard) => quantize(ctx, x, absmax, map, bs, guard),
    dequantize: (codes, absmax, map, bs, outDtype) =>
      dequantize(ctx, codes, absmax, map, bs, outDtype),
    fused: (k: FusedKernel, inputs: readonly View[]) => runFused(ctx, k, inputs, opaque),
    maxFusedBuffers,
    matmulCasts: true,
    fusedReduce: true,
    matmulFused: (a, b, g, outDtype, k, inputs) =>
      matmulEpilogue(ctx, a, b, g, outDtype, k, inputs, opaque),
    matmulFusedFits: epilogueFits,
    record: (inputs, body, opts) => record(ctx, inputs, body, opts),
  };
}
