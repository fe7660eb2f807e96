/**
 * Adam's bias correction `1 − bᵗ`, correctly rounded to f32 on the device, with the step count
 * `t` an f32 tensor (no readback, no host number per step).
 *
 * Computing `1 − pow(b, t)` in f32 is off by up to 1e-5 (relative): `0.999` itself is not an
 * f32, and `pow` and the subtraction each round. Here the host tabulates, once per `b`, in
 * exact fixed-point arithmetic (BigInt, 200 fraction bits), with `t = L·h + l` (`L` a power of
 * two, `0 ≤ l < L`):
 *
 * - `C[l] = 1 − bˡ`, as `hi + lo` (hi the correctly rounded f32, lo the rest rounded toward 0),
 * - `A[l] = bˡ` and `D[h] = 1 − b^(L·h)`, as f32 pairs whose high parts come pre-split into
 *   12-bit halves (Veltkamp's split, done on the host),
 *
 * and the device computes `1 − bᵗ = C[l] + A[l]·D[h]` (both terms ≥ 0, so nothing cancels)
 * in double-f32 arithmetic: the high product with Dekker's exact error (every partial product
 * fits 24 bits, every partial sum is exact, so a fused multiply-add cannot change it), one
 * TwoSum, and a single final rounding. For `t < L` (`h = 0`, `D = 0`) the result is the
 * tabulated correctly rounded `C[l]` itself; beyond, the double-f32 value is within about
 * 2⁻⁴⁵ (relative; 2^-45.7 measured for b = 0.99999) of the exact one, so only a value within
 * that distance of an f32 midpoint could round the wrong way. The tests check every
 * `t ≤ 10⁷` for b = 0.9 and 0.999, every `t ≤ 2·10⁶` for 0.9999 and 0.99999, and sampled `t`
 * for other betas, against exact values (BigInt) — no such t exists there.
 *
 * Cost, eager: per `b` and update, 2 table uploads and lookups (8 KB for b = 0.9, 21 KB for
 * 0.999) and about 30 scalar ops; under `jit` the tables are constants and the scalar ops fuse.
 *
 * Only `+`, `−`, `×` (correctly rounded on both backends), integer arithmetic, `minimum` and
 * `take` run on the device, so CPU and WebGPU give the same bits. Rows past the point where
 * `bˡ < 2⁻⁶⁰` (resp. `b^(L·h)`) are dropped and the index clamped: the answer there is 1.
 *
 * @module
 */
import { arange, type Tensor, tensor } from "../tensor.ts";
import { temporaries } from "../op.ts";
import { add, astype, equal, minimum, mul, sub, where } from "../ops/elementwise.ts";
import { take } from "../ops/index.ts";
import { reshape, slice } from "../ops/shape.ts";

const FRAC = 200n; // fraction bits of the host's fixed-point arithmetic
const ONE = 1n << FRAC;
/** Below this, bˡ cannot change an f32 `1 − bᵗ` (nor, in double-f32, the sum): rows stop. */
const TINY = ONE >> 60n;
/** t ≤ 2²⁴: beyond, an f32 count no longer advances. */
const T_BITS = 24;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The exact fixed-point value of a finite double `x` with |x| < 2^53 (multiples of 2⁻²⁰⁰). */
function fix(x: number): bigint {
  if (x === 0) return 0n;
  const e = Math.floor(Math.log2(Math.abs(x))); // scale so the mantissa is an integer
  const shift = 52 - e;
  const m = BigInt(Math.round(x * 2 ** shift)); // exact: 53 significant bits
  const s = BigInt(shift);
  return s <= FRAC ? m << (FRAC - s) : m >> (s - FRAC); // (tiny tails are below 2⁻²⁰⁰)
}

/** The f32 next to `x` (finite, nonzero or zero) in the direction of `dir` (±1). */
function stepF32(x: number, dir: number): number {
  f32[0] = x;
  if (x === 0) {
    u32[0] = 1;
    return dir > 0 ? f32[0] : -f32[0];
  }
  u32[0] += (x > 0) === (dir > 0) ? 1 : -1;
  return f32[0];
}

/** `X·2⁻²⁰⁰` rounded to the nearest f32, ties to even (exactly, not via f64). */
function nearestF32(X: bigint): number {
  let best = Math.fround(Number(X) / 2 ** Number(FRAC));
  for (const dir of [1, -1]) {
    for (;;) {
      const next = stepF32(best, dir);
      const dNext = X - fix(next), dBest = X - fix(best);
      const aN = dNext < 0n ? -dNext : dNext, aB = dBest < 0n ? -dBest : dBest;
      f32[0] = best;
      const bestOdd = (u32[0] & 1) === 1;
      if (aN < aB || (aN === aB && bestOdd)) best = next;
      else break;
    }
  }
  return best;
}

/** `X·2⁻²⁰⁰` rounded toward zero to an f32. */
function truncF32(X: bigint): number {
  let v = nearestF32(X);
  if (v !== 0 && (X < 0n ? fix(v) < X : fix(v) > X)) v = stepF32(v, X < 0n ? 1 : -1);
  return v;
}

/** `X·2⁻²⁰⁰` as f32 `[hi, lo]`: hi correctly rounded, lo the remainder rounded toward zero. */
function pair(X: bigint): [number, number] {
  const hi = nearestF32(X);
  return [hi, truncF32(X - fix(hi))];
}

/** Veltkamp's split of an f32: `[h, l]` with h of 12 significant bits, l of ≤ 11, h + l = x. */
function split12(x: number): [number, number] {
  if (x === 0) return [0, 0];
  const unit = 2 ** (Math.floor(Math.log2(Math.abs(x))) - 11);
  const h = Math.round(x / unit) * unit;
  return [h, x - h];
}

/** Host tables for one `b` (see the module doc). */
interface Tables {
  readonly L: number;
  readonly lRows: number;
  readonly hRows: number;
  /** Columns over l: C.hi, C.lo, A.hi (two 12-bit halves), A.lo. */
  readonly l: readonly Float32Array[];
  /** Columns over h: D.hi (two 12-bit halves), D.lo. */
  readonly h: readonly Float32Array[];
  /** The l columns interleaved row by row (`[lRows, 5]`), for one lookup. */
  readonly lRows5: Float32Array;
  /** The h columns interleaved row by row (`[hRows, 3]`). */
  readonly hRows3: Float32Array;
}

/** Columns of equal length interleaved row by row (row-major `[length, columns]`). */
function interleave(cols: readonly Float32Array[]): Float32Array {
  const w = cols.length;
  const out = new Float32Array(cols[0].length * w);
  cols.forEach((c, j) => c.forEach((v, i) => (out[i * w + j] = v)));
  return out;
}

/** Powers `bᵏ` for k = 0, 1, … while ≥ TINY (at most `limit` of them), in fixed point. */
function powers(B: bigint, limit: number): bigint[] {
  const out = [ONE];
  while (out.length < limit && out[out.length - 1] >= TINY) {
    out.push((out[out.length - 1] * B) >> FRAC);
  }
  return out;
}

function tables(b: number): Tables {
  const B = fix(b);
  const probe = powers(B, (1 << 14) + 1); // bˡ until < TINY (all of them if b is close to 1)
  // Split t = L·h + l with L = 2^k, k in 10…14: keep the smallest pair of tables.
  let best: { k: number; lRows: number; d: bigint[]; cost: number } | undefined;
  for (let k = 10; k <= 14; k++) {
    const L = 1 << k;
    const lRows = Math.min(L, probe.length);
    // D's rows: b^(L·h) for h = 0 … 2^(24−k), until < TINY ([1, 0] if b^L is already tiny).
    const d = probe.length > L ? powers(probe[L], (1 << (T_BITS - k)) + 1) : [ONE, 0n];
    const cost = 5 * lRows + 3 * d.length;
    if (!best || cost < best.cost) best = { k, lRows, d, cost };
  }
  const { k, lRows, d } = best!;
  const l = Array.from({ length: 5 }, () => new Float32Array(lRows));
  probe.slice(0, lRows).forEach((P, i) => {
    const [ch, cl] = pair(ONE - P);
    const [ah, al] = pair(P);
    const [a1, a2] = split12(ah);
    [ch, cl, a1, a2, al].forEach((v, c) => (l[c][i] = v));
  });
  const h = Array.from({ length: 3 }, () => new Float32Array(d.length));
  d.forEach((P, i) => {
    const [dh, dl] = pair(ONE - P);
    const [d1, d2] = split12(dh);
    [d1, d2, dl].forEach((v, c) => (h[c][i] = v));
  });
  return { L: 1 << k, lRows, hRows: d.length, l, h, lRows5: interleave(l), hRows3: interleave(h) };
}

const cache = new Map<number, Tables>();

function tablesOf(b: number): Tables {
  let tb = cache.get(b);
  if (!tb) cache.set(b, tb = tables(b));
  return tb;
}

/** Several betas' tables stacked as rows of 5 (l rows, then h rows padded), with offsets. */
interface Stacked {
  readonly rows: Float32Array;
  readonly lAt: readonly number[];
  readonly hAt: readonly number[];
}

const stackedCache = new Map<string, Stacked>();

function stacked(bs: readonly number[]): Stacked {
  const key = bs.join(",");
  let st = stackedCache.get(key);
  if (st) return st;
  const tbs = bs.map(tablesOf);
  const lAt: number[] = [];
  const hAt: number[] = [];
  let rows = 0;
  for (const tb of tbs) {
    lAt.push(rows);
    rows += tb.lRows;
    hAt.push(rows);
    rows += tb.hRows;
  }
  const out = new Float32Array(rows * 5);
  tbs.forEach((tb, k) => {
    out.set(tb.lRows5, lAt[k] * 5);
    for (let i = 0; i < tb.hRows; i++) {
      out.set(tb.hRows3.subarray(3 * i, 3 * i + 3), (hAt[k] + i) * 5);
    }
  });
  stackedCache.set(key, st = { rows: out, lAt, hAt });
  return st;
}

/**
 * `1 − bᵗ` rounded once to f32, for an f32 tensor `t` of non-negative integer step counts
 * (any shape; values up to 2²⁴), on `t`'s device. `b` is a number in [0, 1].
 *
 * @example
 * ```ts
 * const bc2 = oneMinusPow(0.999, add(state.count, 1)); // f32, 0.001 at t = 1
 * ```
 */
export function oneMinusPow(b: number, t: Tensor): Tensor {
  return oneMinusPows([b], t)[0];
}

/**
 * `1 − bᵗ` for several `b` at once (Adam's two betas): the same values as
 * {@linkcode oneMinusPow}, with one table lookup for all of them.
 *
 * @example
 * ```ts
 * const [bc1, bc2] = oneMinusPows([0.9, 0.999], add(state.count, 1));
 * ```
 */
export function oneMinusPows(bs: readonly number[], t: Tensor): Tensor[] {
  for (const b of bs) {
    if (!(b >= 0 && b <= 1)) throw new Error(`oneMinusPow: b must be in [0, 1], got ${b}`);
  }
  return temporaries(() => {
    const tf = astype(t, "f32");
    const general = [...new Set(bs.filter((b) => b !== 0 && b !== 1))];
    const values = new Map<number, Tensor>();
    if (general.length) {
      const st = stacked(general);
      const ti = astype(tf, "i32");
      const idx: Tensor[] = [];
      general.forEach((b, k) => {
        const tb = tablesOf(b);
        const hi = astype(mul(tf, 1 / tb.L), "i32"); // exact scaling, truncation = floor (t ≥ 0)
        const li = minimum(sub(ti, mul(hi, tb.L)), tb.lRows - 1);
        const hc = minimum(hi, tb.hRows - 1);
        idx.push(add(li, st.lAt[k]), add(hc, st.hAt[k]));
      });
      // One lookup for every table row needed, sliced apart afterwards.
      const shape = t.shape;
      // [...shape, 2·betas] by selects over a position constant (elementwise work that fuses,
      // where a concat would be one kernel per piece).
      const pos = arange(idx.length, undefined, 1, { device: t.device });
      const col1 = (x: Tensor) => reshape(x, [...shape, 1]);
      let all = col1(idx[idx.length - 1]);
      for (let j = idx.length - 2; j >= 0; j--) all = where(equal(pos, j), col1(idx[j]), all);
      const table = tensor(st.rows, { shape: [st.rows.length / 5, 5], device: t.device });
      const got = take(table, all); // [...shape, 2·betas, 5]
      const at = shape.map(() => 0);
      const col = (j: number, c: number) =>
        reshape(slice(got, [...at, j, c], [...shape, 1, 1]), shape);
      general.forEach((b, k) => values.set(b, combine(k, col)));
    }
    return bs.map((b) => {
      // 1 − 0ᵗ = 1 for t ≥ 1 (0 at t = 0); 1 − 1ᵗ = 0.
      if (b === 1) return mul(tf, 0);
      if (b === 0) return minimum(tf, 1);
      return values.get(b)!;
    });
  });
}

/** The double-f32 evaluation of `C[l] + A[l]·D[h]` for beta `k` of a lookup. */
function combine(k: number, col: (j: number, c: number) => Tensor): Tensor {
  {
    const [ch, cl, a1, a2, al] = [0, 1, 2, 3, 4].map((c) => col(2 * k, c));
    const [d1, d2, dl] = [0, 1, 2].map((c) => col(2 * k + 1, c));
    const ah = add(a1, a2); // exact: the halves were split from an f32
    const dh = add(d1, d2);
    // Dekker: p + e = ah·dh exactly.
    const p = mul(ah, dh);
    const e = add(add(add(sub(mul(a1, d1), p), mul(a1, d2)), mul(a2, d1)), mul(a2, d2));
    const pLo = add(e, add(mul(ah, dl), mul(al, dh)));
    // TwoSum: s + r = ch + p exactly.
    const s = add(ch, p);
    const bb = sub(s, ch);
    const r = add(sub(ch, sub(s, bb)), sub(p, bb));
    return add(s, add(add(r, cl), pLo));
  }
}
