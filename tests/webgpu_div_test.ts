/**
 * WebGPU f32 division (`div_rne`, also used by pow and quantize) against JavaScript's division
 * rounded to f32 (`Math.fround(a / b)`: one f64 division then one rounding, which is the
 * correctly rounded f32 quotient since 53 ≥ 2·24 + 2): every bit, over random f32 bit
 * patterns, subnormal operands and results (where exact ties occur), exact quotients, near-1
 * significands, and the special values.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import * as nb from "../mod.ts";
import { gtest } from "./webgpu_setup.ts";

const f32 = (bits: number) => new Float32Array(new Uint32Array([bits >>> 0]).buffer)[0];

const SPECIALS = [
  0,
  0x80000000,
  0x7f800000,
  0xff800000,
  0x7fc00000,
  0x7f7fffff,
  0x00800000,
  0x00000001,
  0x007fffff,
  0x3f800000,
  0x3f800001,
  0x3f7fffff,
  0x40000000,
].map(f32);

/** One operand pair generator per class of cases. */
type Pair = [number, number];

const pairArb: fc.Arbitrary<Pair> = fc.oneof(
  // Any bits (NaN payloads, all exponents).
  fc.tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }))
    .map(([a, b]): Pair => [f32(a), f32(b)]),
  // Subnormal dividend over small powers of two and near-1 divisors: subnormal results, ties.
  fc.tuple(
    fc.integer({ min: 1, max: 0x007fffff }),
    fc.integer({ min: 0, max: 3 }),
    fc.integer({ min: -3, max: 3 }),
  ).map(([m, e, d]): Pair => [f32(m), Math.fround(2 ** e + d * 2 ** -23)]),
  // Exact quotients: a = b·q with a short q (remainder zero).
  fc.tuple(fc.integer({ min: 1, max: 4095 }), fc.integer({ min: 0x00800000, max: 0x7e000000 }))
    .map(([q, b]): Pair => [Math.fround(f32(b) * q), f32(b)]),
  // Significands near each other (quotient near 1, the estimate's worst case) and large results.
  fc.tuple(fc.integer({ min: 0x00800000, max: 0x7f7fffff }), fc.integer({ min: -4, max: 4 }))
    .map(([a, d]): Pair => [f32(a), f32((a + d) >>> 0)]),
  fc.tuple(fc.constantFrom(...SPECIALS), fc.constantFrom(...SPECIALS)),
  fc.tuple(fc.constantFrom(...SPECIALS), fc.float({ noDefaultInfinity: false })),
);

gtest("div: f32 quotients are correctly rounded, bit for bit, in every class", async (g) => {
  const before = nb.memory(g).bytes;
  await fc.assert(
    fc.asyncProperty(fc.array(pairArb, { minLength: 1, maxLength: 3000 }), async (pairs) => {
      const a = new Float32Array(pairs.map((p) => p[0]));
      const b = new Float32Array(pairs.map((p) => p[1]));
      const ta = nb.tensor(a, { device: g });
      const tb = nb.tensor(b, { device: g });
      const q = nb.div(ta, tb);
      const got = new Uint32Array((await q.data() as Float32Array).buffer);
      nb.dispose([ta, tb, q]);
      const want = new Float32Array(pairs.map(([x, y]) => Math.fround(x / y)));
      const wb = new Uint32Array(want.buffer);
      for (let i = 0; i < pairs.length; i++) {
        if (Number.isNaN(want[i])) {
          assert.ok(Number.isNaN(f32(got[i])), `${a[i]} / ${b[i]}: want NaN, got ${f32(got[i])}`);
          continue;
        }
        assert.equal(
          got[i],
          wb[i],
          `${a[i]} / ${b[i]} (bits ${new Uint32Array(a.buffer)[i].toString(16)} / ` +
            `${new Uint32Array(b.buffer)[i].toString(16)}): want ${want[i]}, got ${f32(got[i])}`,
        );
      }
    }),
    { numRuns: 30, endOnFailure: true },
  );
  assert.equal(nb.memory(g).bytes, before, "div test leaked device memory");
});
