/**
 * WGSL of a fused elementwise kernel ({@linkcode FusedKernel}): each operation becomes one WGSL
 * function over raw lane bits whose body is the very lane code of the eager kernel
 * (`unaryLane`, `binaryLane`, `whereLane`, `castLane`), so every operation decodes its operands
 * and rounds its result exactly as the eager kernel does when it loads from and stores to
 * memory. Sizes, strides, offsets and immediates are u32 words of the uniform block (never WGSL
 * literals), so one pipeline serves every size and every scalar value of a structure.
 *
 * One invocation computes `P` consecutive elements, `P` the most elements per word among the
 * outputs, and writes whole words of every output (packed outputs never race). The `vec4` form
 * (plain kernels only: every operand 32 bits wide, inputs contiguous or scalar, `n` and
 * contiguous offsets multiples of 4) binds contiguous operands as `array<vec4<u32>>` and computes
 * 4 elements per invocation: one 16-byte load per input and one store per output instead of
 * four, the same lane function per element, its contiguous inputs passed as arguments (a CPU
 * adapter such as lavapipe runs scalar loads as per-lane gathers). Its speed-up is not measured
 * on the current code: the bench step's large elementwise kernels (ReLU backward, Adam) now run
 * as matmul epilogues, which keep the scalar form, so `bench/webgpu_kernels.ts --only fused` no
 * longer isolates them.
 *
 * Parameters: `[n, per input: offset (+ shape[0..R) and strides[0..R) when strided),
 * immediates…, zero]`. `zero` is always 0: with `opaque` set, every operation's result is ORed
 * with it before its consumers read it, so each operation sees operands as unknown as the eager
 * kernel's loads from memory: a compiler cannot contract a product into a later sum (FMA), fold
 * a known comparison result into a later op, or otherwise rewrite across operations the eager
 * kernels keep apart. (Measured: without it, Mesa's GL path folded `maximum(x, f32(x < x))`
 * into a max that returns −0 for x = −0, where the eager kernel returns +0.)
 *
 * @example
 * ```ts
 * const spec = fusedSpec(kernel, [{ mode: "contig", rank: 1 }], false);
 * const k = fusedKernel(spec); // runtime Kernel: key, code, bindings
 * ```
 *
 * @module
 */
import type { DType } from "../../../dtype.ts";
import { type FusedKernel, fusedKey, type FusedOperand, operandDtype } from "../../fused.ts";
import type { Kernel } from "../runtime.ts";
import type { Mode } from "../views.ts";
import { helpers, perWord, rawLoad, rawToF32, toI32 } from "./dtype.ts";
import { binaryLane, castLane, unaryLane, whereLane } from "./elementwise.ts";
import { type Lane, type Vals, WG } from "./map.ts";

/** How one input is indexed: its coalesced mode and rank (strided inputs only). */
export interface FusedIn {
  readonly mode: Mode;
  readonly rank: number;
}

/** A fused kernel's compile-time signature: the kernel structure plus input indexing. */
export interface FusedSpec {
  readonly kernel: FusedKernel;
  readonly ins: readonly FusedIn[];
  /** Keep every operation's result opaque to the compiler (see the module doc). */
  readonly opaque: boolean;
  /** The 4-elements-per-invocation form (see the module doc and {@linkcode fusedVec4}). */
  readonly vec4?: boolean;
}

/**
 * Whether a plain fused kernel over these inputs may take the `vec4` form: every input and
 * output 32 bits wide, every input contiguous or scalar, `n` and each contiguous input's word
 * offset multiples of 4.
 *
 * @example
 * ```ts
 * fusedVec4(kernel, [{ mode: "contig", rank: 0 }], [0]); // true for f32 in, f32 out, n % 4 == 0
 * ```
 */
export function fusedVec4(
  k: FusedKernel,
  ins: readonly FusedIn[],
  offsets: readonly number[],
): boolean {
  return !k.reduce && k.size % 4 === 0 &&
    k.outputs.every((o) => perWord(k.ops[o].dtype) === 1) &&
    k.inputs.every((d) => perWord(d) === 1) &&
    ins.every((x, j) => x.mode === "scalar" || (x.mode === "contig" && offsets[j] % 4 === 0));
}

/** Elements per invocation: the most elements per word among the outputs. */
export function fusedPer(k: FusedKernel): number {
  return Math.max(1, ...k.outputs.map((o) => perWord(k.ops[o].dtype)));
}

/** Index of the first immediate in the parameters. */
export function immBase(spec: Pick<FusedSpec, "ins">): number {
  let n = 1;
  for (const x of spec.ins) n += 1 + (x.mode === "strided" ? 2 * x.rank : 0);
  return n;
}

/**
 * The runtime kernel of a fused signature (cache key, WGSL, binding counts).
 *
 * @example
 * ```ts
 * fusedKernel(spec).key; // "fused:f32|f32|b:mul:i0:m0:f32|0:contig:o0"
 * ```
 */
export function fusedKernel(spec: FusedSpec): Kernel {
  const base = immBase(spec);
  const params = base + spec.kernel.immediates.length + 1;
  const modes = spec.ins.map((x) => x.mode === "strided" ? `s${x.rank}` : x.mode[0]).join(",");
  return {
    key: `fused:${fusedKey(spec.kernel)}:${modes}:o${spec.opaque ? 1 : 0}${spec.vec4 ? ":v4" : ""}`,
    inputs: spec.ins.length,
    outputs: spec.kernel.outputs.length,
    params,
    code: () => fusedCode(spec, params),
  };
}

/** The number of uniform words of a fused signature (see `fusedParams`). */
export function fusedParamCount(spec: FusedSpec): number {
  return immBase(spec) + spec.kernel.immediates.length + 1;
}

/** The raw lane bits (u32) of an immediate `value` of dtype `d`, as a 0-d tensor stores it. */
export function immediateBits(d: DType, bits: Uint8Array): number {
  let lane = 0;
  for (let i = bits.length - 1; i >= 0; i--) lane = lane * 256 + bits[i];
  return d === "bool" ? (lane !== 0 ? 1 : 0) : lane >>> 0;
}

/** The eager lane code of operation `i` (its operand dtypes and output dtype). */
function opLane(k: FusedKernel, i: number): { lane: (v: Vals) => Lane; args: FusedOperand[] } {
  const op = k.ops[i];
  const d = (o: FusedOperand) => operandDtype(k, o);
  switch (op.op) {
    case "unary":
      return { lane: unaryLane(op.kind, d(op.x), op.dtype), args: [op.x] };
    case "binary":
      return { lane: binaryLane(op.kind, [d(op.a), d(op.b)], op.dtype), args: [op.a, op.b] };
    case "where":
      return {
        lane: whereLane([d(op.c), d(op.a), d(op.b)], op.dtype),
        args: [op.c, op.a, op.b],
      };
    case "cast":
      return { lane: castLane(d(op.x), op.dtype, op.opts), args: [op.x] };
  }
}

/**
 * The WGSL a fused kernel's `main` builds on: one function per operation and
 * `lane(e) -> Outs`, which computes every operation at element `e` and returns the raw bits of
 * the operations `fields` names (as `Outs.v0…`), in order (inputs named by `opts.args` are
 * arguments `xj` after `e` instead). Parameters are read through `acc`
 * (a WGSL function `acc(i) -> u32` the caller declares, with the layout of `fusedParams`); the
 * lane function is called `name` (default `lane`), and
 * `deps` lists the helpers the caller must emit once (see `helpers`).
 *
 * @example
 * ```ts
 * const { deps, code } = fusedLanes(spec, [0], "p"); // lane(e) of a one-output kernel
 * ```
 */
export function fusedLanes(
  spec: FusedSpec,
  fields: readonly number[],
  acc: string,
  name = "lane",
  opts: LaneOptions = {},
): { deps: Set<string>; code: string } {
  const buf = (j: number) => `I${j + (opts.bufOffset ?? 0)}`;
  const argIns = opts.args ?? (opts.arg0 ? [0] : []);
  const base = immBase(spec);
  const k = spec.kernel;
  const deps = new Set<string>();
  const modules = new Set<string>();
  const fns: string[] = [];
  // One function per operation, its body the eager lane code over raw argument bits.
  k.ops.forEach((_, i) => {
    const { lane, args } = opLane(k, i);
    const dts = args.map((a) => operandDtype(k, a));
    const vals: Vals = {
      raw: (j) => `a${j}`,
      f: (j) => {
        const l = rawToF32(dts[j], `a${j}`);
        l.deps.forEach((n) => deps.add(n));
        return l.expr;
      },
      i: (j) => toI32(dts[j], `a${j}`),
      extra: () => {
        throw new Error("webgpu: internal error, a fused operation has no extra parameters");
      },
    };
    const l = lane(vals);
    l.deps.forEach((n) => deps.add(n));
    if (l.module) modules.add(l.module);
    const sig = args.map((_, j) => `a${j}: u32`).join(", ");
    fns.push(`fn op${i}(${sig}) -> u32 {\n${l.code}\n  return ${l.bits};\n}`);
  });
  // Input loads for element e, each view indexed on its own.
  const body: string[] = [];
  let at = 1;
  const zero = `${acc}(${base + k.immediates.length}u)`;
  if (spec.opaque) body.push(`  let z = ${zero};`);
  spec.ins.forEach((x, j) => {
    const off = `${acc}(${at}u)`;
    const dt = k.inputs[j];
    if (argIns.includes(j)) body.push(`  let r${j} = ${spec.opaque ? `x${j} | z` : `x${j}`};`);
    else if (x.mode === "contig") body.push(`  let r${j} = ${rawLoad(buf(j), dt, `${off} + e`)};`);
    else if (x.mode === "scalar") body.push(`  let r${j} = ${rawLoad(buf(j), dt, off)};`);
    else {
      body.push(`  var o${j} = ${off};`, "  { var rem = e;");
      for (let d = x.rank - 1; d >= 0; d--) {
        body.push(
          `    { let s = ${acc}(${at + 1 + d}u); let q = rem / s;` +
            ` o${j} = o${j} + (rem - q * s) * ${acc}(${at + 1 + x.rank + d}u); rem = q; }`,
        );
      }
      body.push("  }", `  let r${j} = ${rawLoad(buf(j), dt, `o${j}`)};`);
    }
    at += 1 + (x.mode === "strided" ? 2 * x.rank : 0);
  });
  const ref = (o: FusedOperand) =>
    o.kind === "input"
      ? `r${o.index}`
      : o.kind === "imm"
      ? `${acc}(${base + o.index}u)`
      : `t${o.index}`;
  k.ops.forEach((_, i) => {
    const call = `op${i}(${opLane(k, i).args.map(ref).join(", ")})`;
    body.push(`  let t${i} = ${spec.opaque ? `${call} | z` : call};`);
  });
  body.push(`  return Outs(${fields.map((o) => `t${o}`).join(", ")});`);
  const struct = fields.length ? fields.map((_, j) => `v${j}: u32`).join(", ") : "v: u32";
  const code = `${[...modules].join("\n")}
struct Outs { ${struct} }
${fns.join("\n")}
fn ${name}(${["e", ...argIns.map((j) => `x${j}`)].map((a) => `${a}: u32`).join(", ")}) -> Outs {
${body.join("\n")}
}`;
  return { deps, code };
}

/** Variants of {@linkcode fusedLanes}. */
export interface LaneOptions {
  /** Input 0 is the lane function's argument `x0` (raw bits), not a buffer read. */
  readonly arg0?: boolean;
  /** Inputs that are the lane function's arguments `xj` (raw bits, in order); overrides `arg0`. */
  readonly args?: readonly number[];
  /** Input j reads buffer `I(j + bufOffset)` (default 0). */
  readonly bufOffset?: number;
}

/**
 * Declarations of a fused kernel's bindings: the uniform `P` with its accessor `p`, inputs
 * `I0…` and `outputs` storage outputs `O0…` (in the `vec4` form, contiguous inputs and the
 * outputs are arrays of `vec4<u32>`).
 */
export function fusedDecl(spec: FusedSpec, params: number, outputs: number): string {
  const word = (contig: boolean) => spec.vec4 && contig ? "vec4<u32>" : "u32";
  return [
    `@group(0) @binding(0) var<uniform> P: array<vec4<u32>, ${Math.ceil(params / 4)}>;`,
    ...spec.ins.map((x, j) =>
      `@group(0) @binding(${j + 1}) var<storage, read> I${j}: array<${word(x.mode === "contig")}>;`
    ),
    ...Array.from({ length: outputs }, (_, j) => {
      const b = spec.ins.length + 1 + j;
      return `@group(0) @binding(${b}) var<storage, read_write> O${j}: array<${word(true)}>;`;
    }),
    "fn p(i: u32) -> u32 { return P[i >> 2u][i & 3u]; }",
  ].join("\n");
}

function fusedCode(spec: FusedSpec, params: number): string {
  const k = spec.kernel;
  if (spec.vec4) return vec4Code(spec, params);
  // main: P lanes, then whole words of each output.
  const P = fusedPer(k);
  const main: string[] = [
    `  let wi = g.x + g.y * nw.x * ${WG}u;`,
    "  let n = p(0u);",
    `  let e0 = wi * ${P}u;`,
    "  if (e0 >= n) { return; }",
    "  let s0 = lane(e0);",
  ];
  const none = `Outs(${k.outputs.map(() => "0u").join(", ")})`;
  for (let l = 1; l < P; l++) {
    main.push(`  var s${l} = ${none};`, `  if (e0 + ${l}u < n) { s${l} = lane(e0 + ${l}u); }`);
  }
  k.outputs.forEach((o, j) => {
    const per = perWord(k.ops[o].dtype);
    const bits = 32 / per;
    for (let q = 0; q < P / per; q++) {
      const parts: string[] = [];
      for (let l = 0; l < per; l++) {
        const s = `s${q * per + l}.v${j}`;
        parts.push(l === 0 ? s : `(${s} << ${l * bits}u)`);
      }
      const cond = q === 0 ? "" : `if (e0 + ${q * per}u < n) `;
      main.push(`  ${cond}{ O${j}[wi * ${P / per}u + ${q}u] = ${parts.join(" | ")}; }`);
    }
  });
  const lanes = fusedLanes(spec, k.outputs, "p");
  return `${fusedDecl(spec, params, k.outputs.length)}
${helpers(lanes.deps)}
${lanes.code}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
${main.join("\n")}
}`;
}

/**
 * The vec4 form: invocation `wi` loads word `wi` (4 elements) of each contiguous input, calls the
 * lane function per element in a loop (one copy of its code, as in the scalar form) and stores
 * one vec4 per output.
 */
function vec4Code(spec: FusedSpec, params: number): string {
  const k = spec.kernel;
  const contig = spec.ins.flatMap((x, j) => x.mode === "contig" ? [j] : []);
  const lanes = fusedLanes(spec, k.outputs, "p", "lane", { args: contig });
  const main = [
    `  let wi = g.x + g.y * nw.x * ${WG}u;`,
    "  if (wi * 4u >= p(0u)) { return; }",
    ...contig.map((j) => `  let w${j} = I${j}[(p(${inputAt(spec, j)}u) >> 2u) + wi];`),
    ...k.outputs.map((_, j) => `  var y${j} = vec4<u32>();`),
    "  for (var c = 0u; c < 4u; c = c + 1u) {",
    `    let s = lane(${["wi * 4u + c", ...contig.map((j) => `w${j}[c]`)].join(", ")});`,
    ...k.outputs.map((_, j) => `    y${j}[c] = s.v${j};`),
    "  }",
    ...k.outputs.map((_, j) => `  O${j}[wi] = y${j};`),
  ];
  return `${fusedDecl(spec, params, k.outputs.length)}
${helpers(lanes.deps)}
${lanes.code}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
${main.join("\n")}
}`;
}

/** Index of input `j`'s offset in the parameters. */
function inputAt(spec: Pick<FusedSpec, "ins">, j: number): number {
  let at = 1;
  for (let i = 0; i < j; i++) at += 1 + (spec.ins[i].mode === "strided" ? 2 * spec.ins[i].rank : 0);
  return at;
}

/**
 * Uniform words of a fused kernel: element count, per-input offsets (and shapes and strides),
 * the immediates' lane bits and the zero word.
 *
 * @example
 * ```ts
 * fusedParams(spec, 8, [{ shape: [8], strides: [1], offset: 0 }], [0x40000000]);
 * ```
 */
export function fusedParams(
  spec: Pick<FusedSpec, "ins">,
  n: number,
  views: readonly {
    readonly shape: readonly number[];
    readonly strides: readonly number[];
    readonly offset: number;
  }[],
  immediates: readonly number[],
): number[] {
  const out = [n];
  spec.ins.forEach((x, j) => {
    const v = views[j];
    out.push(v.offset);
    if (x.mode === "strided") {
      for (const s of v.shape) out.push(s);
      for (const s of v.strides) out.push(s >>> 0);
    }
  });
  out.push(...immediates, 0);
  return out;
}

/**
 * Workgroups of a fused kernel over `n` elements (`vec4`: of its vec4 form).
 *
 * @example
 * ```ts
 * fusedGroups(kernel, 1024); // 4 (f32 outputs) or 1 (u8 outputs; f32 in the vec4 form)
 * ```
 */
export function fusedGroups(k: FusedKernel, n: number, vec4 = false): number {
  return Math.ceil(Math.ceil(n / (vec4 ? 4 : fusedPer(k))) / WG);
}
