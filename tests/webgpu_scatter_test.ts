/**
 * Issue 13, items 14 and 15: `scatterAdd` on WebGPU equals the CPU bitwise, and both equal the
 * exact oracle of tests/scatter_oracle.ts (f32 accumulator, index order, one rounding to the
 * dtype), with non-integer values whose f32 sums round, on both GPU paths (a loop over all
 * indices per element for small problems, per-row index lists above 2^20 index·elements).
 * Values avoid f32 subnormals, which WGSL lets a GPU flush to zero.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { Backend } from "../lib/backend/backend.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { dispose, type Tensor, tensor } from "../lib/tensor.ts";
import { scatterAdd } from "../lib/ops/mod.ts";
import { rng } from "./rng.ts";
import { scatterAddOracle } from "./scatter_oracle.ts";
import { gtest } from "./webgpu_setup.ts";

type D = "f32" | "f16" | "bf16";

/** `scatterAdd` of the same data on `device`, read back. */
async function run(
  device: Backend,
  dtype: D,
  shape: [number, number, number],
  base: number[],
  idx: number[],
  upd: number[],
): Promise<number[]> {
  const [outer, , inner] = shape;
  const b = tensor(base, { dtype, shape, device });
  const ix = tensor(idx, { dtype: "i32", device });
  const u = tensor(upd, { dtype, shape: [outer, idx.length, inner], device });
  const out: Tensor = scatterAdd(b, ix, u, 1);
  const got = Array.from(await out.data());
  dispose([b, ix, u, out]);
  return got;
}

/** Check GPU ≡ CPU ≡ oracle bitwise (NaN equals NaN; −0 and +0 differ). */
async function check(
  g: Backend,
  dtype: D,
  shape: [number, number, number],
  base: number[],
  idx: number[],
  upd: number[],
): Promise<void> {
  const [outer, axis, inner] = shape;
  const onCpu = await run(cpu, dtype, shape, base, idx, upd);
  const onGpu = await run(g, dtype, shape, base, idx, upd);
  const exact = async (xs: number[], s: number[]) => {
    const t = tensor(xs, { dtype, shape: s });
    const v = Array.from(await t.data());
    t.dispose();
    return v;
  };
  const want = scatterAddOracle(
    dtype,
    await exact(base, shape),
    idx,
    await exact(upd, [outer, idx.length, inner]),
    outer,
    axis,
    inner,
  );
  const what = `${dtype} [${shape}] with ${idx.length} indices`;
  for (let i = 0; i < want.length; i++) {
    const same = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
    if (!same(onGpu[i], onCpu[i]) || !same(onCpu[i], want[i])) {
      assert.fail(`${what}: element ${i}: gpu ${onGpu[i]}, cpu ${onCpu[i]}, exact ${want[i]}`);
    }
  }
}

gtest(
  "scatterAdd: [1, 2^-24, 2^-24] into one index and the f16/bf16 ties, gpu ≡ cpu ≡ exact",
  async (g) => {
    await check(g, "f32", [1, 1, 1], [0], [0, 0, 0], [1, 2 ** -24, 2 ** -24]);
    await check(g, "f32", [1, 2, 1], [1, 0.1], [0, 0, 1, -2], [2 ** -24, 2 ** -24, 0.2, 0.3]);
    await check(g, "f16", [1, 1, 1], [1], [0, 0, 0], [2 ** -11, 2 ** -24, 2 ** -24]);
    await check(g, "bf16", [1, 1, 1], [1], [0, 0, 0], [2 ** -8, 2 ** -24, 2 ** -24]);
    // index order: (2^24 − 2^24) + 1 = 1, while (2^24 + 1) − 2^24 would give 0
    await check(g, "f32", [1, 2, 1], [2 ** 24, 0], [0, 1, 0], [-(2 ** 24), 5, 1]);
  },
);

/** Normal f32 values of many magnitudes (≥ 2^-20 or 0, so no sum is subnormal). */
const value = fc.oneof(
  fc.double({ min: 2 ** -20, max: 1e4, noNaN: true }).chain((x) =>
    fc.boolean().map((neg) => neg ? -x : x)
  ),
  fc.constantFrom(1, -1, 0, 2 ** -20, 2 ** -11, 2 ** -8, 0.1, 1 / 3),
);

gtest(
  "scatterAdd: random non-integer data, gpu ≡ cpu ≡ exact (direct path, property)",
  async (g) => {
    const problem = fc.record({
      dtype: fc.constantFrom<D>("f32", "f16", "bf16"),
      outer: fc.integer({ min: 1, max: 3 }),
      axis: fc.integer({ min: 1, max: 6 }),
      inner: fc.integer({ min: 1, max: 5 }),
      nIdx: fc.integer({ min: 0, max: 16 }),
    }).chain((p) =>
      fc.record({
        p: fc.constant(p),
        idx: fc.array(fc.integer({ min: -p.axis, max: p.axis - 1 }), {
          minLength: p.nIdx,
          maxLength: p.nIdx,
        }),
        base: fc.array(value, { minLength: p.outer * p.axis * p.inner, maxLength: 90 }),
        upd: fc.array(value, { minLength: p.outer * p.nIdx * p.inner, maxLength: 240 }),
      })
    );
    await fc.assert(
      fc.asyncProperty(problem, async ({ p, idx, base, upd }) => {
        const { dtype, outer, axis, inner, nIdx } = p;
        await check(
          g,
          dtype,
          [outer, axis, inner],
          base.slice(0, outer * axis * inner),
          idx,
          upd.slice(0, outer * nIdx * inner),
        );
      }),
      { numRuns: 60 },
    );
  },
);

gtest("scatterAdd: the listed path (indices × size > 2^20), gpu ≡ cpu ≡ exact", async (g) => {
  const r = rng(13);
  const pick = () => {
    const x = (r() - 0.5) * 2 ** Math.floor(r() * 30 - 20);
    return Math.abs(x) < 2 ** -20 ? 0 : x;
  };
  for (const dtype of ["f32", "f16", "bf16"] as const) {
    const [outer, axis, inner, nIdx] = [2, 64, 8, 1200]; // 1200 · 1024 > 2^20
    const idx = Array.from({ length: nIdx }, () => Math.floor(r() * 2 * axis) - axis);
    idx[0] = idx[1] = idx[2] = 5; // one row hit often, with ties to round
    const base = Array.from({ length: outer * axis * inner }, pick);
    const upd = Array.from({ length: outer * nIdx * inner }, pick);
    upd[0] = 1;
    upd[inner] = upd[2 * inner] = 2 ** -24;
    await check(g, dtype, [outer, axis, inner], base, idx, upd);
  }
});
