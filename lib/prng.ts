/**
 * Counter-based pseudo-random numbers: Threefry-2x32 (20 rounds) keyed by
 * plain two-word keys, as in JAX.
 *
 * Everything here is a pure function of a {@link Key} and a counter, and the
 * bit generator uses only 32-bit unsigned additions, xors and rotations, so a
 * WGSL shader can produce the very same stream on the GPU.
 *
 * ## Counter domains
 *
 * Threefry is a bijection of the 64-bit counter `(x0, x1)` for a fixed key.
 * The functions of this module use disjoint parts of that counter space, so
 * no two of them ever see the same counter under the same key:
 *
 * | use                       | counter `(x0, x1)`  |
 * | ------------------------- | ------------------- |
 * | {@link randomBits} block j | `(j, 0)`           |
 * | {@link splitKey} key i    | `(i, 1)`            |
 * | {@link foldIn} data d     | `(d >>> 0, 2)`      |
 *
 * Block `j` of the bit stream gives elements `2j` (word 0) and `2j + 1`
 * (word 1), so a key yields at most 2^33 random words.
 *
 * @example
 * ```ts
 * import { fillNormal, keyFromSeed, splitKey } from "./prng.ts";
 * const [k1, k2] = splitKey(keyFromSeed(0), 2);
 * const w = new Float32Array(4);
 * fillNormal(k1, w);
 * ```
 *
 * @module
 */

/**
 * A PRNG key: plain immutable data (two u32 words), like a JAX key.
 *
 * @example
 * ```ts
 * const k: Key = keyFromSeed(42); // { kind: "nbit.key", k0: 0, k1: 42 }
 * ```
 */
export interface Key {
  /** Brand that tells a key from other plain objects. */
  readonly kind: "nbit.key";
  /** First key word (u32): the high 32 bits of a seed. */
  readonly k0: number;
  /** Second key word (u32): the low 32 bits of a seed. */
  readonly k1: number;
}

const TWO32 = 4294967296;
/** Number of random words one key can give: 2^32 blocks of two words. */
const MAX_WORDS = 2 * TWO32;
const SKEIN_PARITY = 0x1bd11bda;

function makeKey(k0: number, k1: number): Key {
  return Object.freeze({ kind: "nbit.key", k0: k0 >>> 0, k1: k1 >>> 0 });
}

function isU32(x: unknown): x is number {
  return typeof x === "number" && Number.isInteger(x) && x >= 0 && x < TWO32;
}

function describe(x: unknown): string {
  if (x === null) return "null";
  if (typeof x === "object") return Array.isArray(x) ? "an array" : "an object that is not a key";
  return `${typeof x} ${String(x)}`;
}

function assertKey(key: unknown, fn: string): asserts key is Key {
  if (!isKey(key)) {
    throw new TypeError(
      `${fn}: expected a PRNG key (from keyFromSeed, splitKey or foldIn), got ${describe(key)}`,
    );
  }
}

function assertCount(n: unknown, fn: string, name: string, max: number): asserts n is number {
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > max) {
    throw new RangeError(`${fn}: ${name} must be an integer in [0, ${max}], got ${String(n)}`);
  }
}

/**
 * Tells whether `x` is a PRNG key: an object with `kind: "nbit.key"` and two
 * u32 words.
 *
 * @example
 * ```ts
 * isKey(keyFromSeed(0)); // true
 * isKey({ k0: 0, k1: 0 }); // false
 * ```
 */
export function isKey(x: unknown): x is Key {
  if (typeof x !== "object" || x === null) return false;
  const k = x as Record<string, unknown>;
  return k.kind === "nbit.key" && isU32(k.k0) && isU32(k.k1);
}

/**
 * Makes a key from an integer seed, like JAX's `PRNGKey(seed)`: the seed is
 * read as a 64-bit two's complement integer, `k0` gets its high 32 bits and
 * `k1` its low 32 bits. Any safe integer works, negative ones too.
 *
 * @throws {RangeError} when `seed` is not a safe integer.
 * @example
 * ```ts
 * keyFromSeed(7); // { kind: "nbit.key", k0: 0, k1: 7 }
 * keyFromSeed(-1); // k0 = k1 = 0xffffffff
 * keyFromSeed(2 ** 32 + 5); // k0 = 1, k1 = 5
 * ```
 */
export function keyFromSeed(seed: number): Key {
  if (typeof seed !== "number" || !Number.isSafeInteger(seed)) {
    throw new RangeError(
      `keyFromSeed: seed must be a safe integer (|seed| <= 2^53 - 1), got ${String(seed)}`,
    );
  }
  // Division by 2^32 is exact; floor gives the arithmetic high word, and
  // ToUint32 (>>> 0) takes both words modulo 2^32, i.e. two's complement.
  return makeKey(Math.floor(seed / TWO32) >>> 0, seed >>> 0);
}

// The Threefry core writes its two output words here, so that the inner
// loops allocate nothing. JavaScript runs this synchronously, so the public
// functions stay pure.
let out0 = 0;
let out1 = 0;

// Rotation constants of Threefry-2x32 (Salmon et al. 2011, table 4).
const R0 = 13, R1 = 15, R2 = 26, R3 = 6, R4 = 17, R5 = 29, R6 = 16, R7 = 24;

function rotl(x: number, r: number): number {
  return ((x << r) | (x >>> (32 - r))) >>> 0;
}

/** Threefry-2x32-20 on u32 words; the result lands in out0/out1. */
function threefryCore(k0: number, k1: number, x0: number, x1: number): void {
  const ks0 = k0 >>> 0;
  const ks1 = k1 >>> 0;
  const ks2 = (SKEIN_PARITY ^ ks0 ^ ks1) >>> 0;
  let a = (x0 + ks0) >>> 0;
  let b = (x1 + ks1) >>> 0;
  // Rounds 1-4, then key injection 1.
  a = (a + b) >>> 0, b = (rotl(b, R0) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R1) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R2) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R3) ^ a) >>> 0;
  a = (a + ks1) >>> 0, b = (b + ks2 + 1) >>> 0;
  // Rounds 5-8, then key injection 2.
  a = (a + b) >>> 0, b = (rotl(b, R4) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R5) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R6) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R7) ^ a) >>> 0;
  a = (a + ks2) >>> 0, b = (b + ks0 + 2) >>> 0;
  // Rounds 9-12, then key injection 3.
  a = (a + b) >>> 0, b = (rotl(b, R0) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R1) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R2) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R3) ^ a) >>> 0;
  a = (a + ks0) >>> 0, b = (b + ks1 + 3) >>> 0;
  // Rounds 13-16, then key injection 4.
  a = (a + b) >>> 0, b = (rotl(b, R4) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R5) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R6) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R7) ^ a) >>> 0;
  a = (a + ks1) >>> 0, b = (b + ks2 + 4) >>> 0;
  // Rounds 17-20, then key injection 5.
  a = (a + b) >>> 0, b = (rotl(b, R0) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R1) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R2) ^ a) >>> 0;
  a = (a + b) >>> 0, b = (rotl(b, R3) ^ a) >>> 0;
  out0 = (a + ks2) >>> 0;
  out1 = (b + ks0 + 5) >>> 0;
}

/**
 * Threefry-2x32 with 20 rounds (Salmon et al. 2011, "Parallel random numbers:
 * as easy as 1, 2, 3"; the generator behind JAX's keys). Encrypts the counter
 * `(x0, x1)` under the key `(k0, k1)`; all four inputs are taken modulo 2^32
 * and both outputs are u32.
 *
 * @example
 * ```ts
 * threefry2x32(0, 0, 0, 0); // [0x6b200159, 0x99ba4efe]
 * ```
 */
export function threefry2x32(k0: number, k1: number, x0: number, x1: number): [number, number] {
  threefryCore(k0, k1, x0, x1);
  return [out0, out1];
}

/**
 * Splits a key into `n` new independent keys: key `i` is
 * `threefry2x32(key, (i, 1))` (counter domain `x1 = 1`, disjoint from the bit
 * stream's `x1 = 0` and {@link foldIn}'s `x1 = 2`). The same key always gives
 * the same keys, and `splitKey(key, m)` is a prefix of `splitKey(key, n)` for
 * `m < n`. Do not draw from a key after splitting it; use its children.
 *
 * @example
 * ```ts
 * const [kInit, kDrop] = splitKey(keyFromSeed(0), 2);
 * ```
 */
export function splitKey(key: Key, n: number): Key[] {
  assertKey(key, "splitKey");
  assertCount(n, "splitKey", "n", TWO32);
  const keys: Key[] = new Array(n);
  for (let i = 0; i < n; i++) {
    threefryCore(key.k0, key.k1, i, 1);
    keys[i] = makeKey(out0, out1);
  }
  return keys;
}

/**
 * Derives a new key from a key and an integer (a step number, a layer index,
 * a worker id): `threefry2x32(key, (data >>> 0, 2))`. Only the low 32 bits of
 * `data` count, so `data` and `data + 2^32` give the same key.
 *
 * @throws {RangeError} when `data` is not a safe integer.
 * @example
 * ```ts
 * const stepKey = foldIn(keyFromSeed(0), 17);
 * ```
 */
export function foldIn(key: Key, data: number): Key {
  assertKey(key, "foldIn");
  if (typeof data !== "number" || !Number.isSafeInteger(data)) {
    throw new RangeError(`foldIn: data must be a safe integer, got ${String(data)}`);
  }
  threefryCore(key.k0, key.k1, data >>> 0, 2);
  return makeKey(out0, out1);
}

/**
 * Random u32 words of a key's stream: element `i` (global index
 * `g = offset + i`) is word `g & 1` of `threefry2x32(key, (g >>> 1, 0))`, so
 * block `j` gives elements `2j` and `2j + 1`. Any slice of the stream can be
 * computed on its own: `randomBits(key, n, offset)` equals
 * `randomBits(key, offset + n).subarray(offset)`, which is how a GPU thread
 * or a data-parallel worker computes its part.
 *
 * @throws {RangeError} when `n` or `offset` is not a non-negative integer or
 * `offset + n` exceeds 2^33 (the stream's length).
 * @example
 * ```ts
 * const bits = randomBits(keyFromSeed(0), 4); // Uint32Array(4)
 * ```
 */
export function randomBits(key: Key, n: number, offset = 0): Uint32Array {
  assertKey(key, "randomBits");
  assertCount(n, "randomBits", "n", MAX_WORDS);
  assertCount(offset, "randomBits", "offset", MAX_WORDS);
  if (offset + n > MAX_WORDS) {
    throw new RangeError(`randomBits: offset + n must be at most 2^33, got ${offset + n}`);
  }
  const out = new Uint32Array(n);
  const { k0, k1 } = key;
  let i = 0;
  let g = offset;
  if (n > 0 && g % 2 === 1) {
    // The first element is the second word of its block.
    threefryCore(k0, k1, (g - 1) / 2, 0);
    out[i++] = out1;
    g++;
  }
  for (; i + 1 < n; i += 2, g += 2) {
    threefryCore(k0, k1, g / 2, 0);
    out[i] = out0;
    out[i + 1] = out1;
  }
  if (i < n) {
    threefryCore(k0, k1, g / 2, 0);
    out[i] = out0;
  }
  return out;
}

const TWO_NEG_24 = 2 ** -24;

/**
 * Turns a random u32 word into a float in [0, 1): `(bits >>> 8) * 2^-24`. It
 * keeps the top 24 bits, so the result is an exact f32 (the same in f32 and
 * f64, on the CPU and on the GPU) on an even grid of 2^24 values.
 *
 * @example
 * ```ts
 * uniformFromBits(0); // 0
 * uniformFromBits(0xffffffff); // 1 - 2 ** -24
 * ```
 */
export function uniformFromBits(bits: number): number {
  return (bits >>> 8) * TWO_NEG_24;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** The largest f32 below the finite f32 `x`. */
function nextDownF32(x: number): number {
  if (x === 0) return -(2 ** -149);
  f32Scratch[0] = x;
  u32Scratch[0] = x > 0 ? u32Scratch[0] - 1 : u32Scratch[0] + 1;
  return f32Scratch[0];
}

/**
 * Fills `out` with uniform floats in [lo, hi) (defaults [0, 1)) from the
 * key's bit stream: element `i` uses word `i` of {@link randomBits}.
 *
 * The arithmetic is f32 throughout, one rounding per operation, so that a
 * WGSL shader computing in f32 gives bitwise the same values:
 * `lo32 = f32(lo)`, `hi32 = f32(hi)`, `d = f32(hi32 - lo32)`,
 * `v = f32(lo32 + f32(d * u))` with `u = uniformFromBits(bits)`. A shader must
 * keep the multiply and the add separate (no fused multiply-add). When
 * rounding lands on `hi32`, `v` becomes the largest f32 below `hi32`, so
 * values stay in [lo32, hi32). A Float64Array gets the same f32 values.
 * With `lo === hi` (after rounding to f32) every element is `lo32`.
 *
 * @throws {RangeError} when lo or hi is not finite, lo > hi, or hi - lo
 * overflows f32.
 * @example
 * ```ts
 * const w = new Float32Array(6);
 * fillUniform(keyFromSeed(0), w, -0.1, 0.1);
 * ```
 */
export function fillUniform(
  key: Key,
  out: Float32Array | Float64Array,
  lo = 0,
  hi = 1,
): void {
  assertKey(key, "fillUniform");
  assertCount(out.length, "fillUniform", "out.length", MAX_WORDS);
  const lo32 = Math.fround(lo);
  const hi32 = Math.fround(hi);
  const d = Math.fround(hi32 - lo32);
  if (!Number.isFinite(lo32) || !Number.isFinite(hi32) || !(lo32 <= hi32) || !Number.isFinite(d)) {
    throw new RangeError(
      `fillUniform: need finite lo <= hi with hi - lo finite in f32, got lo=${lo}, hi=${hi}`,
    );
  }
  if (d === 0) {
    out.fill(lo32);
    return;
  }
  const top = nextDownF32(hi32);
  const { k0, k1 } = key;
  const n = out.length;
  const map = (bits: number): number => {
    const v = Math.fround(lo32 + Math.fround(d * ((bits >>> 8) * TWO_NEG_24)));
    return v >= hi32 ? top : v;
  };
  let i = 0;
  for (; i + 1 < n; i += 2) {
    threefryCore(k0, k1, i / 2, 0);
    out[i] = map(out0);
    out[i + 1] = map(out1);
  }
  if (i < n) {
    threefryCore(k0, k1, i / 2, 0);
    out[i] = map(out0);
  }
}

const TWO_PI = 2 * Math.PI;

/**
 * Fills `out` with standard normal samples (mean 0, variance 1) by the
 * Box–Muller transform. Block `j` of the bit stream (words `w0`, `w1`) gives
 * elements `2j` and `2j + 1`:
 * `u1 = ((w0 >>> 8) + 1) * 2^-24` in (0, 1], `u2 = (w1 >>> 8) * 2^-24`,
 * `r = sqrt(-2 ln u1)`, elements `r cos(2π u2)` and `r sin(2π u2)`, computed
 * in f64 and then stored (so rounded once to f32 in a Float32Array). With an
 * odd length the last block gives only its cosine element. The values are
 * bounded: |x| <= sqrt(2 ln 2^24) ≈ 5.77.
 *
 * A GPU kernel that follows the same recipe gets the same `u1`, `u2` bitwise,
 * but its values may differ from these by a few ulps, because `log`, `sqrt`,
 * `cos` and `sin` are not correctly rounded in f32 shaders.
 *
 * @example
 * ```ts
 * const noise = new Float32Array(1000);
 * fillNormal(keyFromSeed(1), noise);
 * ```
 */
export function fillNormal(key: Key, out: Float32Array | Float64Array): void {
  assertKey(key, "fillNormal");
  assertCount(out.length, "fillNormal", "out.length", MAX_WORDS);
  const { k0, k1 } = key;
  const n = out.length;
  for (let i = 0; i < n; i += 2) {
    threefryCore(k0, k1, i / 2, 0);
    const u1 = ((out0 >>> 8) + 1) * TWO_NEG_24;
    const u2 = (out1 >>> 8) * TWO_NEG_24;
    const r = Math.sqrt(-2 * Math.log(u1));
    const t = TWO_PI * u2;
    out[i] = r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = r * Math.sin(t);
  }
}

/**
 * Fills `out` with Bernoulli samples: element `i` is 1 when
 * `uniformFromBits(w) < p` for word `i` of the bit stream, else 0, so each is
 * 1 with probability `p` (to a resolution of 2^-24). The comparison is done
 * exactly on integers, `(w >>> 8) < ceil(p * 2^24)`, which a shader can
 * reproduce bitwise with the threshold passed as a u32.
 *
 * @throws {RangeError} when p is not in [0, 1].
 * @example
 * ```ts
 * const keep = new Uint8Array(10);
 * fillBernoulli(keyFromSeed(0), 0.9, keep); // dropout mask, keep rate 0.9
 * ```
 */
export function fillBernoulli(key: Key, p: number, out: Uint8Array): void {
  assertKey(key, "fillBernoulli");
  assertCount(out.length, "fillBernoulli", "out.length", MAX_WORDS);
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) {
    throw new RangeError(`fillBernoulli: p must be a probability in [0, 1], got ${String(p)}`);
  }
  // m * 2^-24 < p  <=>  m < p * 2^24 (exact)  <=>  m < ceil(p * 2^24) for integer m.
  const threshold = Math.ceil(p * 2 ** 24);
  const { k0, k1 } = key;
  const n = out.length;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    threefryCore(k0, k1, i / 2, 0);
    out[i] = (out0 >>> 8) < threshold ? 1 : 0;
    out[i + 1] = (out1 >>> 8) < threshold ? 1 : 0;
  }
  if (i < n) {
    threefryCore(k0, k1, i / 2, 0);
    out[i] = (out0 >>> 8) < threshold ? 1 : 0;
  }
}

/**
 * A uniformly random permutation of `0 .. n-1` by the Fisher–Yates shuffle.
 * For `i = n-1` down to 1 it swaps element `i` with element `j`, uniform in
 * `[0, i]`, taken from the next words of the key's bit stream (the words of
 * {@link randomBits}, in order) as `j = w % (i + 1)`, rejecting the few words
 * `w >= 2^32 - 2^32 % (i + 1)` so that `j` is exactly uniform. The same key
 * and `n` always give the same permutation.
 *
 * @throws {RangeError} when n is not an integer in [0, 2^31 - 1].
 * @example
 * ```ts
 * const order = permutation(keyFromSeed(0), 5); // Int32Array [3, 0, 1, 2, 4]
 * ```
 */
export function permutation(key: Key, n: number): Int32Array {
  assertKey(key, "permutation");
  assertCount(n, "permutation", "n", 0x7fffffff);
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const { k0, k1 } = key;
  let g = 0; // global index of the next word of the stream
  let w1 = 0; // second word of the current block, valid when g is odd
  for (let i = n - 1; i > 0; i--) {
    const bound = i + 1;
    const limit = TWO32 - (TWO32 % bound);
    let w: number;
    do {
      if (g >= MAX_WORDS) throw new Error("permutation: ran out of random words");
      if (g % 2 === 0) {
        threefryCore(k0, k1, g / 2, 0);
        w = out0;
        w1 = out1;
      } else {
        w = w1;
      }
      g++;
    } while (w >= limit);
    const j = w % bound;
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm;
}
