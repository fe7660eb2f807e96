/**
 * Running a SIMD fused kernel ({@linkcode WasmFused}) over `n` output elements: the parameters
 * of each input (by layout, from the part's first element), the immediates' f32 bits, the
 * output addresses and the part's element range. From {@link SPLIT_ELEMENTS} elements on, the
 * range is split in blocks of whole vectors across the CPU worker pool (the one matmuls use;
 * its workers compile the kernel's bytes from the pool's code area); each element is computed
 * alone, so the split never changes a bit. Where there are no workers or no shared memory it
 * runs on the calling thread.
 *
 * The threshold weighs the pool's round trip (15–18 µs to wake a parked worker, 1–8 µs while
 * it spins: shared/PERF-NOTES.md) against a one-thread pass over 256K elements (about 0.1 ms for a
 * memory-bound map, more for f16 rounding or an Adam update). It is an estimate for a quiet
 * machine: on a loaded 2-vCPU host no split up to 256K elements paid.
 *
 * @module
 */
import type { WasmFused } from "./fused.ts";
import { type Layout, pushParams } from "./layout.ts";
import { cpuPool } from "./matmul.ts";
import { codeOffset, MAX_ARGS } from "./pool.ts";

/**
 * Elements from which a kernel is split across the worker pool (a round trip costs a few
 * microseconds; measured crossover: see the module doc).
 */
export const SPLIT_ELEMENTS = 1 << 18;

/** One input of a call: its layout, byte address (a scalar: its f32 bits) and element size. */
export interface SimdInput {
  /** How the kernel reads it. */
  readonly l: Layout;
  /** Byte address of the view's element 0, or a scalar's f32 bits. */
  readonly at: number;
  /** Bytes per element. */
  readonly bytes: number;
}

const stats = { calls: 0, splits: 0 };

/** How many SIMD fused calls ran so far, and how many of them were split across threads. */
export function wasmFusedInfo(): { calls: number; splits: number } {
  return { ...stats };
}

const word = new Float32Array(1);
const wordBits = new Int32Array(word.buffer);

/** The f32 bits of `x` rounded to f32 (how an f32 parameter would receive it). */
export function f32Bits(x: number): number {
  word[0] = x;
  return wordBits[0];
}

/** The parameters of `w` for output elements `[e0, e1)` (multiples of 4, `e1` may pass `n`). */
export function simdArgs(
  ins: readonly SimdInput[],
  imms: readonly number[],
  outs: readonly number[],
  e0: number,
  e1: number,
): number[] {
  const args: number[] = [];
  for (const x of ins) pushParams(args, x.l, x.at, x.bytes, e0);
  for (const m of imms) args.push(m);
  for (const o of outs) args.push(o);
  args.push(e0, e1);
  return args;
}

/**
 * Run `w` over `n` elements: `imms` are the immediates' f32 bits, `outs` the output addresses.
 */
export function runWasmFused(
  w: WasmFused,
  ins: readonly SimdInput[],
  imms: readonly number[],
  outs: readonly number[],
  n: number,
): void {
  if (n === 0) return;
  stats.calls++;
  const end = (n + 3) & ~3;
  const pool = n >= SPLIT_ELEMENTS && w.arity <= MAX_ARGS ? cpuPool() : undefined;
  const parts = pool ? Math.min(pool.ready() + 1, pool.threads) : 1;
  const at = parts > 1 ? codeOffset(w.bytes) : undefined;
  if (!pool || at === undefined) {
    w.fn(...simdArgs(ins, imms, outs, 0, end));
    return;
  }
  // Whole vectors per part: every element is computed alone, so the split never changes bits.
  const units = end >> 2;
  const edge = (p: number) => Math.round((units * p) / parts) * 4;
  stats.splits++;
  pool.call(
    parts,
    at,
    w.bytes.length,
    w.fn,
    (p) => simdArgs(ins, imms, outs, edge(p), edge(p + 1)),
    "fused",
  );
}
