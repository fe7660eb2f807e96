/**
 * The CPU's fused elementwise kernel. A {@linkcode FusedKernel} becomes one generated JavaScript
 * loop (compiled once per kernel structure): each operation calls the same scalar function as
 * the eager kernel (`unaryMaps`, `binaryMaps`) and rounds its value exactly where eager
 * execution stores it (a compute array of its dtype, then `encode`), so the result has the
 * same bits while each input and output is touched once. Where code generation is not allowed
 * (a page whose CSP forbids `new Function`), the kernel is evaluated in cache-sized chunks with
 * the eager array functions themselves.
 *
 * @module
 */
import { decode, type DType, encode } from "../../dtype.ts";
import { type FusedKernel, fusedKey, type FusedOperand, operandDtype } from "../fused.ts";
import { type DType as D, roundTo } from "../../dtype.ts";
import { binaryFn, binaryMaps, unaryFn, unaryMaps } from "./elementwise.ts";

type Num = Float64Array | Float32Array | Int32Array | Uint8Array;

const CHUNK = 2048;

/** The compute array eager kernels use for `d`: f64, i32, u8 keep theirs, floats use f32. */
function computeArrayFor(d: DType, n: number): Num {
  switch (d) {
    case "f64":
      return new Float64Array(n);
    case "i32":
      return new Int32Array(n);
    case "u8":
    case "bool":
      return new Uint8Array(n);
    default:
      return new Float32Array(n);
  }
}

/** Whether storing a compute array of `d` rounds (eager `store` encodes) or keeps it as is. */
function rounds(d: DType): boolean {
  return !(d === "f64" || d === "f32" || d === "i32" || d === "u8");
}

/**
 * Evaluate `k` over widened inputs (`srcs[i]`: the whole materialized view, or the one value
 * of a broadcast scalar) into one compute array per output (`outs`, made here when not given:
 * the array type eager kernels compute in), values already rounded to the output's dtype;
 * encode them to store.
 *
 * @example
 * ```ts
 * const [y] = runFused(kernel, [new Float32Array([1, -2])]);
 * ```
 */
export function runFused(
  k: FusedKernel,
  srcs: readonly (Num | number)[],
  outs: Num[] = k.outputs.map((o) => computeArrayFor(k.ops[o].dtype, k.size)),
): Num[] {
  const loop = compiled(k, srcs);
  if (!loop) {
    runChunks(k, srcs, outs);
    return outs;
  }
  loop(srcs, k.immediates.map((m) => m.value), outs, k.size, HELPERS);
  return outs;
}

function runChunks(k: FusedKernel, srcs: readonly (Num | number)[], outs: Num[]): void {
  const n = k.size;
  const outOf = new Map(k.outputs.map((o, j) => [o, j]));
  const tmp = k.ops.map((op) => computeArrayFor(op.dtype, Math.min(CHUNK, n)));
  const splat = new Map<number, Num>();
  for (let start = 0; start < n; start += CHUNK) {
    const end = Math.min(n, start + CHUNK);
    const len = end - start;
    const get = (o: FusedOperand): Num | number => {
      if (o.kind === "imm") return k.immediates[o.index].value;
      if (o.kind === "op") {
        return len === tmp[o.index].length ? tmp[o.index] : tmp[o.index].subarray(0, len);
      }
      const s = srcs[o.index];
      return typeof s === "number" ? s : s.subarray(start, end);
    };
    // unaryFn needs an array: broadcast scalars to a chunk once per operand.
    const arrayOf = (o: FusedOperand, i: number): Num => {
      const v = get(o);
      if (typeof v !== "number") return v;
      let a = splat.get(i);
      if (!a || a.length !== len) {
        a = new Float64Array(len).fill(v);
        splat.set(i, a);
      }
      return a;
    };
    k.ops.forEach((op, i) => {
      const out = len === tmp[i].length ? tmp[i] : tmp[i].subarray(0, len);
      switch (op.op) {
        case "unary":
          unaryFn(op.kind, arrayOf(op.x, i), out);
          break;
        case "binary":
          binaryFn(op.kind, get(op.a), get(op.b), out);
          break;
        case "where": {
          const c = arrayOf(op.c, i);
          const a = get(op.a);
          const b = get(op.b);
          for (let e = 0; e < len; e++) {
            out[e] = c[e] ? (typeof a === "number" ? a : a[e]) : (typeof b === "number" ? b : b[e]);
          }
          break;
        }
        case "cast": {
          const x = arrayOf(op.x, i);
          const from = operandDtype(k, op.x);
          out.set(from === op.dtype ? x : decode(op.dtype, encode(op.dtype, x, op.opts)) as never);
          break;
        }
      }
      if (op.op !== "cast" && rounds(op.dtype)) {
        out.set(decode(op.dtype, encode(op.dtype, out)) as never);
      }
      const j = outOf.get(i);
      if (j !== undefined) outs[j].set(out as never, start);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Generated loops

type Loop = (
  ins: readonly (Num | number)[],
  imms: readonly number[],
  outs: Num[],
  n: number,
  h: typeof HELPERS,
) => void;

/** Round a value as storing it in `d` rounds it (keeps a NaN as it is, as eager storage does). */
function narrowRounder(d: D): (x: number) => number {
  if (d === "bf16") return (x) => (x !== x ? x : bf16OfF32(Math.fround(x)));
  if (d === "f16" && f16round) return (x) => f16round(Math.fround(x));
  return (x) => (x !== x ? x : roundTo(d, Math.fround(x)));
}

/** `Math.f16round` where the runtime has it (the same rounding as `roundTo("f16", x)`). */
const f16round = (Math as { f16round?: (x: number) => number }).f16round;

const word = new Float32Array(1);
const wordBits = new Uint32Array(word.buffer);

/**
 * An f32 value rounded to bf16, ties to even: the same bit trick `encode` applies to f32
 * storage (PyTorch's `round_to_nearest_even`, c10/util/BFloat16.h), for a non-NaN value.
 */
function bf16OfF32(x: number): number {
  word[0] = x;
  const w = wordBits[0];
  wordBits[0] = ((w + 0x7fff + ((w >>> 16) & 1)) >>> 16) << 16;
  return word[0];
}

const NARROW: readonly D[] = ["f16", "bf16", "f8e4m3", "f8e5m2"];

const HELPERS = {
  U: unaryMaps,
  B: binaryMaps,
  fr: Math.fround,
  R: Object.fromEntries(NARROW.map((d) => [d, narrowRounder(d)])) as Record<
    string,
    (x: number) => number
  >,
  cast: (d: D, x: number, saturate: boolean) =>
    roundTo(d, x, saturate ? { saturate: true } : undefined),
  /** A cast to bf16 of a value that is already an f32 (every source dtype but f64). */
  bf16: (x: number) => (x !== x ? roundTo("bf16", x) : bf16OfF32(x)),
  /** A cast to f16 (rounded once from the value, as `roundTo`). */
  f16: f16round ?? ((x: number) => roundTo("f16", x)),
};

const loops = new Map<string, Loop | null>();
let codegen: boolean | undefined;

/** The value an eager kernel's compute array and `store` give `x` for an op of dtype `d`. */
function stored(d: D, x: string): string {
  switch (d) {
    case "f64":
      return x;
    case "f32":
      return `fr(${x})`;
    case "i32":
      return `((${x}) | 0)`;
    case "u8":
      return `((${x}) & 255)`;
    case "bool":
      return `(((${x}) & 255) !== 0 ? 1 : 0)`;
    default:
      return `R_${d}(${x})`;
  }
}

const INLINE: Partial<Record<string, string>> = { add: "+", sub: "-", mul: "*", div: "/" };

function source(k: FusedKernel, scalar: readonly boolean[]): string {
  const lines: string[] = [
    "const U = h.U, B = h.B, fr = h.fr, cast = h.cast;",
    ...NARROW.map((d) => `const R_${d} = h.R.${d};`),
  ];
  k.inputs.forEach((_, j) => lines.push(`const I${j} = ins[${j}];`));
  k.immediates.forEach((_, j) => lines.push(`const M${j} = imms[${j}];`));
  k.outputs.forEach((_, j) => lines.push(`const O${j} = outs[${j}];`));
  const used = new Set<string>();
  for (const op of k.ops) {
    if (op.op === "unary") used.add(`const u_${op.kind} = U.${op.kind};`);
    if (op.op === "binary" && !INLINE[op.kind]) used.add(`const b_${op.kind} = B.${op.kind};`);
  }
  lines.push(...used);
  const ref = (o: FusedOperand) =>
    o.kind === "op"
      ? `v${o.index}`
      : o.kind === "imm"
      ? `M${o.index}`
      : scalar[o.index]
      ? `I${o.index}`
      : `I${o.index}[e]`;
  const body: string[] = [];
  k.ops.forEach((op, i) => {
    let expr: string;
    switch (op.op) {
      case "unary":
        expr = stored(op.dtype, `u_${op.kind}(${ref(op.x)})`);
        break;
      case "binary": {
        const sym = INLINE[op.kind];
        const e = sym
          ? `${ref(op.a)} ${sym} ${ref(op.b)}`
          : `b_${op.kind}(${ref(op.a)}, ${ref(op.b)})`;
        expr = stored(op.dtype, e);
        break;
      }
      case "where":
        expr = stored(op.dtype, `(${ref(op.c)} ? ${ref(op.a)} : ${ref(op.b)})`);
        break;
      case "cast": {
        const from = operandDtype(k, op.x);
        expr = from === op.dtype
          ? ref(op.x)
          : op.dtype === "bf16" && from !== "f64"
          ? `h.bf16(${ref(op.x)})`
          : op.dtype === "f16"
          ? `h.f16(${ref(op.x)})`
          : `cast(${JSON.stringify(op.dtype)}, ${ref(op.x)}, ${op.opts?.saturate === true})`;
        break;
      }
    }
    body.push(`const v${i} = ${expr};`);
  });
  k.outputs.forEach((o, j) => body.push(`O${j}[e] = v${o};`));
  lines.push(`for (let e = 0; e < n; e++) {`, ...body.map((l) => "  " + l), "}");
  return lines.join("\n");
}

/** The generated loop for `k` with these scalar inputs, or `undefined` without code generation. */
function compiled(k: FusedKernel, srcs: readonly (Num | number)[]): Loop | undefined {
  if (codegen === false) return undefined;
  const scalar = srcs.map((s) => typeof s === "number");
  const key = `${fusedKey(k)}|${scalar.map((b) => (b ? 1 : 0)).join("")}`;
  let loop = loops.get(key);
  if (loop === undefined) {
    try {
      loop = new Function("ins", "imms", "outs", "n", "h", source(k, scalar)) as Loop;
      codegen = true;
    } catch (e) {
      if (codegen === true) throw e; // a bug in the generated source, not a CSP refusal
      codegen = false;
      return undefined;
    }
    loops.set(key, loop);
  }
  return loop ?? undefined;
}
