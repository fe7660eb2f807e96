/**
 * Record and replay (the WebGPU side of `Backend.record`, used by `jit`): while `body` runs,
 * every dispatch, clear and copy is captured instead of encoded, on buffers the recording owns.
 * A buffer `body` frees goes back to the recording's own free list and is handed to a later
 * allocation of the same recording (the memory plan), so the kernels of a step share a fixed
 * set of buffers. When `body` returns, the recording writes the uniforms of all its dispatches
 * into one buffer (filled at creation: no `writeBuffer`) and builds every bind group once.
 *
 * A replay copies the new inputs into the owned input buffers, encodes all recorded work into
 * the backend's command encoder (one compute pass, split only around recorded clears and
 * copies), copies the outputs into fresh pool buffers (the caller's) and submits once. Work
 * enqueued before a replay runs before it, work after it runs after it, and reads see its
 * results, since everything goes through the same encoder and queue.
 *
 * @example
 * ```ts
 * const { outputs, recording } = record(ctx, [x], ([h]) => [unary(ctx, "exp", { h, dtype: "f32", size: 4 }, "f32")]);
 * const again = recording.replay([x2]); // same kernels, new input, fresh output buffers
 * ```
 *
 * @module
 */
import type { Arg, Handle, Recording } from "../backend.ts";
import { storageBytes } from "./elementwise.ts";
import type { BufferPool } from "./pool.ts";
import { sizeClass } from "./pool.ts";
import { checkAlive, commandEncoder, type Ctx, flush, type Recorder } from "./runtime.ts";

type Cmd =
  | {
    readonly kind: "dispatch";
    readonly pipe: GPUComputePipeline;
    readonly layout: GPUBindGroupLayout;
    readonly entries: readonly GPUBindGroupEntry[];
    readonly params: Uint32Array;
    readonly groups: readonly [number, number, number];
  }
  | {
    readonly kind: "clear";
    readonly buf: GPUBuffer;
    readonly offset: number;
    readonly size?: number;
  }
  | {
    readonly kind: "copy";
    readonly src: GPUBuffer;
    readonly srcOffset: number;
    readonly dst: GPUBuffer;
    readonly dstOffset: number;
    readonly size: number;
  };

/** What a recording holds (exposed for tests and diagnostics). */
export interface RecordingInfo {
  /** Dispatches per replay. */
  readonly dispatches: number;
  /** Compute passes per replay (recorded clears and copies split the pass). */
  readonly passes: number;
  /** GPUBuffers the recording owns (inputs, intermediates, outputs). */
  readonly buffers: number;
  /** Bytes of those buffers. */
  readonly bytes: number;
}

/** A {@linkcode Recording} with its counts. */
export interface GPURecording extends Recording {
  /** What was recorded. */
  readonly info: RecordingInfo;
}

function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/**
 * Record `body` on `ctx` (see the module doc); returns the first run's outputs (fresh buffers
 * the caller owns) and the recording.
 *
 * @example
 * ```ts
 * const { outputs, recording } = record(ctx, inputs, (owned) => runProgram(owned));
 * ```
 */
export function record(
  ctx: Ctx,
  inputs: readonly Arg[],
  body: (inputs: readonly Handle[]) => readonly Handle[],
): { outputs: Handle[]; recording: GPURecording } {
  checkAlive(ctx);
  if (ctx.recorder) {
    throw new Error("webgpu: record() was called inside a recording; recordings do not nest");
  }
  const base = ctx.pool;
  const owned = new Set<GPUBuffer>();
  const pinned = new Set<GPUBuffer>();
  const free = new Map<number, GPUBuffer[]>();
  const deferred: GPUBuffer[] = [];
  const cmds: Cmd[] = [];
  const recPool: BufferPool = {
    stats: base.stats,
    acquire(kind, bytes) {
      if (kind !== "storage") return base.acquire(kind, bytes);
      const reused = free.get(sizeClass(Math.max(4, bytes)))?.pop();
      if (reused) return reused;
      const b = base.acquire("storage", bytes);
      owned.add(b);
      return b;
    },
    release(b) {
      if (!owned.has(b)) deferred.push(b);
      else if (!pinned.has(b)) {
        let list = free.get(b.size);
        if (!list) free.set(b.size, list = []);
        list.push(b);
      }
    },
    drain() {},
  };
  const encoder = {
    clearBuffer(buf: GPUBuffer, offset = 0, size?: number) {
      cmds.push({ kind: "clear", buf, offset, size });
    },
    copyBufferToBuffer(
      src: GPUBuffer,
      srcOffset: number,
      dst: GPUBuffer,
      dstOffset: number,
      size: number,
    ) {
      cmds.push({ kind: "copy", src, srcOffset, dst, dstOffset, size });
    },
  } as unknown as GPUCommandEncoder;
  const recorder: Recorder = {
    encoder,
    dispatch(pipe, layout, entries, params, groups) {
      cmds.push({ kind: "dispatch", pipe, layout, entries, params, groups });
    },
  };
  const ins = inputs.map((a) => {
    const b = recPool.acquire("storage", storageBytes(a.dtype, a.size));
    pinned.add(b);
    return b;
  });
  let outs: GPUBuffer[];
  ctx.recorder = recorder;
  ctx.pool = recPool;
  try {
    outs = body(ins) as GPUBuffer[];
  } catch (e) {
    for (const b of owned) base.release(b);
    throw e;
  } finally {
    ctx.recorder = undefined;
    ctx.pool = base;
    for (const b of deferred) base.release(b);
  }
  // One uniform buffer for every dispatch, filled at creation; bind groups built once.
  const align = Math.max(16, ctx.device.limits.minUniformBufferOffsetAlignment);
  let total = 0;
  const offsets = cmds.map((c) => {
    if (c.kind !== "dispatch") return 0;
    const at = total;
    total = alignUp(total + c.params.byteLength, align);
    return at;
  });
  let uniforms: GPUBuffer | undefined;
  if (total > 0) {
    uniforms = ctx.device.createBuffer({
      label: "nbit recording uniforms",
      size: total,
      usage: GPUBufferUsage.UNIFORM,
      mappedAtCreation: true,
    });
    const words = new Uint32Array(uniforms.getMappedRange());
    cmds.forEach((c, i) => {
      if (c.kind === "dispatch") words.set(c.params, offsets[i] / 4);
    });
    uniforms.unmap();
  }
  const binds = cmds.map((c, i) =>
    c.kind !== "dispatch" ? undefined : ctx.device.createBindGroup({
      layout: c.layout,
      entries: [
        {
          binding: 0,
          resource: { buffer: uniforms!, offset: offsets[i], size: c.params.byteLength },
        },
        ...c.entries,
      ],
    })
  );
  const inBytes = inputs.map((a) => storageBytes(a.dtype, a.size));
  let disposed = false;
  let passes = 0;
  for (let i = 0; i < cmds.length; i++) {
    if (cmds[i].kind === "dispatch" && (i === 0 || cmds[i - 1].kind !== "dispatch")) passes++;
  }
  const replay = (args: readonly Arg[]): Handle[] => {
    checkAlive(ctx);
    if (disposed) throw new Error("webgpu: replay of a disposed recording");
    if (args.length !== inputs.length) {
      throw new Error(
        `webgpu: replay takes ${inputs.length} inputs (as recorded), got ${args.length}`,
      );
    }
    args.forEach((a, i) => {
      if (a.dtype !== inputs[i].dtype || a.size !== inputs[i].size) {
        throw new Error(
          `webgpu: replay input ${i} is ${a.dtype}[${a.size}], recorded as ` +
            `${inputs[i].dtype}[${inputs[i].size}]; record again for new dtypes or sizes`,
        );
      }
    });
    const enc = commandEncoder(ctx);
    args.forEach((a, i) => {
      if (inBytes[i] > 0) enc.copyBufferToBuffer(a.h as GPUBuffer, 0, ins[i], 0, inBytes[i]);
    });
    let pass: GPUComputePassEncoder | undefined;
    cmds.forEach((c, i) => {
      if (c.kind === "dispatch") {
        pass ??= enc.beginComputePass();
        pass.setPipeline(c.pipe);
        pass.setBindGroup(0, binds[i]!);
        pass.dispatchWorkgroups(c.groups[0], c.groups[1], c.groups[2]);
        return;
      }
      pass?.end();
      pass = undefined;
      if (c.kind === "clear") enc.clearBuffer(c.buf, c.offset, c.size);
      else enc.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.size);
    });
    (pass as GPUComputePassEncoder | undefined)?.end();
    const res = outs.map((b) => {
      const o = base.acquire("storage", b.size);
      enc.copyBufferToBuffer(b, 0, o, 0, b.size);
      return o;
    });
    flush(ctx);
    return res;
  };
  let bytes = 0;
  for (const b of owned) bytes += b.size;
  const info: RecordingInfo = {
    dispatches: cmds.filter((c) => c.kind === "dispatch").length,
    passes,
    buffers: owned.size,
    bytes,
  };
  const recording: GPURecording = {
    info,
    replay,
    dispose() {
      if (disposed) return;
      disposed = true;
      flush(ctx);
      uniforms?.destroy();
      for (const b of owned) base.release(b);
      owned.clear();
    },
  };
  return { outputs: replay(inputs), recording };
}
