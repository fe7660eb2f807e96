/**
 * WGSL helpers for the dtypes on the GPU. Every buffer is bound as `array<u32>`; narrow dtypes
 * are packed little-endian (f16/bf16 two per word, f8/u8/bool four per word), so storage is
 * real: 2 or 1 bytes per element. Decoding and rounding are exact integer bit arithmetic
 * (round to nearest, ties to even), so results match the CPU backend bitwise and do not depend
 * on how a driver implements `pack2x16float` (whose overflow result WGSL leaves indeterminate)
 * or on f32 subnormal flushing.
 *
 * @example
 * ```ts
 * const code = helpers(["enc_f16", "dec_f16"]); // WGSL source of both functions
 * ```
 *
 * @module
 */
import { byteSize, type DType } from "../../../dtype.ts";
import { MATH_SNIPPETS, type Snippet } from "./math.ts";

/**
 * Elements per 32-bit word: 1 for 4-byte dtypes, 2 for 2-byte, 4 for 1-byte.
 *
 * @example
 * ```ts
 * perWord("bf16"); // 2
 * ```
 */
export function perWord(d: DType): 1 | 2 | 4 {
  if (d === "f64") throw new Error(`webgpu: dtype ${d} cannot live on the GPU`);
  return (4 / byteSize(d)) as 1 | 2 | 4;
}

/**
 * Whether values of `d` are computed as f32 (floats) or i32 (i32, u8, bool).
 *
 * @example
 * ```ts
 * isFloatDtype("u8"); // false
 * ```
 */
export function isFloatDtype(d: DType): boolean {
  return d === "f32" || d === "f16" || d === "bf16" || d === "f8e4m3" || d === "f8e5m2";
}

// Rounding of a positive value sig * 2^(e - 31) (sig has bit 31 set; sticky != 0 when nonzero
// bits were dropped below sig) to a float format with m mantissa bits and min normal exponent
// emin: returns the magnitude bits, or `over` when the result passes max_bits.
const ROUND_MAG = `
fn round_mag(e: i32, sig: u32, sticky: u32, m: u32, emin: i32, max_bits: u32, over: u32) -> u32 {
  let ee = max(e, emin);
  let shift = u32(31 - i32(m) + (ee - e));
  var r = 0u;
  var up = false;
  if (shift == 32u) {
    up = sig > 0x80000000u || sticky != 0u;
  } else if (shift < 32u) {
    r = sig >> shift;
    let rem = sig & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    up = rem > half || (rem == half && (sticky != 0u || (r & 1u) == 1u));
  }
  if (up) { r = r + 1u; }
  let bits = (u32(ee - emin) << m) + r;
  if (bits > max_bits) { return over; }
  return bits;
}`;

const SNIPPETS: Record<string, Snippet> = {
  round_mag: { deps: [], code: ROUND_MAG },
  // f32 bits -> normalized (e, sig); returns vec2(e as u32 bits, sig). Zero/Inf/NaN handled by callers.
  norm_f32: {
    deps: [],
    code: `
fn norm_f32(b: u32) -> vec2<u32> {
  let ex = (b >> 23u) & 0xffu;
  let mt = b & 0x7fffffu;
  if (ex == 0u) {
    let lz = countLeadingZeros(mt);
    return vec2<u32>(bitcast<u32>(-118 - i32(lz)), mt << lz);
  }
  return vec2<u32>(bitcast<u32>(i32(ex) - 127), (mt | 0x800000u) << 8u);
}`,
  },
  // Round f32 bits to a float format; sat clips overflow (and Inf) to the largest finite value.
  enc_fmt: {
    deps: ["round_mag", "norm_f32"],
    code: `
fn enc_fmt(b: u32, m: u32, emin: i32, max_bits: u32, inf: u32, nan: u32, sgn: u32, sat: bool) -> u32 {
  let s = select(0u, sgn, (b >> 31u) == 1u);
  let a = b & 0x7fffffffu;
  if (a > 0x7f800000u) { return s | nan; }
  let over = select(inf, max_bits, sat);
  if (a == 0x7f800000u) { return s | over; }
  if (a == 0u) { return s; }
  let nm = norm_f32(a);
  return s | round_mag(bitcast<i32>(nm.x), nm.y, 0u, m, emin, max_bits, over);
}`,
  },
  // Round an i32 to a float format (exactly, even beyond 2^24).
  int_fmt: {
    deps: ["round_mag"],
    code: `
fn int_fmt(v: i32, m: u32, emin: i32, max_bits: u32, over: u32, sgn: u32) -> u32 {
  if (v == 0) { return 0u; }
  let s = select(0u, sgn, v < 0);
  let mag = select(bitcast<u32>(v), 0u - bitcast<u32>(v), v < 0);
  let lz = countLeadingZeros(mag);
  return s | round_mag(31 - i32(lz), mag << lz, 0u, m, emin, max_bits, over);
}`,
  },
  enc_f16: {
    deps: ["enc_fmt"],
    code: `
fn enc_f16(b: u32) -> u32 {
  if ((b & 0x7fffffffu) > 0x7f800000u) { return ((b >> 16u) & 0x8000u) | 0x7e00u; }
  return enc_fmt(b, 10u, -14, 0x7bffu, 0x7c00u, 0x7e00u, 0x8000u, false);
}`,
  },
  enc_bf16: {
    deps: [],
    code: `
fn enc_bf16(b: u32) -> u32 {
  if ((b & 0x7fffffffu) > 0x7f800000u) { return ((b >> 16u) & 0x8000u) | 0x7fc0u; }
  return ((b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u) & 0xffffu;
}`,
  },
  enc_e4m3: {
    deps: ["enc_fmt"],
    code: `
fn enc_e4m3(b: u32, sat: bool) -> u32 {
  return enc_fmt(b, 3u, -6, 0x7eu, 0x7fu, 0x7fu, 0x80u, sat);
}`,
  },
  enc_e5m2: {
    deps: ["enc_fmt"],
    code: `
fn enc_e5m2(b: u32, sat: bool) -> u32 {
  return enc_fmt(b, 2u, -14, 0x7bu, 0x7cu, 0x7eu, 0x80u, sat);
}`,
  },
  // Exact f16 bits -> f32 bits (NaN keeps sign and payload, quieted, like a Float16Array).
  dec_f16: {
    deps: [],
    code: `
fn dec_f16(h: u32) -> u32 {
  let s = (h & 0x8000u) << 16u;
  let ex = (h >> 10u) & 0x1fu;
  let mt = h & 0x3ffu;
  if (ex == 31u) {
    if (mt == 0u) { return s | 0x7f800000u; }
    return s | 0x7fc00000u | (mt << 13u);
  }
  if (ex == 0u) {
    if (mt == 0u) { return s; }
    let p = 31u - countLeadingZeros(mt);
    return s | ((p + 103u) << 23u) | ((mt << (23u - p)) & 0x7fffffu);
  }
  return s | ((ex + 112u) << 23u) | (mt << 13u);
}`,
  },
  dec_e4m3: {
    deps: [],
    code: `
fn dec_e4m3(q: u32) -> u32 {
  let s = (q & 0x80u) << 24u;
  if ((q & 0x7fu) == 0x7fu) { return s | 0x7fc00000u; }
  let ex = (q >> 3u) & 0xfu;
  let mt = q & 7u;
  if (ex == 0u) {
    if (mt == 0u) { return s; }
    let p = 31u - countLeadingZeros(mt);
    return s | ((p + 118u) << 23u) | ((mt << (23u - p)) & 0x7fffffu);
  }
  return s | ((ex + 120u) << 23u) | (mt << 20u);
}`,
  },
  dec_e5m2: {
    deps: ["dec_f16"],
    code: `
fn dec_e5m2(q: u32) -> u32 {
  if ((q & 0x7fu) > 0x7cu) { return ((q & 0x80u) << 24u) | 0x7fc00000u; }
  return dec_f16(q << 8u);
}`,
  },
  is_nan: {
    deps: [],
    code: `
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }`,
  },
  // An order-preserving u32 key of a non-NaN f32 (±0 share one key), compared as integers so
  // that GPUs which flush subnormals in float compares still order them exactly.
  ord_key: {
    deps: [],
    code: `
fn ord_key(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  if ((u & 0x7fffffffu) == 0u) { return 0x80000000u; }
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}`,
  },
  is_inf: {
    deps: [],
    code: `
fn is_inf(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u; }`,
  },
  // JS truthiness of a float: nonzero and not NaN.
  truthy: {
    deps: [],
    code: `
fn truthy(x: f32) -> bool {
  let a = bitcast<u32>(x) & 0x7fffffffu;
  return a != 0u && a <= 0x7f800000u;
}`,
  },
  // f32 -> i32 as lib/dtype.ts encodes: NaN -> 0, truncate, saturate.
  sat_i32: {
    deps: [],
    code: `
fn sat_i32(x: f32) -> i32 {
  let b = bitcast<u32>(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0; }
  if (x >= 2147483648.0) { return 2147483647; }
  if (x <= -2147483648.0) { return -2147483647 - 1; }
  return i32(x);
}`,
  },
  // f32 -> u8 as lib/dtype.ts encodes: NaN and negatives -> 0, truncate, clamp to 255.
  sat_u8: {
    deps: [],
    code: `
fn sat_u8(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  if ((b >> 31u) == 1u || (b & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  if (x >= 255.0) { return 255u; }
  return u32(x);
}`,
  },
  // f32 -> i32 as a JS Int32Array store does (NaN -> 0, truncate, wrap modulo 2^32).
  wrap_i32: {
    deps: [],
    code: `
fn wrap_i32(x: f32) -> i32 {
  let b = bitcast<u32>(x);
  let a = b & 0x7fffffffu;
  if (a >= 0x7f800000u) { return 0; }
  if (a < 0x4f000000u) { return i32(x); }
  let ex = (a >> 23u) - 127u;
  var mag = 0u;
  if (ex < 55u) { mag = ((a & 0x7fffffu) | 0x800000u) << (ex - 23u); }
  return select(bitcast<i32>(mag), -bitcast<i32>(mag), (b >> 31u) == 1u);
}`,
  },
};

/**
 * WGSL source of the named helper functions and their dependencies, each once, dependencies
 * first.
 *
 * @example
 * ```ts
 * helpers(["enc_bf16"]); // "fn enc_bf16(b: u32) -> u32 { ... }"
 * ```
 */
export function helpers(names: Iterable<string>): string {
  const seen = new Set<string>();
  const out: string[] = [];
  const visit = (n: string) => {
    if (seen.has(n)) return;
    seen.add(n);
    const s = SNIPPETS[n] ?? MATH_SNIPPETS[n];
    if (!s) throw new Error(`webgpu: internal error, unknown WGSL helper ${n}`);
    s.deps.forEach(visit);
    out.push(s.code.trim());
  };
  for (const n of names) visit(n);
  return out.join("\n");
}

/**
 * A WGSL expression: raw element bits (zero-extended u32) of element `i` of buffer `buf`.
 *
 * @example
 * ```ts
 * rawLoad("I0", "f16", "i"); // "((I0[(i) >> 1u] >> (((i) & 1u) << 4u)) & 0xffffu)"
 * ```
 */
export function rawLoad(buf: string, d: DType, i: string): string {
  switch (perWord(d)) {
    case 1:
      return `${buf}[${i}]`;
    case 2:
      return `((${buf}[(${i}) >> 1u] >> (((${i}) & 1u) << 4u)) & 0xffffu)`;
    case 4:
      return `((${buf}[(${i}) >> 2u] >> (((${i}) & 3u) << 3u)) & 0xffu)`;
  }
}

/**
 * The helper names and a WGSL expression turning raw element bits `r` of dtype `d` into f32
 * bits (floats; exact) — i32/u8/bool are not handled here (see {@link intToF32Bits}).
 *
 * @example
 * ```ts
 * toF32Bits("bf16", "r").expr; // "((r) << 16u)"
 * ```
 */
export function toF32Bits(d: DType, r: string): { deps: string[]; expr: string } {
  switch (d) {
    case "f32":
      return { deps: [], expr: r };
    case "f16":
      return { deps: ["dec_f16"], expr: `dec_f16(${r})` };
    case "bf16":
      return { deps: [], expr: `((${r}) << 16u)` };
    case "f8e4m3":
      return { deps: ["dec_e4m3"], expr: `dec_e4m3(${r})` };
    case "f8e5m2":
      return { deps: ["dec_e5m2"], expr: `dec_e5m2(${r})` };
  }
  throw new Error(`webgpu: internal error, ${d} is not a float dtype`);
}

/**
 * WGSL expression: i32 value of raw bits `r` of an integer dtype (i32, u8, bool).
 *
 * @example
 * ```ts
 * toI32("u8", "r"); // "i32(r)"
 * ```
 */
export function toI32(d: DType, r: string): string {
  return d === "i32" ? `bitcast<i32>(${r})` : `i32(${r})`;
}

/**
 * f32 bits of an i32 value `v`, rounded once (ties to even) even beyond 2^24.
 *
 * @example
 * ```ts
 * intToF32Bits("v").deps; // ["int_fmt"]
 * ```
 */
export function intToF32Bits(v: string): { deps: string[]; expr: string } {
  return {
    deps: ["int_fmt"],
    expr: `int_fmt(${v}, 23u, -126, 0x7f7fffffu, 0x7f800000u, 0x80000000u)`,
  };
}

/**
 * Helper names and WGSL expression: the f32 value of raw element bits `r` of dtype `d`.
 *
 * @example
 * ```ts
 * rawToF32("f32", "r").expr; // "bitcast<f32>(r)"
 * ```
 */
export function rawToF32(d: DType, r: string): { deps: string[]; expr: string } {
  if (d === "f32") return { deps: [], expr: `bitcast<f32>(${r})` };
  if (isFloatDtype(d)) {
    const t = toF32Bits(d, r);
    return { deps: t.deps, expr: `bitcast<f32>(${t.expr})` };
  }
  if (d === "i32") {
    const t = intToF32Bits(toI32(d, r));
    return { deps: t.deps, expr: `bitcast<f32>(${t.expr})` };
  }
  return { deps: [], expr: `f32(${r})` };
}

/**
 * Helper names and WGSL expression: lane bits (masked to the lane width) of dtype `d` for an f32
 * value `v`, with the rounding of the CPU backend's compute-array store: floats RNE; i32 wraps
 * like an Int32Array; u8 wraps modulo 256 like a Uint8Array; bool wraps modulo 256, then is 1
 * when nonzero.
 *
 * @example
 * ```ts
 * storeF32("f16", "y").expr; // "enc_f16(bitcast<u32>(y))"
 * ```
 */
export function storeF32(d: DType, v: string): { deps: string[]; expr: string } {
  switch (d) {
    case "f32":
      return { deps: [], expr: `bitcast<u32>(${v})` };
    case "f16":
      return { deps: ["enc_f16"], expr: `enc_f16(bitcast<u32>(${v}))` };
    case "bf16":
      return { deps: ["enc_bf16"], expr: `enc_bf16(bitcast<u32>(${v}))` };
    case "f8e4m3":
      return { deps: ["enc_e4m3"], expr: `enc_e4m3(bitcast<u32>(${v}), false)` };
    case "f8e5m2":
      return { deps: ["enc_e5m2"], expr: `enc_e5m2(bitcast<u32>(${v}), false)` };
    case "i32":
      return { deps: ["wrap_i32"], expr: `bitcast<u32>(wrap_i32(${v}))` };
    case "u8":
      return { deps: ["wrap_i32"], expr: `(bitcast<u32>(wrap_i32(${v})) & 0xffu)` };
    default:
      return {
        deps: ["wrap_i32"],
        expr: `select(0u, 1u, (bitcast<u32>(wrap_i32(${v})) & 0xffu) != 0u)`,
      };
  }
}

/**
 * WGSL expression: lane bits of dtype `d` for an i32 value `v` (ints only; u8/bool wrap).
 *
 * @example
 * ```ts
 * storeI32("u8", "v").expr; // "(bitcast<u32>(v) & 0xffu)"
 * ```
 */
export function storeI32(d: DType, v: string): { deps: string[]; expr: string } {
  if (d === "i32") return { deps: [], expr: `bitcast<u32>(${v})` };
  if (d === "u8") return { deps: [], expr: `(bitcast<u32>(${v}) & 0xffu)` };
  if (d === "bool") return { deps: [], expr: `select(0u, 1u, (bitcast<u32>(${v}) & 0xffu) != 0u)` };
  const t = intToF32Bits(v);
  const s = storeF32(d, `bitcast<f32>(${t.expr})`);
  return { deps: [...t.deps, ...s.deps], expr: s.expr };
}
