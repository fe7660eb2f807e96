/**
 * WebGPU random fills: uniform, normal and bernoulli from the Threefry stream of lib/prng.ts.
 * The key is a uniform value; inside a recording (record.ts), a stand-in key is read from the
 * recording's key buffer instead (words `2·slot`, `2·slot + 1`), so a replay draws from the key
 * of its own call with the same kernel code otherwise.
 *
 * @example
 * ```ts
 * const h = random(ctx, keyFromSeed(0), 1000, "f32", { kind: "uniform", lo: 0, hi: 1 });
 * ```
 *
 * @module
 */
import type { DType } from "../../dtype.ts";
import type { RandomKind } from "../backend.ts";
import type { Key } from "../../prng.ts";
import { checkAlive, type Ctx, dispatch, type Kernel } from "./runtime.ts";
import { fill, output } from "./elementwise.ts";
import { helpers, storeF32, storeI32 } from "./wgsl/dtype.ts";
import { mapGroups, wordKernel } from "./wgsl/map.ts";
import { THREEFRY } from "./wgsl/random.ts";
import { recordedKey } from "./record.ts";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function bits(x: number): number {
  f32[0] = x;
  return u32[0];
}

/**
 * Fill a new buffer from the counter-based PRNG (see `Backend.random`).
 *
 * @example
 * ```ts
 * random(ctx, keyFromSeed(0), 1000, "f32", { kind: "uniform", lo: 0, hi: 1 });
 * ```
 */
export function random(
  ctx: Ctx,
  key: Key,
  size: number,
  dtype: DType,
  dist: RandomKind,
): GPUBuffer {
  checkAlive(ctx);
  // A recorded key is read from the key buffer: p(1) is its slot, p(2) unused.
  const rk = recordedKey(ctx, key);
  const k0 = rk ? "I0[p(1u) * 2u]" : "p(1u)";
  const k1 = rk ? "I0[p(1u) * 2u + 1u]" : "p(2u)";
  const kw = rk ? [rk.slot, 0] : [key.k0, key.k1];
  let params: number[];
  let lane: string;
  let deps: string[] = [];
  if (dist.kind === "uniform") {
    const lo = Math.fround(dist.lo);
    const hi = Math.fround(dist.hi);
    const d = Math.fround(hi - lo);
    if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(lo <= hi) || !Number.isFinite(d)) {
      throw new RangeError(
        `random.uniform: need finite lo <= hi with hi - lo finite in f32, got lo=${dist.lo}, hi=${dist.hi}`,
      );
    }
    if (d === 0 || size === 0) return fill(ctx, dtype, size, lo);
    const top = hi === 0 ? bits(-(2 ** -149)) : (bits(hi) + (hi > 0 ? -1 : 1)) >>> 0;
    params = [size, ...kw, bits(lo), bits(d), bits(hi), top, 0];
    const s = storeF32(dtype, "v");
    deps = s.deps;
    lane = `  let w = threefry(${k0}, ${k1}, e >> 1u, 0u)[e & 1u];
  let u = f32(w >> 8u) * 5.9604644775390625e-8;
  let prod = bitcast<f32>(bitcast<u32>(bitcast<f32>(p(4u)) * u) ^ p(7u));
  var v = bitcast<f32>(p(3u)) + prod;
  if (v >= bitcast<f32>(p(5u))) { v = bitcast<f32>(p(6u)); }
  return ${s.expr};`;
  } else if (dist.kind === "bernoulli") {
    if (!(dist.p >= 0 && dist.p <= 1)) {
      throw new RangeError(`random.bernoulli: p must be a probability in [0, 1], got ${dist.p}`);
    }
    params = [size, ...kw, Math.ceil(dist.p * 2 ** 24)];
    const s = storeI32(dtype, "v");
    deps = s.deps;
    lane = `  let w = threefry(${k0}, ${k1}, e >> 1u, 0u)[e & 1u];
  let v = select(0, 1, (w >> 8u) < p(3u));
  return ${s.expr};`;
  } else {
    params = [size, ...kw];
    const s = storeF32(dtype, "v");
    deps = [...s.deps, "ln_acc", "sincos_turn"];
    lane = `  let w = threefry(${k0}, ${k1}, e >> 1u, 0u);
  let u1 = f32((w.x >> 8u) + 1u) * 5.9604644775390625e-8;
  let u2 = f32(w.y >> 8u) * 5.9604644775390625e-8;
  let r = sqrt(-2.0 * ln_acc(u1));
  let cs = sincos_turn(u2);
  let v = r * cs[e & 1u];
  return ${s.expr};`;
  }
  const buf = output(ctx, dtype, size);
  if (size === 0) return buf;
  const inputs = rk ? 1 : 0;
  const k: Kernel = {
    key: `random:${dist.kind}:${dtype}${rk ? ":keybuf" : ""}`,
    inputs,
    params: params.length,
    code: () =>
      wordKernel({
        inputs,
        params: params.length,
        out: dtype,
        module: `${helpers(deps)}\n${THREEFRY}`,
        lane,
      }),
  };
  dispatch(ctx, k, rk ? [rk.buffer] : [], buf, params, mapGroups(size, dtype));
  return buf;
}
