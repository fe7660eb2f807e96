/**
 * The WebAssembly reductions of the CPU backend (`reduce` over heap buffers) give the same bits
 * as its TypeScript path (`NBIT_WASM=0`, the reference): sums accumulated in f64 in the same
 * order and rounded once, max/min with their NaN and first-of-±0 rules, first-index
 * argmax/argmin, all/any over bool and u8 bytes. Shapes `[outer, reduce, inner]` with 1s and
 * every inner length mod 4 and mod 16; values with NaN (any payload), ±Inf, ±0 and subnormals.
 * Every kernel call leaves the heap's live blocks as they were.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { ReduceOp } from "../lib/backend/backend.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { wasmReduceKernel } from "../lib/backend/cpu/wasm/reduce.ts";
import { wasmEnabled } from "../lib/backend/cpu/wasm/features.ts";
import { heapStats } from "../lib/backend/cpu/heap.ts";
import { type DType, encode, type Storage } from "../lib/dtype.ts";

type Float = "f32" | "bf16" | "f16";
const FLOATS: Float[] = ["f32", "bf16", "f16"];
const SPECIAL = [0, -0, 1, -1, 0.5, -2.5, Infinity, -Infinity, NaN, 1e-45, -1e-45, 1e-40, 6e-8];
const INNER = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 33];

/** Run `cpu.reduce` on storage `data` and return the output's raw storage. */
async function run(
  op: ReduceOp,
  dtype: DType,
  data: Storage,
  shape: [number, number, number],
  out: DType,
): Promise<Storage> {
  const size = data.length;
  const x = cpu.upload(dtype, data);
  const h = cpu.reduce(op, { h: x, dtype, size }, shape[0], shape[1], shape[2], out);
  const bits = await cpu.read({ h, dtype: out, size: shape[0] * shape[2] });
  cpu.free(h, out, shape[0] * shape[2]);
  cpu.free(x, dtype, size);
  return bits;
}

/** The TypeScript path's result (WebAssembly switched off for one call). */
async function reference(...a: Parameters<typeof run>): Promise<Storage> {
  const before = Deno.env.get("NBIT_WASM");
  Deno.env.set("NBIT_WASM", "0");
  try {
    return await run(...a);
  } finally {
    // Restore, so that a whole-suite run with NBIT_WASM=0 stays on the TypeScript path.
    if (before === undefined) Deno.env.delete("NBIT_WASM");
    else Deno.env.set("NBIT_WASM", before);
  }
}

/** Raw storage of `values` in `dtype`; f32 elements may also come as raw bit patterns. */
function storageOf(dtype: Float, values: number[], rawBits: (number | null)[]): Storage {
  const s = encode(dtype, values);
  rawBits.forEach((b, i) => {
    if (b === null || i >= s.length) return;
    if (dtype === "f32") new Uint32Array(s.buffer, s.byteOffset, s.length)[i] = b >>> 0;
    else s[i] = b & 0xffff;
  });
  return s;
}

/** Same raw storage; on failure the first differing element. */
function sameBits(got: Storage, want: Storage, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const g = new Uint8Array(got.buffer, got.byteOffset, got.byteLength);
  const w = new Uint8Array(want.buffer, want.byteOffset, want.byteLength);
  const per = got.BYTES_PER_ELEMENT;
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i]) {
      const e = Math.floor(i / per);
      throw new Error(`${what}: element ${e}: wasm ${got[e]} vs TypeScript ${want[e]}`);
    }
  }
}

/** Inner lengths, 1 (one chain per output along the reduced axis) often. */
const innerArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant(1) },
  { weight: 2, arbitrary: fc.constantFrom(...INNER) },
);
const shapeArb = fc.tuple(
  fc.integer({ min: 1, max: 3 }),
  fc.integer({ min: 1, max: 40 }),
  innerArb,
);
// Mostly finite values of mixed magnitudes (whose f64 sums round), sometimes special ones.
const valueArb = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom(...SPECIAL) },
  { weight: 2, arbitrary: fc.float() },
  { weight: 12, arbitrary: fc.double({ min: -8, max: 8, noNaN: true }) },
);
const bitsArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
);

Deno.test("wasm reduce: the kernels exist where the tests expect them", () => {
  if (!wasmEnabled()) return; // NBIT_WASM=0 run: the TypeScript path is all there is
  for (const d of FLOATS) {
    for (const op of ["sum", "max", "min"] as const) assert.ok(wasmReduceKernel(op, d, d));
    assert.ok(wasmReduceKernel("argmax", d, "i32"));
    assert.ok(wasmReduceKernel("argmin", d, "i32"));
  }
  for (const d of ["bool", "u8"] as const) {
    assert.ok(wasmReduceKernel("all", d, "bool"));
    assert.ok(wasmReduceKernel("any", d, "bool"));
  }
  assert.equal(wasmReduceKernel("sum", "f64", "f64"), undefined);
  assert.equal(wasmReduceKernel("all", "f32", "bool"), undefined);
});

Deno.test("wasm reduce: sum/max/min/argmax/argmin of f32/bf16/f16 equal the TypeScript bits", async () => {
  const live = heapStats().liveBlocks;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...FLOATS),
      fc.constantFrom<ReduceOp>("sum", "max", "min", "argmax", "argmin"),
      shapeArb,
      fc.array(valueArb, { minLength: 3 * 40 * 33, maxLength: 3 * 40 * 33 }),
      fc.array(bitsArb, { maxLength: 64 }),
      async (dtype, op, shape, pool, raw) => {
        const n = shape[0] * shape[1] * shape[2];
        const data = storageOf(dtype, pool.slice(0, n), raw);
        const out = op === "argmax" || op === "argmin" ? "i32" : dtype;
        const got = await run(op, dtype, data, shape, out);
        const want = await reference(op, dtype, data, shape, out);
        sameBits(got, want, `${op} ${dtype} [${shape}]`);
      },
    ),
    { numRuns: 300 },
  );
  assert.equal(heapStats().liveBlocks, live);
});

Deno.test("wasm reduce: all/any of bool and u8 equal the TypeScript bits", async () => {
  const live = heapStats().liveBlocks;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom<DType>("bool", "u8"),
      fc.constantFrom<ReduceOp>("all", "any"),
      fc.tuple(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 70 }),
        innerArb,
      ),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      async (dtype, op, shape, density, seed) => {
        // Mostly-true or mostly-false bytes so that both answers occur; u8 bytes are any value.
        const n = shape[0] * shape[1] * shape[2];
        const data = new Uint8Array(n);
        let s = seed;
        for (let i = 0; i < n; i++) {
          s = (s * 1103515245 + 12345) >>> 0;
          const on = (s >>> 8) / 2 ** 24 < density;
          data[i] = on ? (dtype === "bool" ? 1 : 1 + ((s >>> 3) % 255)) : 0;
        }
        const got = await run(op, dtype, data, shape, "bool");
        const want = await reference(op, dtype, data, shape, "bool");
        sameBits(got, want, `${op} ${dtype} [${shape}]`);
      },
    ),
    { numRuns: 300 },
  );
  assert.equal(heapStats().liveBlocks, live);
});

Deno.test("wasm reduce: long rows (vector bodies and tails) and a single false at the end", async () => {
  const live = heapStats().liveBlocks;
  for (const n of [15, 16, 17, 1000, 4099]) {
    for (const op of ["all", "any"] as const) {
      const data = new Uint8Array(n).fill(op === "all" ? 1 : 0);
      data[n - 1] = op === "all" ? 0 : 1;
      for (const shape of [[1, n, 1], [n, 1, 1], [1, 1, n]] as [number, number, number][]) {
        const got = await run(op, "bool", data, shape, "bool");
        sameBits(got, await reference(op, "bool", data, shape, "bool"), `${op} [${shape}]`);
      }
    }
    // Values whose running f64 sums are not exact in f32 (a shorter accumulator would show).
    const values = Array.from({ length: n }, (_, i) => 8 * Math.sin(i * 0.731) + 1e-3 * (i % 7));
    for (const dtype of FLOATS) {
      const data = encode(dtype, values);
      for (const shape of [[1, n, 1], [1, 1, n], [n, 1, 1]] as [number, number, number][]) {
        for (const op of ["sum", "max", "min", "argmax", "argmin"] as const) {
          const out = op.startsWith("arg") ? "i32" : dtype;
          const got = await run(op, dtype, data, shape, out);
          sameBits(got, await reference(op, dtype, data, shape, out), `${op} ${dtype} [${shape}]`);
        }
      }
    }
  }
  assert.equal(heapStats().liveBlocks, live);
});
