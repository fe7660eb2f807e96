/**
 * WGSL of a fused kernel with a reduction (`FusedKernel.reduce`): the eager reduce kernel's own
 * serial or tree loop (`reduceCode`), whose value at each index comes from the fused kernel's
 * lane code (`fusedLanes`) instead of a load. The reduced operation's lane bits are decoded as
 * the eager kernel decodes a loaded element, so the reduction sees the same values in the same
 * order. Each element is visited by exactly one invocation, which also writes the kernel's
 * elementwise outputs there (4-byte dtypes only: one word per element, so none race).
 *
 * Parameters: the fused kernel's (`fusedParams`), then `[outputs, reduce, inner]`.
 *
 * @example
 * ```ts
 * const k = fusedReduceKernel(spec, "tree");
 * ```
 *
 * @module
 */
import { fusedKey } from "../../fused.ts";
import type { Kernel } from "../runtime.ts";
import { isFloatDtype, rawToF32, toI32 } from "./dtype.ts";
import { fusedDecl, fusedLanes, type FusedSpec, immBase } from "./fused.ts";
import { reduceCode, type ReduceShape } from "./reduce.ts";

/**
 * The kernel of a fused signature with `kernel.reduce` set, in the reduce shape `shape`.
 *
 * @example
 * ```ts
 * fusedReduceKernel(spec, "serial").outputs; // elementwise outputs + 1
 * ```
 */
export function fusedReduceKernel(spec: FusedSpec, shape: ReduceShape): Kernel {
  const k = spec.kernel;
  const r = k.reduce;
  if (!r) throw new Error("webgpu: internal error, a fused reduce kernel without a reduce");
  const first = immBase(spec) + k.immediates.length + 1;
  const params = first + 3;
  const m = k.outputs.length;
  const modes = spec.ins.map((x) => x.mode === "strided" ? `s${x.rank}` : x.mode[0]).join(",");
  return {
    key: `fusedreduce:${fusedKey(k)}:${modes}:o${spec.opaque ? 1 : 0}:${shape}`,
    inputs: spec.ins.length,
    outputs: m + 1,
    params,
    code: () => {
      const lanes = fusedLanes(spec, [...k.outputs, r.x], "p", "pro");
      const xd = k.ops[r.x].dtype;
      const float = isFloatDtype(xd);
      const dec = float ? rawToF32(xd, `sv.v${m}`) : { deps: [], expr: toI32(xd, `sv.v${m}`) };
      const decls = `${fusedDecl(spec, params, m)}
@group(0) @binding(${spec.ins.length + 1 + m}) var<storage, read_write> O: array<u32>;
fn rp(i: u32) -> u32 { return p(i + ${first}u); }`;
      const writes = k.outputs.map((_, j) => `O${j}[idx] = sv.v${j};`).join(" ");
      return reduceCode(r.op, float, r.dtype, shape, {
        decls,
        deps: [...lanes.deps, ...dec.deps],
        module: lanes.code,
        value: `let sv = pro(idx); ${writes}\n    let v = ${dec.expr};`,
        acc: "rp",
      });
    },
  };
}
