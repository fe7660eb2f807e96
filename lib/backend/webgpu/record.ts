/**
 * Record and replay (the WebGPU side of `Backend.record`, used by `jit`): while `body` runs,
 * every dispatch, clear and copy is captured instead of encoded, on buffers the recording owns.
 * A buffer `body` frees goes back to the recording's own free list and is handed to a later
 * allocation of the same recording (the memory plan), so the kernels of a step share a fixed
 * set of buffers. When `body` returns, the recording writes the uniforms of all its dispatches
 * into one buffer (filled at creation: no `writeBuffer`) and builds every bind group once.
 *
 * Random keys are data: `body` gets one stand-in key per key of the call, and the random
 * kernel, seeing a stand-in, reads its key from the recording's small key buffer (see
 * {@linkcode recordedKey}); a replay writes the new keys there with one `writeBuffer` (none
 * when they did not change).
 *
 * A replay copies the new inputs into the owned input buffers, encodes all recorded work into
 * the backend's command encoder (one compute pass, split only around recorded clears and
 * copies), copies the outputs into fresh pool buffers (the caller's) and submits once. A
 * donated input (see `ReplayOptions.donated`) is not copied: the replay binds it in place of
 * the owned input buffer, writes an output of the same size into the recording's buffer for
 * that output, hands that buffer over as the output (no copy) and keeps the donated buffer as
 * that output's buffer for the next replay. The buffers so trade places call after call, so a
 * donated train state alternates between two buffer sets; the bind groups of each set are
 * built the first time it is seen and cached. Work enqueued before a replay runs before it,
 * work after it runs after it, and reads see its results, since everything goes through the
 * same encoder and queue.
 *
 * @example
 * ```ts
 * const { outputs, recording } = record(ctx, [x], ([h]) => [unary(ctx, "exp", { h, dtype: "f32", size: 4 }, "f32")]);
 * const again = recording.replay([x2]); // same kernels, new input, fresh output buffers
 * ```
 *
 * @module
 */
import type { Arg, Handle, Recording, ReplayOptions } from "../backend.ts";
import type { Key } from "../../prng.ts";
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
  /** Random keys read from the key buffer. */
  readonly keys: number;
}

/** A {@linkcode Recording} with its counts. */
export interface GPURecording extends Recording {
  /** What was recorded. */
  readonly info: RecordingInfo;
  /** Sets of bind groups built so far (one per arrangement of donated buffers seen). */
  readonly bindGroupSets: number;
}

function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/** The key buffer of a recording in progress and the slot of each stand-in key. */
interface KeyInputs {
  readonly buffer: GPUBuffer;
  readonly slots: Map<Key, number>;
}

const keyInputs = new WeakMap<Recorder, KeyInputs>();

/**
 * While `ctx` records: the key buffer and slot of `key` when it is one of the recording's
 * stand-in keys (the random kernel then reads words `2·slot` and `2·slot + 1` of the buffer
 * instead of taking the key as a uniform), else `undefined`.
 *
 * @example
 * ```ts
 * const k = recordedKey(ctx, key); // { buffer, slot } inside record(), else undefined
 * ```
 */
export function recordedKey(ctx: Ctx, key: Key): { buffer: GPUBuffer; slot: number } | undefined {
  const k = ctx.recorder && keyInputs.get(ctx.recorder);
  const slot = k?.slots.get(key);
  return slot === undefined ? undefined : { buffer: k!.buffer, slot };
}

/** A small id per GPUBuffer, for the keys of the bind group cache. */
const ids = new WeakMap<GPUBuffer, number>();
let nextId = 0;
function idOf(b: GPUBuffer): number {
  let id = ids.get(b);
  if (id === undefined) ids.set(b, id = nextId++);
  return id;
}

/** Bind group sets kept per recording (one per arrangement of donated buffers). */
const MAX_SETS = 8;

/**
 * Record `body` on `ctx` (see the module doc); returns the first run's outputs (buffers the
 * caller owns) and the recording.
 *
 * @example
 * ```ts
 * const { outputs, recording } = record(ctx, inputs, (owned, keys) => runProgram(owned, keys));
 * ```
 */
export function record(
  ctx: Ctx,
  inputs: readonly Arg[],
  body: (inputs: readonly Handle[], keys: readonly Key[]) => readonly Handle[],
  opts: ReplayOptions = {},
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
  // One stand-in per key; kernels that draw from one read the key buffer (written per replay).
  const keyCount = opts.keys?.length ?? 0;
  const standIns = (opts.keys ?? []).map((k) =>
    Object.freeze({ kind: "nbit.key", k0: k.k0, k1: k.k1 }) as Key
  );
  const keyBuf = keyCount > 0 ? base.acquire("storage", 8 * keyCount) : undefined;
  if (keyBuf) {
    keyInputs.set(recorder, { buffer: keyBuf, slots: new Map(standIns.map((k, i) => [k, i])) });
  }
  let outs: GPUBuffer[];
  ctx.recorder = recorder;
  ctx.pool = recPool;
  try {
    outs = body(ins, standIns) as GPUBuffer[];
  } catch (e) {
    for (const b of owned) base.release(b);
    if (keyBuf) base.release(keyBuf);
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
  /** Bind groups of the dispatches with the buffers of `sub` in place of the recorded ones. */
  const buildBinds = (
    sub: Map<GPUBuffer, GPUBuffer>,
    reuse?: readonly (GPUBindGroup | undefined)[],
  ) =>
    cmds.map((c, i) => {
      if (c.kind !== "dispatch") return undefined;
      if (reuse && !c.entries.some((e) => sub.has((e.resource as GPUBufferBinding).buffer))) {
        return reuse[i];
      }
      return ctx.device.createBindGroup({
        layout: c.layout,
        entries: [
          {
            binding: 0,
            resource: { buffer: uniforms!, offset: offsets[i], size: c.params.byteLength },
          },
          ...c.entries.map((e) => {
            const r = e.resource as GPUBufferBinding;
            const to = sub.get(r.buffer);
            return to ? { ...e, resource: { ...r, buffer: to } } : e;
          }),
        ],
      });
    });
  const baseBinds = buildBinds(new Map());
  const sets = new Map<string, readonly (GPUBindGroup | undefined)[]>([["", baseBinds]]);
  let setsBuilt = 1;
  const inBytes = inputs.map((a) => storageBytes(a.dtype, a.size));
  // The buffer each output is written to now (donation rotates them; all owned).
  const current = outs.slice();
  // Outputs that may trade buffers with a donated input: written once, not an input buffer.
  const tradable = outs.map((b, j) =>
    !pinned.has(b) && owned.has(b) && outs.indexOf(b) === j && outs.lastIndexOf(b) === j
  );
  const lastKeys = new Uint32Array(2 * keyCount);
  let keysWritten = false;
  let disposed = false;
  let passes = 0;
  for (let i = 0; i < cmds.length; i++) {
    if (cmds[i].kind === "dispatch" && (i === 0 || cmds[i - 1].kind !== "dispatch")) passes++;
  }
  const writeKeys = (keys: readonly Key[] | undefined) => {
    if (!keyBuf) return;
    if (keys?.length !== keyCount) {
      throw new Error(
        `webgpu: replay takes ${keyCount} random keys (as recorded), got ${keys?.length ?? 0}`,
      );
    }
    const words = new Uint32Array(2 * keyCount);
    keys.forEach((k, i) => {
      words[2 * i] = k.k0;
      words[2 * i + 1] = k.k1;
    });
    if (keysWritten && words.every((w, i) => w === lastKeys[i])) return;
    // Queue order: this write lands after the previous replay's submit and before this one's.
    ctx.device.queue.writeBuffer(keyBuf, 0, words);
    lastKeys.set(words);
    keysWritten = true;
  };
  const replay = (args: readonly Arg[], call: ReplayOptions = {}): Handle[] => {
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
    writeKeys(call.keys);
    // Pair each donated input with an output of the same buffer size: the output is handed
    // over in its current buffer, and the donated buffer becomes that output's buffer.
    const pairedOut = new Map<number, number>(); // input → output
    const taken = new Set<number>();
    call.donated?.forEach((d, i) => {
      if (!d) return;
      const h = args[i].h as GPUBuffer;
      if (h.size < ins[i].size || owned.has(h)) return;
      const j = outs.findIndex((_, j) =>
        tradable[j] && !taken.has(j) && current[j].size === h.size
      );
      if (j < 0) return;
      taken.add(j);
      pairedOut.set(i, j);
    });
    const sub = new Map<GPUBuffer, GPUBuffer>();
    outs.forEach((b, j) => {
      if (current[j] !== b) sub.set(b, current[j]);
    });
    for (const [i] of pairedOut) sub.set(ins[i], args[i].h as GPUBuffer);
    let binds: readonly (GPUBindGroup | undefined)[] = baseBinds;
    if (sub.size > 0) {
      const key = [...sub].map(([a, b]) => `${idOf(a)}:${idOf(b)}`).join(",");
      let set = sets.get(key);
      if (!set) {
        set = buildBinds(sub, baseBinds);
        setsBuilt++;
        if (sets.size >= MAX_SETS) sets.delete([...sets.keys()].find((k) => k !== "")!);
      }
      sets.delete(key);
      sets.set(key, set); // most recent last
      binds = set;
    }
    const at = (b: GPUBuffer) => sub.get(b) ?? b;
    const enc = commandEncoder(ctx);
    args.forEach((a, i) => {
      if (!pairedOut.has(i) && inBytes[i] > 0) {
        enc.copyBufferToBuffer(a.h as GPUBuffer, 0, ins[i], 0, inBytes[i]);
      }
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
      if (c.kind === "clear") enc.clearBuffer(at(c.buf), c.offset, c.size);
      else enc.copyBufferToBuffer(at(c.src), c.srcOffset, at(c.dst), c.dstOffset, c.size);
    });
    (pass as GPUComputePassEncoder | undefined)?.end();
    const res = outs.map((_, j) => {
      const b = current[j];
      if (taken.has(j)) return b;
      const o = base.acquire("storage", b.size);
      enc.copyBufferToBuffer(b, 0, o, 0, b.size);
      return o;
    });
    // Trade places: handed-over buffers leave the recording, donated ones join it.
    for (const [i, j] of pairedOut) {
      const d = args[i].h as GPUBuffer;
      owned.delete(current[j]);
      owned.add(d);
      current[j] = d;
    }
    flush(ctx);
    // Donated inputs that were only copied: free (after the submit that reads them).
    call.donated?.forEach((d, i) => {
      if (d && !pairedOut.has(i)) base.release(args[i].h as GPUBuffer);
    });
    return res;
  };
  let bytes = 0;
  for (const b of owned) bytes += b.size;
  const info: RecordingInfo = {
    dispatches: cmds.filter((c) => c.kind === "dispatch").length,
    passes,
    buffers: owned.size,
    bytes,
    keys: keyCount,
  };
  const recording: GPURecording = {
    info,
    get bindGroupSets() {
      return setsBuilt;
    },
    replay,
    dispose() {
      if (disposed) return;
      disposed = true;
      flush(ctx);
      uniforms?.destroy();
      for (const b of owned) base.release(b);
      owned.clear();
      if (keyBuf) base.release(keyBuf);
    },
  };
  return { outputs: replay(inputs, opts), recording };
}
