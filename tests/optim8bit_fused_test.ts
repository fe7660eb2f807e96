/**
 * The one-pass 8-bit update (`Backend.blockwise8bitUpdate`: WebAssembly, or the TypeScript loop
 * under NBIT_WASM=0 and for block sizes that are not a multiple of 4) against the composed ops
 * (`fused: false`, the reference), bitwise, eager and jitted: random shapes (sizes not a
 * multiple of the block), lr and weight decay, schedules, non-finite gradients, f32/bf16/f16
 * params; memory stays flat.
 */
import fc from "./fc.ts";
import assert from "node:assert/strict";
import { adam8bit, adamw8bit, sgd8bit } from "../lib/optim/optim8bit.ts";
import type { Optimizer } from "../lib/optim/types.ts";
import { dispose, memory, type Tensor, tensor, tidy } from "../lib/tensor.ts";
import { mul } from "../lib/ops/elementwise.ts";
import { sum } from "../lib/ops/reduce.ts";
import { pipe, trainStep } from "../lib/train.ts";
import { gradScale } from "../plugins/grad_scale.ts";
import type { DType } from "../lib/dtype.ts";
import { jit } from "../lib/jit/mod.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import { rng } from "./rng.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import type { Arg } from "../lib/backend/backend.ts";
import { blockwise8bitOutputs, type Blockwise8bitUpdate } from "../lib/backend/optim8.ts";
import { blockwise8bitUpdateKernel } from "../lib/backend/cpu/optim8.ts";
import { UPDATE_SPLIT_ELEMENTS, wasm8bitUpdateInfo } from "../lib/backend/cpu/wasm/quantize.ts";
import { closeCpuThreads, setCpuThreads, wasmMatmulInfo } from "../lib/backend/cpu/wasm/matmul.ts";
import { wasmEnabled } from "../lib/backend/cpu/wasm/features.ts";
import { decode, encode } from "../lib/dtype.ts";
import { dynamicMap } from "../lib/optim/quantize.ts";

type Kind = "adam8bit" | "adamw8bit" | "sgd8bit";

interface Case {
  kind: Kind;
  shapes: number[][];
  blockSize: number;
  dtype: DType;
  gradDtype: "same" | "f32";
  lr: number;
  schedule: boolean;
  weightDecay: number;
  bad: number;
  seed: number;
}

function make(c: Case, fused: boolean): Optimizer {
  const lr = c.schedule ? (count: Tensor) => mul(count, -c.lr / 10) : c.lr;
  const common = { blockSize: c.blockSize, minSize: 0, fused, weightDecay: c.weightDecay };
  if (c.kind === "sgd8bit") return sgd8bit({ ...common, lr: c.lr, momentum: 0.9 }) as Optimizer;
  const opts = { ...common, lr };
  return (c.kind === "adam8bit" ? adam8bit(opts) : adamw8bit(opts)) as Optimizer;
}

/** Params and per-step grads (with `bad` non-finite entries) from a seed. */
function data(c: Case, steps: number) {
  const u = rng(c.seed);
  const vals = (n: number, scale: number) =>
    Array.from({ length: n }, () => Math.fround((u() * 2 - 1) * scale * 10 ** (-3 * u())));
  const special = [NaN, Infinity, -Infinity, 1e30, 0, -0];
  const params = c.shapes.map((s) => vals(s.reduce((a, b) => a * b, 1), 1));
  const grads = Array.from({ length: steps }, () =>
    params.map((p) => {
      const g = vals(p.length, 0.1);
      for (let k = 0; k < c.bad; k++) g[Math.floor(u() * g.length)] = special[k % special.length];
      return g;
    }));
  return { params, grads };
}

const toTree = (xs: number[][], shapes: number[][], dtype: DType) =>
  Object.fromEntries(xs.map((x, i) => [`w${i}`, tensor(x, { shape: shapes[i], dtype })]));

/** Run `steps` updates; returns the bits of every (params, state) after each step. */
async function run(c: Case, fused: boolean, jitted: boolean, steps = 3): Promise<number[][][]> {
  const opt = make(c, fused);
  const { params: p0, grads } = data(c, steps);
  let params = toTree(p0, c.shapes, c.dtype) as unknown;
  let state = opt.init(params);
  const update = jitted
    ? jit((g: unknown, s: unknown, p: unknown) => opt.update(g, s, p))
    : (g: unknown, s: unknown, p: unknown) => tidy(() => opt.update(g, s, p));
  const out: number[][][] = [];
  for (const gs of grads) {
    const g = toTree(gs, c.shapes, c.gradDtype === "same" ? c.dtype : "f32");
    const [p, s] = update(g, state, params) as [unknown, unknown];
    dispose([g, params, state]);
    params = p;
    state = s;
    out.push(await bitsOf([params, state]));
  }
  dispose([params, state]);
  if (jitted) (update as unknown as { clear(): void }).clear();
  return out;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  kind: fc.constantFrom<Kind>("adam8bit", "adamw8bit", "sgd8bit"),
  shapes: fc.array(
    fc.oneof(
      fc.tuple(fc.integer({ min: 1, max: 700 })).map(([n]) => [n]),
      fc.tuple(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 40 })).map((s) => [...s]),
    ),
    { minLength: 1, maxLength: 2 },
  ),
  blockSize: fc.constantFrom(4, 8, 64, 256, 6),
  dtype: fc.constantFrom<DType>("f32", "bf16", "f16"),
  gradDtype: fc.constantFrom<"same" | "f32">("same", "f32"),
  lr: fc.constantFrom(1e-3, 0.05, 1),
  schedule: fc.boolean(),
  weightDecay: fc.constantFrom(0, 1e-2, 0.5),
  bad: fc.constantFrom(0, 0, 1, 3),
  seed: fc.integer({ min: 0, max: 1e9 }),
});

Deno.test("8-bit fused update: bitwise equal to the composed ops, eager (property)", async () => {
  const before = memory().bytes;
  await fc.assert(
    fc.asyncProperty(caseArb, async (c) => {
      const want = await run(c, false, false);
      const got = await run(c, true, false);
      want.forEach((w, k) => assertSameBits(w, got[k], `${JSON.stringify(c)} step ${k}`));
    }),
    { numRuns: 60 },
  );
  assert.equal(memory().bytes, before);
});

Deno.test("8-bit fused update: jit is bitwise equal to eager composed (property)", async () => {
  const before = memory().bytes;
  await fc.assert(
    fc.asyncProperty(caseArb, async (c) => {
      const want = await run(c, false, false);
      const got = await run(c, true, true);
      want.forEach((w, k) => assertSameBits(w, got[k], `${JSON.stringify(c)} step ${k}`));
      const composedJit = await run(c, false, true, 1);
      assertSameBits(want[0], composedJit[0], "composed jit");
    }),
    { numRuns: 25 },
  );
  assert.equal(memory().bytes, before);
});

Deno.test("8-bit fused update: one kernel per tensor under jit; none with fused: false", () => {
  const params = { w: tensor(new Array(1000).fill(0.5)) };
  const grads = { w: tensor(new Array(1000).fill(0.01)) };
  for (const fused of [true, false]) {
    const opt = adamw8bit({ lr: 1e-3, fused, minSize: 0 }) as Optimizer;
    const state = opt.init(params);
    const f = jit((g: unknown, s: unknown, p: unknown) => opt.update(g, s, p));
    dispose(f(grads, state, params));
    const kinds = f.lastStats!.byKind;
    assert.equal(kinds.blockwise8bit ?? 0, fused ? 1 : 0, JSON.stringify(kinds));
    assert.equal(kinds.quantize ?? 0, fused ? 0 : 2, JSON.stringify(kinds));
    f.clear();
    dispose(state);
  }
  dispose([params, grads]);
});

Deno.test("8-bit fused update under gradScale: skipped and applied steps match the composed ops, eager and jit", async () => {
  type Batch = { gw: Tensor };
  type Params = { w: Tensor };
  const loss = (p: Params, x: Batch) => sum(mul(p.w, x.gw));
  const n = 1000;
  const u = rng(5);
  const batch = (bad: boolean): Batch => {
    const gw = Array.from({ length: n }, () => Math.fround((u() - 0.5) * 0.01));
    if (bad) gw[17] = Infinity;
    return { gw: tensor(gw, { shape: [10, 100] }) };
  };
  const batches = [batch(false), batch(true), batch(false)];
  const w0 = Array.from({ length: n }, () => Math.fround(u() - 0.5));
  const before = memory().bytes;
  const runs: number[][][] = [];
  for (const [fused, jitted] of [[false, false], [true, false], [true, true]]) {
    const optimizer = adamw8bit({ lr: 1e-2, minSize: 0, fused }) as Optimizer;
    const plain = pipe(trainStep({ loss, optimizer }), gradScale());
    const step = jitted ? jit(plain) : plain;
    let state = step.init({ w: tensor(w0, { shape: [10, 100] }) });
    const bits: number[][] = [];
    const skipped: number[] = [];
    for (const b of batches) {
      const [next, metrics] = step(state, b);
      skipped.push(await metrics.skipped.item());
      bits.push(...await bitsOf([next.params, next.opt]));
      dispose([state, metrics]);
      state = next;
    }
    assert.deepEqual(skipped, [0, 1, 0]);
    dispose(state);
    if (jitted) (step as unknown as { clear(): void }).clear();
    runs.push(bits);
  }
  assertSameBits(runs[0], runs[1], "eager fused vs composed");
  assertSameBits(runs[0], runs[2], "jit fused vs eager composed");
  assert.equal(memory().bytes, before);
  dispose(batches);
});

/** Throw naming the first output and element that differ (deepEqual's diff of 200K is slow). */
function sameWords(a: number[][], b: number[][], what: string): void {
  assert.equal(a.length, b.length, `${what}: outputs`);
  a.forEach((x, i) => {
    assert.equal(x.length, b[i].length, `${what}: output ${i} size`);
    const j = x.findIndex((v, k) => v !== b[i][k]);
    if (j >= 0) throw new Error(`${what}: output ${i} element ${j}: ${x[j]} vs ${b[i][j]}`);
  });
}

Deno.test({
  name:
    "8-bit fused update: 1 and 2 threads bitwise equal (and to the TypeScript loop), split by blocks",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    if (!wasmEnabled()) return; // no pool without WebAssembly
    const u = rng(11);
    const n = 3 * UPDATE_SPLIT_ELEMENTS + 300; // not a multiple of the block
    const up = (dtype: DType, xs: ArrayLike<number>): Arg => ({
      h: cpu.upload(dtype, encode(dtype, Array.from(xs))),
      dtype,
      size: xs.length,
    });
    const special = [NaN, Infinity, -Infinity, 0, -0, 1e-45];
    const vals = (len: number, scale: number) =>
      Array.from(
        { length: len },
        (_, i) =>
          i % 997 === 5
            ? special[i % special.length]
            : Math.fround((u() * 2 - 1) * scale * 10 ** (-4 * u())),
      );
    const cases: { u: Blockwise8bitUpdate; dtype: DType }[] = [
      { u: { kind: "adam", blockSize: 256, l2: 0, b1: 0.9, b2: 0.999, decay: true }, dtype: "f32" },
      {
        u: { kind: "adam", blockSize: 64, l2: 0.01, b1: 0.9, b2: 0.99, decay: false },
        dtype: "bf16",
      },
      { u: { kind: "sgd", blockSize: 256, l2: 0, b1: 0.9, b2: 0, decay: false }, dtype: "f16" },
    ];
    const before = memory().bytes;
    try {
      for (const { u: op, dtype } of cases) {
        const blocks = Math.ceil(n / op.blockSize);
        const k = op.kind === "adam" ? 2 : 1;
        const maps = [dynamicMap(), dynamicMap({ signed: false })].slice(0, k);
        const p = up(dtype, vals(n, 1));
        const g = up(dtype, vals(n, 0.1));
        const moments = maps.map((map) => ({
          codes: Array.from({ length: n }, () => Math.floor(u() * 256)),
          absmax: Array.from(
            { length: blocks },
            (_, b) => b % 50 === 3 ? 0 : Math.fround(u() * 0.1),
          ),
          map,
        }));
        // f32 tensors of one element, as the optimizers pass them
        const scalars = (op.kind === "adam" ? [1e-3, 1e-8, ...(op.decay ? [0.999] : [])] : [0.05])
          .map((x) => Math.fround(x));
        const inputs = [
          p,
          g,
          ...moments.flatMap((m) => [up("u8", m.codes), up("f32", m.absmax), up("f32", m.map)]),
          ...scalars.map((s) => up("f32", [s])),
        ];
        const outDt = blockwise8bitOutputs(op, dtype, n);
        const run = async () => {
          // Reused heap blocks hold junk first, so an element left unwritten shows.
          const junk = [...outDt, { dtype: "u8" as DType, size: 4 * 2 * (op.blockSize + 4) }]
            .map((o) => ({ ...o, h: cpu.fill(o.dtype, o.size, o.dtype === "u8" ? 77 : 7) }));
          junk.reverse().forEach((j) => cpu.free(j.h, j.dtype, j.size));
          const hs = cpu.blockwise8bitUpdate!(op, inputs);
          const out = await Promise.all(hs.map((h, j) => cpu.read({ h, ...outDt[j] })));
          hs.forEach((h, j) => cpu.free(h, outDt[j].dtype, outDt[j].size));
          return out.map((o) =>
            Array.from(
              o instanceof Float32Array ? new Uint32Array(o.buffer, o.byteOffset, o.length) : o,
            )
          );
        };
        setCpuThreads(1);
        const s0 = wasm8bitUpdateInfo();
        const one = await run();
        assert.equal(wasm8bitUpdateInfo().calls, s0.calls + 1, "the WebAssembly kernel ran");
        assert.equal(wasm8bitUpdateInfo().splits, s0.splits, "one thread: no split");
        setCpuThreads(2);
        for (let i = 0; i < 400 && (wasmMatmulInfo()?.readyThreads ?? 0) < 2; i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.equal(wasmMatmulInfo()?.readyThreads, 2, "2 threads did not start");
        const s1 = wasm8bitUpdateInfo().splits;
        const two = await run();
        assert.equal(wasm8bitUpdateInfo().splits, s1 + 1, "two threads: the update was split");
        sameWords(two, one, `${op.kind} ${dtype}: 2 vs 1 threads`);
        // The TypeScript loop (the fallback, itself tested against the composed ops).
        const pv = Float32Array.from(decode(dtype, await cpu.read(p)));
        const gv = Float32Array.from(decode(dtype, await cpu.read(g)));
        const newP = new Float32Array(n);
        const codes = maps.map(() => new Uint8Array(n));
        const absmax = maps.map(() => new Float32Array(blocks));
        blockwise8bitUpdateKernel(op, pv, gv, moments, scalars, newP, codes, absmax);
        const pBits = dtype === "f32" ? new Uint32Array(newP.buffer) : encode(dtype, newP);
        const want = [
          Array.from(pBits),
          ...codes.flatMap((
            c,
            j,
          ) => [Array.from(c), Array.from(new Uint32Array(absmax[j].buffer))]),
        ];
        sameWords(one, want, `${op.kind} ${dtype}: WebAssembly vs TypeScript`);
        inputs.forEach((a) => cpu.free(a.h, a.dtype, a.size));
      }
    } finally {
      closeCpuThreads();
    }
    assert.equal(memory().bytes, before);
  },
});
