/**
 * Reductions on narrow floats round once, from the accumulator, to the output dtype (issue 13,
 * item 3): a sum whose exact value lies just above a midpoint of f16/bf16 must not be rounded to
 * f32 first (which would land on the midpoint and then round to even, the wrong way). The
 * oracle is exact: the inputs are dyadic, so their f64 sum is exact and rounding it once with
 * `roundTo` (tested against `Math.f16round` in dtype_test) is the correctly rounded answer.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import { type DType, mean, memory, roundTo, sum, tensor, tidy } from "../mod.ts";

const exactSum = (xs: number[]) => xs.reduce((a, b) => a + b, 0); // exact for these inputs

Deno.test("sum f16: [154, 0.0625, 2^-20] rounds once to 154.125 (not 154 via f32)", async () => {
  const before = memory().tensors;
  const x = tensor([154, 0.0625, 2 ** -20], { dtype: "f16" });
  // The inputs are f16 values; 2^-20 is an f16 subnormal-free normal value.
  assert.deepEqual(await x.toArray(), [154, 0.0625, 2 ** -20]);
  const s = sum(x);
  assert.equal(await s.item(), 154.125);
  x.dispose();
  s.dispose();
  assert.equal(memory().tensors, before);
});

Deno.test("sum bf16: [154, 0.5, 2^-20] rounds once to 155 (not 154 via f32)", async () => {
  const x = tensor([154, 0.5, 2 ** -20], { dtype: "bf16" });
  const s = sum(x);
  assert.equal(await s.item(), 155);
  x.dispose();
  s.dispose();
});

Deno.test("sum f16/bf16 along an axis: each row is the exact sum rounded once", async () => {
  const before = memory().tensors;
  for (const dtype of ["f16", "bf16"] as DType[]) {
    await fc.assert(
      fc.asyncProperty(
        // A big term, a term at half its ulp (a midpoint), and a tiny one that breaks the tie.
        fc.integer({ min: 64, max: 1000 }),
        fc.constantFrom(1, -1),
        fc.integer({ min: 14, max: 24 }),
        async (big, sign, tinyExp) => {
          const ulp = dtype === "f16" ? 2 ** (Math.floor(Math.log2(big)) - 10) : 2 **
            (Math.floor(Math.log2(big)) - 7);
          const row = [big, ulp / 2, sign * 2 ** -tinyExp].map((v) => roundTo(dtype, v));
          const want = roundTo(dtype, exactSum(row));
          const r = tidy(() => sum(tensor([row, row], { dtype }), 1));
          const got = await r.toArray() as number[];
          r.dispose();
          return got.every((g) => Object.is(g, want));
        },
      ),
    );
  }
  assert.equal(memory().tensors, before);
});

Deno.test("mean f16 computes in f32 (sum rounded to f32, divided in f32) and rounds once", async () => {
  // mean is a composite that computes in f32, as every narrow composite does: its f16 result
  // is the f32 mean rounded once. Documented in lib/ops/reduce.ts.
  const x = tensor([154, 0.0625, 2 ** -20, 0], { dtype: "f16" });
  const m = mean(x);
  const f32Mean = Math.fround(Math.fround(154 + 0.0625 + 2 ** -20) / 4);
  assert.equal(await m.item(), roundTo("f16", f32Mean));
  x.dispose();
  m.dispose();
});
