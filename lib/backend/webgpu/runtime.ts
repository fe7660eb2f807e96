/**
 * The WebGPU runtime shared by every kernel: the device context, the pipeline cache (one
 * compiled pipeline per kernel signature), uniform parameters, 2-D dispatch for large sizes,
 * and the command recorder that batches dispatches into one command buffer and submits without
 * awaiting. The only readback is `readBuffer`, which counts its `mapAsync` calls.
 *
 * @example
 * ```ts
 * dispatch(ctx, kernel, [input], out, params, words);
 * const bytes = await readBuffer(ctx, out, 16);
 * ```
 *
 * @module
 */
import { type BufferPool, bufferPool } from "./pool.ts";

/** A compute kernel: its cache key, its WGSL source, and its binding counts. */
export interface Kernel {
  /** Unique per WGSL source (dtypes, op, flags). */
  readonly key: string;
  /** Builds the WGSL source (called once per key). */
  readonly code: () => string;
  /** Read-only storage inputs (bindings 1..n); the output is binding n+1. */
  readonly inputs: number;
  /** u32 words of uniform parameters (binding 0). */
  readonly params: number;
  /** Storage outputs after the inputs (default 1; fused kernels bind several). */
  readonly outputs?: number;
  /** Binds the index-error flag as `E` after `O` (kernels that call `indexError`). */
  readonly errors?: boolean;
}

/** Device state shared by the kernels of one backend instance. */
export interface Ctx {
  readonly device: GPUDevice;
  /** The buffer pool (a recording swaps in its own while it records, see record.ts). */
  pool: BufferPool;
  /** Whether `shader-f16` is enabled. */
  readonly f16: boolean;
  readonly maxGroups: number;
  readonly maxBinding: number;
  readonly name: string;
  /** Register block per matmul thread: 4 (64×64 tiles) or 8 (128×128 tiles). */
  readonly matmulBlock: 4 | 8;
  readonly pipelines: Map<string, GPUComputePipeline>;
  readonly layouts: Map<string, { bind: GPUBindGroupLayout; pipe: GPUPipelineLayout }>;
  /** Set when the device is lost; every later call throws it. */
  lost: string | undefined;
  /** Rejecters of reads waiting on `mapAsync`, failed at once if the device is lost. */
  readonly waiters: Set<(e: Error) => void>;
  /** First uncaptured WebGPU error, thrown (once) by the next call. */
  error: string | undefined;
  // Command recording.
  encoder: GPUCommandEncoder | undefined;
  pass: GPUComputePassEncoder | undefined;
  pending: number;
  readonly pendingParams: GPUBuffer[];
  flushScheduled: boolean;
  /** The index-error flag (`INDEX_ERROR_WORDS` u32s), made by the first kernel that binds it. */
  indexErrors: GPUBuffer | undefined;
  /** Set while `record` captures commands instead of encoding them (see record.ts). */
  recorder?: Recorder;
}

/** What `dispatch` and `commandEncoder` hand to a recording instead of encoding (record.ts). */
export interface Recorder {
  /** One dispatch: its bindings except the uniform (binding 0), which the recording builds. */
  dispatch(
    pipe: GPUComputePipeline,
    layout: GPUBindGroupLayout,
    entries: readonly GPUBindGroupEntry[],
    params: Uint32Array,
    groups: readonly [number, number, number],
  ): void;
  /** Stands in for the command encoder (clearBuffer, copyBufferToBuffer). */
  readonly encoder: GPUCommandEncoder;
}

let mapCount = 0;

/**
 * How many `mapAsync` calls (GPU→CPU readbacks) all WebGPU backends have made so far. Only an
 * explicit read (`t.data()`, `t.item()` …) reads back; kernels never do.
 *
 * @example
 * ```ts
 * const before = readbackCount();
 * await t.data();
 * readbackCount() - before; // 1
 * ```
 */
export function readbackCount(): number {
  return mapCount;
}

/** Dispatches recorded into one command buffer before it is submitted. */
const MAX_PENDING = 64;

/**
 * Make the context for a device (see {@link Ctx}).
 *
 * @example
 * ```ts
 * const ctx = makeCtx(device, "webgpu:my gpu", true);
 * ```
 */
export function makeCtx(
  device: GPUDevice,
  name: string,
  f16: boolean,
  maxGroups?: number,
  matmulBlock: 4 | 8 = 4,
): Ctx {
  const limits = device.limits;
  const ctx: Ctx = {
    device,
    pool: bufferPool(device, Math.min(512 * 2 ** 20, limits.maxBufferSize)),
    f16,
    maxGroups: Math.max(
      1,
      Math.min(maxGroups ?? Infinity, limits.maxComputeWorkgroupsPerDimension),
    ),
    maxBinding: Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize),
    name,
    matmulBlock,
    pipelines: new Map(),
    layouts: new Map(),
    lost: undefined,
    waiters: new Set(),
    error: undefined,
    encoder: undefined,
    pass: undefined,
    pending: 0,
    pendingParams: [],
    flushScheduled: false,
    indexErrors: undefined,
  };
  device.lost.then((info) => {
    ctx.lost = `the WebGPU device ${name} was lost (${info.reason ?? "unknown"}: ` +
      `${info.message || "no message"}); its tensors are gone. Create a new device with ` +
      "await webgpu() and move data again, or use the cpu backend";
    for (const reject of ctx.waiters) reject(new Error(ctx.lost));
    ctx.waiters.clear();
  });
  device.addEventListener("uncapturederror", (ev) => {
    const e = (ev as GPUUncapturedErrorEvent).error;
    const oom = typeof GPUOutOfMemoryError === "function" && e instanceof GPUOutOfMemoryError;
    ctx.error ??= oom
      ? `${name} ran out of GPU memory (${e.message}); free tensors sooner (tidy, dispose) ` +
        "or use smaller batches (reported on the next nbit call)"
      : `a WebGPU command on ${name} failed: ${e.message} (reported on the next nbit call; ` +
        "this is a bug in nbit, please report it)";
  });
  return ctx;
}

/**
 * Throw if the device was lost or an earlier command failed. Call at the start of each kernel.
 *
 * @example
 * ```ts
 * checkAlive(ctx); // throws if the device was lost
 * ```
 */
export function checkAlive(ctx: Ctx): void {
  if (ctx.lost !== undefined) throw new Error(ctx.lost);
  if (ctx.error !== undefined) {
    const msg = ctx.error;
    ctx.error = undefined;
    throw new Error(msg);
  }
}

/** u32 words of a kernel's uniform block (whole vec4s, at least one). */
function paramWords(k: { params: number }): number {
  return Math.max(4, Math.ceil(k.params / 4) * 4);
}

/**
 * The bind group layout of a kernel: one per (inputs, uniform size), with the uniform's
 * `minBindingSize` set. (Sharing one layout between pipelines with different uniform sizes
 * trips wgpu's late binding-size check inside a compute pass.)
 */
function layoutFor(ctx: Ctx, k: Kernel) {
  const words = paramWords(k);
  const outs = k.outputs ?? 1;
  const key = `${k.inputs}:${words}${k.errors ? ":E" : ""}${outs === 1 ? "" : `:o${outs}`}`;
  let l = ctx.layouts.get(key);
  if (!l) {
    const entries: GPUBindGroupLayoutEntry[] = [
      { binding: 0, visibility: 4, buffer: { type: "uniform", minBindingSize: words * 4 } },
    ];
    for (let i = 1; i <= k.inputs; i++) {
      entries.push({ binding: i, visibility: 4, buffer: { type: "read-only-storage" } });
    }
    for (let j = 1; j <= outs; j++) {
      entries.push({ binding: k.inputs + j, visibility: 4, buffer: { type: "storage" } });
    }
    if (k.errors) {
      entries.push({ binding: k.inputs + outs + 1, visibility: 4, buffer: { type: "storage" } });
    }
    const bind = ctx.device.createBindGroupLayout({ entries });
    l = { bind, pipe: ctx.device.createPipelineLayout({ bindGroupLayouts: [bind] }) };
    ctx.layouts.set(key, l);
  }
  return l;
}

/**
 * WGSL declarations of a kernel's bindings and the `p(i)` parameter accessor. Inputs are
 * `array<u32>` unless `types` says otherwise (e.g. `f16` with shader-f16).
 *
 * @example
 * ```ts
 * bindings({ inputs: 1, params: 3 }); // P, I0 and O declarations
 * ```
 */
export function bindings(
  k: { inputs: number; params: number; types?: readonly string[]; errors?: boolean },
): string {
  const lines = [
    `@group(0) @binding(0) var<uniform> P: array<vec4<u32>, ${
      Math.max(1, Math.ceil(k.params / 4))
    }>;`,
  ];
  for (let i = 1; i <= k.inputs; i++) {
    const ty = k.types?.[i - 1] ?? "u32";
    lines.push(`@group(0) @binding(${i}) var<storage, read> I${i - 1}: array<${ty}>;`);
  }
  lines.push(`@group(0) @binding(${k.inputs + 1}) var<storage, read_write> O: array<u32>;`);
  lines.push("fn p(i: u32) -> u32 { return P[i >> 2u][i & 3u]; }");
  if (k.errors) lines.push(indexErrorWgsl(k.inputs + 2));
  return lines.join("\n");
}

function pipeline(ctx: Ctx, k: Kernel): GPUComputePipeline {
  let p = ctx.pipelines.get(k.key);
  if (!p) {
    const code = k.code();
    const module = ctx.device.createShaderModule({ code, label: k.key });
    p = ctx.device.createComputePipeline({
      label: k.key,
      layout: layoutFor(ctx, k).pipe,
      compute: { module, entryPoint: "main" },
    });
    ctx.pipelines.set(k.key, p);
  }
  return p;
}

/**
 * Workgroup counts `[x, y]` covering `groups` workgroups within the per-dimension limit.
 *
 * @example
 * ```ts
 * grid(ctx, 100000); // [50000, 2] with a 65535 limit
 * ```
 */
export function grid(ctx: Ctx, groups: number): [number, number] {
  if (groups <= ctx.maxGroups) return [Math.max(groups, 1), 1];
  const y = Math.ceil(groups / ctx.maxGroups);
  if (y > ctx.maxGroups) {
    throw new Error(`webgpu: ${groups} workgroups exceed this device's dispatch limit`);
  }
  return [Math.ceil(groups / y), y];
}

function scheduleFlush(ctx: Ctx): void {
  if (ctx.flushScheduled) return;
  ctx.flushScheduled = true;
  queueMicrotask(() => flush(ctx));
}

function computePass(ctx: Ctx): GPUComputePassEncoder {
  if (!ctx.pass) {
    ctx.encoder ??= ctx.device.createCommandEncoder();
    ctx.pass = ctx.encoder.beginComputePass();
  }
  return ctx.pass;
}

/**
 * The open command encoder, outside any compute pass (for copies and clears).
 *
 * @example
 * ```ts
 * commandEncoder(ctx).clearBuffer(buf);
 * ```
 */
export function commandEncoder(ctx: Ctx): GPUCommandEncoder {
  if (ctx.recorder) return ctx.recorder.encoder;
  if (ctx.pass) {
    ctx.pass.end();
    ctx.pass = undefined;
  }
  ctx.encoder ??= ctx.device.createCommandEncoder();
  ctx.pending++;
  scheduleFlush(ctx);
  return ctx.encoder;
}

/**
 * Submit everything recorded so far (never waits for the GPU).
 *
 * @example
 * ```ts
 * flush(ctx); // submits, does not wait
 * ```
 */
export function flush(ctx: Ctx): void {
  ctx.flushScheduled = false;
  if (ctx.lost !== undefined) {
    ctx.encoder = undefined;
    ctx.pass = undefined;
    ctx.pending = 0;
    ctx.pendingParams.length = 0;
    return;
  }
  if (ctx.pass) {
    ctx.pass.end();
    ctx.pass = undefined;
  }
  if (ctx.encoder) {
    ctx.device.queue.submit([ctx.encoder.finish()]);
    ctx.encoder = undefined;
  }
  ctx.pending = 0;
  for (const b of ctx.pendingParams.splice(0)) ctx.pool.release(b);
  ctx.pool.drain();
}

/**
 * Record one dispatch of `k` over `groups` workgroups (`number`: laid out 2-D as needed, so
 * kernels index with `g.x + g.y * nw.x * WG`), or an explicit `[x, y, z]` grid.
 *
 * @example
 * ```ts
 * dispatch(ctx, kernel, [input], out, [n], Math.ceil(n / 256));
 * ```
 */
export function dispatch(
  ctx: Ctx,
  k: Kernel,
  inputs: readonly GPUBuffer[],
  out: GPUBuffer | readonly GPUBuffer[],
  params: ArrayLike<number>,
  groups: number | readonly [number, number, number],
): void {
  const pipe = pipeline(ctx, k);
  const words = paramWords(k);
  const data = new Uint32Array(words);
  for (let i = 0; i < params.length; i++) data[i] = params[i];
  const outs: readonly GPUBuffer[] = Array.isArray(out) ? out : [out as GPUBuffer];
  const entries: GPUBindGroupEntry[] = [];
  inputs.forEach((b, i) => entries.push({ binding: i + 1, resource: { buffer: b } }));
  outs.forEach((b, j) => entries.push({ binding: inputs.length + 1 + j, resource: { buffer: b } }));
  if (k.errors) {
    entries.push({
      binding: inputs.length + outs.length + 1,
      resource: { buffer: indexErrorBuffer(ctx) },
    });
  }
  const xyz: readonly [number, number, number] = typeof groups === "number"
    ? [...grid(ctx, groups), 1]
    : groups;
  if (ctx.recorder) {
    ctx.recorder.dispatch(pipe, layoutFor(ctx, k).bind, entries, data, xyz);
    return;
  }
  const ub = ctx.pool.acquire("uniform", words * 4);
  ctx.device.queue.writeBuffer(ub, 0, data);
  ctx.pendingParams.push(ub);
  entries.unshift({ binding: 0, resource: { buffer: ub, size: words * 4 } });
  const bind = ctx.device.createBindGroup({
    layout: layoutFor(ctx, k).bind,
    entries,
  });
  const pass = computePass(ctx);
  pass.setPipeline(pipe);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(xyz[0], xyz[1], xyz[2]);
  ctx.pending++;
  if (ctx.pending >= MAX_PENDING) flush(ctx);
  else scheduleFlush(ctx);
}

/**
 * A new storage buffer for `bytes` bytes (from the pool), checking the binding limit.
 *
 * @example
 * ```ts
 * const buf = allocate(ctx, 1024);
 * ```
 */
export function allocate(ctx: Ctx, bytes: number): GPUBuffer {
  if (bytes > ctx.maxBinding) {
    throw new Error(
      `webgpu: a buffer of ${bytes} bytes exceeds ${ctx.name}'s largest storage binding ` +
        `(${ctx.maxBinding} bytes); split the tensor or use the cpu backend`,
    );
  }
  return ctx.pool.acquire("storage", bytes);
}

/**
 * Copy host bytes into a buffer (padded to 4 bytes), after submitting recorded work.
 *
 * @example
 * ```ts
 * writeBytes(ctx, buf, new Uint8Array([1, 2, 3])); // padded to 4 bytes
 * ```
 */
export function writeBytes(ctx: Ctx, dst: GPUBuffer, bytes: Uint8Array): void {
  flush(ctx);
  const n = bytes.byteLength;
  const padded = n % 4 === 0 ? bytes : new Uint8Array(n + 4 - (n % 4));
  if (padded !== bytes) padded.set(bytes);
  if (padded.byteLength > 0) {
    ctx.device.queue.writeBuffer(
      dst,
      0,
      padded.buffer as ArrayBuffer,
      padded.byteOffset,
      padded.byteLength,
    );
  }
}

/**
 * Read the first `bytes` bytes of `src` back to the host: the only readback (one mapAsync).
 *
 * @example
 * ```ts
 * const bytes = await readBuffer(ctx, buf, 12);
 * ```
 */
export async function readBuffer(ctx: Ctx, src: GPUBuffer, bytes: number): Promise<Uint8Array> {
  checkAlive(ctx);
  const size = Math.max(4, Math.ceil(bytes / 4) * 4);
  const flag = ctx.indexErrors;
  const at = Math.ceil(size / 8) * 8; // mapped ranges start at multiples of 8
  const total = flag ? at + INDEX_ERROR_BYTES : size;
  const staging = ctx.pool.acquire("staging", total);
  const enc = commandEncoder(ctx);
  enc.copyBufferToBuffer(src, 0, staging, 0, size);
  // The index-error flag rides along in the same submit and map: no extra readback.
  if (flag) enc.copyBufferToBuffer(flag, 0, staging, at, INDEX_ERROR_BYTES);
  flush(ctx);
  mapCount++;
  let reject: (e: Error) => void = () => {};
  const lost = new Promise<never>((_, rej) => (reject = rej));
  ctx.waiters.add(reject);
  try {
    await Promise.race([staging.mapAsync(1, 0, total), lost]);
  } finally {
    ctx.waiters.delete(reject);
  }
  const out = new Uint8Array(bytes);
  const mapped = staging.getMappedRange(0, total);
  out.set(new Uint8Array(mapped, 0, bytes));
  const err = flag
    ? Array.from(new Uint32Array(mapped.slice(at, at + INDEX_ERROR_BYTES)))
    : undefined;
  staging.unmap();
  ctx.pool.release(staging);
  checkAlive(ctx);
  if (err && err[0] !== 0) {
    ctx.device.queue.writeBuffer(flag!, 0, new Uint32Array(INDEX_ERROR_BYTES / 4));
    throw new Error(indexErrorMessage(ctx, err));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The index-error flag: a device-side record of the first out-of-range index

/** The ops that report out-of-range indices through the flag, by code (0 = no error). */
export const INDEX_ERROR_OPS = ["", "take", "scatterAdd", "oneHot"] as const;

/** Bytes of the flag: op code, offending index (i32 bits), axis size, spare. */
const INDEX_ERROR_BYTES = 16;

/**
 * WGSL of the flag binding `E` and `indexError(op, index, size)`, which records the first
 * error only (a later kernel, or another invocation, leaves it as it is).
 */
function indexErrorWgsl(binding: number): string {
  return `@group(0) @binding(${binding}) var<storage, read_write> E: array<atomic<u32>, 4>;
fn indexError(op: u32, index: i32, size: u32) {
  loop {
    if (atomicLoad(&E[0]) != 0u) { return; }
    let r = atomicCompareExchangeWeak(&E[0], 0u, op);
    if (r.exchanged) {
      atomicStore(&E[1], bitcast<u32>(index));
      atomicStore(&E[2], size);
      return;
    }
  }
}`;
}

/** The flag buffer (zeroed at creation), made on first use. */
function indexErrorBuffer(ctx: Ctx): GPUBuffer {
  ctx.indexErrors ??= ctx.device.createBuffer({
    label: "nbit index errors",
    size: INDEX_ERROR_BYTES,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
  return ctx.indexErrors;
}

function indexErrorMessage(ctx: Ctx, [code, bits, size]: number[]): string {
  const op = INDEX_ERROR_OPS[code] ?? `op #${code}`;
  const index = bits | 0;
  const what = op === "oneHot"
    ? `label ${index} is out of range for depth ${size}; labels must be in [0, ${size}) ` +
      "(for masked rows pass crossEntropy's ignoreIndex)"
    : `index ${index} is out of range for an axis of size ${size}`;
  return `${op}: ${what}. Found on ${ctx.name} by a kernel enqueued before this read (GPU ` +
    "kernels cannot throw, so the error is reported with the next readback); results " +
    "computed from it are invalid";
}
