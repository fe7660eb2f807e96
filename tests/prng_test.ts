import assert from "node:assert/strict";
import fc from "./fc.ts";
import {
  fillBernoulli,
  fillNormal,
  fillUniform,
  foldIn,
  isKey,
  type Key,
  keyFromSeed,
  permutation,
  randomBits,
  splitKey,
  threefry2x32,
  uniformFromBits,
} from "../lib/prng.ts";

const hex = (ws: ArrayLike<number>) =>
  Array.from(ws, (w) => "0x" + w.toString(16).padStart(8, "0")).join(" ");

function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return s / xs.length;
}

function variance(xs: ArrayLike<number>): number {
  const m = mean(xs);
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += (xs[i] - m) ** 2;
  return s / xs.length;
}

Deno.test("threefry2x32 matches the Random123 known-answer vectors (20 rounds)", () => {
  // [key0, key1, ctr0, ctr1, out0, out1] from Random123's kat_vectors, also used by JAX.
  const vectors = [
    [0, 0, 0, 0, 0x6b200159, 0x99ba4efe],
    [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x1cb996fc, 0xbb002be7],
    [0x13198a2e, 0x03707344, 0x243f6a88, 0x85a308d3, 0xc4923a9c, 0x483df7a0],
  ];
  for (const [k0, k1, x0, x1, y0, y1] of vectors) {
    assert.equal(hex(threefry2x32(k0, k1, x0, x1)), hex([y0, y1]));
  }
});

Deno.test("threefry2x32 returns u32 words and is injective on counters", () => {
  fc.assert(
    fc.property(
      fc.nat({ max: 0xffffffff }),
      fc.nat({ max: 0xffffffff }),
      fc.nat({ max: 0xffffffff }),
      fc.nat({ max: 0xffffffff }),
      (k0, k1, x0, x1) => {
        const [a, b] = threefry2x32(k0, k1, x0, x1);
        assert.ok(a >>> 0 === a && b >>> 0 === b);
        const [c, d] = threefry2x32(k0, k1, x0 ^ 1, x1);
        assert.ok(a !== c || b !== d);
      },
    ),
  );
});

Deno.test("keyFromSeed splits the 64-bit two's complement seed like JAX's PRNGKey", () => {
  const cases: [number, number, number][] = [
    [0, 0, 0],
    [42, 0, 42],
    [-1, 0xffffffff, 0xffffffff],
    [2 ** 32, 1, 0],
    [2 ** 32 + 5, 1, 5],
    [-(2 ** 32), 0xffffffff, 0],
    [Number.MAX_SAFE_INTEGER, 0x1fffff, 0xffffffff],
    [Number.MIN_SAFE_INTEGER, 0xffe00000, 1],
  ];
  for (const [seed, k0, k1] of cases) {
    assert.deepEqual(keyFromSeed(seed), { kind: "nbit.key", k0, k1 }, `seed ${seed}`);
  }
  fc.assert(
    fc.property(fc.maxSafeInteger(), (seed) => {
      const u = BigInt.asUintN(64, BigInt(seed));
      const k = keyFromSeed(seed);
      assert.equal(k.k0, Number(u >> 32n));
      assert.equal(k.k1, Number(u & 0xffffffffn));
    }),
  );
  for (const bad of [1.5, NaN, Infinity, 2 ** 53, "1" as unknown as number]) {
    assert.throws(() => keyFromSeed(bad), /keyFromSeed: seed must be a safe integer/);
  }
});

Deno.test("keys are frozen plain data recognised by isKey", () => {
  const k = keyFromSeed(3);
  assert.ok(isKey(k));
  assert.ok(Object.isFrozen(k));
  assert.deepEqual(JSON.parse(JSON.stringify(k)), k);
  assert.ok(isKey({ kind: "nbit.key", k0: 1, k1: 2 }));
  for (
    const bad of [
      null,
      undefined,
      7,
      [0, 0],
      { k0: 0, k1: 0 },
      { kind: "nbit.key", k0: -1, k1: 0 },
      { kind: "nbit.key", k0: 0, k1: 2 ** 32 },
      { kind: "nbit.key", k0: 0.5, k1: 0 },
    ]
  ) {
    assert.equal(isKey(bad), false);
  }
  assert.throws(() => randomBits({ k0: 0, k1: 0 } as unknown as Key, 2), /expected a PRNG key/);
  assert.throws(() => splitKey(null as unknown as Key, 2), /splitKey: expected a PRNG key/);
});

Deno.test("everything is deterministic for a key", () => {
  const k = keyFromSeed(123);
  assert.deepEqual(randomBits(k, 33), randomBits(keyFromSeed(123), 33));
  assert.deepEqual(splitKey(k, 5), splitKey(k, 5));
  assert.deepEqual(foldIn(k, 9), foldIn(k, 9));
  const a = new Float32Array(17), b = new Float32Array(17);
  fillNormal(k, a);
  fillNormal(k, b);
  assert.deepEqual(a, b);
  fillUniform(k, a, -2, 3);
  fillUniform(k, b, -2, 3);
  assert.deepEqual(a, b);
  assert.deepEqual(permutation(k, 50), permutation(k, 50));
  assert.notDeepEqual(randomBits(k, 8), randomBits(keyFromSeed(124), 8));
});

Deno.test("splitKey follows its counter domain and gives distinct keys", () => {
  const k = keyFromSeed(0);
  const keys = splitKey(k, 1000);
  assert.equal(keys.length, 1000);
  keys.forEach((ki, i) => {
    assert.ok(isKey(ki));
    const [a, b] = threefry2x32(k.k0, k.k1, i, 1);
    assert.equal(ki.k0, a);
    assert.equal(ki.k1, b);
  });
  const seen = new Set(keys.map((ki) => `${ki.k0},${ki.k1}`));
  seen.add(`${k.k0},${k.k1}`);
  assert.equal(seen.size, 1001);
  assert.deepEqual(splitKey(k, 10), keys.slice(0, 10));
  assert.deepEqual(splitKey(k, 0), []);
  // Children draw different streams.
  assert.notDeepEqual(randomBits(keys[0], 4), randomBits(keys[1], 4));
  assert.throws(() => splitKey(k, -1), RangeError);
  assert.throws(() => splitKey(k, 1.5), RangeError);
});

Deno.test("foldIn follows its counter domain", () => {
  const k = keyFromSeed(5);
  const [a, b] = threefry2x32(k.k0, k.k1, 17, 2);
  assert.deepEqual(foldIn(k, 17), { kind: "nbit.key", k0: a, k1: b });
  assert.deepEqual(foldIn(k, 17 + 2 ** 32), foldIn(k, 17));
  assert.deepEqual(foldIn(k, -1), foldIn(k, 0xffffffff));
  const folded = new Set(Array.from({ length: 200 }, (_, d) => {
    const f = foldIn(k, d);
    return `${f.k0},${f.k1}`;
  }));
  assert.equal(folded.size, 200);
  // Not the same as a split child with the same index.
  assert.notDeepEqual(foldIn(k, 0), splitKey(k, 1)[0]);
  assert.throws(() => foldIn(k, 0.5), /foldIn: data must be a safe integer/);
});

Deno.test("randomBits: element g is word g & 1 of block g >>> 1", () => {
  const k = keyFromSeed(11);
  const bits = randomBits(k, 9);
  for (let g = 0; g < 9; g++) {
    assert.equal(bits[g], threefry2x32(k.k0, k.k1, g >>> 1, 0)[g & 1]);
  }
  assert.equal(randomBits(k, 0).length, 0);
  // A far offset uses the block counter above 2^31.
  const far = 2 ** 32 + 3;
  assert.equal(randomBits(k, 1, far)[0], threefry2x32(k.k0, k.k1, (far - 1) / 2, 0)[1]);
  assert.equal(randomBits(k, 1, 2 ** 33 - 1)[0], threefry2x32(k.k0, k.k1, 0xffffffff, 0)[1]);
  assert.throws(() => randomBits(k, 2, 2 ** 33 - 1), /at most 2\^33/);
  assert.throws(() => randomBits(k, -1), RangeError);
  assert.throws(() => randomBits(k, 3, 0.5), RangeError);
});

Deno.test("randomBits(key, n, offset) is a slice of randomBits(key, offset + n)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: -1000, max: 1000 }),
      fc.nat({ max: 64 }),
      fc.nat({ max: 64 }),
      (seed, n, offset) => {
        const k = keyFromSeed(seed);
        assert.deepEqual(randomBits(k, n, offset), randomBits(k, offset + n).slice(offset));
      },
    ),
  );
});

Deno.test("uniformFromBits maps words onto the 24-bit grid of [0, 1)", () => {
  assert.equal(uniformFromBits(0), 0);
  assert.equal(uniformFromBits(0xff), 0);
  assert.equal(uniformFromBits(0x100), 2 ** -24);
  assert.equal(uniformFromBits(0x80000000), 0.5);
  assert.equal(uniformFromBits(0xffffffff), 1 - 2 ** -24);
  fc.assert(
    fc.property(fc.nat({ max: 0xffffffff }), (w) => {
      const u = uniformFromBits(w);
      assert.ok(u >= 0 && u < 1);
      assert.equal(Math.fround(u), u);
    }),
  );
});

Deno.test("fillUniform: values, range and moments on 10^5 samples", () => {
  const k = keyFromSeed(2024);
  const n = 100_000;
  const u = new Float32Array(n);
  fillUniform(k, u);
  const bits = randomBits(k, n);
  for (let i = 0; i < n; i++) {
    assert.ok(u[i] >= 0 && u[i] < 1);
    if (u[i] !== uniformFromBits(bits[i])) assert.fail(`element ${i}`);
  }
  assert.ok(Math.abs(mean(u) - 0.5) < 0.01, `mean ${mean(u)}`);
  assert.ok(Math.abs(variance(u) - 1 / 12) < 0.005, `variance ${variance(u)}`);
  // Deciles are roughly even.
  const counts = new Array(10).fill(0);
  for (const x of u) counts[Math.floor(x * 10)]++;
  for (const c of counts) assert.ok(Math.abs(c - n / 10) < 600, `deciles ${counts}`);
  // A Float64Array gets the very same (f32) values.
  const d = new Float64Array(n);
  fillUniform(k, d);
  assert.deepEqual(Float32Array.from(d), u);
});

Deno.test("fillUniform(lo, hi) computes in f32 and stays in [lo, hi)", () => {
  const k = keyFromSeed(8);
  const n = 4001;
  const out = new Float32Array(n);
  fillUniform(k, out, -0.1, 0.3);
  const bits = randomBits(k, n);
  const lo = Math.fround(-0.1), hi = Math.fround(0.3);
  const d = Math.fround(hi - lo);
  for (let i = 0; i < n; i++) {
    const want = Math.fround(lo + Math.fround(d * uniformFromBits(bits[i])));
    if (out[i] !== want) assert.fail(`element ${i}: ${out[i]} vs ${want}`);
    assert.ok(out[i] >= lo && out[i] < hi);
  }
  // Near 1e6 the f32 grid is 1/16, so 1/32 of the draws round up to hi;
  // those become the largest f32 below hi.
  const big = new Float32Array(10_000);
  fillUniform(k, big, 1e6, 1e6 + 1);
  const top = 1e6 + 1 - 1 / 16;
  let atTop = 0;
  for (const x of big) {
    assert.ok(x >= 1e6 && x <= top, `${x}`);
    if (x === top) atTop++;
  }
  assert.ok(atTop > 300, `${atTop} at the top`); // 1/32 round up + 1/16 exact: ~937
  const same = new Float32Array(3);
  fillUniform(k, same, 2, 2);
  assert.deepEqual(same, new Float32Array([2, 2, 2]));
  assert.throws(() => fillUniform(k, out, 1, 0), /fillUniform: need finite lo <= hi/);
  assert.throws(() => fillUniform(k, out, 0, Infinity), RangeError);
  assert.throws(() => fillUniform(k, out, NaN, 1), RangeError);
  assert.throws(() => fillUniform(k, out, -3e38, 3e38), RangeError);
  fc.assert(
    fc.property(
      fc.double({ min: -1e6, max: 1e6, noNaN: true }),
      fc.double({ min: 0, max: 1e6, noNaN: true }),
      fc.integer({ min: 0, max: 1000 }),
      (a, w, seed) => {
        const xs = new Float32Array(16);
        fillUniform(keyFromSeed(seed), xs, a, a + w);
        const lo = Math.fround(a), hi = Math.fround(a + w);
        for (const x of xs) assert.ok(lo === hi ? x === lo : x >= lo && x < hi);
      },
    ),
  );
});

Deno.test("fillNormal: Box-Muller recipe and moments on 10^5 samples", () => {
  const k = keyFromSeed(7);
  const n = 100_000;
  const z = new Float64Array(n);
  fillNormal(k, z);
  // The recipe, block 0 and block 1.
  for (let j = 0; j < 2; j++) {
    const [w0, w1] = threefry2x32(k.k0, k.k1, j, 0);
    const u1 = ((w0 >>> 8) + 1) * 2 ** -24, u2 = (w1 >>> 8) * 2 ** -24;
    const r = Math.sqrt(-2 * Math.log(u1));
    assert.equal(z[2 * j], r * Math.cos(2 * Math.PI * u2));
    assert.equal(z[2 * j + 1], r * Math.sin(2 * Math.PI * u2));
  }
  let tails = 0, cross = 0;
  for (let i = 0; i < n; i++) {
    assert.ok(Number.isFinite(z[i]) && Math.abs(z[i]) < 5.8);
    if (Math.abs(z[i]) > 1.959964) tails++;
    if (i % 2 === 0) cross += z[i] * z[i + 1];
  }
  assert.ok(Math.abs(mean(z)) < 0.02, `mean ${mean(z)}`);
  assert.ok(Math.abs(variance(z) - 1) < 0.03, `variance ${variance(z)}`);
  assert.ok(Math.abs(tails / n - 0.05) < 0.005, `two-sided 5% tail ${tails / n}`);
  assert.ok(Math.abs(cross / (n / 2)) < 0.03, `pair correlation ${cross / (n / 2)}`);
  // Float32 storage rounds the f64 values once; odd lengths drop the last sine.
  const f = new Float32Array(5);
  fillNormal(k, f);
  assert.deepEqual(f, Float32Array.from(z.subarray(0, 5)));
});

Deno.test("fillBernoulli: rate, edges and the u < p rule", () => {
  const k = keyFromSeed(99);
  const n = 100_000;
  const out = new Uint8Array(n);
  fillBernoulli(k, 0.3, out);
  assert.ok(Math.abs(mean(out) - 0.3) < 0.01, `rate ${mean(out)}`);
  fillBernoulli(k, 0, out);
  assert.ok(out.every((b) => b === 0));
  fillBernoulli(k, 1, out);
  assert.ok(out.every((b) => b === 1));
  fc.assert(
    fc.property(fc.double({ min: 0, max: 1, noNaN: true }), fc.nat({ max: 1000 }), (p, seed) => {
      const key = keyFromSeed(seed);
      const m = new Uint8Array(33);
      fillBernoulli(key, p, m);
      const bits = randomBits(key, 33);
      m.forEach((b, i) => assert.equal(b, uniformFromBits(bits[i]) < p ? 1 : 0));
    }),
  );
  // Exactly at a grid point: u < p is strict.
  const bits = randomBits(k, 1);
  const one = new Uint8Array(1);
  fillBernoulli(k, uniformFromBits(bits[0]), one);
  assert.equal(one[0], 0);
  fillBernoulli(k, uniformFromBits(bits[0]) + 2 ** -30, one);
  assert.equal(one[0], 1);
  for (const p of [-0.1, 1.5, NaN]) {
    assert.throws(() => fillBernoulli(k, p, out), /p must be a probability/);
  }
});

Deno.test("permutation gives a permutation of 0..n-1 (property)", () => {
  fc.assert(
    fc.property(fc.nat({ max: 500 }), fc.integer({ min: -1e6, max: 1e6 }), (n, seed) => {
      const p = permutation(keyFromSeed(seed), n);
      assert.ok(p instanceof Int32Array);
      assert.equal(p.length, n);
      const sorted = Array.from(p).sort((a, b) => a - b);
      sorted.forEach((v, i) => assert.equal(v, i));
    }),
  );
  assert.deepEqual(permutation(keyFromSeed(0), 0), new Int32Array(0));
  assert.deepEqual(permutation(keyFromSeed(0), 1), new Int32Array([0]));
  assert.throws(() => permutation(keyFromSeed(0), -1), RangeError);
  assert.throws(() => permutation(keyFromSeed(0), 2.5), RangeError);
});

Deno.test("permutation is deterministic and roughly uniform", () => {
  const k = keyFromSeed(0);
  const big = permutation(k, 10_000);
  assert.deepEqual(big, permutation(keyFromSeed(0), 10_000));
  assert.notDeepEqual(big, permutation(keyFromSeed(1), 10_000));
  let fixed = 0;
  big.forEach((v, i) => (fixed += v === i ? 1 : 0));
  assert.ok(fixed < 10, `${fixed} fixed points`); // ~Poisson(1)
  // All 6 orders of 3 items appear about equally often over 6000 keys.
  const counts = new Map<string, number>();
  for (let t = 0; t < 6000; t++) {
    const s = permutation(foldIn(k, t), 3).join("");
    counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  assert.equal(counts.size, 6);
  for (const [s, c] of counts) assert.ok(c > 850 && c < 1150, `${s}: ${c}`);
});
