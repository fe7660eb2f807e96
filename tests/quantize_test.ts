import fc from "./fc.ts";
import assert from "node:assert/strict";
import {
  blockAbsmax,
  dequantizeBlockwise,
  dynamicMap,
  quantizeBlockwise,
} from "../lib/optim/quantize.ts";
import { memory, tensor, tidy } from "../lib/tensor.ts";
import { intercept } from "../lib/op.ts";
import { key, normal, uniform } from "../lib/random.ts";

const SIGNED = dynamicMap();
const UNSIGNED = dynamicMap({ signed: false });
const f = Math.fround;

/** Round-trip `xs` on the CPU: codes, absmax and the dequantized values. */
async function roundTrip(xs: number[], map: Float32Array, blockSize: number, signGuard = false) {
  const x = tensor(xs, { shape: [xs.length] });
  const q = quantizeBlockwise(x, map, blockSize, { signGuard });
  const back = dequantizeBlockwise(q, map, blockSize);
  const out = {
    x: await x.data() as Float32Array,
    codes: await q.codes.data() as Uint8Array,
    absmax: await q.absmax.data() as Float32Array,
    back: await back.data() as Float32Array,
  };
  for (const t of [x, q.codes, q.absmax, back]) t.dispose();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Maps (bitsandbytes-foundation/bitsandbytes bitsandbytes/functional.py create_dynamic_map)

Deno.test("dynamicMap: signed map reference values and layout", () => {
  const m = SIGNED;
  assert.equal(m.length, 256);
  for (let i = 1; i < 256; i++) assert.ok(m[i] > m[i - 1], `ascending at ${i}`);
  assert.equal(m[0], f(-0.99296875)); // −0.99296874: there is no −1
  assert.ok(!m.includes(-1));
  assert.equal(m[127], 0);
  assert.equal(m[128], f(5.500000384017767e-7)); // ≈ 5.5e−7, the smallest positive
  assert.equal(m[255], 1);
  // Around zero: … −5.5e−7, 0, 5.5e−7, 3.25e−6, 7.75e−6, 2.125e−5 …
  assert.deepEqual(
    Array.from(m.subarray(126, 132), (v) => +v.toPrecision(4)),
    [-5.5e-7, 0, 5.5e-7, 3.25e-6, 7.75e-6, 2.125e-5],
  );
  // 127 negatives mirror the positives below 1.
  for (let i = 0; i < 127; i++) assert.equal(m[i], -m[254 - i]);
  // Per-decade counts 1, 2, 4, …, 64 (1e−6 … 1e0).
  const counts = [0, 1, 2, 3, 4, 5, 6].map((i) =>
    m.filter((v) => v >= 0.1 * 10 ** (i - 6) && v < 10 ** (i - 6)).length
  );
  assert.deepEqual(counts, [1, 2, 4, 8, 16, 32, 64]);
  // f32 linspace details: entries of this construction (torch's CPU linspace, see
  // lib/optim/quantize.ts) that a naive f64 linspace misses. One public dump of bitsandbytes'
  // map (in a Rust port) has these three values; another has m[234] 1 ulp lower (0.711718738…).
  assert.equal(m[18], f(-0.7398437261581421));
  assert.equal(m[234], f(0.7117187976837158));
  assert.equal(m[137], f(0.0003812500217463821));
});

Deno.test("dynamicMap: unsigned map reference values and layout", () => {
  const u = UNSIGNED;
  assert.equal(u.length, 256);
  for (let i = 1; i < 256; i++) assert.ok(u[i] > u[i - 1], `ascending at ${i}`);
  assert.equal(u[0], 0);
  assert.equal(+u[1].toPrecision(4), 3.25e-7);
  assert.equal(u[255], 1);
  const counts = [0, 1, 2, 3, 4, 5, 6].map((i) =>
    u.filter((v) => v >= 0.1 * 10 ** (i - 6) && v < 10 ** (i - 6)).length
  );
  assert.deepEqual(counts, [2, 4, 8, 16, 32, 64, 128]);
});

// ---------------------------------------------------------------------------------------------
// Quantize / dequantize (bitsandbytes bitsandbytes/backends/default/ops.py, csrc/kernels.cu)

Deno.test("quantizeBlockwise: a worked example of bitsandbytes' algorithm", async () => {
  const r = await roundTrip([0, 0.5, -0.25, 1, -1, 0.001], SIGNED, 256);
  assert.deepEqual(Array.from(r.codes), [127, 219, 53, 255, 0, 142]);
  assert.deepEqual(Array.from(r.absmax), [1]);
  const expected = [0, 0.50078, -0.24766, 1.0, -0.99297, 0.00094375];
  r.back.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 5e-6, `${i}: ${v}`));
});

/** The bound of nearest-entry quantization: half the gap of the map entries around y, times the absmax. */
function errorBound(y: number, map: Float32Array, absmax: number): number {
  const slack = 2 ** -21 * absmax + 2 ** -148; // f32 rounding of y and of code·absmax
  if (y <= map[0]) return (map[0] - y) * absmax + slack; // below the signed map's −0.99297
  let j = 0;
  while (j < 254 && map[j + 1] < y) j++;
  return (map[j + 1] - map[j]) / 2 * absmax + slack;
}

const f32 = fc.float({ noNaN: true, noDefaultInfinity: true }).map(Math.fround);
const blockSizes = fc.constantFrom(1, 3, 64, 100, 256);

Deno.test("quantizeBlockwise: error ≤ half the neighbouring gap × absmax (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(f32, { minLength: 1, maxLength: 600 }),
      blockSizes,
      fc.boolean(),
      async (xs, blockSize, signed) => {
        const map = signed ? SIGNED : UNSIGNED;
        const vals = signed ? xs : xs.map(Math.abs);
        const r = await roundTrip(vals, map, blockSize);
        assert.equal(r.absmax.length, Math.ceil(vals.length / blockSize));
        r.x.forEach((x, i) => {
          const a = r.absmax[Math.floor(i / blockSize)];
          const y = a > 0 ? x / a : 0;
          const err = Math.abs(r.back[i] - x);
          assert.ok(err <= errorBound(y, map, a), `x=${x} absmax=${a} got ${r.back[i]}`);
        });
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("quantizeBlockwise: block absmax round-trips; zero → 0; sign kept (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(f32, { minLength: 1, maxLength: 600 }),
      blockSizes,
      fc.boolean(),
      async (xs, blockSize, signGuard) => {
        const r = await roundTrip(xs, SIGNED, blockSize, signGuard);
        r.x.forEach((x, i) => {
          const b = Math.floor(i / blockSize);
          const a = r.absmax[b];
          if (x === 0) assert.equal(r.back[i], 0, "zero maps to zero");
          if (x !== 0 && Math.abs(x) === a) {
            // A positive absmax element is exact; a negative one has no −1 to map to.
            assert.equal(r.back[i], x > 0 ? x : f(SIGNED[0] * a), `absmax element ${x}`);
          }
          assert.ok(Math.sign(r.back[i]) * Math.sign(x) >= 0, `sign flipped: ${x} → ${r.back[i]}`);
          if (signGuard && x < 0) assert.ok(r.back[i] < 0, `guarded negative ${x} → ${r.back[i]}`);
        });
        // The absmax is exactly max |x| of each block.
        for (let b = 0; b < r.absmax.length; b++) {
          const block = Array.from(r.x.subarray(b * blockSize, (b + 1) * blockSize), Math.abs);
          assert.equal(r.absmax[b], Math.max(...block));
        }
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("quantizeBlockwise: a negative absmax element maps to −0.99297·absmax", async () => {
  const r = await roundTrip([-3, 1, 2, -0.5], SIGNED, 256);
  assert.equal(r.codes[0], 0);
  assert.equal(r.back[0], f(f(-0.99296875) * 3));
  assert.ok(Math.abs(r.back[0] / 3 + 0.99297) < 1e-5);
  // The unsigned map has no negatives at all: negative inputs clamp to its 0.
  const u = await roundTrip([-1, 2], UNSIGNED, 256);
  assert.deepEqual(Array.from(u.back), [0, 2]);
});

Deno.test("quantizeBlockwise: signGuard keeps tiny negatives negative, as bitsandbytes", async () => {
  const tiny = [1, -1e-9, 1e-9, -2e-7];
  const plain = await roundTrip(tiny, SIGNED, 256);
  assert.deepEqual(Array.from(plain.codes), [255, 127, 127, 127]);
  const guarded = await roundTrip(tiny, SIGNED, 256, true);
  assert.deepEqual(Array.from(guarded.codes), [255, 126, 127, 126]);
  assert.equal(guarded.back[1], SIGNED[126]);
});

Deno.test("quantizeBlockwise: tail block, all-zero block, NaN block", async () => {
  const r = await roundTrip([1, 2, 0, 0, 0, -4, 5, NaN, 6], SIGNED, 2);
  assert.equal(r.absmax.length, 5);
  assert.deepEqual(Array.from(r.absmax.subarray(0, 3)), [2, 0, 4]);
  assert.ok(Number.isNaN(r.absmax[3]));
  assert.equal(r.absmax[4], 6); // the tail block of one element has its own absmax
  assert.deepEqual(Array.from(r.back.subarray(2, 4)), [0, 0]);
  assert.equal(r.codes[2], 127);
  assert.ok(Number.isNaN(r.back[6]) && Number.isNaN(r.back[7])); // NaN poisons its block only
  assert.equal(r.back[8], 6);
});

Deno.test("blockAbsmax: per block of the flattened tensor, f32", async () => {
  const x = tensor([[1, -3, 2], [0.5, -7, 0]], { dtype: "bf16" });
  const a = blockAbsmax(x, 4);
  assert.equal(a.dtype, "f32");
  assert.deepEqual(a.shape, [2]);
  assert.deepEqual(Array.from(await a.data()), [3, 7]);
});

Deno.test("dequantizeBlockwise: shape and dtype, rounded once from f32", async () => {
  const w = tensor([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]]);
  const q = quantizeBlockwise(w, SIGNED, 4);
  assert.equal(q.codes.dtype, "u8");
  assert.deepEqual(q.codes.shape, [2, 3]);
  const asF32 = await dequantizeBlockwise(q, SIGNED, 4).data();
  for (const dtype of ["f16", "bf16", "f64"] as const) {
    const d = dequantizeBlockwise(q, SIGNED, 4, [3, 2], dtype);
    assert.equal(d.dtype, dtype);
    assert.deepEqual(d.shape, [3, 2]);
    const expected = await tensor(asF32, { dtype }).data();
    assert.deepEqual(Array.from(await d.data()), Array.from(expected));
  }
});

Deno.test("quantize ops: clear errors for a wrong blockSize, absmax or dtype", () => {
  const x = tensor([1, 2, 3, 4, 5]);
  const q = quantizeBlockwise(x, SIGNED, 2);
  assert.throws(() => dequantizeBlockwise(q, SIGNED, 4), /absmax must be f32 with 2 elements/);
  assert.throws(() => quantizeBlockwise(x, SIGNED, 0), /blockSize must be a positive integer/);
  assert.throws(() => quantizeBlockwise(tensor([1, 2], { dtype: "i32" }), SIGNED), /float tensor/);
  assert.throws(() => quantizeBlockwise(x, new Float32Array(16)), /Float32Array\(256\)/);
  assert.throws(() => dequantizeBlockwise(q, SIGNED, 2, [2, 2]), /holds 4 values but there are 5/);
  assert.throws(() => dequantizeBlockwise(q, SIGNED, 2, [5], "i32"), /must be a float/);
});

Deno.test("quantize ops run through apply: interceptors see them; tidy frees them", () => {
  const seen: string[] = [];
  const before = memory().bytes;
  tidy(() => {
    const x = tensor([1, -2, 3]);
    intercept((call, inputs, next) => (seen.push(call.op.name), next(inputs)), () => {
      const q = quantizeBlockwise(x, SIGNED, 2);
      dequantizeBlockwise(q, SIGNED, 2);
    });
  });
  assert.deepEqual(seen, ["blockAbsmax", "quantizeBlockwise", "dequantizeBlockwise"]);
  assert.equal(memory().bytes, before);
});

// ---------------------------------------------------------------------------------------------
// Mean errors on 1024×1024 (bitsandbytes' test_dynamic_blockwise_quantization thresholds)

async function meanErrors(x: Float32Array, map: Float32Array, blockSize: number) {
  const back = tidy(() => {
    const t = tensor(x, { shape: [1024, 1024] });
    return dequantizeBlockwise(quantizeBlockwise(t, map, blockSize), map, blockSize);
  });
  const y = await back.data();
  back.dispose();
  let abs = 0;
  let rel = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i] - y[i]);
    abs += d;
    rel += d / Math.abs(x[i] + 1e-8);
  }
  return { abs: abs / x.length, rel: rel / x.length };
}

Deno.test("quantizeBlockwise: mean errors on 1024×1024 within bitsandbytes' thresholds", async () => {
  const randn = normal(key(1), [1024 * 1024]);
  const rand = uniform(key(2), [1024 * 1024]);
  const xn = await randn.data() as Float32Array;
  const xu = await rand.data() as Float32Array;
  randn.dispose();
  rand.dispose();
  const rows: string[] = [];
  for (const blockSize of [256, 4096]) {
    const sn = await meanErrors(xn, SIGNED, blockSize);
    const su = await meanErrors(xu, SIGNED, blockSize);
    const uu = await meanErrors(xu, UNSIGNED, blockSize);
    rows.push(
      `bs ${blockSize}: randn/signed ${sn.abs.toFixed(5)} ${sn.rel.toFixed(4)}; ` +
        `rand/signed ${su.abs.toFixed(5)} ${su.rel.toFixed(4)}; ` +
        `rand/unsigned ${uu.abs.toFixed(5)} ${uu.rel.toFixed(4)}`,
    );
    assert.ok(sn.abs < 0.011 && sn.rel < 0.018, rows.at(-1));
    assert.ok(su.abs < 0.0036 && su.rel < 0.015, rows.at(-1));
    assert.ok(uu.abs < 0.0023 && uu.rel < 0.012, rows.at(-1));
  }
  console.log(rows.join("\n"));
});
