import assert from "node:assert/strict";
import {
  adam8bit,
  type Adam8bitState,
  adamw8bit,
  type Moment,
  sgd8bit,
  type Sgd8bitState,
} from "../lib/optim/optim8bit.ts";
import { dequantizeBlockwise, dynamicMap, type Quantized } from "../lib/optim/quantize.ts";
import { adam } from "../lib/optim/adam.ts";
import type { Optimizer } from "../lib/optim/types.ts";
import { dispose, keep, memory, type Tensor, tensor, tidy } from "../lib/tensor.ts";
import { add, mul, sub } from "../lib/ops/elementwise.ts";
import { matmul } from "../lib/ops/matmul.ts";
import { mean, sum } from "../lib/ops/reduce.ts";
import { leaves } from "../lib/tree.ts";
import { roundTo } from "../lib/dtype.ts";
import { disposeReplaced, pipe, trainStep } from "../lib/train.ts";
import { gradScale } from "../plugins/grad_scale.ts";
import { rng } from "./rng.ts";

const SIGNED = Array.from(dynamicMap());
const UNSIGNED = Array.from(dynamicMap({ signed: false }));

// ---------------------------------------------------------------------------------------------
// Test data: a seeded PRNG (mulberry32 + Box–Muller), plain JS numbers

function randn(n: number, seed: number, scale = 1): number[] {
  const u = rng(seed);
  return Array.from({ length: n }, () => {
    const r = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
    return Math.fround(r * scale);
  });
}

/** Gradients whose scale varies from block to block (1e-4 … 1), as real ones do. */
function grads(n: number, seed: number): number[] {
  const scales = randn(Math.ceil(n / 97), seed + 1000).map((s) => 10 ** (-2 + 2 * Math.tanh(s)));
  return randn(n, seed).map((g, i) => Math.fround(g * scales[Math.floor(i / 97)]));
}

// ---------------------------------------------------------------------------------------------
// The reference: bitsandbytes' blockwise 8-bit update (`bitsandbytes-foundation/bitsandbytes
// csrc/kernels.cu` kOptimizerStatic8bit2StateBlockwise, `bitsandbytes/optim/optimizer.py`) in f64 plain JS, quantization included

interface RefQ {
  codes: number[];
  absmax: number[];
}

function refQuantize(x: number[], map: number[], bs: number): RefQ {
  const absmax: number[] = [];
  for (let s = 0; s < x.length; s += bs) {
    absmax.push(Math.max(...x.slice(s, s + bs).map(Math.abs)));
  }
  const codes = x.map((v, i) => {
    const a = absmax[Math.floor(i / bs)];
    const y = a > 0 ? Math.min(1, Math.max(-1, v / a)) : 0;
    let best = 0;
    for (let j = 1; j < 256; j++) if (Math.abs(y - map[j]) < Math.abs(y - map[best])) best = j;
    // Sign guard: momentum never changes sign.
    if (v < 0 && map[best] >= 0 && best > 0) best--;
    if (v > 0 && map[best] < 0 && best < 255) best++;
    return best;
  });
  return { codes, absmax };
}

function refDequantize(q: RefQ, map: number[], bs: number): number[] {
  return q.codes.map((c, i) => map[c] * q.absmax[Math.floor(i / bs)]);
}

interface RefOpts {
  lr: number;
  b1: number;
  b2: number;
  eps: number;
  wd: number;
  decoupled: boolean;
  eightBit: boolean;
  bs: number;
  /** Rounds the params after each step (to their storage dtype); default none (f64). */
  round?: (x: number) => number;
}

/** `steps` Adam updates of one param; returns the params and the stored moments. */
/** adam8bit's defaults, as reference options. */
const ADAM_8BIT_DEFAULTS: RefOpts = {
  lr: 1e-3,
  b1: 0.9,
  b2: 0.999,
  eps: 1e-8,
  wd: 0,
  decoupled: false,
  eightBit: true,
  bs: 256,
};

function refAdam(p0: number[], gs: number[][], o: RefOpts) {
  let p = p0.slice();
  let m = p0.map(() => 0);
  let v = p0.map(() => 0);
  let qm: RefQ | undefined;
  let qv: RefQ | undefined;
  gs.forEach((g0, step) => {
    const t = step + 1;
    const stepSize = o.lr * Math.sqrt(1 - o.b2 ** t) / (1 - o.b1 ** t);
    const epsHat = Math.sqrt(1 - o.b2 ** t) * o.eps;
    const nm: number[] = [];
    const nv: number[] = [];
    p = p.map((pi, i) => {
      const g = o.decoupled ? g0[i] : g0[i] + o.wd * pi;
      const mi = o.b1 * m[i] + (1 - o.b1) * g;
      const vi = o.b2 * v[i] + (1 - o.b2) * g * g;
      if (!Number.isFinite(Math.fround(vi))) { // non-finite g, or v overflows f32
        nm.push(0);
        nv.push(0);
        return pi;
      }
      nm.push(mi);
      nv.push(vi);
      let next = pi - stepSize * mi / (Math.sqrt(vi) + epsHat);
      if (o.decoupled) next *= 1 - o.lr * o.wd;
      return o.round ? o.round(next) : next;
    });
    if (o.eightBit) {
      qm = refQuantize(nm, SIGNED, o.bs);
      qv = refQuantize(nv, UNSIGNED, o.bs);
      m = refDequantize(qm, SIGNED, o.bs);
      v = refDequantize(qv, UNSIGNED, o.bs);
    } else [m, v] = [nm, nv];
  });
  return { p, m, v, qm, qv };
}

function refSgd(
  p0: number[],
  gs: number[][],
  o: { lr: number; mom: number; wd: number; bs: number },
) {
  let p = p0.slice();
  let m = p0.map(() => 0);
  let q: RefQ | undefined;
  for (const g0 of gs) {
    const nm: number[] = [];
    p = p.map((pi, i) => {
      const mi = o.mom * m[i] + g0[i] + o.wd * pi;
      nm.push(Number.isFinite(mi) ? mi : 0);
      return Number.isFinite(mi) ? pi - o.lr * mi : pi;
    });
    q = refQuantize(nm, SIGNED, o.bs);
    m = refDequantize(q, SIGNED, o.bs);
  }
  return { p, m, q: q! };
}

// ---------------------------------------------------------------------------------------------
// Comparison helpers

async function values(t: Tensor): Promise<number[]> {
  return Array.from(await t.data());
}

/** Max |a − b| / scale. */
function maxDiff(a: number[], b: number[], scale: number): number {
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]) / scale), 0);
}

/**
 * Params against the reference, in units of `lr`: all within `tight` but for the few elements
 * whose u8 code landed one step apart (f32 vs f64 near a midpoint), which stay within `loose`.
 */
function checkParams(got: number[], ref: number[], lr: number, what: string): string {
  const d = got.map((x, i) => Math.abs(x - ref[i]) / lr);
  const off = d.filter((x) => x > 5e-3);
  const worst = Math.max(...d);
  assert.ok(off.length <= 10, `${what}: ${off.length} params off by > 5e-3·lr`);
  assert.ok(worst < 0.5, `${what}: a param is off by ${worst}·lr`);
  return `${what} max |Δp|/lr ${worst.toExponential(2)} (${off.length} > 5e-3)`;
}

/** u8 codes against the reference: equal but for rare one-step flips. */
async function codeMismatches(q: Quantized, ref: RefQ): Promise<number> {
  const codes = await values(q.codes);
  let n = 0;
  codes.forEach((c, i) => {
    if (c !== ref.codes[i]) {
      n++;
      assert.ok(Math.abs(c - ref.codes[i]) <= 1, `code ${i}: ${c} vs ${ref.codes[i]}`);
    }
  });
  return n;
}

function isQ(m: unknown): m is Quantized {
  return typeof m === "object" && m !== null && "codes" in m;
}

const BS = 256;
const SHAPE = [70, 73]; // 5110 elements ≥ minSize 4096: 8-bit, with a tail block of 246
const N = 70 * 73;

function runSteps<S>(
  opt: { init(p: unknown): S; update(g: unknown, s: S, p: unknown): [unknown, S] },
  p0: Record<string, number[]>,
  gsteps: Record<string, number[]>[],
  shapes: Record<string, number[]>,
  dtype: "f32" | "bf16" = "f32",
): { params: Record<string, Tensor>; state: S } {
  let params: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(p0)) params[k] = tensor(v, { shape: shapes[k], dtype });
  let state = opt.init(params);
  for (const g of gsteps) {
    const gt: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(g)) gt[k] = tensor(v, { shape: shapes[k], dtype });
    const [np, ns] = tidy(() => opt.update(gt, state, params));
    disposeReplaced({ params, state }, { np, ns });
    dispose(gt);
    params = np as Record<string, Tensor>;
    state = ns;
  }
  return { params, state };
}

// ---------------------------------------------------------------------------------------------
// Adam / AdamW against the reference

async function checkAdam(name: string, decoupled: boolean, wd: number, lr = 1e-3) {
  const o = { lr, b1: 0.9, b2: 0.999, eps: 1e-8, wd, decoupled, bs: BS };
  const p0 = { w: randn(N, 1, 0.5), b: randn(100, 2, 0.5) };
  const gsteps = [0, 1, 2].map((s) => ({ w: grads(N, 10 + s), b: grads(100, 20 + s) }));
  const make = decoupled ? adamw8bit : adam8bit;
  const opt = make({ lr, weightDecay: wd, blockSize: BS });
  const { params, state } = runSteps(opt, p0, gsteps, { w: SHAPE, b: [100] });
  const refW = refAdam(p0.w, gsteps.map((g) => g.w), { ...o, eightBit: true });
  const refB = refAdam(p0.b, gsteps.map((g) => g.b), { ...o, eightBit: false });

  const s = state as Adam8bitState;
  const mu = s.mu as Record<string, Moment>;
  const nu = s.nu as Record<string, Moment>;
  assert.ok(isQ(mu.w) && isQ(nu.w), "w (5110 elements) has 8-bit moments");
  assert.ok(!isQ(mu.b) && (mu.b as Tensor).dtype === "f32", "b (100 elements) keeps f32");
  assert.equal(await s.count.item(), 3);

  // Params: within a small fraction of one step (lr) of the f64 reference.
  const dw = checkParams(await values(params.w), refW.p, lr, "w");
  const db = checkParams(await values(params.b), refB.p, lr, "b");
  // Stored moments: codes equal up to rare one-step flips at f32/f64 ties; values close.
  const flipsM = await codeMismatches(mu.w as Quantized, refW.qm!);
  const flipsV = await codeMismatches(nu.w as Quantized, refW.qv!);
  const mDeq = await values(dequantizeBlockwise(mu.w as Quantized, dynamicMap(), BS));
  const vDeq = await values(
    dequantizeBlockwise(nu.w as Quantized, dynamicMap({ signed: false }), BS),
  );
  const mScale = Math.max(...refW.qm!.absmax);
  const vScale = Math.max(...refW.qv!.absmax);
  const dm = maxDiff(mDeq, refW.m, mScale);
  const dv = maxDiff(vDeq, refW.v, vScale);
  console.log(
    `${name}: ${dw}; ${db}; code flips m ${flipsM} v ${flipsV} of ${N}; ` +
      `max Δm/absmax ${dm.toExponential(2)} Δv/absmax ${dv.toExponential(2)}`,
  );
  assert.ok(flipsM + flipsV <= 10, `${flipsM} + ${flipsV} code flips`);
  assert.ok(dm < 2e-2 && dv < 2e-2, `${dm} ${dv}`);
  dispose([params, state]);
}

Deno.test("adam8bit: 3 steps match an f64 reference of the algorithm", async () => {
  await checkAdam("adam8bit", false, 0);
});

Deno.test("adam8bit: L2 weight decay (coupled) matches the reference", async () => {
  await checkAdam("adam8bit wd", false, 0.1);
});

Deno.test("adamw8bit: decoupled decay after the step matches the reference", async () => {
  // lr·wd large enough that decaying before instead of after the step would show.
  await checkAdam("adamw8bit", true, 0.5, 0.05);
});

// ---------------------------------------------------------------------------------------------
// SGD with momentum against the reference

Deno.test("sgd8bit: 3 steps match an f64 reference of the algorithm", async () => {
  const o = { lr: 0.05, mom: 0.9, wd: 0.01, bs: BS };
  const p0 = { w: randn(N, 3, 0.5) };
  const gsteps = [0, 1, 2].map((s) => ({ w: grads(N, 30 + s) }));
  const opt = sgd8bit({ lr: o.lr, momentum: o.mom, weightDecay: o.wd, blockSize: BS });
  const { params, state } = runSteps(opt, p0, gsteps, { w: SHAPE });
  const ref = refSgd(p0.w, gsteps.map((g) => g.w), o);
  const buf = (state as Sgd8bitState).momentum as Record<string, Quantized>;
  const flips = await codeMismatches(buf.w, ref.q);
  const dp = checkParams(await values(params.w), ref.p, o.lr, "w");
  const mDeq = await values(dequantizeBlockwise(buf.w, dynamicMap(), BS));
  const dm = maxDiff(mDeq, ref.m, Math.max(...ref.q.absmax));
  console.log(`sgd8bit: ${dp}; code flips ${flips}; max Δm/absmax ${dm.toExponential(2)}`);
  assert.ok(flips <= 5);
  assert.ok(dm < 2e-2);
  assert.equal(await (state as Sgd8bitState).count.item(), 3);
  dispose([params, state]);
});

Deno.test("adam8bit, sgd8bit: tiny negative momentum stays negative (sign guard)", async () => {
  const g = new Array(N).fill(0);
  g[0] = 1;
  g[1] = -1e-9; // m/absmax ≈ −1e−9: nearest code is 0, the guard moves it to −5.5e−7
  g[2] = 1e-9; // positive: stays at 0, as in bitsandbytes
  for (const opt of [adam8bit(), sgd8bit({ lr: 0.1 })] as Optimizer<unknown>[]) {
    const { params, state } = runSteps(opt, { w: randn(N, 9) }, [{ w: g }], { w: SHAPE });
    const s = state as { mu?: Record<string, Quantized>; momentum?: Record<string, Quantized> };
    const q = (s.mu ?? s.momentum)!.w;
    const m = await values(dequantizeBlockwise(q, dynamicMap(), 256));
    assert.ok(m[1] < 0 && m[1] > -1e-6, `m[1] = ${m[1]}`);
    assert.equal(m[2], 0);
    assert.deepEqual(Array.from((await q.codes.data()).subarray(0, 4)), [255, 126, 127, 127]);
    dispose([params, state]);
  }
});

Deno.test("sgd8bit: momentum must be > 0", () => {
  assert.throws(() => sgd8bit({ lr: 0.1, momentum: 0 }), /momentum must be a finite number > 0/);
});

// ---------------------------------------------------------------------------------------------
// Dtypes, non-finite gradients, skips, memory

Deno.test("adam8bit: state dtypes are u8 + f32; bf16 params stay bf16", async () => {
  const p0 = { w: randn(N, 4, 0.5) };
  const gsteps = [grads(N, 40), grads(N, 41)].map((w) => ({ w }));
  const { params, state } = runSteps(adam8bit({ minSize: 4096 }), p0, gsteps, { w: SHAPE }, "bf16");
  assert.equal(params.w.dtype, "bf16");
  const dtypes = new Set(leaves(state).map((t) => t.dtype));
  assert.deepEqual([...dtypes].sort(), ["f32", "u8"]);
  const mu = state.mu as Record<string, Quantized>;
  assert.deepEqual(mu.w.codes.shape, SHAPE);
  assert.deepEqual(mu.w.absmax.shape, [Math.ceil(N / 256)]);
  // Same as the reference (f64, then rounded once to bf16) but for a few last-bit differences.
  const p0bf = Array.from(await tensor(p0.w, { dtype: "bf16" }).data());
  const gbf = await Promise.all(
    gsteps.map(async (g) => Array.from(await tensor(g.w, { dtype: "bf16" }).data())),
  );
  const ref = refAdam(p0bf, gbf, { ...ADAM_8BIT_DEFAULTS, round: (x) => roundTo("bf16", x) });
  const got = await values(params.w);
  const differ = got.filter((v, i) => v !== ref.p[i]).length;
  console.log(`bf16 params: ${differ} of ${N} differ from the reference`);
  assert.ok(differ <= 10, `${differ} bf16 params differ`);
  dispose([params, state]);
});

Deno.test("adam8bit: non-finite grad elements zero their moments and keep their params", async () => {
  const p0 = { w: randn(N, 5, 0.5) };
  const g = grads(N, 50);
  g[3] = NaN;
  g[400] = Infinity;
  g[401] = -Infinity;
  g[5000] = 1e30; // g² overflows f32: treated like a non-finite gradient
  const { params, state } = runSteps(adam8bit(), p0, [{ w: grads(N, 51) }, { w: g }], { w: SHAPE });
  const before = runSteps(adam8bit(), p0, [{ w: grads(N, 51) }], { w: SHAPE });
  const pw = await values(params.w);
  const pb = await values(before.params.w);
  const m = await values(
    dequantizeBlockwise((state.mu as Record<string, Quantized>).w, dynamicMap(), 256),
  );
  const v = await values(
    dequantizeBlockwise(
      (state.nu as Record<string, Quantized>).w,
      dynamicMap({ signed: false }),
      256,
    ),
  );
  for (const i of [3, 400, 401, 5000]) {
    assert.equal(pw[i], pb[i], `param ${i} unchanged`);
    assert.equal(m[i], 0);
    assert.equal(v[i], 0);
  }
  assert.ok(pw.every(Number.isFinite) && m.every(Number.isFinite) && v.every(Number.isFinite));
  assert.ok(pw.filter((x, i) => x !== pb[i]).length > N - 10, "other elements update");
  const ref = refAdam(p0.w, [grads(N, 51), g], ADAM_8BIT_DEFAULTS);
  checkParams(pw, ref.p, 1e-3, "w");
  dispose([params, state, before.params, before.state]);
});

Deno.test("adam8bit under gradScale: a non-finite step keeps params, codes and absmax bitwise", async () => {
  // The real plugin pipeline: trainStep + adam8bit + gradScale, with a batch whose gradient has
  // an Inf. The loss Σ w·gw + Σ b·gb has the gradient (gw, gb), so each batch sets the grads.
  type Batch = { gw: Tensor; gb: Tensor };
  type Params = { w: Tensor; b: Tensor };
  const loss = (p: Params, x: Batch) => add(sum(mul(p.w, x.gw)), sum(mul(p.b, x.gb)));
  const step = pipe(trainStep({ loss, optimizer: adam8bit() }), gradScale());
  const batch = (seed: number, bad = false): Batch => {
    const gw = grads(N, seed);
    if (bad) gw[1234] = Infinity;
    return { gw: tensor(gw, { shape: SHAPE }), gb: tensor(grads(10, seed + 1)) };
  };
  const before = memory().tensors;
  const [b1, bad, b3] = [batch(60), batch(62, true), batch(64)];
  const start = step.init({
    w: tensor(randn(N, 6, 0.5), { shape: SHAPE }),
    b: tensor(randn(10, 7)),
  });
  const [s1, m1] = step(start, b1);
  const [s2, m2] = step(s1, bad);
  const [s3, m3] = step(s2, b3);
  assert.deepEqual(
    await Promise.all([m1, m2, m3].map((m) => m.skipped.item())),
    [0, 1, 0],
    "only the step with an Inf gradient is skipped",
  );
  assert.deepEqual(await Promise.all([m1, m2, m3].map((m) => m.scale.item())), [
    65536,
    65536,
    32768,
  ]);
  // The skipped step: params and every 8-bit state leaf (codes, absmax, count) bitwise unchanged.
  const [old, kept] = [leaves([s1.params, s1.opt]), leaves([s2.params, s2.opt])];
  assert.equal(old.length, kept.length);
  assert.ok(old.some((t) => t.dtype === "u8"), "the moments are 8-bit codes");
  for (let i = 0; i < old.length; i++) {
    assert.equal(kept[i].dtype, old[i].dtype);
    assert.deepEqual(await kept[i].bits(), await old[i].bits(), `state leaf ${i}`);
  }
  assert.equal(await (s2.opt as Adam8bitState).count.item(), 1);
  // The skip left no trace: the run equals one that never saw the bad batch, bit for bit (the
  // grads are linear in the power-of-two scale, so unscaling is exact).
  const [c1, n1] = step(start, b1);
  const [c2, n2] = step(c1, b3);
  const [got, want] = [leaves([s3.params, s3.opt]), leaves([c2.params, c2.opt])];
  for (let i = 0; i < got.length; i++) {
    assert.deepEqual(await got[i].bits(), await want[i].bits(), `after the skip, leaf ${i}`);
  }
  assert.notDeepEqual(await (s3.params as Params).w.bits(), await (s2.params as Params).w.bits());
  dispose([start, s1, s2, s3, m1, m2, m3, c1, c2, n1, n2, b1, bad, b3]);
  assert.equal(memory().tensors, before);
});

Deno.test("adam8bit: state ≤ 2.05 bytes per parameter (32-bit Adam: 8)", () => {
  // An MLP whose tensors all have ≥ minSize elements.
  const shapes = { w1: [128, 256], b1: [256], w2: [256, 64], b2: [64] };
  const minSize = 64;
  const params = Object.fromEntries(
    Object.entries(shapes).map((
      [k, s],
      i,
    ) => [k, tensor(randn(s[0] * (s[1] ?? 1), i), { shape: s })]),
  );
  const n = leaves(params).reduce((a, t) => a + t.size, 0);
  const measure = (make: () => unknown) => {
    const before = memory();
    const state = make();
    const after = memory();
    const byDtype: Record<string, number> = {};
    for (const [d, e] of Object.entries(after.byDtype)) {
      byDtype[d] = (e?.bytes ?? 0) - (before.byDtype[d as "f32"]?.bytes ?? 0);
    }
    const summed = leaves(state).reduce((a, t) => a + t.size * (t.dtype === "u8" ? 1 : 4), 0);
    dispose(state);
    return { perParam: (after.bytes - before.bytes) / n, summed: summed / n, byDtype };
  };
  const q = measure(() => adam8bit({ minSize }).init(params));
  const full = measure(() => adam({ stateDtype: "f32" }).init(params));
  console.log(
    `state bytes/param over ${n} params: adam8bit ${q.perParam.toFixed(4)} ` +
      `(u8 ${q.byDtype.u8}, f32 ${q.byDtype.f32}), adam ${full.perParam.toFixed(4)}`,
  );
  assert.ok(q.perParam <= 2.05, `${q.perParam}`);
  assert.equal(q.perParam, q.summed);
  assert.deepEqual(Object.keys(q.byDtype).filter((d) => q.byDtype[d] !== 0).sort(), ["f32", "u8"]);
  assert.ok(full.perParam >= 8);
  dispose(params);
});

Deno.test("adam8bit: a schedule sees the applied-update count (0 first)", async () => {
  const seen: Tensor[] = [];
  const lr = (count: Tensor) => {
    seen.push(keep(add(count, 0)));
    return add(mul(count, 0), 1e-3);
  };
  const p0 = { w: randn(N, 8, 0.5) };
  const gsteps = [grads(N, 80), grads(N, 81)].map((w) => ({ w }));
  const a = runSteps(adam8bit({ lr }), p0, gsteps, { w: SHAPE });
  const b = runSteps(adam8bit({ lr: 1e-3 }), p0, gsteps, { w: SHAPE });
  assert.deepEqual(await Promise.all(seen.map((t) => t.item())), [0, 1]);
  assert.deepEqual(await a.params.w.data(), await b.params.w.data());
  dispose([a, b, seen]);
});

Deno.test("adamw8bit: trains a small regression through trainStep; memory stays flat", async () => {
  const x = tensor(randn(64 * 32, 90), { shape: [64, 32] });
  const wTrue = tensor(randn(32 * 8, 91), { shape: [32, 8] });
  const y = matmul(x, wTrue);
  const loss = (p: { w: Tensor }) => mean(mul(sub(matmul(x, p.w), y), sub(matmul(x, p.w), y)));
  const step = trainStep({ loss, optimizer: adamw8bit({ lr: 0.05, minSize: 0, blockSize: 64 }) });
  let state = step.init({ w: tensor(new Float32Array(32 * 8), { shape: [32, 8] }) });
  const losses: number[] = [];
  let bytesAfterFirst = 0;
  for (let i = 0; i < 60; i++) {
    const [next, metrics] = step(state, undefined);
    if (i > 0) disposeReplaced(state, next);
    if (i % 20 === 0 || i === 59) losses.push(await metrics.loss.item());
    dispose(metrics);
    state = next;
    if (i === 1) bytesAfterFirst = memory().bytes;
  }
  assert.equal(memory().bytes, bytesAfterFirst, "no growth from step to step");
  assert.ok(losses.at(-1)! < losses[0] * 0.05, `losses ${losses}`);
  dispose([x, wTrue, y]);
});

Deno.test("adam8bit: f64 params compute in f64 and stay f64; small f64 tensors keep f32 moments", async () => {
  const p0 = { w: randn(N, 11, 0.5), b: randn(10, 12) };
  const shapes = { w: SHAPE, b: [10] };
  const gs = [{ w: grads(N, 110), b: grads(10, 111) }];
  let params: Record<string, Tensor> = {
    w: tensor(p0.w, { shape: SHAPE, dtype: "f64" }),
    b: tensor(p0.b, { dtype: "f64" }),
  };
  const opt = adam8bit();
  const s0 = opt.init(params);
  const g = {
    w: tensor(gs[0].w, { shape: shapes.w, dtype: "f64" }),
    b: tensor(gs[0].b, { dtype: "f64" }),
  };
  const [p1, s1] = opt.update(g, s0, params);
  params = p1 as Record<string, Tensor>;
  assert.equal(params.w.dtype, "f64");
  assert.equal((s1.mu as Record<string, Tensor>).b.dtype, "f32");
  assert.deepEqual([...new Set(leaves(s1).map((t) => t.dtype))].sort(), ["f32", "u8"]);
  const ref = refAdam(p0.w, [gs[0].w], ADAM_8BIT_DEFAULTS);
  checkParams(await values(params.w), ref.p, 1e-3, "w");
  dispose([params, s0, s1, g]);
});
