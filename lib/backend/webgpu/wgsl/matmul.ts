/**
 * WGSL of the tiled batched matrix product. A workgroup of 16×16 threads computes a 64×64 tile
 * of the output, each thread a 4×4 register block; tiles of A (64×16) and B (16×64) are staged
 * in workgroup memory as f32 (narrow dtypes are decoded once while staging), and sums
 * accumulate in f32. transA/transB change only how tiles are loaded (coalesced either way).
 * Batches run on the z axis of the grid; batch offsets come from the batch shape and strides.
 *
 * Parameters: `[M, N, K, batch, dims, batchShape[8], aBatchStride[8], bBatchStride[8]]` (batch
 * dims are a runtime loop, so one pipeline serves every batch rank).
 *
 * @example
 * ```ts
 * const k = matmulKernel({ a: "f16", b: "f16", out: "f16", transA: false, transB: true,
 * });
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
  /** Decode f16 tiles with native f16 (`shader-f16` enabled). */
  readonly f16?: boolean;
}

/** Most batch dimensions (after merging) a matmul kernel takes. */
export const MAX_BATCH_DIMS = 8;

function loader(buf: string, d: DType, deps: Set<string>, hw: boolean): string {
  if (d === "f16" && hw) {
    return `fn ld${buf}(i: u32) -> f32 { return f32(${buf}[i]); }`;
  }
  const v = rawToF32(d, rawLoad(buf, d, "i"));
  v.deps.forEach((x) => deps.add(x));
  return `fn ld${buf}(i: u32) -> f32 { return ${v.expr}; }`;
}

/**
 * The matmul kernel of a signature (see the module doc).
 *
 * @example
 * ```ts
 * matmulKernel({ a: "f16", b: "f16", out: "f32", transA: false, transB: true });
 * ```
 */
export function matmulKernel(s: MatmulSig): Kernel {
  const params = 5 + 3 * MAX_BATCH_DIMS;
  return {
    key: `matmul:${s.a}:${s.b}:${s.out}:${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}` +
      (s.f16 ? ":hw16" : ""),
    inputs: 2,
    params,
    code: () => matmulCode(s, params),
  };
}

function matmulCode(s: MatmulSig, params: number): string {
  const deps = new Set<string>();
  const nb = MAX_BATCH_DIMS;
  const hw = s.f16 === true && (s.a === "f16" || s.b === "f16");
  const ldA = loader("I0", s.a, deps, hw);
  const ldB = loader("I1", s.b, deps, hw);
  const per = perWord(s.out);
  const st = storeF32(s.out, "v");
  st.deps.forEach((x) => deps.add(x));
  const batch = [
    "    var rem = bt;",
    "    var ao = 0u;",
    "    var bo = 0u;",
    "    for (var d = i32(p(4u)) - 1; d >= 0; d = d - 1) {",
    "      let sz = p(5u + u32(d)); let q = rem / sz; let r = rem - q * sz; rem = q;",
    `      ao = ao + r * p(${5 + nb}u + u32(d)); bo = bo + r * p(${5 + 2 * nb}u + u32(d));`,
    "    }",
  ];
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
      `        if (c + ${w * per}u < N) { O[(ob + c + ${w * per}u) / ${per}u] = ${
        lanes.join(" | ")
      }; }`,
    );
  }
  const types = [hw && s.a === "f16" ? "f16" : "u32", hw && s.b === "f16" ? "f16" : "u32"];
  return `${hw ? "enable f16;\n" : ""}${bindings({ inputs: 2, params, types })}
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
