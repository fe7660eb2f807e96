/**
 * `gather` and `scatterAdd` in WebAssembly (`wasm/gather.ts`) give the raw bits of the TypeScript
 * kernels (the reference: the same backend with `NBIT_WASM=0`), and throw the same errors for an
 * index out of range: random dtypes, shapes [outer, axis, inner] (embedding rows and inner = 1),
 * i32 indices with negatives (wrapped, or rejected as `oneHot` does) and u8 indices, special
 * values (NaN payloads, ±0, ±Inf, subnormals). No heap block is leaked, errors included.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { wasmEnabled } from "../lib/backend/cpu/wasm/features.ts";
import { heapMemory, heapStats } from "../lib/backend/cpu/heap.ts";
import { wasmGatherInfo } from "../lib/backend/cpu/wasm/gather.ts";
import { type DType, encode, type Storage } from "../lib/dtype.ts";

const SIMD = wasmEnabled() && heapMemory().buffer instanceof SharedArrayBuffer;

/** `fn` on the TypeScript path (`NBIT_WASM=0`), the setting restored afterwards. */
function onTypeScript<R>(fn: () => R): R {
  const before = Deno.env.get("NBIT_WASM");
  Deno.env.set("NBIT_WASM", "0");
  try {
    return fn();
  } finally {
    if (before === undefined) Deno.env.delete("NBIT_WASM");
    else Deno.env.set("NBIT_WASM", before);
  }
}

/** The raw bits of a buffer (floats as their storage integers). */
async function raw(h: unknown, dtype: DType, size: number): Promise<number[]> {
  const a = await cpu.read({ h, dtype, size });
  if (a instanceof Float32Array) return Array.from(new Uint32Array(a.slice().buffer));
  if (a instanceof Float64Array) {
    return Array.from(new Uint32Array(a.slice().buffer));
  }
  return Array.from(a);
}

/** The result of `run` (bits) or the message it throws. */
async function outcome(
  run: () => unknown,
  dtype: DType,
  size: number,
): Promise<number[] | string> {
  let h: unknown;
  try {
    h = run();
  } catch (e) {
    return (e as Error).message;
  }
  const bits = await raw(h, dtype, size);
  cpu.free(h as never, dtype, size);
  return bits;
}

const VALUES = [0, -0, 1, -1.5, Infinity, -Infinity, NaN, 1e-40, 3e38, 0.1, 65504, 2 ** -24];

const shapeArb = fc.record({
  outer: fc.integer({ min: 0, max: 3 }),
  axis: fc.integer({ min: 1, max: 9 }),
  inner: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 13 }), fc.constant(64)),
  nIdx: fc.integer({ min: 0, max: 12 }),
  seed: fc.nat(1000),
});

/** Storage of `n` elements of `d`, raw patterns included (NaN payloads). */
function dataOf(d: DType, n: number, seed: number): Storage {
  if (d === "f32") {
    const u = Uint32Array.from({ length: n }, (_, i) => (i * 2654435761 + seed * 40503) >>> 0);
    const f = new Float32Array(u.buffer);
    for (let i = 0; i < n; i += 3) f[i] = VALUES[(i + seed) % VALUES.length];
    return f;
  }
  return encode(d, Array.from({ length: n }, (_, i) => VALUES[(i * 7 + seed) % VALUES.length]));
}

Deno.test({
  name: "wasm gather ≡ TypeScript gather, raw bits and error messages, every dtype (property)",
  ignore: !SIMD,
  async fn() {
    const live = heapStats().liveBytes;
    let errors = 0;
    await fc.assert(
      fc.asyncProperty(
        shapeArb,
        fc.constantFrom<DType>("f32", "f64", "bf16", "f16", "f8e4m3", "i32", "u8", "bool"),
        fc.constantFrom<DType>("i32", "u8"),
        fc.constantFrom("take", "oneHot"),
        fc.array(fc.integer({ min: -11, max: 11 }), { minLength: 12, maxLength: 12 }),
        async ({ outer, axis, inner, nIdx, seed }, d, id, op, picks) => {
          const size = outer * axis * inner;
          const x = { h: cpu.upload(d, dataOf(d, size, seed)), dtype: d, size };
          // Mostly in range; sometimes one index past either end.
          const ix = picks.slice(0, nIdx).map((p, j) =>
            (seed + j) % 17 === 0 ? p : ((p % axis) + axis) % axis - (p < 0 ? axis : 0)
          );
          const idxData = id === "u8"
            ? Uint8Array.from(ix, (k) => Math.max(0, k))
            : Int32Array.from(ix);
          const idx = { h: cpu.upload(id, idxData), dtype: id, size: nIdx };
          const check = { op: op as "take" | "oneHot", wrap: op === "take" };
          const n = outer * nIdx * inner;
          const run = () => cpu.gather(x, idx, outer, axis, inner, check);
          const calls = wasmGatherInfo().gathers;
          const got = await outcome(run, d, n);
          assert.equal(wasmGatherInfo().gathers, calls + (outer > 0 ? 1 : 0), "ran in wasm");
          const want = await outcome(() => onTypeScript(run), d, n);
          assert.deepEqual(got, want);
          if (typeof got === "string") errors++;
          cpu.free(x.h, d, size);
          cpu.free(idx.h, id, nIdx);
        },
      ),
      { numRuns: 400 },
    );
    assert.ok(errors > 10, `only ${errors} cases had an index out of range`);
    assert.equal(heapStats().liveBytes, live, "no heap block leaked");
  },
});

Deno.test({
  name: "wasm scatterAdd ≡ TypeScript scatterAdd (f32, bf16, f16), raw bits and errors " +
    "(property)",
  ignore: !SIMD,
  async fn() {
    const live = heapStats().liveBytes;
    let errors = 0;
    await fc.assert(
      fc.asyncProperty(
        shapeArb,
        fc.constantFrom<DType>("f32", "bf16", "f16"),
        fc.constantFrom<DType>("i32", "u8"),
        fc.array(fc.integer({ min: -11, max: 11 }), { minLength: 12, maxLength: 12 }),
        fc.array(fc.float({ noDefaultInfinity: true, noNaN: true }), { minLength: 7 }),
        async ({ outer, axis, inner, nIdx, seed }, d, id, picks, fs) => {
          const size = outer * axis * inner;
          const base = { h: cpu.upload(d, dataOf(d, size, seed)), dtype: d, size };
          // Repeated indices (the order of additions matters), sometimes one out of range.
          const ix = picks.slice(0, nIdx).map((p, j) =>
            (seed + j) % 19 === 0 ? p : ((p % axis) + axis) % axis - (p < 0 ? axis : 0)
          );
          const idxData = id === "u8"
            ? Uint8Array.from(ix, (k) => Math.max(0, k) % axis)
            : Int32Array.from(ix);
          const idx = { h: cpu.upload(id, idxData), dtype: id, size: nIdx };
          const nu = outer * nIdx * inner;
          // Inexact sums: values of many magnitudes, ties of the f32 additions included.
          const ud = encode(
            d,
            Array.from({ length: nu }, (_, i) => fs[i % fs.length] * 2 ** (i % 9)),
          );
          const upd = { h: cpu.upload(d, ud), dtype: d, size: nu };
          const run = () => cpu.scatterAdd(base, idx, upd, outer, axis, inner);
          const calls = wasmGatherInfo().scatters;
          const got = await outcome(run, d, size);
          assert.equal(wasmGatherInfo().scatters, calls + (outer > 0 ? 1 : 0), "ran in wasm");
          const want = await outcome(() => onTypeScript(run), d, size);
          assert.deepEqual(got, want);
          if (typeof got === "string") errors++;
          cpu.free(base.h, d, size);
          cpu.free(idx.h, id, nIdx);
          cpu.free(upd.h, d, nu);
        },
      ),
      { numRuns: 400 },
    );
    assert.ok(errors > 10, `only ${errors} cases had an index out of range`);
    assert.equal(heapStats().liveBytes, live, "no heap block leaked");
  },
});
