/**
 * The WebAssembly quantize / dequantize kernels (lib/backend/cpu/wasm/quantize.ts) against the
 * TypeScript kernels (lib/backend/cpu/quantize.ts), bit for bit: special values, midpoint ties,
 * the sign guard, partial last blocks, dead and NaN blocks, f32/bf16/f16 inputs.
 */
import fc from "./fc.ts";
import assert from "node:assert/strict";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { dequantizeKernel, quantizeKernel, searchTables } from "../lib/backend/cpu/quantize.ts";
import { wasmDequantize, wasmQuantize } from "../lib/backend/cpu/wasm/quantize.ts";
import { wasmEnabled } from "../lib/backend/cpu/wasm/features.ts";
import { decode, type DType, encode } from "../lib/dtype.ts";
import { dynamicMap } from "../lib/optim/quantize.ts";
import type { Arg } from "../lib/backend/backend.ts";

const SIGNED = dynamicMap();
const UNSIGNED = dynamicMap({ signed: false });
const f = Math.fround;
const mids = (m: Float32Array) => Array.from(searchTables(m).mids);

/** f32 values with the cases that matter: specials, subnormals, midpoints (ties), ±1. */
const value = fc.oneof(
  fc.float({ noDefaultInfinity: false, noNaN: false }),
  fc.float({ min: -1, max: 1 }),
  fc.constantFrom(0, -0, 1, -1, NaN, Infinity, -Infinity, 1e-45, -1e-45, 1.1754942e-38),
  fc.constantFrom(...mids(SIGNED), ...mids(UNSIGNED)).map((v) => f(v)),
  fc.constantFrom(...mids(SIGNED)).map((v) => -f(v)),
);

function upload(dtype: DType, xs: ArrayLike<number>): Arg {
  return { h: cpu.upload(dtype, encode(dtype, Array.from(xs))), dtype, size: xs.length };
}

async function readBits(a: Arg): Promise<number[]> {
  const s = await cpu.read(a);
  return Array.from(a.dtype === "f32" ? new Uint32Array(s.buffer, s.byteOffset, a.size) : s);
}

Deno.test("wasm quantize: bitwise equal to the TypeScript kernel (property)", async () => {
  if (!wasmEnabled()) return; // NBIT_WASM=0: only the TypeScript kernel exists
  await fc.assert(
    fc.asyncProperty(
      fc.array(value, { minLength: 1, maxLength: 700 }),
      fc.constantFrom(4, 8, 64, 256),
      fc.constantFrom<DType>("f32", "bf16", "f16"),
      fc.boolean(),
      fc.oneof(
        fc.constant(SIGNED),
        fc.constant(UNSIGNED),
        // any map: unsorted or with NaN (the table guard), sorted (a long search: a loop)
        fc.array(value, { minLength: 256, maxLength: 256 }).map((m) => Float32Array.from(m)),
        fc.array(fc.float({ min: -1, max: 1, noNaN: true }), { minLength: 256, maxLength: 256 })
          .map((m) => Float32Array.from(m).sort()),
      ),
      fc.constantFrom("max", "random"),
      async (xs, bs, dtype, guard, map, scales) => {
        const x = upload(dtype, xs);
        const wide = Array.from(decode(dtype, await cpu.read(x)));
        const blocks = Math.ceil(xs.length / bs);
        const am = Array.from({ length: blocks }, (_, b) => {
          if (scales === "random") return xs[(b * 7) % xs.length];
          let a = -Infinity;
          for (const v of wide.slice(b * bs, (b + 1) * bs)) {
            a = v !== v || a !== a ? NaN : Math.max(a, Math.abs(v));
          }
          return a;
        });
        const absmax = upload("f32", am);
        const mapArg = upload("f32", map);
        const out = {
          h: cpu.quantize(x, absmax, mapArg, bs, guard),
          dtype: "u8" as DType,
          size: xs.length,
        };
        const want = quantizeKernel(wide, Float32Array.from(am), map, bs, guard, xs.length);
        const got = await readBits(out);
        for (const a of [x, absmax, mapArg, out]) cpu.free(a.h, a.dtype, a.size);
        assert.deepEqual(got, Array.from(want));
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("wasm dequantize: bitwise equal to the TypeScript kernel (property)", async () => {
  if (!wasmEnabled()) return;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 700 }),
      fc.constantFrom(4, 8, 64, 256),
      fc.array(value, { minLength: 176, maxLength: 176 }),
      fc.boolean(),
      async (codes, bs, scales, signed) => {
        const map = signed ? SIGNED : UNSIGNED;
        const c = upload("u8", codes);
        const am = scales.slice(0, Math.ceil(codes.length / bs));
        const absmax = upload("f32", am);
        const mapArg = upload("f32", map);
        const out = {
          h: cpu.dequantize(c, absmax, mapArg, bs, "f32"),
          dtype: "f32" as DType,
          size: codes.length,
        };
        const want = new Float32Array(codes.length);
        dequantizeKernel(codes, Float32Array.from(am), map, bs, want);
        const got = await readBits(out);
        for (const a of [c, absmax, mapArg, out]) cpu.free(a.h, a.dtype, a.size);
        assert.deepEqual(got, Array.from(new Uint32Array(want.buffer)));
      },
    ),
    { numRuns: 100 },
  );
});

Deno.test("wasm quantize: the WebAssembly path ran (not the fallback)", () => {
  if (!wasmEnabled()) return;
  const x = upload("f32", [0.5, -1, 0.25]);
  const am = upload("f32", [1]);
  const out = upload("u8", [0, 0, 0]);
  const scratch = upload("f32", new Array(2 * 8).fill(0));
  const ptr = (a: Arg) => (a.h as { ptr: number }).ptr;
  assert.equal(
    wasmQuantize(
      { ptr: ptr(x), dtype: "f32" },
      ptr(am),
      SIGNED,
      3,
      4,
      true,
      ptr(out),
      ptr(scratch),
    ),
    true,
  );
  assert.equal(wasmDequantize(ptr(out), ptr(am), SIGNED, 3, 4, ptr(x)), true);
  // A block size that is not a multiple of 4 is left to the TypeScript kernel.
  assert.equal(wasmDequantize(ptr(out), ptr(am), SIGNED, 3, 3, ptr(x)), false);
  for (const a of [x, am, out, scratch]) cpu.free(a.h, a.dtype, a.size);
});

/** y in [−1, 1] at every edge of the start table's buckets (±1 ulp) and every midpoint (±2 ulps). */
function edgeValues(maps: Float32Array[]): Float32Array {
  const w = new Float32Array(1), wb = new Uint32Array(w.buffer);
  const out: number[] = [];
  const near = (v: number, ulps: number) => {
    w[0] = v;
    const b = wb[0];
    for (let d = -ulps; d <= ulps; d++) {
      wb[0] = (b + d) >>> 0;
      if (Math.abs(w[0]) <= 1) out.push(w[0]);
    }
  };
  for (let p = 0; p <= 0x3f80; p++) {
    for (const sign of [0, 0x80000000]) {
      for (const low of [0, 0xffff]) {
        wb[0] = (sign | p << 16 | low) >>> 0;
        near(w[0], 1);
      }
    }
  }
  for (const m of maps) for (const v of searchTables(m).mids) near(v, 2), near(-v, 2);
  return Float32Array.from(out);
}

Deno.test("wasm quantize: every bucket edge and midpoint (±ulps), both maps", async () => {
  if (!wasmEnabled()) return;
  const xs = edgeValues([SIGNED, UNSIGNED]);
  const bs = 256;
  const am = new Float32Array(Math.ceil(xs.length / bs)).fill(1); // y = x exactly
  const x = upload("f32", xs), absmax = upload("f32", am);
  for (const map of [SIGNED, UNSIGNED]) {
    for (const guard of [false, true]) {
      const mapArg = upload("f32", map);
      const out = {
        h: cpu.quantize(x, absmax, mapArg, bs, guard),
        dtype: "u8" as DType,
        size: xs.length,
      };
      const got = await readBits(out);
      const want = quantizeKernel(xs, am, map, bs, guard, xs.length);
      for (const a of [mapArg, out]) cpu.free(a.h, a.dtype, a.size);
      const j = got.findIndex((c, i) => c !== want[i]);
      assert.equal(j, -1, `x = ${xs[j]}: code ${got[j]}, want ${want[j]} (guard ${guard})`);
    }
  }
  for (const a of [x, absmax]) cpu.free(a.h, a.dtype, a.size);
});
