/**
 * Eager casts on the WebAssembly SIMD path (`cpu.cast`: one-op fused kernels, `wasm/narrow.ts`)
 * give the raw bits of the TypeScript reference kernels (`reference.cast`: `encodeInto`), for
 * every pair of f32/bf16/f16/f8e4m3/f8e5m2 with and without `saturate`: all 256 f8 codes, all
 * 65536 f16 and bf16 patterns, and f32 values at and beside every f8 and f16 rounding tie,
 * subnormals, out of range, ±Inf, NaN with any sign and payload (fast-check over f32 bits).
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import { cpu, reference } from "../lib/backend/cpu/cpu.ts";
import { wasmFusedInfo } from "../lib/backend/cpu/wasm/fused_run.ts";
import { wasmEnabled } from "../lib/backend/cpu/wasm/features.ts";
import { heapMemory, heapStats } from "../lib/backend/cpu/heap.ts";
import { decode, type DType, type Storage, storageFor } from "../lib/dtype.ts";

const SIMD = wasmEnabled() && heapMemory().buffer instanceof SharedArrayBuffer;
const FLOATS: DType[] = ["f32", "bf16", "f16", "f8e4m3", "f8e5m2"];

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const fromBits = (b: number) => (u32[0] = b, f32[0]);
const bitsOf = (x: number) => (f32[0] = x, u32[0]);

/** f32 values at every rounding tie of f8e4m3, f8e5m2 and f16, one ulp either side, signed. */
function ties(): number[] {
  const out: number[] = [];
  for (const d of ["f8e4m3", "f8e5m2", "f16"] as const) {
    const n = d === "f16" ? 0x7c00 : 0x80;
    const vals = decode(d, allCodes(d));
    for (let c = 0; c + 1 < n; c += d === "f16" ? 7 : 1) {
      const lo = vals[c], hi = vals[c + 1];
      if (!Number.isFinite(lo) || !Number.isFinite(hi)) continue;
      const mid = Math.fround((lo + hi) / 2);
      const b = bitsOf(mid);
      for (const x of [mid, fromBits(b - 1), fromBits(b + 1)]) out.push(x, -x);
    }
  }
  return out;
}

/** Cast `src` (storage of `from`) both ways; the raw bits must agree. */
async function check(from: DType, src: Storage, to: DType, saturate: boolean) {
  const n = src.length;
  const h = cpu.upload(from, src as Storage);
  const x = { h, dtype: from, size: n };
  const opts = saturate ? { saturate: true } : undefined;
  const calls = wasmFusedInfo().calls;
  const got = cpu.cast(x, to, opts);
  assert.equal(wasmFusedInfo().calls, calls + 1, `${from} → ${to}: the SIMD kernel ran`);
  const want = reference.cast(x, to, opts);
  const raw = async (o: unknown) => {
    const a = await cpu.read({ h: o, dtype: to, size: n });
    return Array.from(to === "f32" ? new Uint32Array(a.slice().buffer) : a);
  };
  const [g, w] = [await raw(got), await raw(want)];
  for (let i = 0; i < n; i++) {
    if (g[i] !== w[i]) {
      const s = from === "f32" ? `f32 bits 0x${bitsOf(src[i]).toString(16)}` : `code ${src[i]}`;
      assert.fail(
        `${from} → ${to}${saturate ? " (saturate)" : ""}: element ${i} (${s}): SIMD ` +
          `0x${g[i].toString(16)}, TypeScript 0x${w[i].toString(16)}`,
      );
    }
  }
  cpu.free(got, to, n);
  cpu.free(want, to, n);
  cpu.free(h, from, n);
}

/** Every code of a 8- or 16-bit format, as storage (at least 256 elements: the SIMD minimum). */
function allCodes(d: DType): Storage {
  const n = d === "f8e4m3" || d === "f8e5m2" ? 256 : 65536;
  const s = storageFor(d, n);
  for (let i = 0; i < n; i++) s[i] = i;
  return s;
}

Deno.test({
  name: "wasm cast: every f8/f16/bf16 code to every float dtype ≡ TypeScript, raw bits",
  ignore: !SIMD,
  async fn() {
    const live = heapStats().liveBytes;
    for (const from of FLOATS.slice(1)) {
      for (const to of FLOATS) {
        if (to === from) continue;
        for (const sat of [false, true]) await check(from, allCodes(from), to, sat);
      }
    }
    assert.equal(heapStats().liveBytes, live, "no heap block leaked");
  },
});

Deno.test({
  name: "wasm cast: f32 ties (f8, f16), their neighbours and specials ≡ TypeScript, raw bits",
  ignore: !SIMD,
  async fn() {
    const specials = [
      0,
      -0,
      Infinity,
      -Infinity,
      NaN,
      448,
      464,
      465,
      480,
      57344,
      61440,
      61439,
      65504,
      65520,
      65519,
      1e-45,
      2 ** -9,
      2 ** -10,
      3 * 2 ** -11,
      2 ** -16,
      2 ** -17,
      3e38,
    ];
    const xs = [...ties(), ...specials, ...specials.map((x) => -x)];
    const src = new Float32Array(xs);
    const bits = new Uint32Array(src.buffer);
    bits[bits.length - 1] = 0xff800001; // signalling NaN, negative
    for (const to of FLOATS.slice(1)) {
      for (const sat of [false, true]) await check("f32", src, to, sat);
    }
  },
});

Deno.test({
  name: "wasm cast: random f32 bits (NaN payloads, subnormals, out of range) to f8/f16/bf16 ≡ " +
    "TypeScript, raw bits (property)",
  ignore: !SIMD,
  async fn() {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 256, maxLength: 300 }),
        fc.constantFrom<DType>("bf16", "f16", "f8e4m3", "f8e5m2"),
        fc.boolean(),
        async (bs, to, sat) => {
          await check("f32", new Float32Array(Uint32Array.from(bs).buffer), to, sat);
        },
      ),
      { numRuns: 200 },
    );
  },
});
