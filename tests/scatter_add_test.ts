/**
 * Issue 13, item 14: the CPU `scatterAdd` adds f32 (and narrower float) updates in f32, one
 * rounding per index in index order, then rounds once to the dtype, as the WebGPU kernel does
 * (it used to sum in f64: `[1, 2^-24, 2^-24]` into one index gave 1 + 2^-23 instead of 1).
 * Checked against the exact BigInt oracle of tests/scatter_oracle.ts.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import { dispose, memory, type Tensor, tensor } from "../lib/tensor.ts";
import { scatterAdd } from "../lib/ops/mod.ts";
import { ORACLE_DTYPES, scatterAddOracle } from "./scatter_oracle.ts";

const i32 = (xs: number[]) => tensor(xs, { dtype: "i32" });

/** Bitwise equality of float arrays (NaN equals NaN, −0 differs from +0). */
function sameBits(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i]) && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
      assert.fail(`${what}: element ${i} is ${got[i]}, want ${want[i]}`);
    }
  }
}

Deno.test("scatterAdd: the issue's [1, 2^-24, 2^-24] into one f32 index gives 1", async () => {
  const before = memory().tensors;
  const cases: [string, number[], number[], number][] = [
    // f32: 1 + 2^-24 is a tie and rounds to 1, twice; an f64 sum gives 1 + 2^-23.
    ["f32", [0], [1, 2 ** -24, 2 ** -24], 1],
    ["f32", [1], [2 ** -24, 2 ** -24], 1],
    // f16: the f32 accumulator keeps 1 + 2^-11 (the 2^-24s are ties), a tie of f16, so 1;
    // the f64 accumulator held 1 + 2^-11 + 2^-23, above the tie, so 1 + 2^-10.
    ["f16", [1], [2 ** -11, 2 ** -24, 2 ** -24], 1],
    // bf16: the same with 1 + 2^-8 (a tie of bf16's 8 bits).
    ["bf16", [1], [2 ** -8, 2 ** -24, 2 ** -24], 1],
    // f64 still accumulates in f64.
    ["f64", [0], [1, 2 ** -53, 2 ** -53], 1],
  ];
  for (const [dtype, base, upd, want] of cases) {
    const b = tensor(base, { dtype: dtype as "f32" });
    const ix = i32(upd.map(() => 0));
    const u = tensor(upd, { dtype: dtype as "f32" });
    const out = scatterAdd(b, ix, u);
    assert.deepEqual(await out.toArray(), [want], `${dtype}: ${upd}`);
    const zeros = upd.map(() => 0);
    const oracle = scatterAddOracle(dtype as "f32", await b.data(), zeros, await u.data(), 1, 1, 1);
    assert.deepEqual(oracle.slice(0, 1), [want], `oracle ${dtype}`);
    dispose([b, ix, u, out]);
  }
  assert.equal(memory().tensors, before);
});

Deno.test("scatterAdd on the CPU equals the exact f32-accumulator oracle, every float dtype (property)", async () => {
  const before = memory().tensors;
  const problem = fc.record({
    dtype: fc.constantFrom(...ORACLE_DTYPES),
    outer: fc.integer({ min: 1, max: 3 }),
    axis: fc.integer({ min: 1, max: 5 }),
    inner: fc.integer({ min: 1, max: 3 }),
    nIdx: fc.integer({ min: 0, max: 12 }),
    seed: fc.nat(),
  }).chain((p) =>
    fc.record({
      p: fc.constant(p),
      idx: fc.array(fc.integer({ min: -p.axis, max: p.axis - 1 }), {
        minLength: p.nIdx,
        maxLength: p.nIdx,
      }),
      // mixed magnitudes so that f32 rounding happens, subnormals and signed zeros included
      base: fc.array(value(), { minLength: p.outer * p.axis * p.inner, maxLength: 100 }),
      upd: fc.array(value(), { minLength: p.outer * p.nIdx * p.inner, maxLength: 200 }),
    })
  );
  await fc.assert(
    fc.asyncProperty(problem, async ({ p, idx, base, upd }) => {
      const { dtype, outer, axis, inner, nIdx } = p;
      const b = tensor(base.slice(0, outer * axis * inner), { dtype, shape: [outer, axis, inner] });
      const u = tensor(upd.slice(0, outer * nIdx * inner), { dtype, shape: [outer, nIdx, inner] });
      const ix = i32(idx);
      const out = scatterAdd(b, ix, u, 1);
      const want = scatterAddOracle(dtype, await b.data(), idx, await u.data(), outer, axis, inner);
      sameBits(await out.data(), want, `${dtype} [${outer}, ${axis}, ${inner}] idx ${idx}`);
      dispose([b, u, ix, out]);
    }),
    { numRuns: 300 },
  );
  assert.equal(memory().tensors, before);
});

/** f32 values of many magnitudes: 1, 2^-24-ish, subnormals, ±0, large. */
function value(): fc.Arbitrary<number> {
  return fc.oneof(
    fc.float({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }),
    fc.integer({ min: -60, max: 20 }).chain((e) =>
      fc.integer({ min: -7, max: 7 }).map((m) => m * 2 ** e)
    ),
    fc.constantFrom(1, -1, 2 ** -24, 2 ** -11, 2 ** -8, 0, -0, 2 ** -130),
  );
}

Deno.test("scatterAdd: the order of additions is index order (not sorted, not pairwise)", async () => {
  // In f32, (2^24 + 1) + 1 = 2^24 (two ties to even) but 2^24 + (1 + 1) = 2^24 + 2.
  const b = tensor([2 ** 24]);
  const ix = i32([0, 0]);
  const u = tensor([1, 1]);
  const out = scatterAdd(b, ix, u);
  assert.deepEqual(await out.toArray(), [2 ** 24]);
  const ix2 = i32([0, 1, 0]);
  const u2 = tensor([-(2 ** 24), 5, 1]);
  const b2 = tensor([2 ** 24, 0]);
  const out2: Tensor = scatterAdd(b2, ix2, u2);
  assert.deepEqual(await out2.toArray(), [1, 5]);
  dispose([b, ix, u, out, b2, ix2, u2, out2]);
});
