/**
 * The WebAssembly matmul: operands copied into one shared memory (zero copy where they already
 * live there), packed by the kernel module, multiplied with f32 accumulation, split across the
 * pool by batches, output columns (when n > m) or output rows, never along k, so results are
 * bitwise the same for any thread count. The f32 accumulator is rounded once to the output
 * dtype; where it lands exactly on a rounding tie of f16/bf16 (so that rounding it would round
 * the exact sum twice) that element is resolved from its exact f64 sum.
 *
 * About FMA: with relaxed SIMD the micro-kernel uses `f32x4.relaxed_madd`, which the machine
 * may or may not fuse. Results are then bitwise reproducible for any thread count and across
 * machines that fuse (x86-64 with FMA3, ARM64); `NBIT_WASM_FMA=0` gives separate multiply and
 * add, identical on every machine. Either way each output is within the f32 accumulation bound
 * |err| ≤ k·u·Σ|a||b| (u = 2^−24) of the exact sum.
 *
 * @module
 */
import type { MatmulGeometry } from "../../backend.ts";
import type { DType, Storage } from "../../../dtype.ts";
import { encode } from "../../../dtype.ts";
import { ELEM, type Elem, gemmModuleBytes, MR, NR } from "./gemm_module.ts";
import { useRelaxedFma, wasmEnabled, wasmFeatures } from "./features.ts";
import { P } from "./region.ts";
import { defaultThreads, Pool } from "./pool.ts";

const PAGE = 65536;
const MAX_PAGES = 65536;
const KC = 512, NC = 1024, MC = 48;
const PACK_A = Math.ceil(MC / MR) * MR * KC * 4;
const PACK_B = Math.ceil(NC / NR) * NR * KC * 4;
const TILE = 256;
const PER_THREAD = PACK_A + PACK_B + TILE;
/** Below this many flops a job runs on one thread (a round trip costs microseconds). */
const SPLIT_FLOPS = 1 << 21;

interface State {
  memory: WebAssembly.Memory;
  pool: Pool;
  fma: boolean;
  /** First byte after the per-thread packing buffers. */
  scratch: number;
}

let state: State | undefined;
let threadsWanted: number | undefined;

function align(x: number): number {
  return Math.ceil(x / 64) * 64;
}

function init(): State {
  const { shared } = wasmFeatures();
  const fma = useRelaxedFma();
  const threads = shared ? threadsWanted ?? defaultThreads() : 1;
  const scratch = align(threads * PER_THREAD);
  const memory = new WebAssembly.Memory({
    initial: Math.ceil(scratch / PAGE) + 1,
    maximum: MAX_PAGES,
    shared,
  } as WebAssembly.MemoryDescriptor);
  const bytes = gemmModuleBytes(fma, shared, MAX_PAGES);
  const ex = new WebAssembly.Instance(new WebAssembly.Module(bytes), { e: { m: memory } })
    .exports as Record<string, (...a: number[]) => void>;
  return { memory, pool: new Pool(threads, memory, bytes, ex), fma, scratch };
}

/**
 * Set the CPU thread count (the caller's thread included; default `NBIT_THREADS` or
 * `navigator.hardwareConcurrency`). The current pool is closed; the next matmul starts a new one.
 */
export function setCpuThreads(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1) {
    throw new RangeError(`setCpuThreads: threads must be an integer ≥ 1, got ${threads}`);
  }
  threadsWanted = threads;
  closeCpuThreads();
}

/** Terminate the CPU worker pool (a later matmul starts a new one). */
export function closeCpuThreads(): void {
  state?.pool.close();
  state = undefined;
}

/** How the WebAssembly matmul runs here (undefined when it is disabled or unsupported). */
export function wasmMatmulInfo():
  | { fma: boolean; threads: number; readyThreads: number }
  | undefined {
  if (!wasmEnabled()) return undefined;
  state ??= init();
  return { fma: state.fma, threads: state.pool.threads, readyThreads: state.pool.ready() + 1 };
}

const ELEMS: Partial<Record<DType, Elem>> = { f32: ELEM.f32, bf16: ELEM.bf16, f16: ELEM.f16 };

function batchOffset(b: number, shape: readonly number[], strides: readonly number[]): number {
  let off = 0;
  for (let d = shape.length - 1; d >= 0; d--) {
    const i = b % shape[d];
    b = (b - i) / shape[d];
    off += i * strides[d];
  }
  return off;
}

/** Ensure the memory holds `bytes`; returns the (possibly new) buffer. */
function reserve(s: State, bytes: number): ArrayBufferLike {
  const have = s.memory.buffer.byteLength;
  if (bytes > have) {
    const pages = Math.ceil((bytes - have) / PAGE);
    if (have / PAGE + pages > MAX_PAGES) {
      throw new RangeError(
        `matmul: operands need ${bytes} bytes of kernel memory, more than the 4 GiB WebAssembly ` +
          `allows; split the product into smaller batches`,
      );
    }
    s.memory.grow(pages);
  }
  return s.memory.buffer;
}

/** Byte address of `x` in the memory: zero copy if it lives there, else copied to `at`. */
function place(x: Storage, buf: ArrayBufferLike, at: number): number {
  if (x.buffer === buf) return x.byteOffset;
  new Uint8Array(buf, at, x.byteLength).set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
  return at;
}

/** Exact f64 sum of one output (for tie resolution). */
type Dot = (bt: number, i: number, j: number) => number;

/** f32 bit patterns that sit exactly on a rounding tie of `d` (f16 or bf16). */
function isTie(d: DType, u: number): boolean {
  const e = (u >>> 23) & 0xff;
  if (e === 0xff) return false;
  if (d === "bf16") return (u & 0xffff) === 0x8000;
  if (e < 102 || e > 142) return false;
  const drop = e >= 113 ? 13 : 126 - e;
  const full = (u & 0x7fffff) | (e > 0 ? 0x800000 : 0);
  const mask = (1 << drop) - 1;
  return (full & mask) === 2 ** (drop - 1);
}

function narrow(
  d: DType,
  f: Float32Array,
  g: MatmulGeometry,
  dot: Dot,
): Storage {
  const out = encode(d, f) as Uint16Array;
  const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
  const mn = g.m * g.n;
  for (let x = 0; x < u.length; x++) {
    if (!isTie(d, u[x])) continue;
    const bt = Math.floor(x / mn), r = x - bt * mn, i = Math.floor(r / g.n);
    out[x] = (encode(d, [dot(bt, i, r - i * g.n)]) as Uint16Array)[0];
  }
  return out;
}

/**
 * `a @ b` on the WebAssembly path, or undefined where it does not apply (WebAssembly disabled
 * or missing, an operand or the output not f32/f16/bf16). `operandValues` gives the operands'
 * values (read only for tie resolution).
 */
export function wasmMatmul(
  a: Storage,
  aType: DType,
  b: Storage,
  bType: DType,
  g: MatmulGeometry,
  outType: DType,
  operandValues: () => readonly [ArrayLike<number>, ArrayLike<number>],
): Storage | undefined {
  const ae = ELEMS[aType], be = ELEMS[bType];
  if (ae === undefined || be === undefined || ELEMS[outType] === undefined || !wasmEnabled()) {
    return undefined;
  }
  const { m, k, n, batch } = g;
  const total = batch * m * n;
  if (total === 0 || k === 0) return encode(outType, new Float32Array(total));
  const s = state ??= init();
  const aAt = s.scratch, bAt = align(aAt + a.byteLength), cAt = align(bAt + b.byteLength);
  const tAt = align(cAt + total * 4), end = tAt + batch * 12;
  const buf = reserve(s, end);
  const ap = place(a, buf, aAt), bp = place(b, buf, bAt);
  const sa = aType === "f32" ? 4 : 2, sb = bType === "f32" ? 4 : 2;
  const table = new Uint32Array(buf, tAt, batch * 3);
  for (let bt = 0; bt < batch; bt++) {
    table[3 * bt] = ap + batchOffset(bt, g.batchShape, g.aBatchStride) * sa;
    table[3 * bt + 1] = bp + batchOffset(bt, g.batchShape, g.bBatchStride) * sb;
    table[3 * bt + 2] = cAt + bt * m * n * 4;
  }
  const flops = 2 * total * k;
  const parts = flops < SPLIT_FLOPS ? 1 : Math.min(s.pool.ready() + 1, s.pool.threads);
  // Split batches, else columns (n > m: each thread packs only its own B), else rows.
  const axis = batch >= parts ? 0 : n > m ? 2 : 1;
  const len = axis === 0 ? batch : axis === 2 ? n : m;
  const unit = axis === 0 ? 1 : axis === 2 ? NR : MR;
  const units = Math.ceil(len / unit);
  const used = Math.min(parts, units);
  s.pool.run(used, (J, o, part) => {
    const lo = Math.min(len, Math.round((units * part) / used) * unit);
    const hi = Math.min(len, Math.round((units * (part + 1)) / used) * unit);
    J[o + P.m] = m, J[o + P.k] = k, J[o + P.n] = n;
    J[o + P.transA] = g.transA ? 1 : 0, J[o + P.transB] = g.transB ? 1 : 0;
    J[o + P.aElem] = ae, J[o + P.bElem] = be, J[o + P.table] = tAt;
    J[o + P.b0] = axis === 0 ? lo : 0, J[o + P.b1] = axis === 0 ? hi : batch;
    J[o + P.i0] = axis === 1 ? lo : 0, J[o + P.i1] = axis === 1 ? hi : m;
    J[o + P.j0] = axis === 2 ? lo : 0, J[o + P.j1] = axis === 2 ? hi : n;
    const t = part * PER_THREAD;
    J[o + P.packA] = t, J[o + P.packB] = t + PACK_A, J[o + P.tile] = t + PACK_A + PACK_B;
  });
  const c = new Float32Array(s.memory.buffer, cAt, total);
  if (outType === "f32") return c.slice();
  let va: ArrayLike<number> | undefined, vb: ArrayLike<number> = [];
  const dot: Dot = (bt, i, j) => {
    if (!va) [va, vb] = operandValues();
    const ao = batchOffset(bt, g.batchShape, g.aBatchStride);
    const bo = batchOffset(bt, g.batchShape, g.bBatchStride);
    let acc = 0;
    for (let p = 0; p < k; p++) {
      const x = va[ao + (g.transA ? p * m + i : i * k + p)];
      const y = vb[bo + (g.transB ? j * k + p : p * n + j)];
      acc += x * y;
    }
    return acc;
  };
  return narrow(outType, c, g, dot);
}
