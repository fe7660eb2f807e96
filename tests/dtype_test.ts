import fc from "./fc.ts";
import assert from "node:assert/strict";
import * as native from "../lib/dtype.ts";
import {
  bf16BitsToNumber,
  byteSize,
  decode,
  type DType,
  dtypes,
  encode,
  encodeInto,
  f16BitsToNumber,
  f8e4m3BitsToNumber,
  f8e5m2BitsToNumber,
  finfo,
  isFloating,
  parseDType,
  promoteTypes,
  roundTo,
  roundToBf16Bits,
  roundToF16Bits,
  roundToF8e4m3Bits,
  roundToF8e5m2Bits,
  storageFor,
  weakScalarType,
} from "../lib/dtype.ts";

type Lib = typeof native;

// ---------------------------------------------------------------------------
// Helpers and independent oracles
// ---------------------------------------------------------------------------

/** A second instance of lib/dtype.ts loaded without Float16Array / Math.f16round. */
async function loadSoftware(): Promise<Lib> {
  const g = globalThis as { Float16Array?: unknown };
  const m = Math as { f16round?: unknown };
  const savedArray = g.Float16Array;
  const savedRound = m.f16round;
  delete g.Float16Array;
  delete m.f16round;
  try {
    const url = new URL("../lib/dtype.ts?software-f16", import.meta.url).href;
    return await import(url) as Lib;
  } finally {
    g.Float16Array = savedArray;
    m.f16round = savedRound;
  }
}

const software = await loadSoftware();
const LIBS: [string, Lib][] = [["native", native], ["software", software]];

/** xorshift32, seeded: reproducible bit patterns. */
function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

function randomF32(n: number, seed: number): Float32Array {
  const next = xorshift32(seed);
  const u = new Uint32Array(n);
  for (let i = 0; i < n; i++) u[i] = next();
  return new Float32Array(u.buffer);
}

/** Random f64 values: half with any bit pattern, half with exponents near the narrow formats. */
function randomF64(n: number, seed: number): Float64Array {
  const next = xorshift32(seed);
  const out = new Float64Array(n);
  const u = new Uint32Array(out.buffer);
  const hiIdx = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;
  for (let i = 0; i < n; i++) {
    let hi = next();
    if (i & 1) {
      const e = 1023 - 140 + (next() % 280); // 2^-140 .. 2^139
      hi = (hi & 0x800fffff) | (e << 20);
    }
    u[2 * i + hiIdx] = hi;
    u[2 * i + 1 - hiIdx] = next();
  }
  return out;
}

const hex = (b: number) => "0x" + b.toString(16).toUpperCase();

function sameNumber(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

function f32FromBits(b: number): number {
  return new Float32Array(new Uint32Array([b]).buffer)[0];
}

/** Oracle: native Float16Array bits of a number (rounds f64 once; checked below). */
const oracleH = new Float16Array(1);
const oracleHU = new Uint16Array(oracleH.buffer);
function f16Oracle(x: number): number {
  oracleH[0] = x;
  const b = oracleHU[0];
  // A JIT-compiled store may keep NaN payload bits; compare against the canonical quiet NaN.
  return (b & 0x7fff) > 0x7c00 ? (b & 0x8000) | 0x7e00 : b;
}

/** Reference bf16 rounding on f32 bits with integer arithmetic (explicit compare, not the add trick). */
function bf16RefFromF32Bits(u: number): number {
  const exp = (u >>> 23) & 0xff;
  const man = u & 0x7fffff;
  const sign = (u >>> 16) & 0x8000;
  if (exp === 0xff && man !== 0) return sign | 0x7fc0;
  let hi = u >>> 16;
  const lo = u & 0xffff;
  if (lo > 0x8000 || (lo === 0x8000 && (hi & 1) === 1)) hi += 1;
  return hi;
}

/** Round an f64 to f32 bits *to odd* (Boldo–Melquiond), so a later RNE to bf16 is exact. */
function f32RoundToOddBits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  if (Number.isNaN(x) || f[0] === x) return u[0];
  if (Math.abs(f[0]) > Math.abs(x)) u[0] -= 1; // step toward zero: now truncated
  return u[0] | 1;
}

function bf16RefFromNumber(x: number): number {
  return bf16RefFromF32Bits(f32RoundToOddBits(x));
}

interface F8Spec {
  name: "f8e4m3" | "f8e5m2";
  exp: number;
  man: number;
  bias: number;
  ieee: boolean; // Inf and multiple NaNs (e5m2) vs only S.1111.111 NaN (e4m3fn)
  round: (x: number, sat?: boolean) => number;
  toNumber: (b: number) => number;
  max: number;
  maxBits: number;
  nanBits: number;
}

const E4M3: F8Spec = {
  name: "f8e4m3",
  exp: 4,
  man: 3,
  bias: 7,
  ieee: false,
  round: roundToF8e4m3Bits,
  toNumber: f8e4m3BitsToNumber,
  max: 448,
  maxBits: 0x7e,
  nanBits: 0x7f,
};
const E5M2: F8Spec = {
  name: "f8e5m2",
  exp: 5,
  man: 2,
  bias: 15,
  ieee: true,
  round: roundToF8e5m2Bits,
  toNumber: f8e5m2BitsToNumber,
  max: 57344,
  maxBits: 0x7b,
  nanBits: 0x7e,
};
const F8S = [E4M3, E5M2];

/** Value of an fp8 byte from its bit fields, written independently of lib. */
function f8FromFields(b: number, s: F8Spec): number {
  const sign = b >> 7 ? -1 : 1;
  const e = (b >> s.man) & ((1 << s.exp) - 1);
  const m = b & ((1 << s.man) - 1);
  const eMax = (1 << s.exp) - 1;
  if (s.ieee && e === eMax) return m === 0 ? sign * Infinity : NaN;
  if (!s.ieee && e === eMax && m === (1 << s.man) - 1) return NaN;
  if (e === 0) return sign * (m / 2 ** s.man) * 2 ** (1 - s.bias);
  return sign * (1 + m / 2 ** s.man) * 2 ** (e - s.bias);
}

/** Nearest-value fp8 oracle: binary search over the finite values, ties to the even pattern. */
function makeF8Oracle(s: F8Spec): (x: number, sat?: boolean) => number {
  // Positive finite patterns 0..maxBits in increasing value, plus a virtual "overflow" pattern.
  const vals: number[] = [];
  for (let b = 0; b <= s.maxBits; b++) vals.push(f8FromFields(b, s));
  const ulpAtMax = 2 ** (Math.floor(Math.log2(s.max)) - s.man);
  vals.push(s.max + ulpAtMax); // pattern maxBits + 1 (even for e5m2 → Inf, odd for e4m3)
  const overflow = s.ieee ? 0x7c : 0x7f;
  return (x: number, sat = false) => {
    if (Number.isNaN(x)) return s.nanBits;
    const neg = x < 0 || Object.is(x, -0) ? 0x80 : 0;
    let a = Math.abs(x);
    if (sat && a > s.max) a = s.max;
    if (a === Infinity) return neg | overflow;
    let lo = 0;
    let hi = vals.length - 1;
    if (a >= vals[hi]) return neg | overflow;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (vals[mid] <= a) lo = mid;
      else hi = mid;
    }
    const dl = a - vals[lo];
    const dh = vals[hi] - a;
    const pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 === 0 ? lo : hi);
    return neg | (pick > s.maxBits ? overflow : pick);
  };
}

const FLOATS: DType[] = ["f64", "f32", "f16", "bf16", "f8e4m3", "f8e5m2"];

function eqBits(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}: element ${i}: got ${hex(actual[i])}, expected ${hex(expected[i])}`);
    }
  }
}

// ---------------------------------------------------------------------------
// f16
// ---------------------------------------------------------------------------

Deno.test("f16 oracle: native Math.f16round/Float16Array round an f64 once", () => {
  assert.equal(f16Oracle(1 + 2 ** -11 + 2 ** -40), 0x3c01);
  assert.equal(Math.f16round(1 + 2 ** -11 + 2 ** -40), 1 + 2 ** -10);
});

Deno.test("f16: 10^6 random f32 bit patterns match Float16Array (native and software)", () => {
  const src = randomF32(1_000_000, 0x9e3779b9);
  const expected = new Uint16Array(new Float16Array(src).buffer);
  for (const [name, lib] of LIBS) {
    eqBits(lib.encode("f16", src) as Uint16Array, expected, `${name} encode`);
    const got = new Uint16Array(src.length);
    for (let i = 0; i < src.length; i++) got[i] = lib.roundToF16Bits(src[i]);
    eqBits(got, expected, `${name} roundToF16Bits`);
  }
});

Deno.test("f16: random f64 values round once (software path vs Math.f16round)", () => {
  const src = randomF64(200_000, 12345);
  const expected = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) expected[i] = f16Oracle(src[i]);
  for (const [name, lib] of LIBS) {
    eqBits(lib.encode("f16", src) as Uint16Array, expected, `${name} encode f64`);
    const got = new Uint16Array(src.length);
    for (let i = 0; i < src.length; i++) got[i] = lib.roundToF16Bits(src[i]);
    eqBits(got, expected, `${name} roundToF16Bits f64`);
  }
});

// numpy/numpy numpy/_core/tests/test_half.py (test_half_values, test_half_rounding) and RNE; `f64Only` rows round differently from an f32 input.
const F16_TABLE: [number, number, string][] = [
  [1, 0x3c00, ""],
  [-1, 0xbc00, ""],
  [2, 0x4000, ""],
  [-2, 0xc000, ""],
  [0.0999755859375, 0x2e66, "exact"],
  [0.333251953125, 0x3555, "exact"],
  [65504, 0x7bff, "max"],
  [-65504, 0xfbff, "-max"],
  [65519, 0x7bff, "below midpoint"],
  [65519.99, 0x7bff, ""],
  [65520, 0x7c00, "midpoint → Inf"],
  [2 ** -14, 0x0400, "min normal"],
  [-(2 ** -14), 0x8400, "-min normal"],
  [6.1e-5, 0x03ff, "subnormal"],
  [2 ** -24, 0x0001, "min subnormal"],
  [-(2 ** -24), 0x8001, "-min subnormal"],
  [2 ** -25, 0x0000, "tie → 0"],
  [2 ** -25 * 1.0001, 0x0001, ""],
  [2 ** -25 + 2 ** -35, 0x0001, "sticky"],
  [2 ** -26, 0x0000, ""],
  [1 + 2 ** -11, 0x3c00, "tie → even"],
  [1 + 2 ** -11 + 2 ** -16, 0x3c01, ""],
  [1 + 2 ** -12, 0x3c00, ""],
  [1 + 2 ** -11 + 2 ** -40, 0x3c01, "f64Only"],
  [0, 0x0000, ""],
  [-0, 0x8000, ""],
  [Infinity, 0x7c00, ""],
  [-Infinity, 0xfc00, ""],
  [NaN, 0x7e00, ""],
];

Deno.test("f16: the numpy test_half.py rows, bitwise, from f64 and from f32", () => {
  for (const [name, lib] of LIBS) {
    for (const [x, bits, note] of F16_TABLE) {
      assert.equal(hex(lib.roundToF16Bits(x)), hex(bits), `${name} ${x} ${note}`);
      assert.equal(hex(lib.encode("f16", [x])[0]), hex(bits), `${name} encode ${x}`);
      const f32 = new Float32Array([x]);
      const viaF32 = lib.encode("f16", f32)[0];
      if (note === "f64Only") assert.equal(hex(viaF32), hex(0x3c00), "via f32: double rounding");
      else assert.equal(hex(viaF32), hex(bits), `${name} f32 ${x}`);
    }
    // The sticky row holds for every one of the 52 (f64) / 23 (f32) low bit positions.
    for (let k = 1; k <= 52; k++) {
      const x = 2 ** -25 + 2 ** (-25 - k);
      assert.equal(lib.roundToF16Bits(x), 0x0001, `${name} 2^-25 + 2^-${25 + k}`);
      if (k <= 23) assert.equal(lib.encode("f16", new Float32Array([x]))[0], 0x0001);
    }
    for (let i = -2048; i <= 2048; i++) assert.equal(lib.roundTo("f16", i), i);
    assert.equal(lib.roundTo("f16", 2049), 2048);
  }
});

Deno.test("f16: all 65536 patterns decode exactly and round-trip through encode", () => {
  const all = new Uint16Array(65536);
  for (let b = 0; b < 65536; b++) all[b] = b;
  for (const [name, lib] of LIBS) {
    const wide = lib.decode("f16", all) as Float32Array;
    assert.ok(wide instanceof Float32Array);
    const back = lib.encode("f16", wide) as Uint16Array;
    const backNum = lib.encode("f16", Array.from(wide)) as Uint16Array;
    for (let b = 0; b < 65536; b++) {
      const isNaN = (b & 0x7fff) > 0x7c00;
      const e = (b >> 10) & 0x1f;
      const m = b & 0x3ff;
      const s = b & 0x8000 ? -1 : 1;
      const expected = isNaN
        ? NaN
        : e === 31
        ? s * Infinity
        : e === 0
        ? s * m * 2 ** -24
        : s * (1 + m / 1024) * 2 ** (e - 15);
      if (!sameNumber(wide[b], expected)) assert.fail(`${name} decode ${hex(b)}: ${wide[b]}`);
      if (!sameNumber(lib.f16BitsToNumber(b), expected)) assert.fail(`${name} bitsToNumber ${b}`);
      // A NaN comes back as the canonical quiet NaN; from Float32Array its sign is kept.
      const want = isNaN ? (b & 0x8000) | 0x7e00 : b;
      if (back[b] !== want) assert.fail(`${name} round-trip ${hex(b)} → ${hex(back[b])}`);
      const viaNumber = isNaN ? backNum[b] & 0x7fff : backNum[b];
      if (viaNumber !== (want & (isNaN ? 0x7fff : 0xffff))) assert.fail(`${name} number ${b}`);
      if (lib.roundToF16Bits(expected) !== (isNaN ? 0x7e00 : b)) assert.fail(`${name} bits ${b}`);
    }
    // Widening is bit-identical between the native and the software path, NaN payloads included.
    const wideBits = new Uint32Array(wide.buffer);
    const nativeBits = new Uint32Array((native.decode("f16", all) as Float32Array).buffer);
    eqBits(wideBits, nativeBits, `${name} decode bits`);
  }
});

// ---------------------------------------------------------------------------
// bf16
// ---------------------------------------------------------------------------

Deno.test("bf16: 10^6 random f32 bit patterns match an integer reference", () => {
  const src = randomF32(1_000_000, 0x12345678);
  const u = new Uint32Array(src.buffer);
  const expected = new Uint16Array(src.length);
  for (let i = 0; i < u.length; i++) expected[i] = bf16RefFromF32Bits(u[i]);
  eqBits(encode("bf16", src) as Uint16Array, expected, "encode (bit trick)");
  // The general (quantum formula) path on the same exact f32 values, via a Float64Array.
  eqBits(encode("bf16", new Float64Array(src)) as Uint16Array, expected, "encode (general)");
  const got = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) got[i] = roundToBf16Bits(src[i]);
  // NaN read into a JS number keeps its sign, so the reference agrees on NaNs too.
  eqBits(got, expected, "roundToBf16Bits");
});

Deno.test("bf16: random f64 values match round-to-odd-then-RNE reference", () => {
  const src = randomF64(200_000, 777);
  const expected = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) expected[i] = bf16RefFromNumber(src[i]);
  eqBits(encode("bf16", src) as Uint16Array, expected, "encode f64");
  const got = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) got[i] = roundToBf16Bits(src[i]);
  eqBits(got, expected, "roundToBf16Bits f64");
});

Deno.test("bf16: pytorch BFloat16RNETest and ml_dtypes rows (f32 bits), bitwise", () => {
  const rows: [number, number][] = [
    [0x3f848000, 0x3f84],
    [0x3f848010, 0x3f85],
    [0x3f850000, 0x3f85],
    [0x3f858000, 0x3f86],
    [0x3fff8000, 0x4000],
    [0x7f7fffff, 0x7f80],
    [0x7f7f7fff, 0x7f7f],
    [0x7f7f8000, 0x7f80],
    [0x7fc00001, 0x7fc0],
    [0xffc00001, 0xffc0],
    [0x7f800001, 0x7fc0],
    [0x00000001, 0x0000],
    [0x00008000, 0x0000],
    [0x00018000, 0x0002],
    [0x007fffff, 0x0080],
    [0x80000000, 0x8000],
  ];
  const src = new Float32Array(new Uint32Array(rows.map((r) => r[0])).buffer);
  const fast = encode("bf16", src);
  const general = encode("bf16", Array.from(src));
  rows.forEach(([inBits, outBits], i) => {
    assert.equal(hex(fast[i]), hex(outBits), `fast ${hex(inBits)}`);
    assert.equal(hex(general[i]), hex(outBits), `general ${hex(inBits)}`);
    assert.equal(hex(roundToBf16Bits(src[i])), hex(outBits), `roundToBf16Bits ${hex(inBits)}`);
    assert.equal(hex(bf16RefFromF32Bits(inBits)), hex(outBits), `reference ${hex(inBits)}`);
  });
});

Deno.test("bf16: eigen test/bfloat16_float.cpp rows (values), bitwise", () => {
  const b2n = bf16BitsToNumber;
  const rows: [number, number, boolean][] = [
    [1.0, 0x3f80, true],
    [0.5, 0x3f00, true],
    [0.33333, 0x3eab, true],
    [-1, 0xbf80, true],
    [2, 0x4000, true],
    [3, 0x4040, true],
    [12, 0x4140, true],
    [3.38e38, 0x7f7e, true],
    [3.40e38, 0x7f80, true],
    [-0.0, 0x8000, true],
    [(b2n(0x3c00) + b2n(0x3c01)) / 2, 0x3c00, true],
    [(b2n(0x3c01) + b2n(0x3c02)) / 2, 0x3c02, true],
    [1 + 2 ** -8 + 2 ** -40, 0x3f81, false], // f64 only: via f32 it is 0x3F80
    [2 ** -133 / 2, 0x0000, true],
  ];
  for (const [x, bits, sameFromF32] of rows) {
    assert.equal(hex(roundToBf16Bits(x)), hex(bits), `roundToBf16Bits(${x})`);
    assert.equal(hex(encode("bf16", [x])[0]), hex(bits), `encode [${x}]`);
    const viaF32 = encode("bf16", new Float32Array([x]))[0];
    assert.equal(hex(viaF32), hex(sameFromF32 ? bits : 0x3f80), `f32 ${x}`);
  }
  assert.equal(roundTo("bf16", 1 + 2 ** -8 + 2 ** -40), 1 + 2 ** -7);
  // Other constants: epsilon, highest, lowest, Inf, quiet NaN.
  assert.equal(b2n(0x3c00), finfo("bf16").eps);
  assert.equal(b2n(0x7f7f), finfo("bf16").max);
  assert.equal(b2n(0xff7f), -finfo("bf16").max);
  assert.equal(b2n(0x7f80), Infinity);
  assert.ok(Number.isNaN(b2n(0x7fc0)));
  assert.equal(roundToBf16Bits(NaN), 0x7fc0);
  assert.equal(roundToBf16Bits(-NaN) & 0x7fff, 0x7fc0);
});

Deno.test("bf16: all 65536 patterns decode exactly and round-trip", () => {
  const all = new Uint16Array(65536);
  for (let b = 0; b < 65536; b++) all[b] = b;
  const wide = decode("bf16", all) as Float32Array;
  const back = encode("bf16", wide);
  const backGeneral = encode("bf16", new Float64Array(wide));
  for (let b = 0; b < 65536; b++) {
    const expected = f32FromBits(b << 16);
    if (!sameNumber(wide[b], expected)) assert.fail(`decode ${hex(b)}`);
    const isNaN = (b & 0x7fff) > 0x7f80;
    const want = isNaN ? (b & 0x8000) | 0x7fc0 : b;
    if (back[b] !== want || backGeneral[b] !== want) assert.fail(`round-trip ${hex(b)}`);
  }
});

// ---------------------------------------------------------------------------
// fp8
// ---------------------------------------------------------------------------

for (const s of F8S) {
  const oracle = makeF8Oracle(s);

  Deno.test(`${s.name}: all 256 patterns decode to their bit-field value and round-trip`, () => {
    const all = new Uint8Array(256);
    for (let b = 0; b < 256; b++) all[b] = b;
    const wide = decode(s.name, all) as Float32Array;
    const viaF32 = encode(s.name, wide);
    const viaNum = encode(s.name, Array.from(wide));
    for (let b = 0; b < 256; b++) {
      const v = f8FromFields(b, s);
      assert.ok(sameNumber(wide[b], v), `decode ${hex(b)}: ${wide[b]} vs ${v}`);
      assert.ok(sameNumber(s.toNumber(b), v), `bitsToNumber ${hex(b)}`);
      const want = Number.isNaN(v) ? (b & 0x80) | s.nanBits : b;
      assert.equal(hex(viaF32[b]), hex(want), `f32 round-trip ${hex(b)}`);
      // Through a JS array a NaN may lose its sign; only NaN-ness is required there.
      const m = Number.isNaN(v) ? 0x7f : 0xff;
      assert.equal(hex(viaNum[b] & m), hex(want & m), `number round-trip ${hex(b)}`);
      assert.equal(hex(s.round(v)), hex(Number.isNaN(v) ? s.nanBits : want), `round ${hex(b)}`);
      if (Number.isFinite(v)) assert.equal(s.round(v, true), b, `saturating round-trip ${b}`);
    }
    assert.equal(s.toNumber(0x80), -0);
    assert.ok(Object.is(s.toNumber(0x80), -0));
  });

  Deno.test(`${s.name}: midpoints round to even, neighbours to the nearest`, () => {
    const pos: [number, number][] = []; // [value, bits]
    for (let b = 0; b <= s.maxBits; b++) pos.push([s.toNumber(b), b]);
    for (let i = 0; i + 1 < pos.length; i++) {
      const [lo, loBits] = pos[i];
      const [hi, hiBits] = pos[i + 1];
      assert.ok(lo < hi);
      const mid = (lo + hi) / 2;
      const even = loBits % 2 === 0 ? loBits : hiBits;
      const cases: [number, number][] = [
        [mid, even],
        [mid + (hi - lo) * 2 ** -20, hiBits],
        [mid - (hi - lo) * 2 ** -20, loBits],
      ];
      for (const [x, bits] of cases) {
        for (const sign of [1, -1]) {
          const want = sign < 0 ? bits | 0x80 : bits;
          assert.equal(hex(s.round(sign * x)), hex(want), `round(${sign * x})`);
          assert.equal(hex(encode(s.name, new Float32Array([sign * x]))[0]), hex(want));
          assert.equal(hex(encode(s.name, [sign * x])[0]), hex(want));
          assert.equal(hex(oracle(sign * x)), hex(want), `oracle(${sign * x})`);
        }
      }
    }
    // Above max: the midpoint max + ulp/2 and its neighbours.
    const ulp = 2 ** (Math.floor(Math.log2(s.max)) - s.man);
    const overflow = s.ieee ? 0x7c : 0x7f;
    const top = s.max + ulp / 2;
    assert.equal(s.round(top), s.ieee ? overflow : s.maxBits, "overflow midpoint");
    assert.equal(s.round(top - ulp * 2 ** -20), s.maxBits);
    assert.equal(s.round(top + ulp * 2 ** -20), overflow);
    assert.equal(s.round(top + ulp * 2 ** -20, true), s.maxBits);
  });

  Deno.test(`${s.name}: random values match the nearest-value oracle`, () => {
    const f32 = randomF32(200_000, s.man * 1000 + 1);
    const f64 = randomF64(100_000, s.man * 1000 + 2);
    for (const sat of [false, true]) {
      const fast = encode(s.name, f32, { saturate: sat });
      for (let i = 0; i < f32.length; i++) {
        const want = oracle(f32[i], sat);
        if (fast[i] !== want && !(Number.isNaN(f32[i]) && (fast[i] & 0x7f) === s.nanBits)) {
          assert.fail(`f32 ${f32[i]} sat=${sat}: ${hex(fast[i])} vs ${hex(want)}`);
        }
      }
      for (let i = 0; i < f64.length; i++) {
        const got = s.round(f64[i], sat);
        const want = oracle(f64[i], sat);
        if (got !== want && !(Number.isNaN(f64[i]) && (got & 0x7f) === s.nanBits)) {
          assert.fail(`f64 ${f64[i]} sat=${sat}: ${hex(got)} vs ${hex(want)}`);
        }
      }
    }
  });
}

Deno.test("fp8: the ml_dtypes tests/float8_test.cc rows, non-saturating and saturating", () => {
  // [input, e4m3, e4m3 saturating, e5m2, e5m2 saturating]; null = not in the table
  type Row = [number, number | null, number | null, number | null, number | null];
  const rows: Row[] = [
    [1.0, 0x38, 0x38, 0x3c, 0x3c],
    [-2.0, 0xc0, 0xc0, 0xc0, 0xc0],
    [0.1, 0x1d, 0x1d, 0x2e, 0x2e],
    [0.3952, 0x2d, 0x2d, 0x36, 0x36],
    [272, 0x78, 0x78, null, null],
    [448, 0x7e, 0x7e, null, null],
    [449, 0x7e, 0x7e, null, null],
    [464, 0x7e, 0x7e, null, null],
    [464.01, 0x7f, 0x7e, null, null],
    [480, 0x7f, 0x7e, null, null],
    [1e6, 0x7f, 0x7e, null, null],
    [-464.01, 0xff, 0xfe, null, null],
    [-1e6, 0xff, 0xfe, null, null],
    [Infinity, 0x7f, 0x7e, 0x7c, 0x7b],
    [-Infinity, 0xff, 0xfe, 0xfc, 0xfb],
    [57344, null, null, 0x7b, 0x7b],
    [61439, null, null, 0x7b, 0x7b],
    [61440, null, null, 0x7c, 0x7b],
    [65504, null, null, 0x7c, 0x7b],
    [-65504, null, null, 0xfc, 0xfb],
    [2 ** -6, 0x08, 0x08, null, null],
    [0.875 * 2 ** -6, 0x07, 0x07, null, null],
    [2 ** -9, 0x01, 0x01, null, null],
    [2 ** -10, 0x00, 0x00, null, null],
    [2 ** -10 * 1.0001, 0x01, 0x01, null, null],
    [2 ** -14, null, null, 0x04, 0x04],
    [2 ** -16, null, null, 0x01, 0x01],
    [2 ** -17, null, null, 0x00, 0x00],
    [2 ** -17 * 1.0001, null, null, 0x01, 0x01],
    [NaN, 0x7f, 0x7f, 0x7e, 0x7e],
  ];
  for (const [x, e4, e4s, e5, e5s] of rows) {
    const cases: [F8Spec, number | null, boolean][] = [
      [E4M3, e4, false],
      [E4M3, e4s, true],
      [E5M2, e5, false],
      [E5M2, e5s, true],
    ];
    for (const [s, want, sat] of cases) {
      if (want === null) continue;
      const what = `${s.name}(${x}, saturate=${sat})`;
      const xf = Math.fround(x); // the table's inputs are f32
      assert.equal(hex(s.round(xf, sat)), hex(want), what);
      assert.equal(hex(s.round(x, sat)), hex(want), `${what} from f64`);
      assert.equal(hex(encode(s.name, new Float32Array([x]), { saturate: sat })[0]), hex(want));
      assert.equal(hex(encode(s.name, [x], { saturate: sat })[0]), hex(want));
      assert.ok(sameNumber(roundTo(s.name, x, { saturate: sat }), s.toNumber(want)), what);
    }
  }
  // More cases from ml_dtypes float8_test.cc.
  const justBelow2 = f16BitsToNumber(0x3fff);
  for (const s of F8S) {
    assert.equal(s.round(justBelow2), 0x40);
    assert.equal(s.round(-justBelow2), 0xc0);
    assert.equal(s.round(2 * s.max, true), s.maxBits, "saturating 2·max");
    const digits = s.man + 1;
    assert.equal(s.round(1 + 2 ** -digits + 2 ** -24), s.round(1 + 2 ** -s.man), "DoubleRound");
  }
  assert.equal(roundToF8e4m3Bits(479.75, true), 0x7e);
  assert.equal(roundToF8e4m3Bits(479.75), 0x7f);
  assert.equal(roundToF8e4m3Bits((0x94 / 256) * 2 ** -6), 0x05); // 0x0.94p-6 → 0x0.Ap-6
  assert.equal(f8e4m3BitsToNumber(0x05), (0xa / 16) * 2 ** -6);
  assert.equal(roundToF8e5m2Bits((0xa8 / 256) * 2 ** -14), 0x03); // 0x0.A8p-14 → 0x0.Cp-14
  assert.equal(f8e5m2BitsToNumber(0x03), (0xc / 16) * 2 ** -14);
  // Sign of zero and NaN sign.
  assert.equal(roundToF8e4m3Bits(-0), 0x80);
  assert.equal(roundToF8e5m2Bits(-(2 ** -17)), 0x80);
  assert.equal(roundToF8e4m3Bits(-NaN) & 0x7f, 0x7f);
});

Deno.test("fp8: all 256 patterns round-trip exactly through f32, bf16 and f16", () => {
  for (const s of F8S) {
    for (let b = 0; b < 256; b++) {
      const v = s.toNumber(b);
      for (const d of ["f32", "bf16", "f16"] as const) {
        const w = roundTo(d, v);
        assert.ok(sameNumber(w, v), `${s.name} ${hex(b)} through ${d}`);
        const wide = decode(d, encode(d, [v]));
        const back = encode(s.name, wide)[0];
        const mask = Number.isNaN(v) ? 0x7f : 0xff; // NaN sign may be lost via a JS array
        const want = Number.isNaN(v) ? s.nanBits : b;
        assert.equal(hex(back & mask), hex(want), `${s.name} ${hex(b)} via ${d} storage`);
      }
    }
  }
});

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const anyNumber = fc.oneof(
  fc.double(),
  fc.float(),
  fc.double({ min: -70000, max: 70000, noNaN: true }),
  fc.double({ min: -1e-3, max: 1e-3, noNaN: true }),
  fc.integer({ min: 0, max: 255 }).map((b) => f8e4m3BitsToNumber(b) * (1 + 2 ** -4)),
  fc.integer({ min: 0, max: 65535 }).map((b) => f16BitsToNumber(b) * (1 - 2 ** -11)),
  fc.constantFrom(0, -0, NaN, Infinity, -Infinity, 65520, 464, 61440, 2 ** -25, 2 ** -10),
);

const MODES: [DType, boolean][] = [
  ...FLOATS.map((d): [DType, boolean] => [d, false]),
  ["f8e4m3", true],
  ["f8e5m2", true],
];

Deno.test("property: rounding is idempotent for every float dtype", () => {
  for (const [, lib] of LIBS) {
    for (const [d, saturate] of MODES) {
      fc.assert(
        fc.property(anyNumber, (x) => {
          const r = lib.roundTo(d, x, { saturate });
          return sameNumber(lib.roundTo(d, r, { saturate }), r);
        }),
        { numRuns: 500 },
      );
    }
  }
});

Deno.test("property: NaN rounds only from NaN, overflow or e4m3 Inf; idempotent on NaN", () => {
  for (const [d, saturate] of MODES) {
    assert.ok(Number.isNaN(roundTo(d, NaN, { saturate })));
    fc.assert(
      fc.property(anyNumber, (x) => {
        const r = roundTo(d, x, { saturate });
        if (!Number.isNaN(r)) return true;
        return Number.isNaN(x) ||
          (d === "f8e4m3" && !saturate && Math.abs(x) > 464);
      }),
      { numRuns: 500 },
    );
  }
});

Deno.test("property: rounding is monotone for every float dtype", () => {
  for (const [, lib] of LIBS) {
    for (const [d, saturate] of MODES) {
      fc.assert(
        fc.property(anyNumber, anyNumber, (a, b) => {
          if (Number.isNaN(a) || Number.isNaN(b)) return true;
          const [x, y] = a <= b ? [a, b] : [b, a];
          const rx = lib.roundTo(d, x, { saturate });
          const ry = lib.roundTo(d, y, { saturate });
          if (Number.isNaN(rx) || Number.isNaN(ry)) return true; // e4m3 overflow
          return rx <= ry;
        }),
        { numRuns: 500 },
      );
    }
  }
});

Deno.test("property: encode/decode agree with roundTo (number and Float32Array sources)", () => {
  for (const d of dtypes) {
    for (const saturate of [false, true]) {
      fc.assert(
        fc.property(fc.array(anyNumber, { maxLength: 20 }), (xs) => {
          const opts = { saturate };
          const wide = decode(d, encode(d, xs, opts));
          const f32 = new Float32Array(xs);
          const wide32 = decode(d, encode(d, f32, opts));
          for (let i = 0; i < xs.length; i++) {
            if (!sameNumber(wide[i], roundTo(d, xs[i], opts))) return false;
            if (!sameNumber(wide32[i], roundTo(d, f32[i], opts))) return false;
          }
          return true;
        }),
        { numRuns: 200 },
      );
    }
  }
});

Deno.test("property: roundTo matches the roundTo*Bits functions", () => {
  fc.assert(
    fc.property(anyNumber, fc.boolean(), (x, sat) => {
      const opts = { saturate: sat };
      return sameNumber(roundTo("f16", x), f16BitsToNumber(roundToF16Bits(x))) &&
        sameNumber(roundTo("bf16", x), bf16BitsToNumber(roundToBf16Bits(x))) &&
        sameNumber(roundTo("f8e4m3", x, opts), f8e4m3BitsToNumber(roundToF8e4m3Bits(x, sat))) &&
        sameNumber(roundTo("f8e5m2", x, opts), f8e5m2BitsToNumber(roundToF8e5m2Bits(x, sat))) &&
        sameNumber(roundTo("f32", x), Math.fround(x)) &&
        sameNumber(roundTo("f64", x), x);
    }),
    { numRuns: 1000 },
  );
});

// ---------------------------------------------------------------------------
// Integers, names, limits, promotion, storage
// ---------------------------------------------------------------------------

Deno.test("integer and bool conversions", () => {
  const xs = [
    0,
    -0,
    0.9,
    -0.9,
    2.7,
    -2.7,
    254.9,
    255.5,
    300,
    -1,
    2 ** 31,
    2 ** 31 - 0.5,
    -(2 ** 31) - 5,
    1e20,
    Infinity,
    -Infinity,
    NaN,
  ];
  const i32 = [0, 0, 0, 0, 2, -2, 254, 255, 300, -1, 2147483647, 2147483647, -2147483648];
  const i32Rest = [2147483647, 2147483647, -2147483648, 0];
  const u8 = [0, 0, 0, 0, 2, 0, 254, 255, 255, 0, 255, 255, 0, 255, 255, 0, 0];
  const bool = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
  assert.deepEqual(Array.from(encode("i32", xs)), [...i32, ...i32Rest]);
  assert.deepEqual(Array.from(encode("u8", xs)), u8);
  assert.deepEqual(Array.from(encode("bool", xs)), bool);
  assert.deepEqual(xs.map((x) => roundTo("i32", x)), [...i32, ...i32Rest]);
  assert.deepEqual(xs.map((x) => roundTo("u8", x)), u8);
  assert.deepEqual(xs.map((x) => roundTo("bool", x)), bool);
  assert.ok(Object.is(roundTo("i32", -0.5), 0));
  assert.ok(encode("i32", [1]) instanceof Int32Array);
  assert.deepEqual(Array.from(encode("i32", new Float32Array([-3.5, 3.5]))), [-3, 3]);
});

Deno.test("parseDType accepts every dtype and lists them in its error", () => {
  for (const d of dtypes) assert.equal(parseDType(d), d);
  assert.deepEqual(dtypes, ["f64", "f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i32", "u8", "bool"]);
  const msg =
    'Unknown dtype "xyz". Valid dtypes: f64, f32, f16, bf16, f8e4m3, f8e5m2, i32, u8, bool.';
  assert.throws(() => parseDType("xyz"), { message: msg });
  assert.throws(() => parseDType(16), /Unknown dtype "16"/);
  assert.throws(() => parseDType(undefined), /Valid dtypes: f64, f32/);
  assert.throws(() => parseDType(Object.create(null)), /Unknown dtype/);
  assert.throws(() => storageFor("float32" as DType, 1), /Valid dtypes/);
  assert.throws(() => roundTo("half" as DType, 1), /Valid dtypes/);
});

Deno.test("isFloating and byteSize", () => {
  assert.deepEqual(dtypes.filter(isFloating), FLOATS);
  assert.deepEqual(dtypes.map(byteSize), [8, 4, 2, 2, 1, 1, 4, 1, 1]);
});

Deno.test("finfo: IEEE/OCP OFP8 format limits (numpy, eigen, ml_dtypes); ints throw", () => {
  const want: Record<string, [number, number, number, number, number, number, number, boolean]> = {
    //       bits M   E   max                      minNormal   minSub      eps        hasInf
    f64: [64, 52, 11, 1.7976931348623157e308, 2 ** -1022, 2 ** -1074, 2 ** -52, true],
    f32: [32, 23, 8, 3.4028234663852886e38, 2 ** -126, 2 ** -149, 2 ** -23, true],
    f16: [16, 10, 5, 65504, 2 ** -14, 2 ** -24, 2 ** -10, true],
    bf16: [16, 7, 8, 3.3895313892515355e38, 2 ** -126, 2 ** -133, 2 ** -7, true],
    f8e4m3: [8, 3, 4, 448, 2 ** -6, 2 ** -9, 0.125, false],
    f8e5m2: [8, 2, 5, 57344, 2 ** -14, 2 ** -16, 0.25, true],
  };
  for (const d of FLOATS) {
    const fi = finfo(d);
    const [bits, m, e, max, minNormal, minSub, eps, hasInf] = want[d];
    assert.deepEqual(
      { ...fi },
      {
        dtype: d,
        bits,
        mantissaBits: m,
        exponentBits: e,
        max,
        minNormal,
        minSubnormal: minSub,
        eps,
        hasInf,
      },
    );
    assert.ok(fi.minSubnormal > 0);
    if (d !== "f64") {
      assert.equal(roundTo(d, fi.max), fi.max);
      assert.equal(roundTo(d, fi.minSubnormal), fi.minSubnormal);
      assert.equal(roundTo(d, fi.minSubnormal / 2), 0);
      assert.equal(roundTo(d, 1 + fi.eps), 1 + fi.eps);
      assert.equal(roundTo(d, 1 + fi.eps / 2), 1);
    }
  }
  assert.equal(finfo("f32").max, f32FromBits(0x7f7fffff));
  assert.equal(finfo("bf16").max, bf16BitsToNumber(0x7f7f));
  assert.equal(finfo("f16").minSubnormal, f16BitsToNumber(0x0001));
  for (const d of ["i32", "u8", "bool"] as const) {
    assert.throws(() => finfo(d), new RegExp(`"${d}" is not a floating-point dtype`));
  }
  assert.throws(() => finfo("f128" as DType), /Unknown dtype "f128"/);
});

// The full promotion table, written out independently of lib (rows a, columns b).
const PROMOTION: Record<DType, DType[]> = {
  f64: ["f64", "f64", "f64", "f64", "f64", "f64", "f64", "f64", "f64"],
  f32: ["f64", "f32", "f32", "f32", "f32", "f32", "f32", "f32", "f32"],
  f16: ["f64", "f32", "f16", "f32", "f16", "f16", "f16", "f16", "f16"],
  bf16: ["f64", "f32", "f32", "bf16", "bf16", "bf16", "bf16", "bf16", "bf16"],
  f8e4m3: ["f64", "f32", "f16", "bf16", "f8e4m3", "f16", "f8e4m3", "f8e4m3", "f8e4m3"],
  f8e5m2: ["f64", "f32", "f16", "bf16", "f16", "f8e5m2", "f8e5m2", "f8e5m2", "f8e5m2"],
  i32: ["f64", "f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i32", "i32", "i32"],
  u8: ["f64", "f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i32", "u8", "u8"],
  bool: ["f64", "f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i32", "u8", "bool"],
};

Deno.test("promoteTypes: full table", () => {
  for (const a of dtypes) {
    dtypes.forEach((b, j) => assert.equal(promoteTypes(a, b), PROMOTION[a][j], `${a} with ${b}`));
  }
  assert.equal(promoteTypes("f16", "bf16"), "f32");
  assert.equal(promoteTypes("f8e4m3", "f8e5m2"), "f16");
  assert.equal(promoteTypes("f8e5m2", "bf16"), "bf16");
  assert.equal(promoteTypes("bool", "u8"), "u8");
  assert.equal(promoteTypes("i32", "f8e4m3"), "f8e4m3");
  assert.throws(() => promoteTypes("f16", "float" as DType), /Valid dtypes/);
});

Deno.test("promoteTypes: the table in docs/dtypes.md matches", async () => {
  const md = await Deno.readTextFile(new URL("../docs/dtypes.md", import.meta.url));
  const lines = md.split("\n");
  const header = lines.findIndex((l) => l.startsWith("| a \\ b"));
  assert.ok(header >= 0, "promotion table header");
  const cells = (l: string) => l.split("|").slice(1, -1).map((c) => c.trim());
  assert.deepEqual(cells(lines[header]).slice(1), [...dtypes]);
  for (let i = 0; i < dtypes.length; i++) {
    const row = cells(lines[header + 2 + i]);
    assert.equal(row[0], dtypes[i]);
    assert.deepEqual(row.slice(1), PROMOTION[dtypes[i]], `docs row ${dtypes[i]}`);
  }
});

Deno.test("property: promoteTypes is symmetric, idempotent and an upper bound", () => {
  const dt = fc.constantFrom(...dtypes);
  fc.assert(
    fc.property(dt, dt, (a, b) => {
      const ab = promoteTypes(a, b);
      return ab === promoteTypes(b, a) && promoteTypes(a, a) === a &&
        promoteTypes(ab, a) === ab && promoteTypes(ab, b) === ab;
    }),
    { numRuns: 500 },
  );
  // Not associative: the fp8 rules (e4m3 with e5m2 → f16, fp8 with bf16 → bf16) make the
  // order of a fold matter. Pinned here so that a change is deliberate.
  assert.equal(promoteTypes(promoteTypes("bf16", "f8e5m2"), "f8e4m3"), "bf16");
  assert.equal(promoteTypes("bf16", promoteTypes("f8e5m2", "f8e4m3")), "f32");
});

Deno.test("weakScalarType: JAX-style weak JS-number scalars", () => {
  for (const d of FLOATS) {
    for (const x of [2.5, 3, NaN, Infinity]) assert.equal(weakScalarType(d, x), d);
  }
  assert.equal(weakScalarType("f16", 2.5), "f16");
  assert.equal(weakScalarType("i32", 2.5), "f32");
  assert.equal(weakScalarType("u8", 0.5), "f32");
  assert.equal(weakScalarType("bool", 0.5), "f32");
  assert.equal(weakScalarType("i32", NaN), "f32");
  assert.equal(weakScalarType("u8", Infinity), "f32");
  assert.equal(weakScalarType("i32", 3), "i32");
  assert.equal(weakScalarType("u8", -0), "u8");
  assert.equal(weakScalarType("bool", 3), "i32");
  assert.throws(() => weakScalarType("int" as DType, 1), /Valid dtypes/);
});

Deno.test("storage: real byte sizes, zeroed, right array types", () => {
  const n = 37;
  const kinds: Record<DType, string> = {
    f64: "Float64Array",
    f32: "Float32Array",
    f16: "Uint16Array",
    bf16: "Uint16Array",
    f8e4m3: "Uint8Array",
    f8e5m2: "Uint8Array",
    i32: "Int32Array",
    u8: "Uint8Array",
    bool: "Uint8Array",
  };
  for (const d of dtypes) {
    const s = storageFor(d, n);
    assert.equal(s.constructor.name, kinds[d], d);
    assert.equal(s.length, n);
    assert.equal(s.byteLength, byteSize(d) * n, d);
    assert.ok(s.every((v) => v === 0));
    const e = encode(d, new Float32Array(n).fill(1));
    assert.equal(e.constructor.name, kinds[d]);
    assert.equal(e.byteLength, byteSize(d) * n);
  }
  assert.equal(storageFor("f16", n).byteLength, 2 * n);
  assert.equal(storageFor("f8e4m3", n).byteLength, n);
  assert.equal(storageFor("f8e5m2", n).byteLength, n);
});

Deno.test("decode: widened types; same object for f32/f64/i32/u8/bool", () => {
  const want: Record<DType, string> = {
    f64: "Float64Array",
    f32: "Float32Array",
    f16: "Float32Array",
    bf16: "Float32Array",
    f8e4m3: "Float32Array",
    f8e5m2: "Float32Array",
    i32: "Int32Array",
    u8: "Uint8Array",
    bool: "Uint8Array",
  };
  for (const d of dtypes) {
    const s = encode(d, [1, -2, 0.5]);
    const w = decode(d, s);
    assert.equal(w.constructor.name, want[d]);
    assert.deepEqual(Array.from(w), [1, -2, 0.5].map((x) => roundTo(d, x)));
    if (d === "f64" || d === "f32" || d === "i32" || d === "u8" || d === "bool") {
      assert.equal(w, s, `${d}: decode returns the storage itself`);
    }
  }
  assert.throws(() => decode("f16", new Float32Array(2)), /expected Uint16Array storage/);
  assert.throws(() => decode("f32", new Uint16Array(2)), /expected Float32Array storage/);
});

Deno.test("encodeInto: writes a prefix, checks type and length, handles views", () => {
  const out = storageFor("bf16", 4) as Uint16Array;
  out.fill(0xabcd);
  encodeInto("bf16", new Float32Array([1, 2]), out);
  assert.deepEqual(Array.from(out), [0x3f80, 0x4000, 0xabcd, 0xabcd]);
  const f16 = new Uint16Array(6);
  encodeInto("f16", [1, -2], f16.subarray(2, 4));
  assert.deepEqual(Array.from(f16), [0, 0, 0x3c00, 0xc000, 0, 0]);
  const big = new Float32Array([9, 1, 65520, 272]);
  const e4 = new Uint8Array(3);
  encodeInto("f8e4m3", big.subarray(1), e4);
  assert.deepEqual(Array.from(e4), [0x38, 0x7f, 0x78]);
  const bf = new Uint16Array(2);
  encodeInto("bf16", big.subarray(2), bf);
  assert.deepEqual(Array.from(bf), [0x477f + 1, 0x4388]);
  const f32 = new Float32Array(3);
  encodeInto("f32", [1.1], f32);
  assert.deepEqual(Array.from(f32), [Math.fround(1.1), 0, 0]);
  assert.throws(() => encodeInto("f16", [1, 2, 3], new Uint16Array(2)), RangeError);
  assert.throws(() => encodeInto("f16", [1], new Uint8Array(2)), /expected Uint16Array/);
  assert.throws(() => encodeInto("f8e5m2", [1], new Uint16Array(2)), /expected Uint8Array/);
});

Deno.test("encode speed: 2^20 f32 → f16/bf16/fp8 and back stays fast", () => {
  const src = randomF32(1 << 20, 42).map((x) => (Number.isFinite(x) ? x % 1000 : 1));
  for (const d of ["f16", "bf16", "f8e4m3", "f8e5m2"] as const) {
    encode(d, src.subarray(0, 1024)); // warm up
    const t0 = performance.now();
    const s = encode(d, src);
    decode(d, s);
    const ms = performance.now() - t0;
    assert.ok(ms < 500, `${d}: ${ms.toFixed(1)} ms for 2^20 elements`);
  }
});
