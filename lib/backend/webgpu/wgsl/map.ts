/**
 * The generic elementwise ("map") kernel: one invocation per output word (1, 2 or 4 elements),
 * so no two invocations ever write the same u32 of a packed output. Inputs are indexed as
 * contiguous, scalar or strided views (strides in the uniform parameters); the op supplies the
 * per-element WGSL that turns loaded inputs into output lane bits.
 *
 * Parameters: `[n, shape[0..R), per input: offset (+ strides[0..R) when strided), extras…]`.
 *
 * @example
 * ```ts
 * const k = mapKernel({ key: "neg", ins: [{ dtype: "f32", mode: "contig" }], rank: 1,
 *   out: "f32", extras: 0, lane: (v) => ({ deps: [], code: "", bits: `${v.raw(0)} ^ 0x80000000u` }) });
 * ```
 *
 * @module
 */
import type { DType } from "../../../dtype.ts";
import { bindings, type Kernel } from "../runtime.ts";
import type { Mode } from "../views.ts";
import { helpers, perWord, rawLoad, rawToF32, toI32 } from "./dtype.ts";

/** Threads per workgroup of map kernels. */
export const WG = 256;

/** One input of a map kernel. */
export interface MapIn {
  readonly dtype: DType;
  readonly mode: Mode;
}

/** What an op's lane code can use. */
export interface Vals {
  /** Raw element bits (u32) of input k. */
  raw(k: number): string;
  /** f32 value of input k (WGSL expression; its helpers are added automatically). */
  f(k: number): string;
  /** i32 value of input k (integer dtypes). */
  i(k: number): string;
  /** Extra uniform parameter j (u32). */
  extra(j: number): string;
}

/** The WGSL an op contributes for one output element. */
export interface Lane {
  /** Helper functions it calls (see `helpers`). */
  readonly deps: readonly string[];
  /** Statements run first (may be empty). */
  readonly code: string;
  /** u32 expression: the output lane bits (masked to the lane width). */
  readonly bits: string;
  /** Extra module-level WGSL (functions), once per module. */
  readonly module?: string;
}

/** A map kernel's signature. */
export interface MapSpec {
  /** Op part of the cache key (dtypes, modes and rank are added). */
  readonly key: string;
  readonly ins: readonly MapIn[];
  readonly rank: number;
  readonly out: DType;
  /** Number of extra u32 parameters. */
  readonly extras: number;
  readonly lane: (v: Vals) => Lane;
}

/** Index in the parameters where the extras start. */
function extrasBase(spec: Pick<MapSpec, "ins" | "rank">): number {
  let n = 1 + spec.rank;
  for (const x of spec.ins) n += 1 + (x.mode === "strided" ? spec.rank : 0);
  return n;
}

/**
 * The kernel for a map signature.
 *
 * @example
 * ```ts
 * mapKernel({ key: "u.neg", ins: [{ dtype: "f32", mode: "contig" }], rank: 1, out: "f32", extras: 0, lane });
 * ```
 */
export function mapKernel(spec: MapSpec): Kernel {
  const base = extrasBase(spec);
  const params = base + spec.extras;
  const key = `map:${spec.key}:${spec.ins.map((x) => `${x.dtype}.${x.mode}`).join(",")}` +
    `:r${spec.rank}:${spec.out}`;
  return {
    key,
    inputs: spec.ins.length,
    params,
    code: () => mapCode(spec, base, params),
  };
}

function mapCode(spec: MapSpec, base: number, params: number): string {
  const R = spec.rank;
  const deps = new Set<string>();
  const lines: string[] = [];
  // Offsets of each input for element e.
  let at = 1 + R;
  const idx: string[] = [];
  const strided: { k: number; at: number }[] = [];
  spec.ins.forEach((x, k) => {
    const off = `p(${at}u)`;
    if (x.mode === "contig") idx.push(`(${off} + e)`);
    else if (x.mode === "scalar") idx.push(off);
    else {
      lines.push(`  var o${k} = ${off};`);
      strided.push({ k, at: at + 1 });
      idx.push(`o${k}`);
    }
    at += 1 + (x.mode === "strided" ? R : 0);
  });
  if (strided.length) {
    lines.push("  var rem = e;");
    for (let d = R - 1; d >= 0; d--) {
      lines.push(`  { let s = p(${1 + d}u); let q = rem / s; let r = rem - q * s; rem = q;`);
      for (const s of strided) lines.push(`    o${s.k} = o${s.k} + r * p(${s.at + d}u);`);
      lines.push("  }");
    }
  }
  spec.ins.forEach((x, k) => lines.push(`  let r${k} = ${rawLoad(`I${k}`, x.dtype, idx[k])};`));
  const vals: Vals = {
    raw: (k) => `r${k}`,
    f: (k) => {
      const l = rawToF32(spec.ins[k].dtype, `r${k}`);
      l.deps.forEach((n) => deps.add(n));
      return l.expr;
    },
    i: (k) => toI32(spec.ins[k].dtype, `r${k}`),
    extra: (j) => `p(${base + j}u)`,
  };
  const lane = spec.lane(vals);
  lane.deps.forEach((n) => deps.add(n));
  return wordKernel({
    inputs: spec.ins.length,
    params,
    out: spec.out,
    module: `${helpers(deps)}\n${lane.module ?? ""}`,
    lane: `${lines.join("\n")}\n${lane.code}\n  return ${lane.bits};`,
  });
}

/**
 * WGSL of a kernel with one invocation per output word: `lane(e)` (whose body is given) returns
 * the lane bits of output element `e`, and `main` assembles and writes whole words, so packed
 * outputs never race. `p(0)` must hold the number of output elements.
 *
 * @example
 * ```ts
 * wordKernel({ inputs: 0, params: 1, out: "u8", module: "", lane: "  return e & 0xffu;" });
 * ```
 */
export function wordKernel(o: {
  inputs: number;
  params: number;
  out: DType;
  module: string;
  lane: string;
  enableF16?: boolean;
  /** Bind the index-error flag (see `indexError` in runtime.ts). */
  errors?: boolean;
  /** Declarations to use instead of `bindings(o)` (they must declare `O` and `p`). */
  decls?: string;
  /** WGSL expression of the number of output elements (default `p(0u)`). */
  n?: string;
}): string {
  const per = perWord(o.out);
  const laneBits = 32 / per;
  const word: string[] = ["  var w = lane(e0);"];
  for (let l = 1; l < per; l++) {
    word.push(`  if (e0 + ${l}u < n) { w = w | (lane(e0 + ${l}u) << ${l * laneBits}u); }`);
  }
  return `${o.enableF16 ? "enable f16;\n" : ""}${o.decls ?? bindings(o)}
${o.module}
fn lane(e: u32) -> u32 {
${o.lane}
}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let wi = g.x + g.y * nw.x * ${WG}u;
  let n = ${o.n ?? "p(0u)"};
  let e0 = wi * ${per}u;
  if (e0 >= n) { return; }
${word.join("\n")}
  O[wi] = w;
}`;
}

/**
 * Parameters of a map kernel for a coalesced shape, per-input strides/offsets and extras.
 *
 * @example
 * ```ts
 * mapParams({ ins: [{ dtype: "f32", mode: "contig" }], rank: 1 }, 6, [6], [[1]], [0]); // [6, 6, 0]
 * ```
 */
export function mapParams(
  spec: Pick<MapSpec, "ins" | "rank">,
  n: number,
  shape: readonly number[],
  strides: readonly (readonly number[])[],
  offsets: readonly number[],
  extras: readonly number[] = [],
): number[] {
  const out = [n, ...shape];
  spec.ins.forEach((x, k) => {
    out.push(offsets[k]);
    if (x.mode === "strided") { for (const s of strides[k]) out.push(s >>> 0); }
  });
  out.push(...extras);
  return out;
}

/**
 * Workgroups of a map kernel writing `n` elements of `out`.
 *
 * @example
 * ```ts
 * mapGroups(1000, "u8"); // 1 (250 words)
 * ```
 */
export function mapGroups(n: number, out: DType): number {
  return Math.ceil(Math.ceil(n / perWord(out)) / WG);
}
