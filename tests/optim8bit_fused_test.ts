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
