/**
 * WGSL of the tiled batched matrix product. A workgroup of 16×16 threads computes a 64×64 tile
 * of the output, each thread a 4×4 register block; tiles of A (64×16) and B (16×64) are staged
 * in workgroup memory as f32 (narrow dtypes are decoded once while staging), and sums
 * accumulate in f32. transA/transB change only how tiles are loaded (coalesced either way).
 * Batches run on the z axis of the grid; batch offsets come from the batch shape and strides.
 *
 * Parameters: `[M, N, K, batch, batchShape…, aBatchStride…, bBatchStride…]`.
 *
 * @example
 * ```ts
 * const k = matmulKernel({ a: "f16", b: "f16", out: "f16", transA: false, transB: true,
 *   batchDims: 0, f16: true });
 * ```
 *
 * @module
 */
import type { DType } from "../../../dtype.ts";
import type { Kernel } from "../runtime.ts";
import { bindings } from "../runtime.ts";
import { helpers, perWord, rawLoad, rawToF32, storeF32 } from "./dtype.ts";

/** Output tile edge and reduction tile depth. */
export const TILE = 64;
const BK = 16;

/** A matmul kernel signature. */
export interface MatmulSig {
  readonly a: DType;
  readonly b: DType;
  readonly out: DType;
  readonly transA: boolean;
  readonly transB: boolean;
  readonly batchDims: number;
}

function loader(buf: string, d: DType, deps: Set<string>): string {
  const v = rawToF32(d, rawLoad(buf, d, "i"));
  v.deps.forEach((x) => deps.add(x));
  return `fn ld${buf}(i: u32) -> f32 { return ${v.expr}; }`;
}

/** The matmul kernel of a signature (see the module doc). */
export function matmulKernel(s: MatmulSig): Kernel {
  const nb = s.batchDims;
  const params = 4 + 3 * nb;
  return {
    key: `matmul:${s.a}:${s.b}:${s.out}:${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}:${nb}`,
    inputs: 2,
    params,
    code: () => matmulCode(s, params),
  };
}

function matmulCode(s: MatmulSig, params: number): string {
  const deps = new Set<string>();
  const nb = s.batchDims;
  const ldA = loader("I0", s.a, deps);
  const ldB = loader("I1", s.b, deps);
  const per = perWord(s.out);
  const st = storeF32(s.out, "v");
  st.deps.forEach((x) => deps.add(x));
  const batch: string[] = ["    var rem = bt;", "    var ao = 0u;", "    var bo = 0u;"];
  for (let d = nb - 1; d >= 0; d--) {
    batch.push(
      `    { let sz = p(${4 + d}u); let q = rem / sz; let r = rem - q * sz; rem = q;`,
      `      ao = ao + r * p(${4 + nb + d}u); bo = bo + r * p(${4 + 2 * nb + d}u); }`,
    );
  }
  // Tile loads: 1024 elements per tile, 4 per thread, consecutive threads on the contiguous axis.
  const loadA = s.transA
    ? `let kk = i / ${TILE}u; let mm = i % ${TILE}u; let gr = row0 + mm; let gk = k0 + kk;
        var v = 0.0; if (gr < M && gk < K) { v = ldI0(ao + gk * M + gr); }`
    : `let mm = i / ${BK}u; let kk = i % ${BK}u; let gr = row0 + mm; let gk = k0 + kk;
        var v = 0.0; if (gr < M && gk < K) { v = ldI0(ao + gr * K + gk); }`;
  const loadB = s.transB
    ? `let nn = i / ${BK}u; let kk = i % ${BK}u; let gc = col0 + nn; let gk = k0 + kk;
        var v = 0.0; if (gc < N && gk < K) { v = ldI1(bo + gc * K + gk); }`
    : `let kk = i / ${TILE}u; let nn = i % ${TILE}u; let gc = col0 + nn; let gk = k0 + kk;
        var v = 0.0; if (gc < N && gk < K) { v = ldI1(bo + gk * N + gc); }`;
  const laneBits = 32 / per;
  const writes: string[] = [];
  for (let w = 0; w < 4 / per; w++) {
    const lanes: string[] = [];
    for (let l = 0; l < per; l++) {
      const j = w * per + l;
      lanes.push(`(st(acc[i][${j}]) << ${l * laneBits}u)`);
    }
    writes.push(
      `        if (c + ${w * per}u < N) { O[(ob + c + ${w * per}u) / ${per}u] = ${lanes.join(" | ")}; }`,
    );
  }
  return `${bindings({ inputs: 2, params })}
${helpers(deps)}
${ldA}
${ldB}
fn st(v: f32) -> u32 { return ${st.expr}; }
var<workgroup> As: array<vec4<f32>, ${(BK * TILE) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(BK * TILE) / 4}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nw: vec3<u32>) {
  let M = p(0u);
  let N = p(1u);
  let K = p(2u);
  let B = p(3u);
  let t = l.y * 16u + l.x;
  let row0 = wg.y * ${TILE}u;
  let col0 = wg.x * ${TILE}u;
  for (var bt = wg.z; bt < B; bt = bt + nw.z) {
${batch.join("\n")}
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    for (var k0 = 0u; k0 < K; k0 = k0 + ${BK}u) {
      for (var j = 0u; j < 4u; j = j + 1u) {
        let i = t + j * 256u;
        {
        ${loadA}
        let sa = kk * ${TILE}u + mm;
        As[sa >> 2u][sa & 3u] = v;
        }
        {
        ${loadB}
        let sb = kk * ${TILE}u + nn;
        Bs[sb >> 2u][sb & 3u] = v;
        }
      }
      workgroupBarrier();
      for (var kk = 0u; kk < ${BK}u; kk = kk + 1u) {
        let a = As[kk * ${TILE / 4}u + l.y];
        let b = Bs[kk * ${TILE / 4}u + l.x];
        acc[0] = acc[0] + a.x * b;
        acc[1] = acc[1] + a.y * b;
        acc[2] = acc[2] + a.z * b;
        acc[3] = acc[3] + a.w * b;
      }
      workgroupBarrier();
    }
    let c = col0 + l.x * 4u;
    for (var i = 0u; i < 4u; i = i + 1u) {
      let r = row0 + l.y * 4u + i;
      if (r < M) {
        let ob = bt * M * N + r * N;
${writes.join("\n")}
      }
    }
  }
}`;
}
