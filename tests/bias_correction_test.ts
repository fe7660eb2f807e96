/**
 * Adam's bias correction `1 − bᵗ` on the device is the exact value rounded once to f32
 * (issue 13, item 2). The oracle is independent of the implementation: exact BigInt
 * exponentiation by squaring (b is an exact dyadic rational, so bᵗ is computed with a bounded
 * truncation error, far below f32's resolution), rounded to f32 by comparing against exact
 * midpoints. For the exhaustive sweeps, an f64 value `−expm1(t·log b)` (relative error
 * < 2⁻⁵⁰) decides every t that is not within 2⁻⁴⁰ of a midpoint; the rest go to the BigInt
 * oracle.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import { add, memory, type Tensor, tensor, tidy } from "../mod.ts";
import { oneMinusPow } from "../lib/optim/bias_correction.ts";

const F = 320n; // fixed-point fraction bits of the oracle

/** x (a finite double ≥ 0) as an exact fixed-point BigInt: x·2^F. */
function exact(x: number): bigint {
  if (x === 0) return 0n;
  let m = x, e = 0;
  while (!Number.isInteger(m)) { // scale by exact powers of two until integral
    m *= 2;
    e++;
  }
  return (BigInt(m) << F) >> BigInt(e);
}

/** The f32 neighbour of a positive f32 `x` one step up (+1) or down (−1). */
function neighbour(x: number, dir: 1 | -1): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] += dir;
  return f[0];
}

/** Round the real number in [lo, hi]·2^-F (an enclosure) to f32; throws if a midpoint is inside. */
function roundEnclosure(lo: bigint, hi: bigint): number {
  const guess = Math.fround(Number(lo) / 2 ** Number(F));
  for (const c of [neighbour(guess, -1), guess, neighbour(guess, 1)]) {
    if (c <= 0) continue;
    const down = (exact(c) + exact(neighbour(c, -1))) / 2n; // midpoints are exact at 2^-320
    const up = (exact(c) + exact(neighbour(c, 1))) / 2n;
    if (lo > down && hi < up) return c;
    if (lo === hi && (lo === down || lo === up)) { // an exact tie (b a power of two): to even
      const other = neighbour(c, lo === up ? 1 : -1);
      return (new Uint32Array(new Float32Array([c]).buffer)[0] & 1) === 0 ? c : other;
    }
  }
  throw new Error("oracle: the enclosure contains a midpoint (or the guess is off)");
}

/** Exactly rounded f32 of 1 − bᵗ (t ≥ 1 an integer), by exponentiation by squaring. */
function oracle(b: number, t: number): number {
  const one = 1n << F;
  let result = one, base = exact(b), n = t, muls = 0, inexact = false;
  const times = (x: bigint, y: bigint) => {
    const z = x * y;
    inexact ||= (z & (one - 1n)) !== 0n;
    muls++;
    return z >> F; // truncation: at most 1 unit low each time
  };
  while (n > 0) {
    if (n & 1) result = times(result, base);
    n = Math.floor(n / 2);
    if (n > 0) base = times(base, base);
  }
  // Errors compound but stay below 2·muls·t units here (t ≤ 2^24, F = 320); none if exact.
  const slack = inexact ? BigInt(2 * muls) * BigInt(t) + 2n : 0n;
  const p = result; // bᵗ ∈ [p, p + slack]
  const lo = one - p - slack, hi = one - p;
  if (hi <= 0n) return 0;
  if (lo >= one - (one >> 26n)) return 1; // 1 − bᵗ > 1 − 2^-26: rounds to 1
  return roundEnclosure(lo < 0n ? 0n : lo, hi);
}

/** f64 candidate, or undefined when it is too close to an f32 midpoint to decide. */
function quick(b: number, t: number): number | undefined {
  const y = -Math.expm1(t * Math.log(b));
  const c = Math.fround(y);
  if (c === 1 && y > 1 - 2 ** -26) return 1;
  const n = neighbour(c, y > c ? 1 : -1);
  const mid = (c + n) / 2;
  return Math.abs(y - mid) > 2 ** -40 * y ? c : undefined;
}

async function device(b: number, ts: Float32Array): Promise<Float32Array> {
  const r = tidy(() => oneMinusPow(b, tensor(ts)));
  const out = await r.data() as Float32Array;
  r.dispose();
  return out;
}

const BETAS = [0.9, 0.999, 0.99, 0.9999, 0.95, 0.98, 0.5, 0.1, 0.37, 0.99999, 0.999999];

Deno.test("oneMinusPow: t = 1…1000 is exactly rounded for many betas (BigInt oracle)", async () => {
  const before = memory().tensors;
  const ts = Float32Array.from({ length: 1000 }, (_, i) => i + 1);
  for (const b of BETAS) {
    const got = await device(b, ts);
    ts.forEach((t, i) => assert.equal(got[i], oracle(b, t), `b = ${b}, t = ${t}`));
  }
  assert.equal(memory().tensors, before);
});

Deno.test("oneMinusPow: t = 1 gives 0.001 for b = 0.999 (f32 pow gave 0.000999987)", async () => {
  const [bc2] = await device(0.999, new Float32Array([1]));
  assert.equal(bc2, Math.fround(0.001));
  const [bc1] = await device(0.9, new Float32Array([1]));
  assert.equal(bc1, Math.fround(0.1));
});

Deno.test("oneMinusPow: random t up to 10^7, split boundaries, 10^7 and 2^24 (BigInt oracle)", async () => {
  const edges = [1023, 1024, 1025, 2047, 2048, 4095, 4096, 16383, 16384, 16385, 1e7, 2 ** 24];
  for (const b of BETAS) {
    const ts = Float32Array.from([
      ...edges,
      ...fc.sample(fc.integer({ min: 1, max: 1e7 }), 300),
      ...fc.sample(fc.integer({ min: 1, max: 40000 }), 300), // where 0.999's answer is not 1
    ]);
    const got = await device(b, ts);
    ts.forEach((t, i) => assert.equal(got[i], oracle(b, t), `b = ${b}, t = ${t}`));
  }
});

/** Compare every t in [1, last] (in chunks) for one b; returns how many went to BigInt. */
async function sweep(b: number, last: number): Promise<number> {
  let slow = 0;
  const chunk = 1 << 18;
  for (let start = 1; start <= last; start += chunk) {
    const n = Math.min(chunk, last - start + 1);
    const ts = Float32Array.from({ length: n }, (_, i) => start + i);
    const got = await device(b, ts);
    for (let i = 0; i < n; i++) {
      const t = start + i;
      let want = quick(b, t);
      if (want === undefined) {
        want = oracle(b, t);
        slow++;
      }
      if (got[i] !== want) assert.fail(`b = ${b}, t = ${t}: got ${got[i]}, exact ${want}`);
    }
  }
  return slow;
}

Deno.test("oneMinusPow: every t ≤ 10^7 is exactly rounded for b = 0.9 and b = 0.999", async () => {
  const before = memory().tensors;
  for (const b of [0.9, 0.999]) await sweep(b, 1e7);
  assert.equal(memory().tensors, before);
});

Deno.test("oneMinusPow: every t ≤ 2·10^6 for betas close to 1 (0.9999, 0.99999)", async () => {
  for (const b of [0.9999, 0.99999]) await sweep(b, 2e6);
});

Deno.test("oneMinusPow: b = 0 and b = 1, any shape, integer-valued f32 counts", async () => {
  const t = tensor([[0, 1], [2, 7]]);
  const [z, o, s] = [oneMinusPow(0, t), oneMinusPow(1, t), oneMinusPow(0.5, t)];
  assert.deepEqual(await z.toArray(), [[0, 1], [1, 1]]);
  assert.deepEqual(await o.toArray(), [[0, 0], [0, 0]]);
  assert.deepEqual(await s.toArray(), [[0, 0.5], [0.75, 1 - 2 ** -7]]);
  assert.deepEqual(s.shape, [2, 2]);
  assert.equal(s.dtype, "f32");
  for (const x of [t, z, o, s] as Tensor[]) x.dispose();
  assert.throws(() => oneMinusPow(1.5, t), /b must be in \[0, 1\]/);
});

Deno.test("oneMinusPow under jit: the tables become constants, bits equal eager", async () => {
  const { jit } = await import("../lib/jit/mod.ts");
  const f = jit((c: Tensor) => oneMinusPow(0.999, add(c, 1)));
  const ts = Float32Array.from({ length: 5000 }, (_, i) => i * 3);
  const c = tensor(ts);
  const [e, j1, j2] = [tidy(() => oneMinusPow(0.999, add(c, 1))), f(c), f(c)];
  const eager = await e.data();
  for (const j of [j1, j2]) assert.deepEqual(await j.data(), eager);
  for (const t of [c, e, j1, j2]) t.dispose();
});
