/**
 * The CPU backend: the reference implementation of every kernel, and the only home of f64.
 *
 * Every buffer is a block of the CPU heap (`heap.ts`, one `WebAssembly.Memory`) in its dtype's
 * storage layout (f16/bf16 as raw u16 bits, f8 as raw u8 bits). A handle is a small record
 * ({@linkcode CpuBuffer}: pointer and byte length); typed-array views over the heap are derived
 * per kernel call, after the call's output is allocated (growing a non-shared memory detaches
 * every older view), and never given to callers: `read` returns a copy. `free` returns the
 * block to the allocator. Narrow floats are widened to f32 in reused scratch arrays, computed,
 * and rounded once into the output block; f32, f64, i32, u8 and bool kernels read and write the
 * heap directly. Elementwise kernels (`cast`, `unary`, `binary`, `where`, `copy`, `fused`) run
 * in WebAssembly SIMD over the heap blocks where that path computes them bit for bit
 * (`wasm/fused.ts`; eager ops as one-op fused kernels), else as the TypeScript kernels
 * ({@linkcode reference}). `gather` and `scatterAdd` (i32/u8 indices; f32/bf16/f16 for the
 * scatter) run in WebAssembly too (`wasm/gather.ts`), with the TypeScript kernels' bits and
 * errors. A kernel that throws releases the blocks it allocated.
 *
 * @module
 */
import {
  byteSize,
  type CastOptions,
  type DType,
  encode,
  encodeInto,
  f16BitsToNumber,
  f8e4m3BitsToNumber,
  f8e5m2BitsToNumber,
  isFloating,
  type Storage,
} from "../../dtype.ts";
import type { Arg, Backend, Handle, MatmulGeometry, RandomKind, View } from "../backend.ts";
import { fillBernoulli, fillNormal, fillUniform, type Key } from "../../prng.ts";
import { binaryFn, unaryFn } from "./elementwise.ts";
import { checkCasts, matmulKernel } from "./matmul.ts";
import { wasmMatmul, wasmMatmulApplies } from "./wasm/matmul.ts";
import { reduceKernel } from "./reduce.ts";
import { wasmReduceKernel, wasmReduceOutput } from "./wasm/reduce.ts";
import { dequantizeKernel, quantizeKernel } from "./quantize.ts";
import { blockwise8bitUpdateKernel } from "./optim8.ts";
import { blockwise8bitOutputs, type Blockwise8bitUpdate } from "../optim8.ts";
import {
  updateScratchBytes,
  wasmBlockwise8bitUpdate,
  wasmDequantize,
  wasmQuantize,
} from "./wasm/quantize.ts";
import type { FusedKernel } from "../fused.ts";
import { runFused } from "./fused.ts";
import { wasmFusedKernel } from "./wasm/fused.ts";
import { CONTIGUOUS, type Layout, layoutOf } from "./wasm/layout.ts";
import { f32Bits, runWasmFused, type SimdInput } from "./wasm/fused_run.ts";
import { wasmEnabled } from "./wasm/features.ts";
import { wasmGather, wasmScatterAdd } from "./wasm/gather.ts";
import { binaryKernel, castKernel, unaryKernel, whereKernel } from "./eager_kernels.ts";
import { defaultHeap } from "./heap.ts";

type Num = Float64Array | Float32Array | Int32Array | Uint8Array;
type Ctor<T> = { new (buf: ArrayBufferLike, at: number, n: number): T; new (n: number): T };

/** A CPU buffer handle: a block of the CPU heap. `ptr` is -1 once freed. */
export class CpuBuffer {
  /** Byte offset in the heap's memory (64-aligned); -1 after `free`. */
  ptr: number;
  /** Bytes requested (elements × bytes per element). */
  readonly bytes: number;
  /** @internal Use the backend's kernels; this wraps a block just allocated. */
  constructor(ptr: number, bytes: number) {
    this.ptr = ptr;
    this.bytes = bytes;
  }
}

/** Blocks allocated by the kernel call in progress (released if it throws). */
const pending: CpuBuffer[] = [];
/** Scratch slots handed out in the kernel call in progress. */
let slot = 0;

/** A new heap block for `n` elements of `dtype` (contents undefined). */
function newBuffer(dtype: DType, n: number): CpuBuffer {
  const bytes = byteSize(dtype) * n;
  const h = new CpuBuffer(defaultHeap().alloc(bytes), bytes);
  pending.push(h);
  return h;
}

function storageCtor(d: DType): Ctor<Storage> {
  switch (d) {
    case "f64":
      return Float64Array;
    case "f32":
      return Float32Array;
    case "f16":
    case "bf16":
      return Uint16Array;
    case "i32":
      return Int32Array;
    default:
      return Uint8Array;
  }
}

/** A handle checked to be a live CPU buffer. */
function live(h: unknown): CpuBuffer {
  if (!(h instanceof CpuBuffer)) throw new TypeError(`cpu: ${String(h)} is not a CPU buffer`);
  if (h.ptr < 0) throw new Error("cpu: a buffer was used after it was freed");
  return h;
}

/** A view of `n` elements of a handle's storage. Valid until the next heap allocation. */
function viewOf(h: CpuBuffer, dtype: DType, n: number): Storage {
  return new (storageCtor(dtype))(defaultHeap().buffer, live(h).ptr, n);
}

/** A view of an argument's storage (for kernels that read raw storage, e.g. WebAssembly). */
function storageOf(x: Arg): Storage {
  return viewOf(x.h as CpuBuffer, x.dtype, x.size);
}

/** A new buffer holding a copy of host storage (in `dtype`'s layout). */
function fromStorage(dtype: DType, data: Storage): CpuBuffer {
  const h = newBuffer(dtype, data.length);
  viewOf(h, dtype, data.length).set(data as never);
  return h;
}

const RETAIN = 1 << 22; // elements: larger scratch arrays are not kept between calls
const scratchPool = new Map<Ctor<Num>, Num[]>();

/** A reused array of `n` elements (contents undefined), distinct within one kernel call. */
function scratch<T extends Num>(ctor: Ctor<T>, n: number): T {
  if (n > RETAIN) return new ctor(n);
  let list = scratchPool.get(ctor as Ctor<Num>);
  if (!list) scratchPool.set(ctor as Ctor<Num>, list = []);
  const s = slot++;
  let a = list[s] as T | undefined;
  if (!a || a.length < n) list[s] = a = new ctor(Math.max(n, 2 * (a?.length ?? 0), 256));
  return a.subarray(0, n) as T;
}

let f16Values: Float32Array | undefined;
const f8Values = {
  f8e4m3: Float32Array.from({ length: 256 }, (_, b) => f8e4m3BitsToNumber(b)),
  f8e5m2: Float32Array.from({ length: 256 }, (_, b) => f8e5m2BitsToNumber(b)),
};

/** Widen narrow-float storage `s` into `out` (exact). */
function widenInto(d: DType, s: Storage, out: Float32Array): void {
  const n = out.length;
  if (d === "bf16") {
    const o = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) o[i] = s[i] << 16;
    return;
  }
  const t = d === "f16"
    ? f16Values ??= Float32Array.from({ length: 65536 }, (_, b) => f16BitsToNumber(b))
    : f8Values[d as "f8e4m3" | "f8e5m2"];
  for (let i = 0; i < n; i++) out[i] = t[s[i]];
}

/**
 * Widened values of a buffer: the heap view itself for f32, f64, i32, u8 and bool (read it,
 * never write it), a scratch f32 array for narrow floats.
 */
function values(x: Arg): Num {
  const s = storageOf(x);
  if (!isNarrow(x.dtype)) return s as Num;
  const out = scratch(Float32Array, x.size);
  widenInto(x.dtype, s, out);
  return out;
}

/** The widened value of one element. */
function valueAt(x: Arg, i: number): number {
  const s = storageOf(x);
  if (!isNarrow(x.dtype)) return s[i];
  if (x.dtype === "bf16") return new Float32Array(new Uint32Array([s[i] << 16]).buffer)[0];
  if (x.dtype === "f16") return f16BitsToNumber(s[i]);
  return f8Values[x.dtype as "f8e4m3" | "f8e5m2"][s[i]];
}

function isNarrow(d: DType): boolean {
  return d === "f16" || d === "bf16" || d === "f8e4m3" || d === "f8e5m2";
}

/** Output blocks of compute arrays handed out by `computeArray`, until `store` claims them. */
const outputs = new WeakMap<Num, CpuBuffer>();

/**
 * A compute array for an output of `n` elements of `out`: f64 stays f64, ints stay ints, every
 * float is f32. It is the output block itself when the compute type is the storage type, else a
 * scratch array that `store` rounds into the block. Call it before taking input views.
 */
function computeArray(out: DType, n: number): Num {
  const h = newBuffer(out, n);
  let data: Num;
  switch (out) {
    case "f64":
    case "f32":
    case "i32":
    case "u8":
    case "bool":
      data = viewOf(h, out, n) as Num;
      break;
    default:
      data = scratch(Float32Array, n);
  }
  outputs.set(data, h);
  return data;
}

/**
 * The buffer of a computed output: the block of a `computeArray` array (rounded into it when
 * the array is a scratch), or a new block holding `data` rounded to `out`.
 */
function store(out: DType, data: Num): CpuBuffer {
  let h = outputs.get(data);
  if (h) outputs.delete(data);
  else {
    // `data` may be a heap view: take its place before allocating (which may move the heap).
    const onHeap = data.buffer === defaultHeap().buffer;
    const at = data.byteOffset;
    h = newBuffer(out, data.length);
    if (onHeap) {
      data = new (data.constructor as Ctor<Num>)(defaultHeap().buffer, at, data.length);
    }
  }
  const n = h.bytes / byteSize(out);
  if (data.length !== n) {
    throw new Error(
      `cpu: internal error: an output of ${n} elements holds ${data.length} (a heap view was ` +
        "taken before an allocation that moved the heap)",
    );
  }
  const view = viewOf(h, out, n);
  if (view.byteOffset !== data.byteOffset || view.buffer !== data.buffer) {
    encodeInto(out, data, view);
  } else if (out === "bool") {
    // Computed in place as u8 (e.g. neg of a bool gives 255): bool storage holds 0 or 1.
    for (let i = 0; i < n; i++) if (view[i] > 1) view[i] = 1;
  }
  return h;
}

function isContiguous(v: View): boolean {
  let expect = 1;
  for (let d = v.shape.length - 1; d >= 0; d--) {
    if (v.shape[d] !== 1 && v.strides[d] !== expect) return false;
    expect *= v.shape[d];
  }
  return true;
}

function isScalarView(v: View): boolean {
  return v.strides.every((s, d) => s === 0 || v.shape[d] === 1);
}

/** Gather a strided view of `src` into `out` (contiguous, the view's shape). */
function gatherView<T extends Storage | Num>(v: View, src: T, out: T): void {
  const n = out.length;
  const nd = v.shape.length;
  if (nd === 0) {
    out[0] = src[v.offset];
    return;
  }
  // Odometer over all but the last axis; the last axis is a strided inner loop.
  const inner = v.shape[nd - 1];
  const innerStride = v.strides[nd - 1];
  const idx = new Array(nd).fill(0);
  let base = v.offset;
  for (let o = 0; o < n; o += inner) {
    for (let i = 0, s = base; i < inner; i++, s += innerStride) out[o + i] = src[s];
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]++;
      base += v.strides[d];
      if (idx[d] < v.shape[d]) break;
      base -= v.strides[d] * v.shape[d];
      idx[d] = 0;
    }
  }
}

/** Contiguous widened values of a strided view (a scratch copy unless already contiguous). */
function materialize(v: View): Num {
  const src = values(v);
  const n = v.shape.reduce((a, b) => a * b, 1);
  if (v.offset === 0 && isContiguous(v) && src.length === n) return src;
  const out = scratch(src.constructor as Ctor<Num>, n);
  gatherView(v, src, out);
  return out;
}

/** A broadcast scalar's value, or the view's contiguous values. */
function operand(v: View): Num | number {
  return isScalarView(v) ? valueAt(v, v.offset) : materialize(v);
}

/**
 * Run one kernel call: scratch slots start over, and if it throws, the blocks it allocated go
 * back to the heap; blocks it allocated but did not return are released too.
 */
function guarded<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => {
    const mark = pending.length;
    const slot0 = slot;
    let result: R | undefined;
    try {
      return result = fn(...args);
    } finally {
      const kept: unknown[] = Array.isArray(result) ? result : [result];
      for (let i = mark; i < pending.length; i++) {
        const h = pending[i];
        if (!kept.includes(h) && h.ptr >= 0) {
          defaultHeap().release(h.ptr, h.bytes);
          h.ptr = -1;
        }
      }
      pending.length = mark;
      slot = slot0;
    }
  };
}

/** Wrap every kernel of a backend object in {@linkcode guarded}. */
function guardKernels(b: Backend): Backend {
  const out = { ...b } as Record<string, unknown>;
  for (const [k, v] of Object.entries(b)) {
    if (typeof v === "function" && k !== "unsupported" && k !== "free") {
      out[k] = guarded(v as (...a: unknown[]) => unknown);
    }
  }
  return out as unknown as Backend;
}

/**
 * The CPU device. Always available.
 *
 * @example
 * ```ts
 * const t = tensor([1, 2, 3], { device: cpu });
 * ```
 */
export const cpu: Backend = guardKernels({
  kind: "cpu",
  name: "cpu",
  // matmul rounds an f32 operand to f16/bf16 while packing it (MatmulGeometry.aCast/bCast).
  matmulCasts: true,
  unsupported: () => undefined,
  upload: (dtype: DType, data: Storage): Handle => fromStorage(dtype, data),
  fill(dtype: DType, size: number, value: number): Handle {
    const one = encode(dtype, [value]);
    const h = newBuffer(dtype, size);
    viewOf(h, dtype, size).fill(one[0] as never); // heap blocks are reused: always fill
    return h;
  },
  read: (x: Arg) => Promise.resolve(storageOf(x).slice()), // a copy, never live storage
  free(h: Handle) {
    const b = h as CpuBuffer;
    if (b.ptr < 0) throw new Error("cpu: a buffer was freed twice");
    defaultHeap().release(b.ptr, b.bytes);
    b.ptr = -1;
  },
  cast: (x: Arg, to: DType, opts?: CastOptions) =>
    (x.dtype !== to ? eagerSimd(castKernel(x.dtype, to, opts), [x], x.size) : undefined) ??
      ts.cast(x, to, opts),
  copy: (x: View, outDtype: DType) =>
    (outDtype !== x.dtype ? eagerSimd(castKernel(x.dtype, outDtype), [x], sizeOf(x)) : undefined) ??
      ts.copy(x, outDtype),
  unary: (op, x, outDtype) =>
    eagerSimd(unaryKernel(op, x.dtype, outDtype), [x], x.size) ??
      ts.unary(op, x, outDtype),
  binary: (op, a, b, outDtype) =>
    eagerSimd(binaryKernel(op, a.dtype, b.dtype, outDtype), [a, b], sizeOf(a)) ??
      ts.binary(op, a, b, outDtype),
  where: (cond, a, b, outDtype) =>
    eagerSimd(whereKernel(cond.dtype, a.dtype, b.dtype, outDtype), [cond, a, b], sizeOf(a)) ??
      ts.where(cond, a, b, outDtype),
  reduce(op, x, outer, reduce, inner, outDtype) {
    const n = outer * inner;
    const simd = n > 0 && reduce > 0 ? wasmReduceKernel(op, x.dtype, outDtype) : undefined;
    if (simd) {
      // WebAssembly over the heap, then the same final conversion as below (bitwise equal).
      const layout = wasmReduceOutput(op);
      const h = newBuffer(outDtype, n);
      const acc = layout === outDtype ? h : newBuffer(layout, n); // a scratch block is freed
      const best = op === "argmax" || op === "argmin" ? newBuffer("f32", inner).ptr : 0;
      simd(live(x.h).ptr, acc.ptr, outer, reduce, inner, best);
      if (acc !== h) {
        const from = viewOf(acc, layout, n) as Num;
        const view = viewOf(h, outDtype, n);
        if (layout === "f64" && !isNarrow(outDtype)) view.set(from as never);
        else encodeInto(outDtype, from, view);
      }
      return h;
    }
    // A narrow float sum is rounded once, from the f64 accumulator (not f64 → f32 → narrow).
    const once = op === "sum" && outDtype !== "f64" && outDtype !== "f32" && isFloating(outDtype);
    const out = once ? new Float64Array(outer * inner) : computeArray(outDtype, outer * inner);
    reduceKernel(op, values(x), outer, reduce, inner, out);
    return store(outDtype, out);
  },
  matmul(a: Arg, b: Arg, g: MatmulGeometry, outDtype: DType) {
    const size = g.batch * g.m * g.n;
    checkCasts(a.dtype, b.dtype, g);
    if (wasmMatmulApplies(a.dtype, b.dtype, outDtype)) {
      // WebAssembly SIMD in place on the heap (f32 accumulation, rounded once).
      const h = newBuffer(outDtype, size);
      const ap = storageOf(a).byteOffset, bp = storageOf(b).byteOffset;
      wasmMatmul(ap, a.dtype, bp, b.dtype, g, outDtype, h.ptr);
      return h;
    }
    // Narrow float outputs round once from the f64 accumulator (no f32 step in between).
    const out = isFloating(outDtype) && outDtype !== "f32"
      ? new Float64Array(size)
      : computeArray(outDtype, size);
    matmulKernel(values(a), values(b), g, out as Float32Array | Float64Array);
    return store(outDtype, out);
  },
  concat(xs, outer, sizes, inner, outDtype) {
    const total = sizes.reduce((p, s) => p + s, 0);
    const n = outer * total * inner;
    // Same dtype everywhere: move raw storage; else widen and round once.
    const raw = xs.every((x) => x.dtype === outDtype);
    const h = raw ? newBuffer(outDtype, n) : undefined;
    const out = h ? viewOf(h, outDtype, n) : computeArray(outDtype, n);
    let col = 0;
    xs.forEach((x, i) => {
      const src = raw ? storageOf(x) : values(x);
      const w = sizes[i] * inner;
      for (let o = 0; o < outer; o++) {
        out.set(src.subarray(o * w, (o + 1) * w) as never, o * total * inner + col);
      }
      col += w;
    });
    return h ?? store(outDtype, out as Num);
  },
  gather(x, idx, outer, axis, inner, check = { op: "take", wrap: true }) {
    const nIdx = idx.size;
    const n = outer * nIdx * inner;
    const h = newBuffer(x.dtype, n);
    if (outer > 0) {
      // WebAssembly: every index checked first, then one bulk copy of `inner` elements each.
      const b = byteSize(x.dtype);
      const p = live(x.h).ptr, ip = live(idx.h).ptr;
      const bad = wasmGather(p, ip, idx.dtype, h.ptr, outer, nIdx, axis, inner * b, check.wrap);
      if (bad !== undefined) {
        if (bad < 0) return h;
        throw new Error(indexErrorMessage(check.op, values(idx)[bad], axis));
      }
    }
    const out = viewOf(h, x.dtype, n);
    const src = storageOf(x); // raw storage: a gather moves bits
    const ix = values(idx);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < nIdx; j++) {
        let k = ix[j];
        if (k < 0 && check.wrap) k += axis;
        if (!(k >= 0 && k < axis)) throw new Error(indexErrorMessage(check.op, ix[j], axis));
        const from = (o * axis + k) * inner;
        out.set(src.subarray(from, from + inner) as never, (o * nIdx + j) * inner);
      }
    }
    return h;
  },
  scatterAdd(base, idx, upd, outer, axis, inner) {
    // As the WebGPU kernel: f32 and narrower floats accumulate in f32, one addition per index
    // in index order, then round once to the dtype (storing an f64 sum of two f32 values into a
    // Float32Array is exactly the f32 sum: 53 ≥ 2·24 + 2 bits). f64 and i32 accumulate in their
    // own type; u8 and bool in f64.
    const simd = scatterSimd(base, idx, upd, outer, axis, inner);
    if (simd) return simd;
    const out = computeArray(base.dtype, base.size);
    const acc = out instanceof Float32Array || out instanceof Int32Array || base.dtype === "f64"
      ? out
      : new Float64Array(base.size);
    acc.set(values(base) as never);
    const ix = values(idx);
    const u = values(upd);
    const nIdx = idx.size;
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < nIdx; j++) {
        let k = ix[j];
        if (k < 0) k += axis;
        if (!(k >= 0 && k < axis)) {
          throw new Error(`scatterAdd: index ${ix[j]} is out of range for an axis of size ${axis}`);
        }
        const to = (o * axis + k) * inner;
        const from = (o * nIdx + j) * inner;
        for (let i = 0; i < inner; i++) acc[to + i] += u[from + i];
      }
    }
    if (acc !== out) out.set(acc as never);
    return store(base.dtype, out);
  },
  random(key: Key, size: number, dtype: DType, dist: RandomKind) {
    if (dist.kind === "bernoulli") {
      if (dtype === "bool" || dtype === "u8") {
        const h = newBuffer(dtype, size);
        fillBernoulli(key, dist.p, viewOf(h, dtype, size) as Uint8Array);
        return h;
      }
      const out = computeArray(dtype, size);
      const bits = scratch(Uint8Array, size);
      fillBernoulli(key, dist.p, bits);
      for (let i = 0; i < size; i++) out[i] = bits[i];
      return store(dtype, out);
    }
    // f64 fills f64, every other dtype an f32 array (as before), then rounds once.
    const direct = dtype === "f64" || dtype === "f32";
    const h = direct ? newBuffer(dtype, size) : undefined;
    const out = h
      ? viewOf(h, dtype, size) as Float32Array | Float64Array
      : scratch(Float32Array, size);
    if (dist.kind === "uniform") fillUniform(key, out, dist.lo, dist.hi);
    else fillNormal(key, out);
    return h ?? store(dtype, out);
  },
  quantize(x, absmax, map, blockSize, signGuard) {
    const h = newBuffer("u8", x.size);
    const scratchBlock = newBuffer("f32", blockSize + 4);
    const simd = wasmQuantize(
      { ptr: live(x.h).ptr, dtype: x.dtype },
      live(absmax.h).ptr,
      values(map),
      x.size,
      blockSize,
      signGuard,
      h.ptr,
      scratchBlock.ptr,
    );
    if (simd) return h;
    const out = viewOf(h, "u8", x.size) as Uint8Array;
    const y = scratch(Float32Array, x.size);
    quantizeKernel(values(x), values(absmax), values(map), blockSize, signGuard, x.size, out, y);
    return h;
  },
  dequantize(codes, absmax, map, blockSize, outDtype) {
    if (outDtype === "f32") {
      const h = newBuffer("f32", codes.size);
      const at = (a: Arg) => live(a.h).ptr;
      if (wasmDequantize(at(codes), at(absmax), values(map), codes.size, blockSize, h.ptr)) {
        return h;
      }
      dequantizeKernel(
        values(codes),
        values(absmax),
        values(map),
        blockSize,
        viewOf(h, "f32", codes.size) as Float32Array,
      );
      return h;
    }
    const out = computeArray(outDtype, codes.size) as Float32Array | Float64Array;
    dequantizeKernel(values(codes), values(absmax), values(map), blockSize, out);
    return store(outDtype, out);
  },
  blockwise8bitUpdate(u: Blockwise8bitUpdate, inputs: readonly Arg[]) {
    const [p, g] = inputs;
    const n = p.size;
    const outs = blockwise8bitOutputs(u, p.dtype, n).map((o) => newBuffer(o.dtype, o.size));
    const scratchBlock = newBuffer("u8", updateScratchBytes(u));
    // Maps are inputs 4 (and 7), scalars follow the moments.
    const mapIdx = u.kind === "adam" ? [4, 7] : [4];
    const first = u.kind === "adam" ? 8 : 5;
    const maps = mapIdx.map((i) => Float32Array.from(values(inputs[i])));
    const scalars = inputs.slice(first).map((s) => valueAt(s, 0));
    const heapArgs = inputs.map((a) => ({ ptr: live(a.h).ptr, dtype: a.dtype }));
    const ptrs = outs.map((h) => h.ptr);
    if (wasmBlockwise8bitUpdate(u, heapArgs, maps, scalars, ptrs, n, scratchBlock.ptr)) {
      return outs;
    }
    // TypeScript loop: views after the last allocation.
    const newP = p.dtype === "f32"
      ? viewOf(outs[0], "f32", n) as Float32Array
      : new Float32Array(n);
    const k = mapIdx.length;
    const moments = mapIdx.map((_, j) => ({
      codes: values(inputs[2 + 3 * j]),
      absmax: values(inputs[3 + 3 * j]),
      map: maps[j],
    }));
    const pv = Float32Array.from(values(p));
    const gv = Float32Array.from(values(g));
    const codes = Array.from(
      { length: k },
      (_, j) => viewOf(outs[1 + 2 * j], "u8", n) as Uint8Array,
    );
    const absmax = Array.from(
      { length: k },
      (_, j) => viewOf(outs[2 + 2 * j], "f32", outs[2 + 2 * j].bytes / 4) as Float32Array,
    );
    blockwise8bitUpdateKernel(u, pv, gv, moments, scalars, newP, codes, absmax);
    if (p.dtype !== "f32") encodeInto(p.dtype, newP, viewOf(outs[0], p.dtype, n));
    return outs;
  },
  fused(k: FusedKernel, inputs: readonly View[]) {
    const simd = wasmFused(k, inputs);
    if (simd) return simd;
    // Outputs first: allocating may move the heap, which input views must not see.
    const outs = k.outputs.map((o) => computeArray(k.ops[o].dtype, k.size));
    const srcs = inputs.map((v) => isScalarView(v) ? valueAt(v, v.offset) : materialize(v));
    return runFused(k, srcs, outs).map((o, j) => store(k.ops[k.outputs[j]].dtype, o));
  },
});

type Elementwise = Pick<Backend, "cast" | "copy" | "unary" | "binary" | "where">;

/**
 * The TypeScript elementwise kernels: what `cpu.cast`, `copy`, `unary`, `binary` and `where` run
 * where the SIMD fused path does not apply. They allocate through `newBuffer`: call them inside
 * a guarded kernel.
 */
const ts: Elementwise = {
  cast: (x: Arg, to: DType, opts?: CastOptions) => {
    const h = newBuffer(to, x.size);
    const dst = viewOf(h, to, x.size);
    if (x.dtype === to) dst.set(storageOf(x) as never);
    else if (to === "f32" && isNarrow(x.dtype)) {
      widenInto(x.dtype, storageOf(x), dst as Float32Array);
    } else encodeInto(to, values(x), dst, opts);
    return h;
  },
  copy: (x: View, outDtype: DType) => {
    const n = x.shape.reduce((a, b) => a * b, 1);
    if (outDtype !== x.dtype) {
      const out = computeArray(outDtype, n);
      out.set(materialize(x) as never);
      return store(outDtype, out);
    }
    // Same dtype: move raw storage (bits), no widening; broadcast rows and row scalars in bulk.
    const h = newBuffer(outDtype, n);
    const dst = viewOf(h, outDtype, n);
    const src = storageOf(x);
    const l = n > 0 ? layoutOf(x.shape, x.strides) : undefined;
    if (isContiguous(x)) dst.set(src.subarray(x.offset, x.offset + n) as never);
    else if (l?.layout === "p") {
      dst.set(src.subarray(x.offset, x.offset + l.len) as never);
      for (let have = l.len; have < n; have *= 2) dst.copyWithin(have, 0, Math.min(have, n - have));
    } else if (l?.layout === "r") {
      for (let r = 0, at = 0; at < n; r++, at += l.len) {
        dst.fill(src[x.offset + r] as never, at, at + l.len);
      }
    } else gatherView(x, src, dst);
    return h;
  },
  unary(op, x, outDtype) {
    const out = computeArray(outDtype, x.size);
    unaryFn(op, values(x), out);
    return store(outDtype, out);
  },
  binary(op, a, b, outDtype) {
    const n = a.shape.reduce((p, d) => p * d, 1);
    const out = computeArray(outDtype, n);
    binaryFn(op, operand(a), operand(b), out);
    return store(outDtype, out);
  },
  where(cond, a, b, outDtype) {
    const n = a.shape.reduce((p, d) => p * d, 1);
    const out = computeArray(outDtype, n);
    const c = materialize(cond);
    // A broadcast scalar branch (e.g. where(mask, g, 0)) is read once, not materialized.
    const av = operand(a);
    const bv = operand(b);
    if (typeof av === "number" && typeof bv === "number") {
      for (let i = 0; i < n; i++) out[i] = c[i] ? av : bv;
    } else if (typeof av === "number") {
      const bs = bv as Num;
      for (let i = 0; i < n; i++) out[i] = c[i] ? av : bs[i];
    } else if (typeof bv === "number") {
      for (let i = 0; i < n; i++) out[i] = c[i] ? av[i] : bv;
    } else {
      for (let i = 0; i < n; i++) out[i] = c[i] ? av[i] : bv[i];
    }
    return store(outDtype, out);
  },
};

/**
 * @internal The TypeScript elementwise kernels as guarded kernels: the reference the SIMD path
 * is tested against, bit for bit.
 */
export const reference: Elementwise = guardKernels(ts as Backend) as Elementwise;

/** Elements of a view (the product of its shape). */
function sizeOf(v: View): number {
  let n = 1;
  for (const d of v.shape) n *= d;
  return n;
}

/** Below this many elements an eager op stays on the TypeScript kernel (less per-call work). */
const EAGER_SIMD_MIN = 256;

/** An eager op as its one-op kernel on the SIMD path, or `undefined` (then TypeScript runs it). */
function eagerSimd(
  k: FusedKernel,
  inputs: readonly (View | Arg)[],
  n: number,
): CpuBuffer | undefined {
  if (n < EAGER_SIMD_MIN) return undefined;
  return wasmFused(k, inputs, n)?.[0];
}

/**
 * A fused kernel in WebAssembly SIMD straight over the heap blocks (inputs read in their own
 * storage and layout: scalars, contiguous, broadcast rows or row scalars; outputs written
 * contiguously in their storage), or `undefined` where that path does not apply (see
 * `wasm/fused.ts`, `wasm/layout.ts`): then the TypeScript kernels run it, with the same bits.
 * An `Arg` input is contiguous.
 */
function wasmFused(
  k: FusedKernel,
  inputs: readonly (View | Arg)[],
  n: number = k.size,
): CpuBuffer[] | undefined {
  const ls: Layout[] = [];
  for (const v of inputs) {
    const l = "shape" in v ? layoutOf(v.shape, v.strides) : CONTIGUOUS;
    if (!l) return undefined;
    ls.push(l);
  }
  if (!wasmEnabled()) return undefined;
  const kernel = wasmFusedKernel(k, ls.map((l) => l.layout));
  if (!kernel) return undefined;
  const outs = k.outputs.map((o) => newBuffer(k.ops[o].dtype, n));
  const ins: SimdInput[] = inputs.map((v, j) => {
    const off = "offset" in v ? v.offset : 0;
    const bytes = byteSize(v.dtype);
    const at = ls[j].layout === "s" ? f32Bits(valueAt(v, off)) : live(v.h).ptr + off * bytes;
    return { l: ls[j], at, bytes };
  });
  const imms = k.immediates.map((m) => f32Bits(m.value));
  runWasmFused(kernel, ins, imms, outs.map((h) => h.ptr), n);
  return outs;
}

/**
 * `scatterAdd` with the f32 additions in WebAssembly, for f32, bf16 and f16 (the same order and
 * roundings as the TypeScript kernel: an f32 accumulator widened exactly from `base`, one f32
 * addition per index in index order, then one rounding to the dtype), or `undefined` where that
 * path does not run. Throws the TypeScript kernel's message for an index out of range.
 */
function scatterSimd(
  base: Arg,
  idx: Arg,
  upd: Arg,
  outer: number,
  axis: number,
  inner: number,
): CpuBuffer | undefined {
  const d = base.dtype;
  if ((d !== "f32" && d !== "bf16" && d !== "f16") || upd.dtype !== d || outer === 0) return;
  if (!wasmEnabled() || (idx.dtype !== "i32" && idx.dtype !== "u8")) return;
  const n = base.size;
  // Blocks first (an allocation may move the heap), then views.
  const out = newBuffer(d, n);
  const acc = d === "f32" ? out : newBuffer("f32", n);
  const u = d === "f32" ? upd.h as CpuBuffer : newBuffer("f32", upd.size);
  const accView = viewOf(acc, "f32", n) as Float32Array;
  if (d === "f32") accView.set(storageOf(base) as Float32Array);
  else {
    widenInto(d, storageOf(base), accView);
    widenInto(d, storageOf(upd), viewOf(u, "f32", upd.size) as Float32Array);
  }
  const bad = wasmScatterAdd(
    acc.ptr,
    live(idx.h).ptr,
    idx.dtype,
    live(u).ptr,
    outer,
    idx.size,
    axis,
    inner,
  );
  if (bad === undefined) return; // the blocks go back when the kernel returns
  if (bad >= 0) {
    const i = values(idx)[bad];
    throw new Error(`scatterAdd: index ${i} is out of range for an axis of size ${axis}`);
  }
  if (acc !== out) encodeInto(d, viewOf(acc, "f32", n), viewOf(out, d, n));
  return out;
}

/** The CPU's out-of-range message (the WebGPU backend's flag gives the same first sentence). */
function indexErrorMessage(op: string, index: number, size: number): string {
  return op === "oneHot"
    ? `oneHot: label ${index} is out of range for depth ${size}; labels must be in [0, ${size}) ` +
      "(for masked rows pass crossEntropy's ignoreIndex)"
    : `${op}: index ${index} is out of range for an axis of size ${size}`;
}
