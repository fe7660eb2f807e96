/**
 * WGSL of reductions over the middle axis of `[outer, reduce, inner]`. Two shapes of kernel:
 * `serial` (one invocation per output word, each lane loops over the reduced axis; used when
 * `inner > 1` or the axis is short) and `tree` (one workgroup per output word, 256 threads
 * stride over the axis and combine in workgroup memory). Floats accumulate in f32, integers in
 * i32 (wrapping); max/min propagate NaN; argmax/argmin pick the first extreme (a NaN counts as
 * the extreme, like NumPy); all/any treat NaN as false, like the CPU backend.
 *
 * Parameters: `[outputs, reduce, inner]`.
 *
 * @example
 * ```ts
 * const k = reduceKernel("sum", "f16", "f16", "tree");
 * ```
 *
 * @module
 */
import type { DType } from "../../../dtype.ts";
import type { ReduceOp } from "../../backend.ts";
import type { Kernel } from "../runtime.ts";
import { bindings } from "../runtime.ts";
import {
  helpers,
  isFloatDtype,
  perWord,
  rawLoad,
  rawToF32,
  storeF32,
  storeI32,
  toI32,
} from "./dtype.ts";
import { WG, wordKernel } from "./map.ts";

/** Which kernel shape to use. */
export type ReduceShape = "serial" | "tree";

interface OpCode {
  /** WGSL type of the accumulator. */
  readonly ty: string;
  readonly init: string;
  /** Statement folding value `v` at position `r` into `acc` (and `ai`). */
  readonly step: string;
  /** Statement combining (acc, ai) with (b, bi) from higher thread ids. */
  readonly combine: string;
  /** Helper names used. */
  readonly deps: readonly string[];
  /** Output lane bits from `acc`/`ai`. */
  readonly store: (out: DType) => { deps: string[]; expr: string };
}

const NONE = "0xffffffffu";

function opCode(op: ReduceOp, float: boolean, acc: string): OpCode {
  const ty = float ? "f32" : "i32";
  const st = (out: DType) => (float ? storeF32(out, "acc") : storeI32(out, "acc"));
  const nan = (x: string) => (float ? `is_nan(${x})` : "false");
  const truthy = (x: string) => (float ? `truthy(${x})` : `(${x} != 0)`);
  switch (op) {
    case "sum":
      return {
        ty,
        init: float ? "0.0" : "0",
        step: "acc = acc + v;",
        combine: "acc = acc + b;",
        deps: [],
        store: st,
      };
    case "max":
    case "min": {
      const cmp = op === "max" ? ">" : "<";
      const init = float
        ? `${op === "max" ? "-" : ""}bitcast<f32>(0x7f800000u | (${acc}(0u) & 0u))`
        : op === "max"
        ? "(-2147483647 - 1)"
        : "2147483647";
      const fold = (x: string) =>
        float
          ? `if (is_nan(${x}) || is_nan(acc)) { acc = bitcast<f32>(0x7fc00000u | (${acc}(0u) & 0u)); } ` +
            `else if (ord_key(${x}) ${cmp} ord_key(acc)) { acc = ${x}; }`
          : `if (${x} ${cmp} acc) { acc = ${x}; }`;
      return {
        ty,
        init,
        step: fold("v"),
        combine: fold("b"),
        deps: ["is_nan", "ord_key"],
        store: st,
      };
    }
    case "argmax":
    case "argmin": {
      const cmp = op === "argmax" ? ">" : "<";
      const key = (x: string) => (float ? `ord_key(${x})` : x);
      return {
        ty,
        init: float ? "0.0" : "0",
        step: `if (ai == ${NONE} || (!${nan("acc")} && (${nan("v")} || ${key("v")} ${cmp} ${
          key("acc")
        }))) { acc = v; ai = r; }`,
        combine: `if (bi != ${NONE}) {
      if (ai == ${NONE}) { acc = b; ai = bi; }
      else if (${nan("acc")} && ${nan("b")}) { ai = min(ai, bi); }
      else if (${nan("b")} || (!${nan("acc")} && ${key("b")} ${cmp} ${
          key("acc")
        })) { acc = b; ai = bi; }
      else if (!${nan("acc")} && ${key("b")} == ${key("acc")}) { ai = min(ai, bi); }
    }`,
        deps: ["is_nan", "ord_key"],
        store: (out) => storeI32(out, "bitcast<i32>(ai)"),
      };
    }
    case "all":
    case "any": {
      const all = op === "all";
      return {
        ty: "i32",
        init: all ? "1" : "0",
        step: all ? `if (!${truthy("v")}) { acc = 0; }` : `if (${truthy("v")}) { acc = 1; }`,
        combine: all ? "acc = acc & b;" : "acc = acc | b;",
        deps: ["truthy"],
        store: (out) => storeI32(out, "acc"),
      };
    }
  }
}

function loadValue(x: DType, float: boolean, i: string): { deps: string[]; expr: string } {
  const r = rawLoad("I0", x, i);
  return float ? rawToF32(x, r) : { deps: [], expr: toI32(x, r) };
}

/**
 * The reduce kernel for an op, input and output dtype, and kernel shape.
 *
 * @example
 * ```ts
 * reduceKernel("sum", "f16", "f16", "tree");
 * ```
 */
export function reduceKernel(op: ReduceOp, x: DType, out: DType, shape: ReduceShape): Kernel {
  const float = isFloatDtype(x);
  const load = loadValue(x, float, "idx");
  return {
    key: `reduce:${op}:${x}:${out}:${shape}`,
    inputs: 1,
    params: 3,
    code: () =>
      reduceCode(op, float, out, shape, {
        decls: bindings({ inputs: 1, params: 3 }),
        deps: load.deps,
        module: "",
        value: `let v = ${load.expr};`,
        acc: "p",
      }),
  };
}

/** What a reduce kernel reduces: element `idx`'s value `v`, and the code around it. */
export interface ReduceSource {
  /** Bindings: the uniform with its accessor `p`, the inputs, and the output `O`. */
  readonly decls: string;
  /** Helpers `value` and `module` use (emitted once, with the reduction's own). */
  readonly deps: Iterable<string>;
  /** Module-level WGSL (functions) `value` calls. */
  readonly module: string;
  /** Statements that define `v` (f32 for float inputs, i32 otherwise) from the index `idx`. */
  readonly value: string;
  /** The accessor of the `[outputs, reduce, inner]` parameters (`p`, or one the decls add). */
  readonly acc: string;
}

/**
 * WGSL of a reduction whose values come from `src` (the eager kernel loads them; a fused
 * prologue computes them), in the serial or tree shape of the module doc.
 *
 * @example
 * ```ts
 * reduceCode("sum", true, "f32", "serial", src);
 * ```
 */
export function reduceCode(
  op: ReduceOp,
  float: boolean,
  out: DType,
  shape: ReduceShape,
  src: ReduceSource,
): string {
  const c = opCode(op, float, src.acc);
  const s = c.store(out);
  const deps = new Set([...c.deps, ...src.deps, ...s.deps]);
  const module = `${helpers(deps)}\n${src.module}`;
  const P = src.acc;
  if (shape === "serial") {
    return wordKernel({
      inputs: 1,
      params: 3,
      out,
      decls: src.decls,
      n: `${P}(0u)`,
      module,
      lane: `  let R = ${P}(1u);
  let inner = ${P}(2u);
  let o = e / inner;
  let base = o * R * inner + (e - o * inner);
  var acc: ${c.ty} = ${c.init};
  var ai = ${NONE};
  for (var r = 0u; r < R; r = r + 1u) {
    let idx = base + r * inner;
    ${src.value}
    ${c.step}
  }
  return ${s.expr};`,
    });
  }
  const per = perWord(out);
  const laneBits = 32 / per;
  return `${src.decls}
${module}
var<workgroup> SV: array<${c.ty}, ${WG}>;
var<workgroup> SI: array<u32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nw: vec3<u32>) {
  let t = l.x;
  let wi = wg.x + wg.y * nw.x;
  let n = ${P}(0u);
  let R = ${P}(1u);
  if (wi * ${per}u >= n) { return; }
  var w = 0u;
  for (var k = 0u; k < ${per}u; k = k + 1u) {
    let row = wi * ${per}u + k;
    if (row >= n) { break; }
    var acc: ${c.ty} = ${c.init};
    var ai = ${NONE};
    let base = row * R;
    for (var r = t; r < R; r = r + ${WG}u) {
      let idx = base + r;
      ${src.value}
      ${c.step}
    }
    SV[t] = acc;
    SI[t] = ai;
    workgroupBarrier();
    for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
      if (t < s) {
        let b = SV[t + s];
        let bi = SI[t + s];
        ${c.combine}
        SV[t] = acc;
        SI[t] = ai;
      }
      workgroupBarrier();
    }
    if (t == 0u) {
      acc = SV[0];
      ai = SI[0];
      w = w | ((${s.expr}) << (k * ${laneBits}u));
    }
    workgroupBarrier();
  }
  if (t == 0u) { O[wi] = w; }
}`;
}
