/**
 * WebGPU gather, scatterAdd and concat. Each kernel writes whole output words. scatterAdd is
 * deterministic without float atomics: one invocation per output element loops over the
 * indices in order and adds the matching updates. Indices out of range cannot throw on the GPU
 * (that would need a readback): gather gives 0 for them and scatterAdd skips them.
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
import { bindings, checkAlive, type Ctx, dispatch, type Kernel } from "./runtime.ts";
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

function indexValue(idx: DType, j: string): string {
  return toI32(idx, rawLoad("I1", idx, j));
}

/** `out[o, j, i] = x[o, idx[j], i]` (see `Backend.gather`). */
export function gather(
  ctx: Ctx,
  x: Arg,
  idx: Arg,
  outer: number,
  axis: number,
  inner: number,
): GPUBuffer {
  checkAlive(ctx);
  const n = outer * idx.size * inner;
  const buf = output(ctx, x.dtype, n);
  if (n === 0) return buf;
  const k: Kernel = {
    key: `gather:${x.dtype}:${idx.dtype}`,
    inputs: 2,
    params: 4,
    code: () =>
      wordKernel({
        inputs: 2,
        params: 4,
        out: x.dtype,
        module: "",
        lane: `  let inner = p(1u);
  let nidx = p(2u);
  let axis = p(3u);
  let i = e % inner;
  let t = e / inner;
  let j = t % nidx;
  let o = t / nidx;
  var kk = ${indexValue(idx.dtype, "j")};
  if (kk < 0) { kk = kk + i32(axis); }
  if (kk < 0 || u32(kk) >= axis) { return 0u; }
  let src = (o * axis + u32(kk)) * inner + i;
  return ${rawLoad("I0", x.dtype, "src")};`,
      }),
  };
  dispatch(ctx, k, [x.h as GPUBuffer, idx.h as GPUBuffer], buf, [n, inner, idx.size, axis], mapGroups(n, x.dtype));
  return buf;
}

/** `out = base; out[o, idx[j], i] += upd[o, j, i]` (see `Backend.scatterAdd`). */
export function scatterAdd(
  ctx: Ctx,
  base: Arg,
  idx: Arg,
  upd: Arg,
  outer: number,
  axis: number,
  inner: number,
): GPUBuffer {
  checkAlive(ctx);
  const n = base.size;
  const d = base.dtype;
  const buf = output(ctx, d, n);
  if (n === 0) return buf;
  const float = isFloatDtype(d);
  const ld = (b: string, dt: DType, i: string) => {
    const r = rawLoad(b, dt, i);
    return float ? rawToF32(dt, r) : { deps: [], expr: toI32(dt, r) };
  };
  const lb = ld("I0", d, "e");
  const lu = ld("I2", upd.dtype, "(o * nidx + j) * inner + i");
  const st = float ? storeF32(d, "acc") : storeI32(d, "acc");
  const k: Kernel = {
    key: `scatterAdd:${d}:${idx.dtype}:${upd.dtype}`,
    inputs: 3,
    params: 4,
    code: () =>
      wordKernel({
        inputs: 3,
        params: 4,
        out: d,
        module: helpers([...lb.deps, ...lu.deps, ...st.deps]),
        lane: `  let inner = p(1u);
  let nidx = p(2u);
  let axis = p(3u);
  let i = e % inner;
  let t = e / inner;
  let kk = t % axis;
  let o = t / axis;
  var acc = ${lb.expr};
  for (var j = 0u; j < nidx; j = j + 1u) {
    var q = ${indexValue(idx.dtype, "j")};
    if (q < 0) { q = q + i32(axis); }
    if (q >= 0 && u32(q) == kk) { acc = acc + ${lu.expr}; }
  }
  return ${st.expr};`,
      }),
  };
  // Bindings: I0 = base, I1 = indices, I2 = updates.
  dispatch(
    ctx,
    k,
    [base.h as GPUBuffer, idx.h as GPUBuffer, upd.h as GPUBuffer],
    buf,
    [n, inner, idx.size, axis],
    mapGroups(n, d),
  );
  return buf;
}

/** Concatenate `[outer, sizes[i], inner]` blocks along the middle axis (see `Backend.concat`). */
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
    code: () => `${bindings({ inputs: 1, params: 4 })}
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
