/**
 * WGSL of the tiled batched matrix product. A workgroup of 16×16 threads computes a tile of
 * the output, each thread a `block`×`block` register block (block 4: 64×64 tiles; block 8:
 * 128×128 tiles, twice the multiply-adds per shared-memory read); tiles of A and B, 16 deep in
 * the reduction, are staged in workgroup memory as f32 (narrow dtypes are decoded once while
 * staging), and sums accumulate in f32. transA/transB change only how tiles are loaded
 * (coalesced either way). An f32 operand with `aCast`/`bCast` is rounded to f16/bf16 as it is
 * staged (the cast kernel's code), so the product equals cast-then-matmul bitwise. With an
 * `epilogue` (a fused elementwise kernel whose input 0 is the product), each product is rounded
 * to the output dtype as the plain store does and then goes through the epilogue's lane code,
 * whose outputs are stored instead of the product. Batches run on the z axis of the grid; batch offsets come from the
 * batch shape and strides.
 *
 * Parameters: `[M, N, K, batch, dims, batchShape[8], aBatchStride[8], bBatchStride[8]]` (batch
 * dims are a runtime loop, so one pipeline serves every batch rank).
 *
 * @example
 * ```ts
 * const k = matmulKernel({ a: "f16", b: "f16", out: "f16", transA: false, transB: true,
 *   block: 8 });
 * ```
 *
 * @module
 */
import type { DType } from "../../../dtype.ts";
import type { Kernel } from "../runtime.ts";
import { bindings } from "../runtime.ts";
import { helpers, perWord, rawLoad, rawToF32, storeF32 } from "./dtype.ts";
import { convert } from "./elementwise.ts";
import { fusedKernel, fusedLanes, fusedParamCount, type FusedSpec } from "./fused.ts";

/** Threads of a workgroup along each output axis. */
const WG = 16;
/** Reduction depth of a staged tile. */
const BK = 16;

/** Register block edges a matmul kernel is generated for. */
export type MatmulBlock = 4 | 8;

/** A matmul kernel signature. */
export interface MatmulSig {
  readonly a: DType;
  readonly b: DType;
  readonly out: DType;
  readonly transA: boolean;
  readonly transB: boolean;
  /** Output rows and columns per thread (default 4). */
  readonly block?: MatmulBlock;
  /** Decode f16 tiles with native f16 (`shader-f16` enabled). */
  readonly f16?: boolean;
  /**
   * Round `a`'s loaded values to this dtype first (`MatmulGeometry.aCast`): the cast kernel's
   * own conversion code, then the exact widening the `aCast` matmul's loader does.
   */
  readonly aCast?: DType;
  /** As `aCast`, for `b`. */
  readonly bCast?: DType;
  /**
   * An elementwise epilogue computed at the store (see `matmulEpilogueKernel`): a fused kernel
   * signature whose input 0 is the product (rounded to `out`).
   */
  readonly epilogue?: FusedSpec;
}

/** Most batch dimensions (after merging) a matmul kernel takes. */
export const MAX_BATCH_DIMS = 8;

/**
 * The output tile edge of one workgroup for a register block edge.
 *
 * @example
 * ```ts
 * matmulTile(8); // 128
 * ```
 */
export function matmulTile(block: MatmulBlock): number {
  return WG * block;
}

function loader(buf: string, d: DType, deps: Set<string>, hw: boolean, cast?: DType): string {
  if (d === "f16" && hw) {
    return `fn ld${buf}(i: u32) -> f32 { return f32(${buf}[i]); }`;
  }
  if (cast !== undefined) {
    // The raw bits rounded as the eager cast kernel rounds them, then widened exactly.
    const c = convert(d, cast, rawLoad(buf, d, "i"));
    const v = rawToF32(cast, c.expr);
    [...c.deps, ...v.deps].forEach((x) => deps.add(x));
    return `fn ld${buf}(i: u32) -> f32 { return ${v.expr}; }`;
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
  const own = 5 + 3 * MAX_BATCH_DIMS;
  const block = s.block ?? 4;
  const ep = s.epilogue;
  const params = own + (ep ? fusedParamCount(ep) : 0);
  return {
    key: `matmul:${s.a}:${s.b}:${s.out}:${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}` +
      `:b${block}` + (s.f16 ? ":hw16" : "") + (s.aCast ? `:ca${s.aCast}` : "") +
      (s.bCast ? `:cb${s.bCast}` : "") + (ep ? `:ep:${fusedKernel(ep).key}` : ""),
    inputs: 2 + (ep ? ep.ins.length - 1 : 0),
    outputs: ep ? ep.kernel.outputs.length : 1,
    params,
    code: () => matmulCode(s, block, params),
  };
}

/** The batch-offset loop: `ao`/`bo` from the batch index `bt` and the per-dim strides. */
function batchOffsets(): string {
  const nb = MAX_BATCH_DIMS;
  return [
    "    var rem = bt;",
    "    var ao = 0u;",
    "    var bo = 0u;",
    "    for (var d = i32(p(4u)) - 1; d >= 0; d = d - 1) {",
    "      let sz = p(5u + u32(d)); let q = rem / sz; let r = rem - q * sz; rem = q;",
    `      ao = ao + r * p(${5 + nb}u + u32(d)); bo = bo + r * p(${5 + 2 * nb}u + u32(d));`,
    "    }",
  ].join("\n");
}

/**
 * Staging of one operand's tile (`tile`×BK elements) into workgroup memory `dst`, laid out
 * k-major; consecutive threads read along the operand's contiguous axis. `load` computes `v`
 * and the tile coordinates `kk` (reduction) and `xx` (row of A / column of B) from `i`.
 */
function stage(dst: string, tile: number, load: string): string {
  const threads = WG * WG;
  return `      for (var j = 0u; j < ${(tile * BK) / threads}u; j = j + 1u) {
        let i = t + j * ${threads}u;
        ${load}
        let s = kk * ${tile}u + xx;
        ${dst}[s >> 2u][s & 3u] = v;
      }`;
}

/** Tile loads of A and B for the transposes of `s` (zero outside the matrices). */
function tileLoads(s: MatmulSig, tile: number): [string, string] {
  const a = s.transA
    ? `let kk = i / ${tile}u; let xx = i % ${tile}u; let gr = row0 + xx; let gk = k0 + kk;
        var v = 0.0; if (gr < M && gk < K) { v = ldI0(ao + gk * M + gr); }`
    : `let xx = i / ${BK}u; let kk = i % ${BK}u; let gr = row0 + xx; let gk = k0 + kk;
        var v = 0.0; if (gr < M && gk < K) { v = ldI0(ao + gr * K + gk); }`;
  const b = s.transB
    ? `let xx = i / ${BK}u; let kk = i % ${BK}u; let gc = col0 + xx; let gk = k0 + kk;
        var v = 0.0; if (gc < N && gk < K) { v = ldI1(bo + gc * K + gk); }`
    : `let kk = i / ${tile}u; let xx = i % ${tile}u; let gc = col0 + xx; let gk = k0 + kk;
        var v = 0.0; if (gc < N && gk < K) { v = ldI1(bo + gk * N + gc); }`;
  return [a, b];
}

/** One reduction step, unrolled: `block` rows of A times `block` columns of B into `acc`. */
function multiplyAdds(block: number, tile: number): string {
  const v = block / 4;
  const lines: string[] = [];
  for (let q = 0; q < v; q++) {
    lines.push(`let a${q} = As[kk * ${tile / 4}u + l.y * ${v}u + ${q}u];`);
  }
  for (let q = 0; q < v; q++) {
    lines.push(`let b${q} = Bs[kk * ${tile / 4}u + l.x * ${v}u + ${q}u];`);
  }
  for (let r = 0; r < block; r++) {
    for (let q = 0; q < v; q++) {
      lines.push(`acc[${r}][${q}] = acc[${r}][${q}] + a${r >> 2}.${"xyzw"[r & 3]} * b${q};`);
    }
  }
  return lines.join("\n        ");
}

/**
 * Stores of the register block, unrolled so `acc` is indexed by constants only (a dynamic
 * index makes some compilers, e.g. lavapipe's, keep the accumulators in memory). Each word of
 * `O` packs `perWord(out)` adjacent columns, rounded once by `st`.
 */
function stores(out: DType, block: number): string {
  const per = perWord(out);
  const laneBits = 32 / per;
  const rows: string[] = [];
  for (let i = 0; i < block; i++) {
    const words: string[] = [];
    for (let w = 0; w < block / per; w++) {
      const lanes: string[] = [];
      for (let l = 0; l < per; l++) {
        const j = w * per + l;
        lanes.push(`(st(acc[${i}][${j >> 2}][${j & 3}]) << ${l * laneBits}u)`);
      }
      const c = `c + ${w * per}u`;
      words.push(`        if (${c} < N) { O[(ob + ${c}) / ${per}u] = ${lanes.join(" | ")}; }`);
    }
    rows.push(`    {
      let r = row0 + l.y * ${block}u + ${i}u;
      if (r < M) {
        let ob = bt * M * N + r * N;
${words.join("\n")}
      }
    }`);
  }
  return rows.join("\n");
}

/**
 * Stores of the register block through an epilogue: each element's product, rounded by `st`,
 * goes through the epilogue's lanes (`pro`), and each epilogue output is written as whole words
 * of `perWord` adjacent columns (the caller makes sure `N` is a multiple of each). The rounded
 * products are copied to a local array by constant indices (the accumulators stay in
 * registers), then a loop over groups of `W` columns (the widest packing) calls `pro` `W`
 * times, so the shader holds `W` copies of the epilogue, not one per element of the block.
 */
function epilogueStores(ep: FusedSpec, block: number): string {
  const k = ep.kernel;
  const W = Math.max(1, ...k.outputs.map((o) => perWord(k.ops[o].dtype)));
  const copy: string[] = [];
  for (let i = 0; i < block; i++) {
    for (let j = 0; j < block; j++) {
      copy.push(`    pv[${i * block + j}] = st(acc[${i}][${j >> 2}][${j & 3}]);`);
    }
  }
  const calls: string[] = [];
  for (let l = 0; l < W; l++) {
    calls.push(`          let s${l} = pro(ob + c + j + ${l}u, pv[i * ${block}u + j + ${l}u]);`);
  }
  const writes: string[] = [];
  k.outputs.forEach((o, q) => {
    const per = perWord(k.ops[o].dtype);
    const laneBits = 32 / per;
    for (let w = 0; w < W / per; w++) {
      const lanes: string[] = [];
      for (let l = 0; l < per; l++) lanes.push(`(s${w * per + l}.v${q} << ${l * laneBits}u)`);
      const cc = `c + j + ${w * per}u`;
      writes.push(
        `          if (${cc} < N) { O${q}[(ob + ${cc}) / ${per}u] = ${lanes.join(" | ")}; }`,
      );
    }
  });
  return `    var pv: array<u32, ${block * block}>;
${copy.join("\n")}
    for (var i = 0u; i < ${block}u; i = i + 1u) {
      let r = row0 + l.y * ${block}u + i;
      if (r >= M) { break; }
      let ob = bt * M * N + r * N;
      for (var j = 0u; j < ${block}u; j = j + ${W}u) {
        if (c + j >= N) { break; }
${calls.join("\n")}
${writes.join("\n")}
      }
    }`;
}

/** Bindings of a matmul with an epilogue: A, B, the epilogue's other inputs, its outputs. */
function epilogueDecl(ep: FusedSpec, params: number, types: readonly string[]): string {
  const own = 5 + 3 * MAX_BATCH_DIMS;
  const extra = ep.ins.length - 1;
  const lines = [
    `@group(0) @binding(0) var<uniform> P: array<vec4<u32>, ${Math.ceil(params / 4)}>;`,
    `@group(0) @binding(1) var<storage, read> I0: array<${types[0]}>;`,
    `@group(0) @binding(2) var<storage, read> I1: array<${types[1]}>;`,
  ];
  for (let j = 0; j < extra; j++) {
    lines.push(`@group(0) @binding(${3 + j}) var<storage, read> I${2 + j}: array<u32>;`);
  }
  ep.kernel.outputs.forEach((_, q) => {
    lines.push(`@group(0) @binding(${3 + extra + q}) var<storage, read_write> O${q}: array<u32>;`);
  });
  lines.push(
    "fn p(i: u32) -> u32 { return P[i >> 2u][i & 3u]; }",
    `fn fp(i: u32) -> u32 { return p(i + ${own}u); }`,
  );
  return lines.join("\n");
}

function matmulCode(s: MatmulSig, block: MatmulBlock, params: number): string {
  const deps = new Set<string>();
  const hw = s.f16 === true && (s.a === "f16" || s.b === "f16");
  const ldA = loader("I0", s.a, deps, hw, s.aCast);
  const ldB = loader("I1", s.b, deps, hw, s.bCast);
  const st = storeF32(s.out, "v");
  st.deps.forEach((x) => deps.add(x));
  const tile = matmulTile(block);
  const [loadA, loadB] = tileLoads(s, tile);
  const types = [hw && s.a === "f16" ? "f16" : "u32", hw && s.b === "f16" ? "f16" : "u32"];
  const ep = s.epilogue;
  const lanes = ep
    ? fusedLanes(ep, ep.kernel.outputs, "fp", "pro", { arg0: true, bufOffset: 1 })
    : undefined;
  lanes?.deps.forEach((x) => deps.add(x));
  const decl = ep ? epilogueDecl(ep, params, types) : bindings({ inputs: 2, params, types });
  return `${hw ? "enable f16;\n" : ""}${decl}
${helpers(deps)}
${lanes?.code ?? ""}
${ldA}
${ldB}
fn st(v: f32) -> u32 { return ${st.expr}; }
var<workgroup> As: array<vec4<f32>, ${(BK * tile) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(BK * tile) / 4}>;
@compute @workgroup_size(${WG}, ${WG})
fn main(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nw: vec3<u32>) {
  let M = p(0u);
  let N = p(1u);
  let K = p(2u);
  let B = p(3u);
  let t = l.y * ${WG}u + l.x;
  let row0 = wg.y * ${tile}u;
  let col0 = wg.x * ${tile}u;
  for (var bt = wg.z; bt < B; bt = bt + nw.z) {
${batchOffsets()}
    var acc = array<array<vec4<f32>, ${block / 4}>, ${block}>();
    for (var k0 = 0u; k0 < K; k0 = k0 + ${BK}u) {
${stage("As", tile, loadA)}
${stage("Bs", tile, loadB)}
      workgroupBarrier();
      for (var kk = 0u; kk < ${BK}u; kk = kk + 1u) {
        ${multiplyAdds(block, tile)}
      }
      workgroupBarrier();
    }
    let c = col0 + l.x * ${block}u;
${ep ? epilogueStores(ep, block) : stores(s.out, block)}
  }
}`;
}
