/**
 * Fused elementwise kernels in WebAssembly SIMD: a {@linkcode FusedKernel} whose operations are
 * all f32, bf16, f16 or f8 arithmetic that WebAssembly rounds exactly as the TypeScript kernels do
 * (`+ − × ÷` and `sqrt` are correctly rounded in f32, and an f64 result rounded to f32 is the
 * same value; `neg`, `abs` and `relu` move bits; `maximum`/`minimum` follow the TypeScript NaN
 * and −0 rules through compares and selects; bf16, f16 and f8 (e4m3fn/e5m2, casts with or
 * without `saturate`) round to nearest even by integer bit tricks, as `encode` does, see
 * `narrow.ts`; an f8 arithmetic result keeps a NaN as it is, as the loop's rounding does), with
 * bool values (comparisons, `isfinite`, `not`, `where`) as 0.0/1.0 lanes, runs four lanes at a
 * time over heap buffers, reading and writing every dtype in its own storage. Constants are
 * splat once, into locals, before the loop. An input is a broadcast scalar, contiguous, a period
 * (bias rows: element `e mod P`) or a row scalar (element `⌊e / L⌋`, splat), see
 * {@link InputLayout}; a kernel runs over any range of whole vectors, so the worker pool can split
 * it. Vectors cover the whole length: the last one may reach up to 12 bytes past an input or
 * output, which stays inside its heap block (blocks are multiples of 64 bytes) and is never read
 * as data. Every other kernel (transcendentals, f64, integers) stays on the generated TypeScript
 * loop, so the bits never depend on which path ran.
 * One module per kernel structure, cached.
 *
 * Spec: WebAssembly Core 2.0 SIMD (§4.4.3 vector instructions; opcodes from the binary format).
 *
 * @module
 */
import type { FusedKernel, FusedOperand } from "../../fused.ts";
import { fusedKey, operandDtype } from "../../fused.ts";
import { type Code, I, T, V, wasmModule } from "./emit.ts";
import { f16Decode, f16Round, F8, f8Decode, f8Encode, f8Round } from "./narrow.ts";
import { heapMemory } from "../heap.ts";

const simd = (op: number): Code => [0xfd, op < 128 ? op : [op & 0x7f | 0x80, op >> 7]];
const F = {
  /** `v128.store64_lane`, lane 0: the low 8 bytes. */
  store64: (): Code => [0xfd, 0x5b, 3, 0, 0],
  abs: simd(0xe0),
  neg: simd(0xe1),
  sqrt: simd(0xe3),
  add: simd(0xe4),
  sub: simd(0xe5),
  mul: simd(0xe6),
  div: simd(0xe7),
  ne: simd(0x42),
  lt: simd(0x43),
  gt: simd(0x44),
};

/** Byte-lane instructions for bool inputs and outputs. */
const B = {
  /** `v128.load32_zero`: 4 bytes into the low lane. */
  load32Zero: [0xfd, 0x5c, 2, 0] as Code,
  /** `i16x8.extend_low_i8x16_u`. */
  extend8: simd(0x89),
  /** `i32x4.extend_low_i16x8_u`. */
  extend16: simd(0xa9),
  /** `f32x4.convert_i32x4_u`. */
  toF32: simd(0xfb),
  /** `i8x16.narrow_i16x8_u`. */
  narrow8: simd(0x66),
  /** `v128.store32_lane`, lane 0: the low 4 bytes. */
  store32: [0xfd, 0x5a, 2, 0, 0] as Code,
  /** `i32.load8_u`. */
  load8u: [0x2d, 0, 0] as Code,
};

const UNARY = new Set(["neg", "abs", "sqrt", "square", "relu"]);
const BINARY = new Set(["add", "sub", "mul", "div", "maximum", "minimum"]);
/** Comparisons (bool results), as the f32 compare that gives the same answer, NaN included. */
const COMPARE: Record<string, Code> = {
  equal: simd(0x41),
  notEqual: simd(0x42),
  less: simd(0x43),
  greater: simd(0x44),
  lessEqual: simd(0x45),
  greaterEqual: simd(0x46),
};

const WIDTHS = new Set(["f32", "bf16", "f16", "f8e4m3", "f8e5m2"]);
const isF8 = (d: string): d is "f8e4m3" | "f8e5m2" => d === "f8e4m3" || d === "f8e5m2";

/**
 * Whether every operation of `k` is one this path computes bit for bit: f32/bf16/f16
 * arithmetic, and bool values (comparisons, `isfinite`, `not`, `where`'s condition) kept in
 * registers as 0.0/1.0 lanes and stored as bytes 0/1.
 */
export function wasmFusible(k: FusedKernel): boolean {
  if (k.immediates.some((m) => !WIDTHS.has(m.dtype) && m.dtype !== "bool")) return false;
  if (k.outputs.some((o) => !WIDTHS.has(k.ops[o].dtype) && k.ops[o].dtype !== "bool")) {
    return false;
  }
  const wide = (o: FusedOperand) => WIDTHS.has(operandDtype(k, o));
  return k.ops.every((op) => {
    if (op.op === "unary") {
      if (op.kind === "isfinite") return op.dtype === "bool" && wide(op.x);
      if (op.kind === "not") return op.dtype === "bool" && operandDtype(k, op.x) === "bool";
      return WIDTHS.has(op.dtype) && UNARY.has(op.kind);
    }
    if (op.op === "binary") {
      if (op.kind in COMPARE) return op.dtype === "bool" && wide(op.a) && wide(op.b);
      return WIDTHS.has(op.dtype) && BINARY.has(op.kind);
    }
    if (op.op === "where") {
      return WIDTHS.has(op.dtype) && operandDtype(k, op.c) === "bool" && wide(op.a) && wide(op.b);
    }
    if (op.op === "cast") {
      return WIDTHS.has(op.dtype) && wide(op.x); // `saturate` matters for f8 only
    }
    return false;
  });
}

/**
 * How one input is read, per 4-lane vector of output elements `e … e+3`:
 * - `s`: a broadcast scalar, splat once (one parameter: its f32 bits);
 * - `c`: contiguous, element `e` (one parameter: the byte address of element 0);
 * - `p`: a period (leading axes broadcast, trailing ones contiguous), element `e mod P` with
 *   `P` a multiple of 4 (parameters: the period's address, `P` in bytes, the byte offset of the
 *   first element read);
 * - `r`: a row scalar (trailing axes broadcast), element `⌊e / L⌋` splat, with `L` a multiple of
 *   4 (parameters: the address of the first row read, `L`, the first element's place in its row).
 */
export type InputLayout = "s" | "c" | "p" | "r";

/** Parameters each input layout takes (see {@link InputLayout}). */
export const LAYOUT_PARAMS: Readonly<Record<InputLayout, number>> = { s: 1, c: 1, p: 3, r: 3 };

/** Whether `k`'s inputs suit this path in these layouts (u8 inputs only as scalars). */
function inputsFit(k: FusedKernel, layouts: readonly InputLayout[]): boolean {
  return k.inputs.every((d, j) =>
    WIDTHS.has(d) || d === "bool" || (layouts[j] === "s" && d === "u8")
  );
}

/**
 * A compiled kernel: `fn(...inputParams, ...immediateBits, ...outputAddresses, start, end)`
 * over output elements `[start, end)` (multiples of 4; every parameter an i32), and its module
 * bytes (for the worker pool).
 */
export interface WasmFused {
  /** The exported function. */
  readonly fn: (...args: number[]) => void;
  /** The module's bytes. */
  readonly bytes: Uint8Array;
  /** Number of parameters `fn` takes. */
  readonly arity: number;
}

const kernels = new Map<string, WasmFused | null>();
/** Per kernel object (jit programs and eager ops reuse theirs): layouts key → kernel. */
const byKernel = new WeakMap<FusedKernel, Map<string, WasmFused | null>>();

const NAN_BITS = 0x7fc00000; // the f32 NaN that TypeScript's `NaN` stores as

/**
 * Build the module for `k` with inputs read in `layouts`. Parameters (all i32): each input's
 * (see {@link InputLayout}), each immediate's f32 bits, each output's address, then the first
 * and the end element (multiples of 4).
 */
function build(k: FusedKernel, layouts: readonly InputLayout[], shared: boolean): Uint8Array {
  const params: number[] = [];
  const inParam: number[] = [];
  k.inputs.forEach((_, j) => {
    inParam[j] = params.length;
    for (let q = 0; q < LAYOUT_PARAMS[layouts[j]]; q++) params.push(T.i32);
  });
  const immParam = k.immediates.map(() => params.push(T.i32) - 1);
  const outParam = k.outputs.map(() => params.push(T.i32) - 1);
  const startParam = params.push(T.i32) - 1;
  const endParam = params.push(T.i32) - 1;
  // Locals: e (element index, step 4), end, one v128 per input, immediate and op.
  let next = params.length;
  const locals: number[] = [];
  const local = (t: number) => (locals.push(t), next++);
  const iLocal = startParam;
  const endLocal = endParam;
  const flag = local(T.i32);
  const inVec = k.inputs.map(() => local(T.v128));
  const immVec = k.immediates.map(() => local(T.v128));
  const opVec = k.ops.map(() => local(T.v128));
  // Ops whose value later ops read (an f16 op kept only for its store skips widening back).
  const used = new Set<number>();
  for (const op of k.ops) {
    const xs = op.op === "unary" || op.op === "cast"
      ? [op.x]
      : op.op === "binary"
      ? [op.a, op.b]
      : [op.c, op.a, op.b];
    for (const x of xs) if (x.kind === "op") used.add(x.index);
  }
  /** f16 bits (i32 lanes) of each op that rounds to f16, for its store. */
  const opBits = new Map<number, number>();
  const zeroVec = local(T.v128);
  const nanVec = local(T.v128);
  const oneVec = local(T.v128);
  const tmp = local(T.v128);
  const s1 = local(T.v128), s2 = local(T.v128), s3 = local(T.v128);
  // Constants, hoisted: one local each, set before the loop.
  const konsts = new Map<number, number>();
  const konstInit: Code[] = [];
  const k4 = (bits: number): Code => {
    let at = konsts.get(bits | 0);
    if (at === undefined) {
      konsts.set(bits | 0, at = local(T.v128));
      konstInit.push(I.i32(bits | 0), V.i32x4Splat, I.set(at));
    }
    return I.get(at);
  };
  /** i32 lanes of f16 bits on the stack as f32 lanes. */
  const f16x4 = (h: number, a: number): Code => [I.set(h), f16Decode(h, tmp, a, k4)];
  /** f32 lanes in `w` as f16 bits. */
  const f16Lanes = (w: number, a: number): Code => f16Round(w, a, k4);
  const splatI = k4;
  // f32 lanes `x` rounded to bf16 as `encode` does (ties to even), a NaN kept as it is:
  // bitselect(a, b, m) takes a where m is set, so NaN lanes take x, the others the rounded value.
  const roundBf16 = (code: Code): Code => [code, I.set(tmp), bf16Select(I.get(tmp))];
  const bf16Select = (x: Code): Code => [
    x, // NaN lanes keep x
    x,
    I.i32(16),
    V.i32x4ShrU,
    splatI(1),
    V.and,
    splatI(0x7fff),
    V.i32x4Add,
    x,
    V.i32x4Add,
    splatI(0xffff0000 | 0),
    V.and,
    x,
    x,
    F.ne,
    V.bitselect,
  ];
  const get = (o: FusedOperand): Code =>
    I.get(o.kind === "op" ? opVec[o.index] : o.kind === "imm" ? immVec[o.index] : inVec[o.index]);

  const pre: Code[] = [
    V.zero(),
    I.set(zeroVec),
    I.i32(NAN_BITS),
    V.i32x4Splat,
    I.set(nanVec),
    I.i32(0x3f800000), // 1.0f
    V.i32x4Splat,
    I.set(oneVec),
    ...k.immediates.map((_, j) => [I.get(immParam[j]), V.i32x4Splat, I.set(immVec[j])]),
    ...k.inputs.map((_, j) =>
      layouts[j] === "s" ? [I.get(inParam[j]), V.i32x4Splat, I.set(inVec[j])] : []
    ),
  ];
  const body: Code[] = [];
  // Byte address of element e in a buffer of `bytes`-wide elements.
  const at = (
    ptr: number,
    bytes: number,
  ): Code => [I.get(ptr), I.get(iLocal), I.i32(Math.log2(bytes)), I.shl, I.add];
  const log2 = (d: string) => d === "f32" ? 2 : d === "bf16" || d === "f16" ? 1 : 0;
  /** Four lanes of `d` at the address `addr` leaves on the stack, as f32 lanes. */
  const loadVec = (d: string, addr: Code): Code =>
    d === "f32"
      ? [addr, V.load()]
      : d === "bf16"
      ? [addr, V.load16x4u(), I.i32(16), V.i32x4Shl]
      : d === "f16"
      ? [addr, V.load16x4u(), f16x4(s1, s2)]
      : isF8(d)
      ? [addr, B.load32Zero, B.extend8, B.extend16, I.set(s1), f8Decode(F8[d], s1, tmp, s2, k4)]
      : [addr, B.load32Zero, B.extend8, B.extend16, B.toF32]; // bool bytes → 0.0/1.0 lanes
  /** One element of `d` at `addr`, splat to four f32 lanes. */
  const loadSplat = (d: string, addr: Code): Code =>
    d === "f32"
      ? [addr, V.load32Splat()]
      : d === "bf16"
      ? [addr, I.i32Load16u(), I.i32(16), I.shl, V.i32x4Splat]
      : d === "f16"
      ? [addr, I.i32Load16u(), V.i32x4Splat, f16x4(s1, s2)]
      : isF8(d)
      ? [addr, B.load8u, V.i32x4Splat, I.set(s1), f8Decode(F8[d], s1, tmp, s2, k4)]
      : [addr, B.load8u, V.i32x4Splat, B.toF32];
  const advance: Code[] = [];
  k.inputs.forEach((d, j) => {
    const p = inParam[j];
    switch (layouts[j]) {
      case "s":
        return;
      case "c":
        body.push(loadVec(d, at(p, 1 << log2(d))), I.set(inVec[j]));
        return;
      case "p": // base + off; off steps by one vector and wraps at the period's end
        body.push(loadVec(d, [I.get(p), I.get(p + 2), I.add]), I.set(inVec[j]));
        advance.push(
          [I.get(p + 2), I.i32(4 << log2(d)), I.add, I.tee(p + 2), I.i32(0)],
          [I.get(p + 2), I.get(p + 1), I.ltU, I.select, I.set(p + 2)],
        );
        return;
      case "r": // the row's element, splat; the row moves on after L elements
        body.push(loadSplat(d, I.get(p)), I.set(inVec[j]));
        advance.push(
          [I.get(p + 2), I.i32(4), I.add, I.tee(p + 2), I.get(p + 1), I.eq, I.tee(flag)],
          [I.i32(log2(d)), I.shl, I.get(p), I.add, I.set(p)],
          [I.i32(0), I.get(p + 2), I.get(flag), I.select, I.set(p + 2)],
        );
    }
  });
  k.ops.forEach((op, i) => {
    let code: Code;
    if (op.op === "unary") {
      const x = get(op.x);
      switch (op.kind) {
        case "neg":
          code = [x, F.neg];
          break;
        case "abs":
          code = [x, F.abs];
          break;
        case "sqrt":
          code = [x, F.sqrt];
          break;
        case "square":
          code = [x, x, F.mul];
          break;
        case "isfinite": // |x| < Inf, as 1.0/0.0 (NaN compares false)
          code = [x, F.abs, k4(0x7f800000), COMPARE.less, I.get(oneVec), V.and];
          break;
        case "not": // x is 0.0 or 1.0
          code = [x, I.get(zeroVec), COMPARE.equal, I.get(oneVec), V.and];
          break;
        default: // relu: x > 0 or NaN keeps x, else +0
          code = [x, I.get(zeroVec), x, I.get(zeroVec), F.gt, x, x, F.ne, V.or, V.bitselect];
      }
    } else if (op.op === "binary" && op.kind in COMPARE) {
      code = [get(op.a), get(op.b), COMPARE[op.kind], I.get(oneVec), V.and]; // 1.0 or 0.0
    } else if (op.op === "where") {
      // c ? a : b, with c a bool lane (0.0 or 1.0).
      code = [get(op.a), get(op.b), get(op.c), I.get(zeroVec), F.ne, V.bitselect];
    } else if (op.op === "binary") {
      const a = get(op.a), b = get(op.b);
      switch (op.kind) {
        case "add":
          code = [a, b, F.add];
          break;
        case "sub":
          code = [a, b, F.sub];
          break;
        case "mul":
          code = [a, b, F.mul];
          break;
        case "div":
          code = [a, b, F.div];
          break;
        default: {
          // a > b ? a : b (maximum) or a < b ? a : b (minimum); NaN in either gives NaN.
          const pick = [a, b, a, b, op.kind === "maximum" ? F.gt : F.lt, V.bitselect];
          code = [I.get(nanVec), pick, a, a, F.ne, b, b, F.ne, V.or, V.bitselect];
        }
      }
    } else if (op.op === "cast") {
      code = get(op.x); // f32 ↔ bf16: widening is exact, narrowing rounds below
    } else throw new Error("wasm fused: unsupported op");
    // An op's value rounds to its dtype (a cast from the same dtype, or a widening, is exact).
    const from = op.op === "cast" ? operandDtype(k, op.x) : "f32";
    if (isF8(op.dtype) && from !== op.dtype) {
      // f8: the rounded value (f32 lanes); an arithmetic op keeps a NaN as it is (as the loop).
      const sat = op.op === "cast" && op.opts?.saturate === true;
      body.push(code, I.set(s1), f8Round(F8[op.dtype], sat, s1, s2, s3, k4));
      if (op.op !== "cast") body.push(I.get(s1), I.get(s1), I.get(s1), COMPARE.equal, V.bitselect);
      body.push(I.set(opVec[i]));
      return;
    }
    if (op.dtype === "f16" && from !== "f16") {
      // f16: the rounded bits once; the f32 value of them only where later ops read it.
      const bits = local(T.v128);
      opBits.set(i, bits);
      body.push(code, I.set(s1), f16Lanes(s1, s2), I.set(bits));
      if (used.has(i)) body.push(I.get(bits), f16x4(s2, s3), I.set(opVec[i]));
      return;
    }
    body.push(op.dtype === "bf16" && from !== "bf16" ? roundBf16(code) : code, I.set(opVec[i]));
  });
  k.outputs.forEach((o, j) => {
    const d = k.ops[o].dtype;
    if (d === "f32") {
      body.push(at(outParam[j], 4), I.get(opVec[o]), V.store());
      return;
    }
    if (d === "bool" || isF8(d)) {
      // 0.0/1.0 lanes → bytes 0/1 (f8 values → codes): four lanes narrowed to the low 4 bytes.
      const v = I.get(opVec[o]);
      body.push(
        at(outParam[j], 1),
        isF8(d) ? f8Encode(F8[d], opVec[o], s1, k4) : [v, I.get(zeroVec), F.ne, splatI(1), V.and],
        I.set(tmp),
        I.get(tmp),
        I.get(tmp),
        V.i16x8NarrowU,
        I.set(tmp),
        I.get(tmp),
        I.get(tmp),
        B.narrow8,
        B.store32,
      );
      return;
    }
    if (d === "f16") {
      // f16 storage: the op's f16 bits (else those of its f16-valued lanes), 4 u16 in the low
      // 8 bytes.
      const bits = opBits.get(o);
      body.push(
        at(outParam[j], 2),
        bits !== undefined ? I.get(bits) : [I.get(opVec[o]), I.set(s1), f16Lanes(s1, s2)],
        I.set(tmp),
        I.get(tmp),
        I.get(tmp),
        V.i16x8NarrowU,
        F.store64(),
      );
      return;
    }
    // bf16 storage: the high half of each (already rounded) lane; a NaN as encode stores it,
    // sign | 0x7fc0.
    const v = I.get(opVec[o]);
    body.push(
      at(outParam[j], 2),
      [v, I.i32(16), V.i32x4ShrU, splatI(0x8000), V.and, splatI(0x7fc0), V.or], // NaN lanes
      [v, I.i32(16), V.i32x4ShrU], // the others
      [v, v, F.ne],
      V.bitselect,
      I.set(tmp),
      I.get(tmp),
      I.get(tmp),
      V.i16x8NarrowU,
      F.store64(),
    );
  });
  const loop = I.block(
    I.loop(
      I.get(iLocal),
      I.get(endLocal),
      I.geU,
      I.brIf(1),
      ...body,
      ...advance,
      I.get(iLocal),
      I.i32(4),
      I.add,
      I.set(iLocal),
      I.br(0),
    ),
  );
  return wasmModule([{ name: "k", params, locals, body: [...pre, ...konstInit, loop] }], {
    shared,
    minPages: 1,
    maxPages: 65536,
  });
}

/**
 * The SIMD kernel for `k` with inputs in `layouts`, or `undefined` when the heap is not shared
 * (its limits differ), WebAssembly cannot compile, or `k` has an operation or an input this path
 * does not do. The caller checks `wasmEnabled()`.
 * Compiled once per kernel structure and layouts (and looked up by the kernel object first).
 */
export function wasmFusedKernel(
  k: FusedKernel,
  layouts: readonly InputLayout[],
): WasmFused | undefined {
  const lk = layouts.join("");
  let mine = byKernel.get(k);
  const hit = mine?.get(lk);
  if (hit !== undefined) return hit ?? undefined;
  const kernel = compile(k, layouts, lk);
  if (!mine) byKernel.set(k, mine = new Map());
  mine.set(lk, kernel);
  return kernel ?? undefined;
}

function compile(k: FusedKernel, layouts: readonly InputLayout[], lk: string): WasmFused | null {
  if (!wasmFusible(k) || !inputsFit(k, layouts)) return null;
  const memory = heapMemory();
  const shared = typeof SharedArrayBuffer === "function" &&
    memory.buffer instanceof SharedArrayBuffer;
  if (!shared) return null;
  const key = `${fusedKey(k)}|${lk}`;
  let kernel = kernels.get(key);
  if (kernel === undefined) {
    try {
      const bytes = build(k, layouts, shared);
      const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes as BufferSource), {
        e: { m: memory },
      });
      const arity = layouts.reduce((a, l) => a + LAYOUT_PARAMS[l], 0) + k.immediates.length +
        k.outputs.length + 2;
      kernel = { fn: inst.exports.k as WasmFused["fn"], bytes, arity };
    } catch {
      kernel = null; // e.g. a page whose CSP forbids compiling WebAssembly
    }
    kernels.set(key, kernel);
  }
  return kernel;
}
