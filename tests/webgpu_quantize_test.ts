/**
 * Block-wise 8-bit quantization on WebGPU against the CPU kernels, and the 8-bit optimizers
 * (adam8bit, adamw8bit, sgd8bit) run on WebGPU against the same steps on the CPU.
 *
 * - Kernels (`Backend.quantize` / `Backend.dequantize`): bitwise, over random sizes (tails
 *   that are not multiples of 4 nor of the block size), block sizes 64/256/2048, input dtypes
 *   f32/f16/bf16, both dynamic maps and one reaching past ±1, sign guard on and off, and blocks
 *   that are all zero, hold NaN or ±Inf, sit exactly on entries and midpoints (ties), have
 *   subnormal values or a wrong absmax (clamping, 0, negative, NaN, Inf, subnormal); also on a
 *   2-D dispatch grid.
 * - Optimizers, 3 steps: u8 codes, absmax, f32 moments and the count bitwise. The moments are
 *   exact on the GPU (dequantize, mul, add, square, isFinite, where and quantize are correctly
 *   rounded), so no code may differ. SGD uses nothing else and its params are bitwise too.
 *   Adam's params go through `sqrt` (a WGSL built-in, ≤ 3 ulp; exact on the software
 *   adapters) and the bias correction `1 − pow(b2, t)`: the GPU's `pow` multiplies in f32 for
 *   integer t, so `b2³` may be 1 ulp off the CPU's f64 `Math.pow` (t = 1, 2 agree), and the
 *   cancellation in `1 − b2³` makes that a ≈ 1e-5 relative error of the step size. Params are
 *   therefore allowed {@link PARAM_ULPS} ulp plus 1e-4·lr (see `Tolerance`); measured: after 2
 *   steps every param is bitwise equal, after 3, 90–99 % differ, by at most 4.6e-5·lr beyond
 *   2 ulp.
 * - 100 adam8bit steps on WebGPU: live memory and the buffer pool stay flat, and no step reads
 *   back (`readbackCount()` does not move until an explicit read).
 *
 * Bitwise counts two NaNs as equal. Run on both software adapters:
 * `DENO_WEBGPU_BACKEND=vulkan` (lavapipe, shader-f16) and `DENO_WEBGPU_BACKEND=gl` (llvmpipe).
 */
import fc from "./fc.ts";
import assert from "node:assert/strict";
import { decode, type DType, encode, type Storage } from "../lib/dtype.ts";
import type { Arg, Backend } from "../lib/backend/backend.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { readbackCount, webgpu } from "../lib/backend/webgpu/webgpu.ts";
import { dispose, memory, type Tensor, tensor, tidy } from "../lib/tensor.ts";
import { adam8bit, adamw8bit, sgd8bit } from "../lib/optim/optim8bit.ts";
import { dequantizeBlockwise, dynamicMap, quantizeBlockwise } from "../lib/optim/quantize.ts";
import type { Optimizer } from "../lib/optim/types.ts";
import { disposeReplaced } from "../lib/train.ts";
import { leaves } from "../lib/tree.ts";
import { gtest } from "./webgpu_setup.ts";
import { rng } from "./rng.ts";

const FC = { numRuns: 40, endOnFailure: true } as const;
/** The two dynamic maps and an ascending map reaching past ±1 (where the clamp matters). */
const MAPS = {
  signed: dynamicMap(),
  unsigned: dynamicMap({ signed: false }),
  wide: Float32Array.from({ length: 256 }, (_, i) => ((i - 120) / 64) ** 3).sort(),
};
type MapName = keyof typeof MAPS;

/** Largest f32 ulp distance allowed between a CPU and a WebGPU param after 3 Adam steps. */
const PARAM_ULPS = 2;

// ---------------------------------------------------------------------------------------------
// Data: a seeded PRNG and blocks of different kinds

function gauss(u: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

const KINDS = ["normal", "normal", "zero", "nan", "inf", "ties", "subnormal", "wild"] as const;

/** One block's values (before rounding to the dtype) and, for "wild", a chosen absmax. */
function block(kind: (typeof KINDS)[number], len: number, u: () => number, map: Float32Array) {
  const pick = () => Math.floor(u() * len);
  const scale = 10 ** (-6 + 9 * u());
  const xs = Array.from({ length: len }, () => gauss(u) * scale);
  let absmax: number | undefined;
  if (kind === "zero") xs.fill(u() < 0.5 ? 0 : -0);
  else if (kind === "nan") xs[pick()] = NaN;
  else if (kind === "inf") xs[pick()] = u() < 0.5 ? Infinity : -Infinity;
  else if (kind === "ties") {
    // absmax a power of two, values on map entries and on midpoints: exact quotients.
    const p = 2 ** Math.floor(-8 + 16 * u());
    for (let i = 0; i < len; i++) {
      const j = Math.floor(u() * 255);
      const mid = Math.fround((map[j] + map[j + 1]) / 2);
      xs[i] = p * (u() < 0.5 ? mid : map[j]) * (u() < 0.2 ? -1 : 1);
    }
    xs[pick()] = p;
    absmax = p;
  } else if (kind === "subnormal") {
    for (let i = 0; i < len; i++) xs[i] = Math.round(gauss(u) * 2 ** 20) * 2 ** -149;
  } else if (kind === "wild") {
    absmax = [0, -1, NaN, Infinity, 2 ** -140, scale / 4, scale * 4][Math.floor(u() * 7)];
  }
  return { xs, absmax };
}

/** Values of `n` elements in `dtype` storage and an f32 absmax per block. */
function quantCase(n: number, bs: number, dtype: DType, seed: number, map: Float32Array) {
  const u = rng(seed);
  const xs: number[] = [];
  const chosen: (number | undefined)[] = [];
  for (let start = 0; start < n; start += bs) {
    const kind = KINDS[Math.floor(u() * KINDS.length)];
    const b = block(kind, Math.min(bs, n - start), u, map);
    xs.push(...b.xs);
    chosen.push(b.absmax);
  }
  const x = encode(dtype, xs);
  const vals = decode(dtype, x);
  const absmax = new Float32Array(chosen.length);
  chosen.forEach((a, b) => {
    if (a !== undefined) return void (absmax[b] = a);
    let m = 0;
    for (let i = b * bs; i < Math.min(n, (b + 1) * bs); i++) {
      const v = Math.abs(vals[i]);
      m = v > m || Number.isNaN(v) ? v : m;
    }
    absmax[b] = m;
  });
  return { x, absmax };
}

// ---------------------------------------------------------------------------------------------
// Backend-level comparison

function arg(be: Backend, dtype: DType, data: Storage): Arg {
  return { h: be.upload(dtype, data), dtype, size: data.length };
}

/** Run a kernel on both backends with the same host inputs; both outputs as storage. */
async function both(
  g: Backend,
  ins: readonly [DType, Storage][],
  run: (be: Backend, args: Arg[]) => unknown,
  out: DType,
  n: number,
): Promise<[Storage, Storage]> {
  const res: Storage[] = [];
  for (const be of [cpu, g]) {
    const args = ins.map(([d, s]) => arg(be, d, s));
    const h = run(be, args);
    res.push(await be.read({ h, dtype: out, size: n }));
    be.free(h, out, n);
    for (const a of args) be.free(a.h, a.dtype, a.size);
  }
  return [res[0], res[1]];
}

/** Bitwise equality of two storages of `d` (any NaN equals any NaN). */
function assertBits(d: DType, want: Storage, got: Storage, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const wv = d === "u8" ? want : decode(d, want);
  const gv = d === "u8" ? got : decode(d, got);
  for (let i = 0; i < want.length; i++) {
    if (want[i] === got[i] || (Number.isNaN(wv[i]) && Number.isNaN(gv[i]))) continue;
    assert.fail(`${what}: element ${i} differs: cpu ${wv[i]}, webgpu ${gv[i]}`);
  }
}

const caseArb = fc.record({
  n: fc.oneof(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 600, max: 9000 })),
  bs: fc.constantFrom(64, 256, 2048),
  dtype: fc.constantFrom<DType>("f32", "f16", "bf16"),
  guard: fc.boolean(),
  map: fc.constantFrom<MapName>("signed", "unsigned", "wide"),
  seed: fc.integer(),
});

gtest(
  "quantize: bitwise with the cpu over sizes, block sizes, dtypes, guard, odd blocks",
  async (g) => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ n, bs, dtype, guard, map: name, seed }) => {
        const map = MAPS[name];
        const { x, absmax } = quantCase(n, bs, dtype, seed, map);
        const [c, w] = await both(
          g,
          [[dtype, x], ["f32", absmax], ["f32", map]],
          (be, [xa, aa, ma]) => be.quantize(xa, aa, ma, bs, guard),
          "u8",
          n,
        );
        assertBits("u8", c, w, `quantize ${dtype}[${n}] bs ${bs} guard ${guard} map ${name}`);
      }),
      FC,
    );
  },
);

gtest("dequantize: bitwise with the cpu to f32, f16, bf16 and fp8", async (g) => {
  const outs = fc.constantFrom<DType>("f32", "f16", "bf16", "f8e4m3", "f8e5m2");
  await fc.assert(
    fc.asyncProperty(caseArb, outs, async ({ n, bs, map: name, seed }, out) => {
      const map = MAPS[name];
      const u = rng(seed);
      const codes = Uint8Array.from({ length: n }, () => Math.floor(u() * 256));
      const specials = [0, NaN, Infinity, 2 ** -140, 2 ** -126, 3e38, 1];
      const absmax = Float32Array.from(
        { length: Math.ceil(n / bs) },
        () => u() < 0.3 ? specials[Math.floor(u() * specials.length)] : 10 ** (-30 + 35 * u()),
      );
      const [c, w] = await both(
        g,
        [["u8", codes], ["f32", absmax], ["f32", map]],
        (be, [ca, aa, ma]) => be.dequantize(ca, aa, ma, bs, out),
        out,
        n,
      );
      assertBits(out, c, w, `dequantize to ${out}, n ${n}, bs ${bs}, map ${name}`);
    }),
    FC,
  );
});

gtest("quantizeBlockwise/dequantizeBlockwise ops: the same codes, absmax and values", async (g) => {
  const { x } = quantCase(3000, 256, "f32", 5, MAPS.signed);
  for (const dtype of ["f32", "bf16"] as const) {
    const xc = tensor(decode("f32", x), { shape: [60, 50], dtype });
    const xg = tensor(decode("f32", x), { shape: [60, 50], dtype, device: g });
    const qc = quantizeBlockwise(xc, MAPS.signed, 256, { signGuard: true });
    const qg = quantizeBlockwise(xg, MAPS.signed, 256, { signGuard: true });
    assert.equal(qg.codes.device, g);
    assertBits("u8", await qc.codes.data() as Storage, await qg.codes.data() as Storage, "codes");
    assertBits("f32", await qc.absmax.data() as Storage, await qg.absmax.data() as Storage, "amax");
    const dc = dequantizeBlockwise(qc, MAPS.signed, 256, [60, 50], "f16");
    const dg = dequantizeBlockwise(qg, MAPS.signed, 256, [60, 50], "f16");
    assert.deepEqual(dg.shape, [60, 50]);
    assertBits("f32", new Float32Array(await dc.data()), new Float32Array(await dg.data()), "dq");
    dispose([xc, xg, qc, qg, dc, dg]);
  }
});

gtest("quantize/dequantize: a 2-D grid (device capped at 5 workgroups per dimension)", async () => {
  const small = await webgpu({ maxWorkgroupsPerDimension: 5 });
  // 9001 codes: 9 workgroups (a 5×2 grid), 18 for f16 values (5×4), idle groups at the end.
  const n = 9001;
  const { x, absmax } = quantCase(n, 64, "bf16", 77, MAPS.signed);
  const ins: [DType, Storage][] = [["bf16", x], ["f32", absmax], ["f32", MAPS.signed]];
  const [c, w] = await both(
    small,
    ins,
    (be, [xa, aa, ma]) => be.quantize(xa, aa, ma, 64, true),
    "u8",
    n,
  );
  assertBits("u8", c, w, "quantize on a 2-D grid");
  const dq: [DType, Storage][] = [["u8", c], ["f32", absmax], ["f32", MAPS.signed]];
  const [dc, dw] = await both(
    small,
    dq,
    (be, [ca, aa, ma]) => be.dequantize(ca, aa, ma, 64, "f16"),
    "f16",
    n,
  );
  assertBits("f16", dc, dw, "dequantize on a 2-D grid");
  small.device.destroy();
});

// ---------------------------------------------------------------------------------------------
// Optimizers: 3 steps on both devices

type P = Record<string, Tensor>;
const SHAPES: Record<string, number[]> = { w: [70, 73], b: [100] }; // w: 8-bit, tail block

function hostData(seed: number, scale: number): Record<string, Float32Array> {
  const u = rng(seed);
  return Object.fromEntries(
    Object.entries(SHAPES).map(([k, s]) => {
      const n = s.reduce((a, b) => a * b, 1);
      // Per-97 scales spread blocks from 1e-4 to 1, as real gradients are.
      const scales = Array.from({ length: Math.ceil(n / 97) }, () => 10 ** (-4 + 4 * u()));
      return [k, Float32Array.from({ length: n }, (_, i) => gauss(u) * scale * scales[i / 97 | 0])];
    }),
  );
}

function onDevice(data: Record<string, Float32Array>, device: Backend, dtype: DType): P {
  return Object.fromEntries(
    Object.entries(data).map(([k, v]) => [k, tensor(v, { shape: SHAPES[k], dtype, device })]),
  );
}

/** 3 update steps of `opt` on `device`: the final params and state. */
function threeSteps<S>(opt: Optimizer<S>, device: Backend, dtype: DType): [P, S] {
  let params = onDevice(hostData(1, 0.5), device, dtype);
  let state = opt.init(params);
  for (let s = 0; s < 3; s++) {
    const grads = onDevice(hostData(10 + s, 1), device, dtype);
    const [np, ns] = tidy(() => opt.update(grads, state, params));
    disposeReplaced({ params, state }, { np, ns });
    dispose(grads);
    params = np;
    state = ns;
  }
  return [params, state];
}

/** One unit in the last place of `x` in `dtype` (f32 or bf16), subnormals included. */
function ulp(x: number, dtype: DType): number {
  const mant = dtype === "bf16" ? 7 : 23;
  const e = x === 0 ? -126 : Math.max(Math.floor(Math.log2(Math.abs(x))), -126);
  return 2 ** (e - mant);
}

/**
 * Allowed `|p_webgpu − p_cpu|`: `ulps · ulp(p) + lrSlack · lr`. The second term bounds what the
 * GPU's bias correction adds: `pow(b2, 3)` may be 1 ulp off (two f32 roundings), and
 * `1 − b2³ ≈ 0.003` turns that into a relative error of 2^-24 / 0.003 ≈ 2e-5 of `1 − b2ᵗ`,
 * ≈ 1e-5 of the step size after the square root; an Adam step moves a param by at most
 * ≈ 3.2·lr (`(1 − b1)/√(1 − b2)`), so 3 steps are off by at most ≈ 1e-4·lr.
 */
interface Tolerance {
  readonly ulps: number;
  readonly lrSlack: number;
  readonly lr: number;
}

async function compareSteps<S>(
  g: Backend,
  name: string,
  make: () => Optimizer<S>,
  tol: Tolerance,
  dtype: DType = "f32",
): Promise<void> {
  const [pc, sc] = threeSteps(make(), cpu, dtype);
  const [pg, sg] = threeSteps(make(), g, dtype);
  const lc = leaves(sc);
  const lg = leaves(sg);
  assert.equal(lg.length, lc.length);
  assert.ok(lc.some((t) => t.dtype === "u8"), `${name}: has 8-bit moments`);
  for (let i = 0; i < lc.length; i++) {
    assert.equal(lg[i].device, g);
    const want = await lc[i].data() as Storage;
    const got = await lg[i].data() as Storage;
    assertBits(lc[i].dtype, want, got, `${name}: state leaf ${i} (${lc[i].dtype})`);
  }
  let differ = 0;
  let total = 0;
  let worstUlps = 0;
  let worstLr = 0;
  for (const k of Object.keys(SHAPES)) {
    const a = await pc[k].data();
    const b = await pg[k].data();
    total += a.length;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i] - b[i]);
      if (a[i] === b[i]) continue;
      differ++;
      const u = ulp(Math.max(Math.abs(a[i]), Math.abs(b[i])), dtype);
      worstUlps = Math.max(worstUlps, d / u);
      worstLr = Math.max(worstLr, Math.max(0, d - tol.ulps * u) / tol.lr);
      assert.ok(
        d <= tol.ulps * u + tol.lrSlack * tol.lr,
        `${name}: ${k}[${i}] cpu ${a[i]}, webgpu ${b[i]}: beyond ${tol.ulps} ulp + ` +
          `${tol.lrSlack}·lr`,
      );
    }
  }
  console.log(
    `${name} (${dtype} params): ${differ}/${total} params differ; worst ${worstUlps} ulp, ` +
      `worst excess over ${tol.ulps} ulp ${worstLr.toExponential(2)}·lr`,
  );
  dispose([pc, sc, pg, sg]);
}

const ADAM_TOL = { ulps: PARAM_ULPS, lrSlack: 1e-4 };

gtest("adam8bit: 3 steps, moments bitwise, params within 2 ulp + 1e-4·lr", async (g) => {
  await compareSteps(g, "adam8bit", () => adam8bit({ lr: 1e-3 }), { ...ADAM_TOL, lr: 1e-3 });
});

gtest("adamw8bit: 3 steps, moments bitwise, params within 2 ulp + 1e-4·lr", async (g) => {
  const lr = 1e-2;
  const tol = { ...ADAM_TOL, lr };
  await compareSteps(g, "adamw8bit", () => adamw8bit({ lr, weightDecay: 0.1 }), tol);
  const small = () => adamw8bit({ lr, blockSize: 64, minSize: 64 });
  await compareSteps(g, "adamw8bit", small, tol, "bf16");
});

gtest("sgd8bit: 3 steps, moments and params bitwise (no sqrt, no pow)", async (g) => {
  const exact = { ulps: 0, lrSlack: 0, lr: 0.1 };
  await compareSteps(g, "sgd8bit", () => sgd8bit({ lr: 0.1, weightDecay: 1e-3 }), exact);
  const big = () => sgd8bit({ lr: 0.1, blockSize: 2048 });
  await compareSteps(g, "sgd8bit", big, exact, "bf16");
});

gtest("adam8bit on webgpu: memory flat over 100 steps, no mapAsync while stepping", async (g) => {
  const opt = adam8bit({ lr: 1e-3 });
  let params = onDevice(hostData(1, 0.5), g, "f32");
  const grads = onDevice(hostData(2, 1), g, "f32");
  let state = opt.init(params);
  const step = () => {
    const [np, ns] = tidy(() => opt.update(grads, state, params));
    disposeReplaced({ params, state }, { np, ns });
    params = np;
    state = ns;
  };
  for (let i = 0; i < 5; i++) step();
  await params.w.data();
  const mem0 = memory(g);
  const pool0 = g.poolStats();
  const reads0 = readbackCount();
  const t0 = performance.now();
  for (let i = 0; i < 100; i++) step();
  assert.equal(readbackCount(), reads0, "100 steps enqueue without any mapAsync");
  const w = await params.w.data();
  const ms = performance.now() - t0;
  assert.equal(readbackCount(), reads0 + 1, "one explicit read, one mapAsync");
  assert.ok(w.every(Number.isFinite));
  const mem1 = memory(g);
  const pool1 = g.poolStats();
  assert.equal(mem1.tensors, mem0.tensors, "live tensors");
  assert.equal(mem1.buffers, mem0.buffers, "live buffers");
  assert.equal(mem1.bytes, mem0.bytes, "live bytes");
  assert.equal(pool1.created, pool0.created, "no new GPUBuffers after warm-up");
  assert.equal(pool1.inUse, pool0.inUse, "GPU buffers in use");
  console.log(`100 adam8bit steps (5110 + 100 params) on ${g.name}: ${ms.toFixed(0)} ms`);
  dispose([params, grads, state]);
});
