/**
 * CPU reductions in WebAssembly SIMD over heap buffers, bitwise equal to the TypeScript kernel
 * (`../reduce.ts`) because each output sees the same operations in the same order:
 *
 * - `sum` adds every element, widened exactly to f64, into an f64 accumulator that starts at +0,
 *   in the order r = 0, 1, …, reduce−1. Vectors run across the `inner` axis (four independent
 *   outputs in two f64x2 registers, walking down their column), never along the reduced axis;
 *   with inner = 1 each output is one scalar chain. The kernel writes the f64 accumulators; the
 *   backend rounds them to the output dtype as the TypeScript path does.
 * - `max`/`min` keep f32 lanes (the widened inputs are f32 values, so f32 compares decide as the
 *   TypeScript f64 compares do): a NaN on either side gives NaN (0x7fc00000, the f32 of JS `NaN`)
 *   and sticks; otherwise only a strictly greater (smaller) value replaces the accumulator, so
 *   the first of ±0 wins. Output: f32 values.
 * - `argmax`/`argmin`: the first index of the extreme, a NaN counting as the extreme. Output: i32.
 * - `all`/`any` over bool or u8 bytes (nonzero is true) do not depend on order, so inner = 1
 *   runs 16 bytes at a time along the reduced axis. Output: bool bytes (0 or 1).
 *
 * Inputs are f32, bf16 or f16 (bool/u8 for `all`/`any`); other dtypes stay in TypeScript. One
 * module per (op, dtype), built on first use, over the shared heap only (as the fused kernels).
 * Single-threaded: results never depend on the thread count.
 *
 * Spec: WebAssembly Core 2.0, §5.4 (instructions' binary format), §4.4.3 (vector instructions).
 *
 * @module
 */
import type { ReduceOp } from "../../backend.ts";
import type { DType } from "../../../dtype.ts";
import { type Code, I, T, uleb, V, wasmModule } from "./emit.ts";
import { wasmEnabled } from "./features.ts";
import { f16x4 } from "./gemm_module.ts";
import { heapMemory } from "../heap.ts";

const simd = (op: number, ...imm: number[]): Code => [0xfd, uleb(op), imm];
/** Opcodes this module needs beyond `emit.ts`'s (core and SIMD). */
const O = {
  i32Load8u: [0x2d, 0, 0] as Code,
  f64Load: [0x2b, 3, 0] as Code,
  i32Store8: [0x3a, 0, 0] as Code,
  f64Store: [0x39, 3, 0] as Code,
  f64Zero: [0x44, 0, 0, 0, 0, 0, 0, 0, 0] as Code,
  f32Ne: 0x5c,
  f32Lt: 0x5d,
  f32Gt: 0x5e,
  f32Eq: 0x5b,
  f64PromoteF32: 0xbb,
  i8x16Splat: simd(0x0f),
  f32x4ExtractLane0: simd(0x1f, 0),
  /** The high two f32 lanes moved to the low two (for the second promote). */
  highToLow: simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15),
  f32x4Eq: simd(0x41),
  f32x4Ne: simd(0x42),
  f32x4Lt: simd(0x43),
  f32x4Gt: simd(0x44),
  allTrue8: simd(0x63),
  minU8: simd(0x77),
  f64x2Add: simd(0xf0),
  promoteLow: simd(0x5f),
};

/** Input element codes of the generated loaders. */
type Elem = "f32" | "bf16" | "f16" | "u8";
const SIZE: Record<Elem, number> = { f32: 4, bf16: 2, f16: 2, u8: 1 };

/** Locals shared by every kernel (after the parameters). */
interface Locals {
  /** Scratch v128 pair for the f16 widening. */
  h: number;
  t: number;
}

/** Four elements at the address on the stack, widened to f32x4 (exact). */
function load4(e: Elem, l: Locals): Code {
  if (e === "f32") return V.load();
  if (e === "bf16") return [V.load16x4u(), I.i32(16), V.i32x4Shl];
  return [V.load16x4u(), f16x4(l.h, l.t)];
}

/** One element at the address on the stack, widened to f32 (exact). */
function load1(e: Elem, l: Locals): Code {
  if (e === "f32") return I.f32Load();
  if (e === "bf16") return [I.i32Load16u(), I.i32(16), I.shl, I.f32FromBits];
  return [I.i32Load16u(), V.i32x4Splat, f16x4(l.h, l.t), O.f32x4ExtractLane0];
}

/** `for (i = from; i < to; i += step) body`, unsigned compare, `br 1` leaves. */
function forRange(i: number, from: Code, to: Code, step: number, body: Code): Code {
  return [
    from,
    I.set(i),
    I.block(
      I.loop(I.get(i), to, I.geU, I.brIf(1), body, I.get(i), I.i32(step), I.add, I.set(i), I.br(0)),
    ),
  ];
}

/** `for (i = from; i + step <= to; i += step) body` (whole vectors only). */
function forVectors(i: number, from: Code, to: Code, step: number, body: Code): Code {
  return [
    from,
    I.set(i),
    I.block(I.loop(
      I.get(i),
      I.i32(step),
      I.add,
      to,
      I.gtS,
      I.brIf(1),
      body,
      I.get(i),
      I.i32(step),
      I.add,
      I.set(i),
      I.br(0),
    )),
  ];
}

// Parameters of every kernel: src, dst, outer, reduce, inner, scratch (bytes: heap offsets).
const [SRC, DST, OUTER, REDUCE, INNER, SCRATCH] = [0, 1, 2, 3, 4, 5];
// Locals: o, r, i, row (address of row r of outer o), out (address of output o's row), an
// address, v128 scratch (f16 widening) and accumulators, and scalar accumulators.
const [O_, R, IX, ROW, OUT, ADDR, VH, VT, VA, VB, VC, F64, F32A, F32B, B32] = Array.from(
  { length: 15 },
  (_, i) => 6 + i,
);
const LOCALS = [
  ...new Array(6).fill(T.i32),
  ...new Array(5).fill(T.v128),
  T.f64,
  T.f32,
  T.f32,
  T.i32,
];
const L: Locals = { h: VH, t: VT };

/** `row = src + (o·reduce + r)·inner·size` and `out = dst + o·inner·outSize`. */
function rowAddr(e: Elem): Code {
  return [
    I.get(SRC),
    I.get(O_),
    I.get(REDUCE),
    I.mul,
    I.get(R),
    I.add,
    I.get(INNER),
    I.mul,
    I.i32(SIZE[e]),
    I.mul,
    I.add,
    I.set(ROW),
  ];
}
const outAddr = (outSize: number): Code => [
  I.get(DST),
  I.get(O_),
  I.get(INNER),
  I.mul,
  I.i32(outSize),
  I.mul,
  I.add,
  I.set(OUT),
];
/** `base + i·size` for the current `i`. */
const at = (
  base: number,
  size: number,
): Code => [I.get(base), I.get(IX), I.i32(size), I.mul, I.add];

/**
 * The f64 sum kernel: `dst[o·inner + i] = Σ_r src[o, r, i]` in order r = 0, 1, …, from +0,
 * walking down each output's column (the rows of a column block stay in cache).
 */
function sumBody(e: Elem): Code {
  const s = SIZE[e];
  const STRIDE = B32; // bytes from one row to the next: inner·size
  /** `ADDR = src + (o·reduce·inner + i)·size`: output (o, i)'s element of row 0. */
  const first: Code = [
    I.get(SRC),
    I.get(O_),
    I.get(REDUCE),
    I.mul,
    I.get(INNER),
    I.mul,
    I.get(IX),
    I.add,
    I.i32(s),
    I.mul,
    I.add,
    I.set(ADDR),
  ];
  const nextRow: Code = [I.get(ADDR), I.get(STRIDE), I.add, I.set(ADDR)];
  // Four outputs at a time, their accumulators in two f64x2 registers, rows in order.
  const columns = forVectors(IX, I.i32(0), I.get(INNER), 4, [
    first,
    V.zero(),
    I.set(VB),
    V.zero(),
    I.set(VC),
    forRange(R, I.i32(0), I.get(REDUCE), 1, [
      I.get(ADDR),
      load4(e, L),
      I.set(VA),
      I.get(VB),
      I.get(VA),
      O.promoteLow,
      O.f64x2Add,
      I.set(VB),
      I.get(VC),
      I.get(VA),
      I.get(VA),
      O.highToLow,
      O.promoteLow,
      O.f64x2Add,
      I.set(VC),
      nextRow,
    ]),
    at(OUT, 8),
    I.tee(ADDR),
    I.get(VB),
    V.store(),
    I.get(ADDR),
    I.get(VC),
    V.store(16),
  ]);
  // The other outputs (all of them when inner < 4): one scalar chain each.
  const tail = I.block(I.loop(
    I.get(IX),
    I.get(INNER),
    I.geU,
    I.brIf(1),
    first,
    O.f64Zero,
    I.set(F64),
    forRange(R, I.i32(0), I.get(REDUCE), 1, [
      I.get(F64),
      I.get(ADDR),
      load1(e, L),
      O.f64PromoteF32,
      I.f64Add,
      I.set(F64),
      nextRow,
    ]),
    at(OUT, 8),
    I.get(F64),
    O.f64Store,
    I.get(IX),
    I.i32(1),
    I.add,
    I.set(IX),
    I.br(0),
  ));
  return [
    I.get(INNER),
    I.i32(s),
    I.mul,
    I.set(STRIDE),
    forRange(O_, I.i32(0), I.get(OUTER), 1, [outAddr(8), columns, tail]),
  ];
}

/**
 * `acc = (v ≠ v ∨ acc ≠ acc) ? NaN : (v ⋗ acc ? v : acc)` for f32 scalars (`gt` the compare
 * opcode): the TypeScript kernel's max/min step.
 */
function extremeScalar(v: Code, acc: number, gt: number): Code {
  return [
    I.f32(NaN),
    v,
    I.tee(F32B),
    I.get(acc),
    I.get(F32B),
    I.get(acc),
    gt,
    I.select,
    I.get(F32B),
    I.get(F32B),
    O.f32Ne,
    I.get(acc),
    I.get(acc),
    O.f32Ne,
    I.or,
    I.select,
    I.set(acc),
  ];
}

/** The f32 max/min kernel: `dst[o·inner + i]` (f32) as the TypeScript kernel's `acc`. */
function extremeBody(e: Elem, isMax: boolean): Code {
  const s = SIZE[e];
  const gt = isMax ? O.f32Gt : O.f32Lt;
  const gtV = isMax ? O.f32x4Gt : O.f32x4Lt;
  const start = isMax ? -Infinity : Infinity;
  const chain = forRange(O_, I.i32(0), I.get(OUTER), 1, [
    I.f32(start),
    I.set(F32A),
    forRange(R, I.i32(0), I.get(REDUCE), 1, [
      rowAddr(e),
      extremeScalar([I.get(ROW), load1(e, L)], F32A, gt),
    ]),
    outAddr(4),
    I.get(OUT),
    I.get(F32A),
    I.f32Store(),
  ]);
  const rows = forRange(O_, I.i32(0), I.get(OUTER), 1, [
    outAddr(4),
    forRange(IX, I.i32(0), I.get(INNER), 1, [at(OUT, 4), I.f32(start), I.f32Store()]),
    forRange(R, I.i32(0), I.get(REDUCE), 1, [
      rowAddr(e),
      forVectors(IX, I.i32(0), I.get(INNER), 4, [
        at(OUT, 4),
        I.tee(ADDR),
        at(ROW, s),
        load4(e, L),
        I.set(VA),
        I.get(ADDR),
        V.load(),
        I.set(VB),
        // NaN lanes (either side) take NaN; the others v where v ⋗ acc, else acc.
        I.i32(0x7fc00000),
        V.i32x4Splat,
        I.get(VA),
        I.get(VB),
        I.get(VA),
        I.get(VB),
        gtV,
        V.bitselect,
        I.get(VA),
        I.get(VA),
        O.f32x4Ne,
        I.get(VB),
        I.get(VB),
        O.f32x4Ne,
        V.or,
        V.bitselect,
        V.store(),
      ]),
      I.block(I.loop(
        I.get(IX),
        I.get(INNER),
        I.geU,
        I.brIf(1),
        at(OUT, 4),
        I.tee(ADDR),
        I.f32Load(),
        I.set(F32A),
        extremeScalar([at(ROW, s), load1(e, L)], F32A, gt),
        I.get(ADDR),
        I.get(F32A),
        I.f32Store(),
        I.get(IX),
        I.i32(1),
        I.add,
        I.set(IX),
        I.br(0),
      )),
    ]),
  ]);
  return [I.get(INNER), I.i32(1), I.eq, I.ifElse(chain, rows)];
}

/**
 * The argmax/argmin kernel: `dst` (i32) gets the first index of the extreme, best values kept
 * as f32 in `scratch` (`inner` floats). Row 0 sets both; row r replaces where the best is not
 * NaN and v is NaN or strictly beyond it.
 */
function argBody(e: Elem, isMax: boolean): Code {
  const s = SIZE[e];
  const gt = isMax ? O.f32Gt : O.f32Lt;
  const gtV = isMax ? O.f32x4Gt : O.f32x4Lt;
  // scalar step at element IX: best at ADDR (scratch), index at dst address on the stack.
  const stepScalar: Code = [
    at(SCRATCH, 4),
    I.tee(ADDR),
    I.f32Load(),
    I.set(F32A),
    at(ROW, s),
    load1(e, L),
    I.set(F32B),
    // take = r == 0 | (best == best & (v != v | v ⋗ best))
    I.get(R),
    I.eqz,
    I.get(F32A),
    I.get(F32A),
    O.f32Eq,
    I.get(F32B),
    I.get(F32B),
    O.f32Ne,
    I.get(F32B),
    I.get(F32A),
    gt,
    I.or,
    I.and,
    I.or,
    I.set(B32),
    I.get(ADDR),
    I.get(F32B),
    I.get(F32A),
    I.get(B32),
    I.select,
    I.f32Store(),
    at(OUT, 4),
    I.tee(ADDR),
    I.get(R),
    I.get(ADDR),
    [0x28, 2, 0], // i32.load
    I.get(B32),
    I.select,
    I.i32Store(),
  ];
  const stepVector: Code = [
    at(SCRATCH, 4),
    I.tee(ADDR),
    V.load(),
    I.set(VB),
    at(ROW, s),
    load4(e, L),
    I.set(VA),
    // take lanes: r == 0 | (best == best & (v != v | v ⋗ best))
    I.i32(0),
    I.get(R),
    I.eqz,
    I.sub, // −1 (all lanes taken) on row 0
    V.i32x4Splat,
    I.get(VB),
    I.get(VB),
    O.f32x4Eq,
    I.get(VA),
    I.get(VA),
    O.f32x4Ne,
    I.get(VA),
    I.get(VB),
    gtV,
    V.or,
    V.and,
    V.or,
    I.set(VC),
    I.get(ADDR),
    I.get(VA),
    I.get(VB),
    I.get(VC),
    V.bitselect,
    V.store(),
    at(OUT, 4),
    I.tee(ADDR),
    I.get(R),
    V.i32x4Splat,
    I.get(ADDR),
    V.load(),
    I.get(VC),
    V.bitselect,
    V.store(),
  ];
  return forRange(O_, I.i32(0), I.get(OUTER), 1, [
    outAddr(4),
    forRange(R, I.i32(0), I.get(REDUCE), 1, [
      rowAddr(e),
      forVectors(IX, I.i32(0), I.get(INNER), 4, stepVector),
      I.block(I.loop(
        I.get(IX),
        I.get(INNER),
        I.geU,
        I.brIf(1),
        stepScalar,
        I.get(IX),
        I.i32(1),
        I.add,
        I.set(IX),
        I.br(0),
      )),
    ]),
  ]);
}

/** The all/any kernel over bytes (nonzero is true): `dst` gets bool bytes 0/1. */
function boolBody(isAll: boolean): Code {
  const fold = isAll ? O.minU8 : V.or; // on byte lanes: min keeps a zero, or keeps a nonzero
  const foldScalar = isAll ? I.and : I.or;
  // inner = 1: order does not matter, so 16 bytes of the reduced axis at a time.
  const chain = forRange(O_, I.i32(0), I.get(OUTER), 1, [
    I.get(SRC),
    I.get(O_),
    I.get(REDUCE),
    I.mul,
    I.add,
    I.set(ROW),
    I.i32(isAll ? -1 : 0),
    O.i8x16Splat,
    I.set(VA),
    I.i32(isAll ? 1 : 0),
    I.set(B32),
    forVectors(IX, I.i32(0), I.get(REDUCE), 16, [I.get(VA), at(ROW, 1), V.load(), fold, I.set(VA)]),
    I.block(I.loop(
      I.get(IX),
      I.get(REDUCE),
      I.geU,
      I.brIf(1),
      I.get(B32),
      at(ROW, 1),
      O.i32Load8u,
      I.i32(0),
      I.ne,
      foldScalar,
      I.set(B32),
      I.get(IX),
      I.i32(1),
      I.add,
      I.set(IX),
      I.br(0),
    )),
    I.get(DST),
    I.get(O_),
    I.add,
    I.get(B32),
    I.get(VA),
    isAll ? O.allTrue8 : V.anyTrue,
    foldScalar,
    O.i32Store8,
  ]);
  // inner > 1: byte accumulators (0/1) in dst, each row folded in as min(byte, 1).
  const rows = forRange(O_, I.i32(0), I.get(OUTER), 1, [
    outAddr(1),
    forRange(IX, I.i32(0), I.get(INNER), 1, [at(OUT, 1), I.i32(isAll ? 1 : 0), O.i32Store8]),
    forRange(R, I.i32(0), I.get(REDUCE), 1, [
      rowAddr("u8"),
      forVectors(IX, I.i32(0), I.get(INNER), 16, [
        at(OUT, 1),
        I.tee(ADDR),
        I.get(ADDR),
        V.load(),
        at(ROW, 1),
        V.load(),
        I.i32(1),
        O.i8x16Splat,
        O.minU8,
        isAll ? V.and : V.or,
        V.store(),
      ]),
      I.block(I.loop(
        I.get(IX),
        I.get(INNER),
        I.geU,
        I.brIf(1),
        at(OUT, 1),
        I.tee(ADDR),
        I.get(ADDR),
        O.i32Load8u,
        at(ROW, 1),
        O.i32Load8u,
        I.i32(0),
        I.ne,
        foldScalar,
        O.i32Store8,
        I.get(IX),
        I.i32(1),
        I.add,
        I.set(IX),
        I.br(0),
      )),
    ]),
  ]);
  return [I.get(INNER), I.i32(1), I.eq, I.ifElse(chain, rows)];
}

/** What a kernel writes per output: f64 sums, f32 extremes, i32 indices, or bool bytes. */
export type ReduceOutput = "f64" | "f32" | "i32" | "bool";

/** The layout `op`'s WebAssembly kernel writes. */
export function wasmReduceOutput(op: ReduceOp): ReduceOutput {
  if (op === "sum") return "f64";
  if (op === "max" || op === "min") return "f32";
  if (op === "argmax" || op === "argmin") return "i32";
  return "bool";
}

/**
 * The input element code for `op` from `dtype` to `out`, or undefined when TypeScript keeps it:
 * f32/bf16/f16 sums and extremes into their own dtype, their arg-extremes into i32, and
 * all/any of bool or u8 into bool.
 */
function elemOf(op: ReduceOp, dtype: DType, out: DType): Elem | undefined {
  if (op === "all" || op === "any") {
    return (dtype === "bool" || dtype === "u8") && out === "bool" ? "u8" : undefined;
  }
  if (dtype !== "f32" && dtype !== "bf16" && dtype !== "f16") return undefined;
  return out === (op === "argmax" || op === "argmin" ? "i32" : dtype) ? dtype : undefined;
}

function body(op: ReduceOp, e: Elem): Code {
  switch (op) {
    case "sum":
      return sumBody(e);
    case "max":
    case "min":
      return extremeBody(e, op === "max");
    case "argmax":
    case "argmin":
      return argBody(e, op === "argmax");
    default:
      return boolBody(op === "all");
  }
}

/** The module bytes of `op` over elements `e` (export `k`). */
function build(op: ReduceOp, e: Elem, shared: boolean): Uint8Array {
  const params = [T.i32, T.i32, T.i32, T.i32, T.i32, T.i32];
  return wasmModule([{ name: "k", params, locals: LOCALS, body: body(op, e) }], {
    shared,
    minPages: 1,
    maxPages: 65536,
  });
}

/**
 * A reduction kernel `(src, dst, outer, reduce, inner, scratch)` over heap byte offsets: `src`
 * is `[outer, reduce, inner]` in `dtype`'s storage, `dst` gets `outer·inner` values in
 * {@linkcode wasmReduceOutput}'s layout, `scratch` holds `inner` f32 (argmax/argmin only).
 */
export type ReduceKernel = (
  src: number,
  dst: number,
  outer: number,
  reduce: number,
  inner: number,
  scratch: number,
) => void;

const kernels = new Map<string, ReduceKernel | null>();

/**
 * The WebAssembly kernel of `op` from `dtype` inputs to `out`, or `undefined` when WebAssembly
 * is off (`NBIT_WASM=0`, no SIMD), the heap is not shared, or TypeScript keeps these dtypes.
 */
export function wasmReduceKernel(
  op: ReduceOp,
  dtype: DType,
  out: DType,
): ReduceKernel | undefined {
  const e = elemOf(op, dtype, out);
  if (e === undefined || !wasmEnabled()) return undefined;
  const memory = heapMemory();
  if (typeof SharedArrayBuffer !== "function" || !(memory.buffer instanceof SharedArrayBuffer)) {
    return undefined;
  }
  const key = `${op}|${e}`;
  let kernel = kernels.get(key);
  if (kernel === undefined) {
    try {
      const bytes = build(op, e, true);
      const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes as BufferSource), {
        e: { m: memory },
      });
      kernel = inst.exports.k as ReduceKernel;
    } catch {
      kernel = null; // e.g. a page whose CSP forbids compiling WebAssembly
    }
    kernels.set(key, kernel);
  }
  return kernel ?? undefined;
}
