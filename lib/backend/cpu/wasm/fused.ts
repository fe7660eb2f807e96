/**
 * Fused elementwise kernels in WebAssembly SIMD: a {@linkcode FusedKernel} whose operations are
 * all f32, bf16 or f16 arithmetic that WebAssembly rounds exactly as the TypeScript kernels do
 * (`+ − × ÷` and `sqrt` are correctly rounded in f32, and an f64 result rounded to f32 is the
 * same value; `neg`, `abs` and `relu` move bits; `maximum`/`minimum` follow the TypeScript NaN
 * and −0 rules through compares and selects; bf16 and f16 round to nearest even by integer bit
 * tricks, as `encode` does), with bool values (comparisons, `isfinite`, `not`, `where`) as
 * 0.0/1.0 lanes, runs four lanes at a time over heap buffers, reading and writing every dtype
 * in its own storage. Vectors cover the whole length: the last one
 * may reach up to 12 bytes past an input or output, which stays inside its heap block (blocks are
 * multiples of 64 bytes) and is never read as data. Every other kernel (transcendentals, f8,
 * integers) stays on the generated TypeScript loop, so the bits never depend on which path ran.
 * One module per kernel structure, cached.
 *
 * Spec: WebAssembly Core 2.0 SIMD (§4.4.3 vector instructions; opcodes from the binary format).
 *
 * @module
 */
import type { FusedKernel, FusedOperand } from "../../fused.ts";
import { fusedKey, operandDtype } from "../../fused.ts";
import { type Code, I, T, V, wasmModule } from "./emit.ts";
import { wasmEnabled } from "./features.ts";
import { f16Lanes, f16x4 } from "./gemm_module.ts";
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

const WIDTHS = new Set(["f32", "bf16", "f16"]);

/**
 * Whether every operation of `k` is one this path computes bit for bit: f32/bf16 arithmetic,
 * and bool values (comparisons, `isfinite`, `not`, `where`'s condition) kept in registers as
 * 0.0/1.0 lanes. Bool inputs only as broadcast scalars, and no bool outputs.
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
      return WIDTHS.has(op.dtype) && !op.opts?.saturate && wide(op.x);
    }
    return false;
  });
}

/** Whether `k`'s inputs suit this path for these scalar flags (bool inputs only as scalars). */
function inputsFit(k: FusedKernel, scalar: readonly boolean[]): boolean {
  return k.inputs.every((d, j) => WIDTHS.has(d) || d === "bool" || (scalar[j] && d === "u8"));
}

type Kernel = (...args: number[]) => void;
const kernels = new Map<string, Kernel | null>();

const NAN_BITS = 0x7fc00000; // the f32 NaN that TypeScript's `NaN` stores as

/**
 * Build the module for `k` with `scalar[i]` telling broadcast-scalar inputs. Parameters: one
 * pointer per array input, one f32 per scalar input, one f32 per immediate, one pointer per
 * output, then the number of 4-lane groups.
 */
function build(k: FusedKernel, scalar: readonly boolean[], shared: boolean): Uint8Array {
  const params: number[] = [];
  const inParam: number[] = [];
  k.inputs.forEach((_, j) => {
    inParam[j] = params.length;
    params.push(scalar[j] ? T.f32 : T.i32);
  });
  const immParam = k.immediates.map(() => params.push(T.f32) - 1);
  const outParam = k.outputs.map(() => params.push(T.i32) - 1);
  const countParam = params.push(T.i32) - 1;
  // Locals: e (element index, step 4), end, one v128 per input, immediate and op.
  let next = params.length;
  const locals: number[] = [];
  const local = (t: number) => (locals.push(t), next++);
  const iLocal = local(T.i32);
  const endLocal = local(T.i32);
  const inVec = k.inputs.map(() => local(T.v128));
  const immVec = k.immediates.map(() => local(T.v128));
  const opVec = k.ops.map(() => local(T.v128));
  const zeroVec = local(T.v128);
  const nanVec = local(T.v128);
  const oneVec = local(T.v128);
  const tmp = local(T.v128);
  const s1 = local(T.v128), s2 = local(T.v128), s3 = local(T.v128);
  /** f32 lanes rounded to f16 (nearest even, as `roundTo`), back as f32 lanes. */
  const roundF16 = (code: Code): Code => [code, I.set(s1), f16Lanes(s1, s2, s3), f16x4(s2, s3)];
  const splatI = (v: number): Code => [I.i32(v), V.i32x4Splat];
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
    ...k.immediates.map((_, j) => [I.get(immParam[j]), V.f32x4Splat, I.set(immVec[j])]),
    ...k.inputs.map((_, j) => scalar[j] ? [I.get(inParam[j]), V.f32x4Splat, I.set(inVec[j])] : []),
    I.get(countParam),
    I.i32(4),
    I.mul,
    I.set(endLocal),
    I.i32(0),
    I.set(iLocal),
  ];
  const body: Code[] = [];
  // Byte address of element e in a buffer of `bytes`-wide elements.
  const at = (
    ptr: number,
    bytes: number,
  ): Code => [I.get(ptr), I.get(iLocal), I.i32(Math.log2(bytes)), I.shl, I.add];
  k.inputs.forEach((d, j) => {
    if (scalar[j]) return;
    if (d === "f32") body.push(at(inParam[j], 4), V.load(), I.set(inVec[j]));
    else if (d === "bf16") {
      body.push(at(inParam[j], 2), V.load16x4u(), I.i32(16), V.i32x4Shl, I.set(inVec[j]));
    } else if (d === "f16") {
      body.push(at(inParam[j], 2), V.load16x4u(), f16x4(s1, s2), I.set(inVec[j]));
    } else {
      // bool bytes (0 or 1) → 0.0/1.0 lanes.
      body.push(at(inParam[j], 1), B.load32Zero, B.extend8, B.extend16, B.toF32, I.set(inVec[j]));
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
          code = [x, F.abs, I.i32(0x7f800000), V.i32x4Splat, COMPARE.less, I.get(oneVec), V.and];
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
    const rounded = op.dtype === "bf16" && from !== "bf16"
      ? roundBf16(code)
      : op.dtype === "f16" && from !== "f16"
      ? roundF16(code)
      : code;
    body.push(rounded, I.set(opVec[i]));
  });
  k.outputs.forEach((o, j) => {
    const d = k.ops[o].dtype;
    if (d === "f32") {
      body.push(at(outParam[j], 4), I.get(opVec[o]), V.store());
      return;
    }
    if (d === "bool") {
      // 0.0/1.0 lanes → bytes 0/1: four lanes narrowed to the low 4 bytes.
      const v = I.get(opVec[o]);
      body.push(
        at(outParam[j], 1),
        [v, I.get(zeroVec), F.ne, splatI(1), V.and],
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
      // f16 storage: the (already f16-valued) lanes' f16 bits, 4 u16 in the low 8 bytes.
      body.push(
        at(outParam[j], 2),
        I.get(opVec[o]),
        I.set(s1),
        f16Lanes(s1, s2, s3),
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
      I.get(iLocal),
      I.i32(4),
      I.add,
      I.set(iLocal),
      I.br(0),
    ),
  );
  return wasmModule([{ name: "k", params, locals, body: [...pre, loop] }], {
    shared,
    minPages: 1,
    maxPages: 65536,
  });
}

/**
 * The SIMD kernel for `k` (with these scalar inputs), or `undefined` when WebAssembly is off,
 * the heap is not shared (its limits differ), or `k` has an operation this path does not do.
 */
export function wasmFusedKernel(
  k: FusedKernel,
  scalar: readonly boolean[],
): Kernel | undefined {
  if (!wasmEnabled() || !wasmFusible(k) || !inputsFit(k, scalar)) return undefined;
  const memory = heapMemory();
  const shared = typeof SharedArrayBuffer === "function" &&
    memory.buffer instanceof SharedArrayBuffer;
  if (!shared) return undefined;
  const key = `${fusedKey(k)}|${scalar.map((s) => (s ? 1 : 0)).join("")}`;
  let kernel = kernels.get(key);
  if (kernel === undefined) {
    try {
      const bytes = build(k, scalar, shared);
      const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes as BufferSource), {
        e: { m: memory },
      });
      kernel = inst.exports.k as Kernel;
    } catch {
      kernel = null; // e.g. a page whose CSP forbids compiling WebAssembly
    }
    kernels.set(key, kernel);
  }
  return kernel ?? undefined;
}
