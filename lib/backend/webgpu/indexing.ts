/**
 * WebGPU gather, scatterAdd and concat. Each kernel writes whole output words. scatterAdd is
 * deterministic without float atomics: one invocation per output element loops over the
 * indices in order and adds the matching updates. A kernel cannot throw: an out-of-range index
 * gives 0 (gather) or is skipped (scatterAdd) and is recorded in the device's index-error flag
 * (the op and the offending index), which the next readback reads in the same map and throws.
 *
 * @example
 * ```ts
 * const h = gather(ctx, x, idx, 1, 10, 4); // rows idx of a [10, 4] matrix
 * ```
 *
 * @module
 */
import type { DType } from "../../dtype.ts";
import type { Arg } from "../backend.ts";
import {
  allocate,
  bindings,
  checkAlive,
  type Ctx,
  dispatch,
  INDEX_ERROR_OPS,
  type Kernel,
} from "./runtime.ts";
import { output } from "./elementwise.ts";
import {
  helpers,
  isFloatDtype,
  perWord,
  rawLoad,
  rawToF32,
  storeF32,
  storeI32,
  toI32,
} from "./wgsl/dtype.ts";
import { convert } from "./wgsl/elementwise.ts";
import { mapGroups, WG, wordKernel } from "./wgsl/map.ts";

function indexValue(idx: DType, j: string, buf = "I1"): string {
  return toI32(idx, rawLoad(buf, idx, j));
}

/** WGSL: `q`, the index at `j` wrapped once for negative values (`axis` in scope). */
function normIndex(idx: DType, j: string, buf: string): string {
  return `let raw = ${indexValue(idx, j, buf)};
    var q = raw;
    if (q < 0) { q = q + i32(axis); }`;
}

/** How an indexing kernel names itself in the error flag, and whether negatives wrap. */
export interface IndexCheck {
  /** The op reported for an out-of-range index. */
  readonly op: (typeof INDEX_ERROR_OPS)[number];
  /** Negative indices count from the end (`take`); `false` makes them errors (`oneHot`). */
  readonly wrap: boolean;
}

const opCode = (op: IndexCheck["op"]) => INDEX_ERROR_OPS.indexOf(op);

/**
 * `out[o, j, i] = x[o, idx[j], i]` (see `Backend.gather`).
 *
 * @example
 * ```ts
 * gather(ctx, x, idx, 1, 10, 4); // rows idx of a [10, 4] matrix
 * ```
 */
export function gather(
  ctx: Ctx,
  x: Arg,
  idx: Arg,
  outer: number,
  axis: number,
  inner: number,
  check: IndexCheck = { op: "take", wrap: true },
): GPUBuffer {
  checkAlive(ctx);
  const n = outer * idx.size * inner;
  const buf = output(ctx, x.dtype, n);
  if (n === 0) return buf;
  const k: Kernel = {
    key: `gather:${x.dtype}:${idx.dtype}:${check.op}:${check.wrap}`,
    inputs: 2,
    params: 4,
    errors: true,
    code: () =>
      wordKernel({
        inputs: 2,
        params: 4,
        errors: true,
        out: x.dtype,
        module: "",
        lane: `  let inner = p(1u);
  let nidx = p(2u);
  let axis = p(3u);
  let i = e % inner;
  let t = e / inner;
  let j = t % nidx;
  let o = t / nidx;
  let raw = ${indexValue(idx.dtype, "j")};
  var kk = raw;
  ${check.wrap ? "if (kk < 0) { kk = kk + i32(axis); }" : ""}
  if (kk < 0 || u32(kk) >= axis) {
    indexError(${opCode(check.op)}u, raw, axis);
    return 0u;
  }
  let src = (o * axis + u32(kk)) * inner + i;
  return ${rawLoad("I0", x.dtype, "src")};`,
      }),
  };
  dispatch(
    ctx,
    k,
    [x.h as GPUBuffer, idx.h as GPUBuffer],
    buf,
    [n, inner, idx.size, axis],
    mapGroups(n, x.dtype),
  );
  return buf;
}

/**
 * `out = base; out[o, idx[j], i] += upd[o, j, i]` (see `Backend.scatterAdd`). Small problems
 * loop over all indices per output element; large ones first list, per target row, the
 * positions `j` that hit it (in increasing order), so the cost is about
 * `axis·indices + size + indices·inner` instead of `size·indices`. Both add in index order,
 * so results are deterministic.
 *
 * @example
 * ```ts
 * scatterAdd(ctx, base, idx, upd, 1, 10, 4); // add rows of upd into rows idx
 * ```
 */
export function scatterAdd(
  ctx: Ctx,
  base: Arg,
  idx: Arg,
  upd: Arg,
  _outer: number,
  axis: number,
  inner: number,
): GPUBuffer {
  checkAlive(ctx);
  const n = base.size; // = outer * axis * inner
  const buf = output(ctx, base.dtype, n);
  if (n === 0) return buf;
  if (idx.size * n <= SORTED_FROM || idx.size === 0) {
    dispatch(
      ctx,
      directScatterKernel(base.dtype, idx.dtype, upd.dtype),
      [base.h as GPUBuffer, idx.h as GPUBuffer, upd.h as GPUBuffer],
      buf,
      [n, inner, idx.size, axis],
      mapGroups(n, base.dtype),
    );
    return buf;
  }
  const counts = allocate(ctx, axis * 4);
  const starts = allocate(ctx, (axis + 1) * 4);
  const list = allocate(ctx, idx.size * 4);
  const ih = idx.h as GPUBuffer;
  dispatch(ctx, countKernel(idx.dtype), [ih], counts, [axis, idx.size], mapGroups(axis, "i32"));
  dispatch(ctx, SCAN, [counts], starts, [axis], 1);
  dispatch(
    ctx,
    listKernel(idx.dtype),
    [ih, starts],
    list,
    [axis, idx.size],
    mapGroups(axis, "i32"),
  );
  dispatch(
    ctx,
    listedScatterKernel(base.dtype, upd.dtype),
    [base.h as GPUBuffer, starts, list, upd.h as GPUBuffer],
    buf,
    [n, inner, idx.size, axis],
    mapGroups(n, base.dtype),
  );
  for (const b of [counts, starts, list]) ctx.pool.release(b);
  return buf;
}

/** `indices × size` above which scatterAdd lists the indices per row first. */
const SORTED_FROM = 1 << 20;

function accumulator(d: DType, upd: DType, base: string, u: string) {
  const float = isFloatDtype(d);
  const ld = (b: string, dt: DType, i: string) => {
    const r = rawLoad(b, dt, i);
    return float ? rawToF32(dt, r) : { deps: [], expr: toI32(dt, r) };
  };
  const lb = ld(base, d, "e");
  const lu = ld(u, upd, "(o * nidx + j) * inner + i");
  const st = float ? storeF32(d, "acc") : storeI32(d, "acc");
  return { lb, lu, st, deps: helpers([...lb.deps, ...lu.deps, ...st.deps]) };
}

const LANE_HEAD = `  let inner = p(1u);
  let nidx = p(2u);
  let axis = p(3u);
  let i = e % inner;
  let t = e / inner;
  let kk = t % axis;
  let o = t / axis;`;

/** Bindings: I0 = base, I1 = indices, I2 = updates. */
function directScatterKernel(d: DType, idx: DType, upd: DType): Kernel {
  const a = accumulator(d, upd, "I0", "I2");
  return {
    key: `scatterAdd:${d}:${idx}:${upd}`,
    inputs: 3,
    params: 4,
    errors: true,
    code: () =>
      wordKernel({
        inputs: 3,
        params: 4,
        errors: true,
        out: d,
        module: a.deps,
        lane: `${LANE_HEAD}
  var acc = ${a.lb.expr};
  for (var j = 0u; j < nidx; j = j + 1u) {
    ${normIndex(idx, "j", "I1")}
    if (q < 0 || u32(q) >= axis) { indexError(${opCode("scatterAdd")}u, raw, axis); }
    if (q >= 0 && u32(q) == kk) { acc = acc + ${a.lu.expr}; }
  }
  return ${a.st.expr};`,
      }),
  };
}

/** counts[k] = number of indices equal to k (after wrapping negatives). */
function countKernel(idx: DType): Kernel {
  return {
    key: `scatterCount:${idx}`,
    inputs: 1,
    params: 2,
    errors: true,
    code: () =>
      wordKernel({
        inputs: 1,
        params: 2,
        errors: true,
        out: "i32",
        module: "",
        lane: `  let axis = p(0u);
  var c = 0u;
  for (var j = 0u; j < p(1u); j = j + 1u) {
    ${normIndex(idx, "j", "I0")}
    if (q < 0 || u32(q) >= axis) { indexError(${opCode("scatterAdd")}u, raw, axis); }
    if (q >= 0 && u32(q) == e) { c = c + 1u; }
  }
  return c;`,
      }),
  };
}

/** starts = exclusive prefix sums of counts (one workgroup), with the total at the end. */
const SCAN: Kernel = {
  key: "scatterScan",
  inputs: 1,
  params: 1,
  code: () =>
    `${bindings({ inputs: 1, params: 1 })}
var<workgroup> S: array<u32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) l: vec3<u32>) {
  let n = p(0u);
  let chunk = (n + ${WG - 1}u) / ${WG}u;
  let lo = min(l.x * chunk, n);
  let hi = min(lo + chunk, n);
  var s = 0u;
  for (var k = lo; k < hi; k = k + 1u) { s = s + I0[k]; }
  S[l.x] = s;
  workgroupBarrier();
  if (l.x == 0u) {
    var run = 0u;
    for (var t = 0u; t < ${WG}u; t = t + 1u) { let c = S[t]; S[t] = run; run = run + c; }
    O[n] = run;
  }
  workgroupBarrier();
  var acc = S[l.x];
  for (var k = lo; k < hi; k = k + 1u) { O[k] = acc; acc = acc + I0[k]; }
}`,
};

/** list[starts[k] ..] = the positions j with idx[j] = k, in increasing order (one row each). */
function listKernel(idx: DType): Kernel {
  return {
    key: `scatterList:${idx}`,
    inputs: 2,
    params: 2,
    code: () =>
      `${bindings({ inputs: 2, params: 2 })}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let kk = g.x + g.y * nw.x * ${WG}u;
  let axis = p(0u);
  if (kk >= axis) { return; }
  var pos = I1[kk];
  for (var j = 0u; j < p(1u); j = j + 1u) {
    ${normIndex(idx, "j", "I0")}
    if (q >= 0 && u32(q) == kk) { O[pos] = j; pos = pos + 1u; }
  }
}`,
  };
}

/** Bindings: I0 = base, I1 = starts, I2 = list, I3 = updates. */
function listedScatterKernel(d: DType, upd: DType): Kernel {
  const a = accumulator(d, upd, "I0", "I3");
  return {
    key: `scatterListed:${d}:${upd}`,
    inputs: 4,
    params: 4,
    code: () =>
      wordKernel({
        inputs: 4,
        params: 4,
        out: d,
        module: a.deps,
        lane: `${LANE_HEAD}
  var acc = ${a.lb.expr};
  for (var s = I1[kk]; s < I1[kk + 1u]; s = s + 1u) {
    let j = I2[s];
    acc = acc + ${a.lu.expr};
  }
  return ${a.st.expr};`,
      }),
  };
}

/**
 * Concatenate `[outer, sizes[i], inner]` blocks along the middle axis (see `Backend.concat`).
 *
 * @example
 * ```ts
 * concat(ctx, [a, b], 2, [3, 1], 1, "f32"); // [2, 3] ++ [2, 1] on axis 1
 * ```
 */
export function concat(
  ctx: Ctx,
  xs: readonly Arg[],
  outer: number,
  sizes: readonly number[],
  inner: number,
  outDtype: DType,
): GPUBuffer {
  checkAlive(ctx);
  const total = sizes.reduce((a, b) => a + b, 0);
  const n = outer * total * inner;
  const buf = output(ctx, outDtype, n);
  if (n === 0) return buf;
  let col = 0;
  xs.forEach((x, t) => {
    const w = sizes[t] * inner;
    if (w > 0) {
      dispatch(ctx, placeKernel(x.dtype, outDtype), [x.h as GPUBuffer], buf, [
        n,
        w,
        total * inner,
        col,
      ], Math.ceil(Math.ceil(n / perWord(outDtype)) / WG));
    }
    col += w;
  });
  return buf;
}

/**
 * Writes one input's block of a concat into the output. Words shared with other inputs are
 * read-modify-written; dispatches run in order, and within one each word has one writer.
 */
function placeKernel(from: DType, to: DType): Kernel {
  const per = perWord(to);
  const lb = 32 / per;
  const c = convert(from, to, rawLoad("I0", from, "src"));
  const laneMask = per === 1 ? "0xffffffffu" : per === 2 ? "0xffffu" : "0xffu";
  return {
    key: `concat:${from}:${to}`,
    inputs: 1,
    params: 4,
    code: () =>
      `${bindings({ inputs: 1, params: 4 })}
${helpers(c.deps)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let wi = g.x + g.y * nw.x * ${WG}u;
  let n = p(0u);
  let w = p(1u);
  let row = p(2u);
  let col = p(3u);
  if (wi * ${per}u >= n) { return; }
  var word = 0u;
  var mask = 0u;
  for (var l = 0u; l < ${per}u; l = l + 1u) {
    let e = wi * ${per}u + l;
    if (e >= n) { break; }
    let o = e / row;
    let cc = e - o * row;
    if (cc >= col && cc < col + w) {
      let src = o * w + (cc - col);
      word = word | ((${c.expr}) << (l * ${lb}u));
      mask = mask | (${laneMask} << (l * ${lb}u));
    }
  }
  if (mask == 0u) { return; }
  ${per === 1 ? "O[wi] = word;" : "O[wi] = (O[wi] & ~mask) | word;"}
}`,
  };
}
