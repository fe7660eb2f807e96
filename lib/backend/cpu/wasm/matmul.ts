/**
 * The WebAssembly matmul, in place on the CPU heap (one `WebAssembly.Memory`, shared when
 * `SharedArrayBuffer` exists): operands packed by the kernel module, multiplied with f32
 * accumulation, split across the pool by batches, output columns (when n > m) or output rows,
 * never along k, so results are bitwise the same for any thread count. The f32 accumulator is
 * rounded once to the output dtype (in SIMD, by each thread as soon as a block of rows is final,
 * while it is in cache); where it lands exactly on a rounding tie of f16/bf16 (so that rounding
 * it would round the exact sum twice) that element is resolved from its exact f64 sum.
 *
 * About FMA: with relaxed SIMD the micro-kernel uses `f32x4.relaxed_madd`, which the machine
 * may or may not fuse. Results are then bitwise reproducible for any thread count and across
 * machines that fuse (x86-64 with FMA3, ARM64); `NBIT_WASM_FMA=0` gives separate multiply and
 * add, identical on every machine. Either way each output is within the f32 accumulation bound
 * |err| ≤ k·u·Σ|a||b| (u = 2^−24) of the exact sum.
 *
 * `MatmulGeometry.aCast` / `bCast` round an f32 operand to f16/bf16 as the packers read it (the
 * same f32 values a cast operand widens to), so the result is that of casting first, bitwise.
 *
 * @module
 */
import type { MatmulGeometry } from "../../backend.ts";
import { batchOffset, checkCasts } from "../matmul.ts";
import { type DType, f16BitsToNumber, roundToBf16Bits, roundToF16Bits } from "../../../dtype.ts";
import { alloc, heapMemory, release } from "../heap.ts";
import { ELEM, type Elem, gemmModuleBytes, MR, NR, SKINNY_M, skinnyChunk } from "./gemm_module.ts";
import { useRelaxedFma, wasmEnabled } from "./features.ts";
import { P } from "./region.ts";
import { defaultThreads, Pool } from "./pool.ts";

const MAX_PAGES = 65536;
const KC = 512, NC = 1024, MC = 48;
const PACK_A = Math.ceil(MC / MR) * MR * KC * 4;
const PACK_B = Math.ceil(NC / NR) * NR * KC * 4;
const TILE = 256;
const PER_THREAD = PACK_A + PACK_B + TILE;
const F16_TABLE = 65536 * 4;
/** Flagged tie groups listed (in thread 0's packing buffer, free once the product is done). */
const TIE_LIST = PACK_A / 4;
/** Below this many flops a job runs on one thread (a round trip costs microseconds). */
const SPLIT_FLOPS = 1 << 21;

interface State {
  memory: WebAssembly.Memory;
  pool: Pool;
  /** The kernel bytes (a new pool instantiates them again). */
  bytes: Uint8Array;
  /** Bytes of the shared memory when the pool's workers received it (see `freshPool`). */
  poolBytes: number;
  fma: boolean;
  /** Per-thread packing buffers (heap blocks, kept for the pool's lifetime). */
  packs: number;
  /** Products split across more than one thread so far. */
  splits: number;
}

let state: State | undefined;
let threadsWanted: number | undefined;

function init(): State {
  const memory = heapMemory();
  const shared = typeof SharedArrayBuffer === "function" &&
    memory.buffer instanceof SharedArrayBuffer;
  const fma = useRelaxedFma();
  const threads = shared ? threadsWanted ?? defaultThreads() : 1;
  const packs = alloc(threads * PER_THREAD + F16_TABLE);
  const table = new Float32Array(memory.buffer, packs + threads * PER_THREAD, 65536);
  for (let h = 0; h < 65536; h++) table[h] = f16BitsToNumber(h); // exact
  const bytes = gemmModuleBytes(fma, shared, MAX_PAGES, table.byteOffset);
  const ex = new WebAssembly.Instance(new WebAssembly.Module(bytes), { e: { m: memory } })
    .exports as Record<string, (...a: number[]) => void>;
  const pool = new Pool(threads, memory, bytes, ex);
  return { memory, pool, bytes, poolBytes: memory.buffer.byteLength, fma, packs, splits: 0 };
}

/**
 * The pool, made anew when the heap grew since its workers started. A worker sees another
 * thread's `memory.grow` only when V8 delivers its grow interrupt, which a worker spinning or
 * parked in `Atomics.wait` may not handle for a long time: until then its `memory.buffer` is the
 * old, shorter one, and typed arrays on it read `undefined` and drop writes past its end (silent
 * corruption of the heap's low addresses). New workers receive the memory at its current size.
 * The heap grows by half or more each time, so this happens a few times per process. Until the
 * new workers are up, products run on the calling thread (same results).
 */
function freshPool(s: State): Pool {
  const now = s.memory.buffer.byteLength;
  if (now !== s.poolBytes) {
    const { threads, ex } = s.pool;
    s.pool.close();
    s.pool = new Pool(threads, s.memory, s.bytes, ex);
    s.poolBytes = now;
  }
  return s.pool;
}

/**
 * The CPU worker pool (shared by matmuls and the fused elementwise kernels), fresh for the
 * heap's current size (see `freshPool`), or `undefined` when WebAssembly is off or no matmul
 * has started it yet (it holds packing buffers on the heap: elementwise work alone does not
 * allocate them).
 */
export function cpuPool(): Pool | undefined {
  if (!state || !wasmEnabled()) return undefined;
  return freshPool(state);
}

/**
 * Set the CPU thread count (the caller's thread included; default `NBIT_THREADS` or
 * `navigator.hardwareConcurrency`, at most 8). The current pool is closed; the next matmul starts
 * a new one. Results do not depend on it.
 *
 * @example
 * ```ts
 * setCpuThreads(1); // matmuls on the calling thread only
 * ```
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
  if (!state) return;
  state.pool.close();
  release(state.packs, state.pool.threads * PER_THREAD + F16_TABLE);
  state = undefined;
}

/** How the WebAssembly matmul runs here (undefined when it is disabled or unsupported). */
export function wasmMatmulInfo():
  | {
    fma: boolean;
    threads: number;
    readyThreads: number;
    splits: number;
    /** Bytes of the shared memory when the current pool's workers received it. */
    poolBytes: number;
  }
  | undefined {
  if (!wasmEnabled()) return undefined;
  const s = state ??= init();
  return {
    fma: s.fma,
    threads: s.pool.threads,
    readyThreads: s.pool.ready() + 1,
    splits: s.splits,
    poolBytes: s.poolBytes,
  };
}

const ELEMS: Partial<Record<DType, Elem>> = { f32: ELEM.f32, bf16: ELEM.bf16, f16: ELEM.f16 };

/** The packers' element code of an operand of `type`, rounded to `cast` (f16/bf16) if set. */
function elemOf(type: DType, cast: DType | undefined): Elem | undefined {
  if (cast === undefined) return ELEMS[type];
  return cast === "f16" ? ELEM.f32f16 : ELEM.f32bf16;
}

/** Exact f64 sum of one output (for tie resolution). */
type Dot = (bt: number, i: number, j: number) => number;

/** f32 bits that sit exactly on a rounding tie of `d` (f16 or bf16). */
function isTie(d: DType, u: number): boolean {
  const e = (u >>> 23) & 0xff;
  if (d === "bf16") return (u & 0xffff) === 0x8000 && e !== 0xff;
  if (e >= 113) return e <= 142 && (u & 0x1fff) === 0x1000; // f16 normal: 13 bits dropped
  if (e < 102) return false; // below half the smallest f16 subnormal
  const drop = 126 - e; // f16 subnormal: 14..24 bits of the 24-bit significand dropped
  return (((u & 0x7fffff) | 0x800000) & ((1 << drop) - 1)) === 1 << (drop - 1);
}

/**
 * Finish rounding the f32 accumulators at `c` once into the f16/bf16 block at `to`: the
 * product's threads rounded every output (see `P.narrow`); those on a rounding tie are resolved
 * here from their exact sums.
 */
function narrow(
  d: DType,
  c: number,
  to: number,
  total: number,
  g: MatmulGeometry,
  dot: Dot,
  s: State,
): void {
  const buf = s.memory.buffer;
  const out = new Uint16Array(buf, to, total);
  const u = new Uint32Array(buf, c, total);
  const round = d === "bf16" ? roundToBf16Bits : roundToF16Bits;
  const mn = g.m * g.n;
  const fix = (x: number) => {
    if (!isTie(d, u[x])) return;
    const bt = Math.floor(x / mn), r = x - bt * mn, i = Math.floor(r / g.n);
    out[x] = round(dot(bt, i, r - i * g.n));
  };
  // Groups of 4 that may hold a tie, found in SIMD; then checked exactly here.
  const quads = total >>> 2;
  const flagged = s.pool.ex[`ties${ELEMS[d]}`](c, quads, s.packs, TIE_LIST) as unknown as number;
  if (flagged > TIE_LIST) {
    for (let x = 0; x < quads * 4; x++) fix(x);
  } else {
    const list = new Int32Array(s.memory.buffer, s.packs, flagged);
    for (let q = 0; q < flagged; q++) for (let x = 4 * list[q]; x < 4 * list[q] + 4; x++) fix(x);
  }
  for (let x = quads * 4; x < total; x++) fix(x);
}

/** Whether {@link wasmMatmul} runs this product (else the TypeScript kernel does). */
export function wasmMatmulApplies(aType: DType, bType: DType, outType: DType): boolean {
  return ELEMS[aType] !== undefined && ELEMS[bType] !== undefined &&
    ELEMS[outType] !== undefined && wasmEnabled();
}

/**
 * `out = a @ b` in place on the CPU heap: `a`, `b` and `out` are byte addresses of heap blocks
 * (`out` holds `batch·m·n` elements of `outType`). Only for dtypes where
 * {@link wasmMatmulApplies}.
 */
export function wasmMatmul(
  a: number,
  aType: DType,
  b: number,
  bType: DType,
  g: MatmulGeometry,
  outType: DType,
  out: number,
): void {
  checkCasts(aType, bType, g);
  const ae = elemOf(aType, g.aCast), be = elemOf(bType, g.bCast);
  if (ae === undefined || be === undefined || ELEMS[outType] === undefined) {
    throw new TypeError(`matmul: no WebAssembly kernel for ${aType} @ ${bType} → ${outType}`);
  }
  const { m, k, n, batch } = g;
  const total = batch * m * n;
  if (total === 0) return;
  const s = state ??= init();
  const narrowOut = outType !== "f32";
  const cBytes = narrowOut ? total * 4 : 0;
  const cAt = narrowOut ? alloc(cBytes) : out;
  const tBytes = batch * 12;
  const tAt = alloc(tBytes);
  // Skinny products stream B unpacked (half the bytes for f16/bf16 weights); A is packed once.
  const thin = m <= SKINNY_M && !g.transB && batch === 1 && k > 0;
  // A packed once, in thread 0's A buffer (skinny regions do not use it) when it fits.
  const aPkBytes = thin && k * MR * 4 > PACK_A ? k * MR * 4 : 0;
  const aPk = !thin ? 0 : aPkBytes ? alloc(aPkBytes) : s.packs;
  try {
    if (thin) s.pool.ex[`packA${ae}`](a, g.transA ? 1 : k, g.transA ? m : 1, m, k, aPk);
    const buf = s.memory.buffer;
    if (k === 0) {
      new Uint8Array(buf, out, total * (narrowOut ? 2 : 4)).fill(0);
      return;
    }
    const sa = aType === "f32" ? 4 : 2, sb = bType === "f32" ? 4 : 2;
    const table = new Uint32Array(buf, tAt, batch * 3);
    for (let bt = 0; bt < batch; bt++) {
      table[3 * bt] = a + batchOffset(bt, g.batchShape, g.aBatchStride) * sa;
      table[3 * bt + 1] = b + batchOffset(bt, g.batchShape, g.bBatchStride) * sb;
      table[3 * bt + 2] = cAt + bt * m * n * 4;
    }
    const flops = 2 * total * k;
    const pool = freshPool(s);
    const parts = flops < SPLIT_FLOPS ? 1 : Math.min(pool.ready() + 1, pool.threads);
    // Split batches, else columns (n > m: each thread packs only its own B), else rows.
    const axis = thin ? 2 : batch >= parts ? 0 : n > m ? 2 : 1;
    const len = axis === 0 ? batch : axis === 2 ? n : m;
    const unit = axis === 0 ? 1 : axis === 2 ? NR : MR;
    const units = Math.ceil(len / unit);
    const used = Math.min(parts, units);
    if (used > 1) s.splits++;
    s.pool.run(used, (J, o, part) => {
      const lo = Math.min(len, Math.round((units * part) / used) * unit);
      const hi = Math.min(len, Math.round((units * (part + 1)) / used) * unit);
      J[o + P.m] = m, J[o + P.k] = k, J[o + P.n] = n;
      J[o + P.transA] = g.transA ? 1 : 0, J[o + P.transB] = g.transB ? 1 : 0;
      J[o + P.aElem] = ae, J[o + P.bElem] = be, J[o + P.table] = tAt;
      J[o + P.b0] = axis === 0 ? lo : 0, J[o + P.b1] = axis === 0 ? hi : batch;
      J[o + P.i0] = axis === 1 ? lo : 0, J[o + P.i1] = axis === 1 ? hi : m;
      J[o + P.j0] = axis === 2 ? lo : 0, J[o + P.j1] = axis === 2 ? hi : n;
      const t = s.packs + part * PER_THREAD;
      J[o + P.packA] = t, J[o + P.packB] = t + PACK_A, J[o + P.tile] = t + PACK_A + PACK_B;
      J[o + P.skinny] = thin ? 1 : 0, J[o + P.aPacked] = aPk, J[o + P.chunk] = skinnyChunk(m, be);
      J[o + P.pages] = s.memory.buffer.byteLength / 65536;
      J[o + P.narrow] = narrowOut ? ELEMS[outType]! : 0, J[o + P.out] = out;
    });
    if (!narrowOut) return;
    // Exact f64 sum of one output, reading the operands in place (in WebAssembly).
    const dotFn = s.pool.ex[`dot${ae}${be}`] as unknown as (...x: number[]) => number;
    const dot: Dot = (bt, i, j) => {
      const ao = batchOffset(bt, g.batchShape, g.aBatchStride) + (g.transA ? i : i * k);
      const bo = batchOffset(bt, g.batchShape, g.bBatchStride) + (g.transB ? j * k : j);
      return dotFn(a + ao * sa, (g.transA ? m : 1) * sa, b + bo * sb, (g.transB ? 1 : n) * sb, k);
    };
    narrow(outType, cAt, out, total, g, dot, s);
  } finally {
    release(tAt, tBytes);
    if (aPkBytes) release(aPk, aPkBytes);
    if (narrowOut) release(cAt, cBytes);
  }
}
