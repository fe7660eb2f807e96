/**
 * WGSL math with the accuracy the CPU backend's f64 results need, written out instead of using
 * the built-ins whose WGSL error bounds are loose (`exp` allows 3 + 2|x| ulp, `log` 2^-21
 * absolute error near 1, `tanh` inherits sinh/cosh): exp and log by exact range reduction and
 * polynomials (about 2 ulp), tanh from them, division correctly rounded by integer long
 * division, and NaN/Inf decided by bit tests (WGSL may assume they never occur).
 *
 * @example
 * ```ts
 * MATH_SNIPPETS.exp_acc.deps; // ["pow2i"]
 * ```
 *
 * @module
 */

/** A WGSL function and the helpers it calls. */
export interface Snippet {
  readonly deps: readonly string[];
  readonly code: string;
}

/** Math helpers by name (resolved with their dependencies by `helpers`). */
export const MATH_SNIPPETS: Record<string, Snippet> = {
  qnan: {
    deps: [],
    code: `fn qnan(x: f32) -> f32 { return bitcast<f32>(0x7fc00000u | (bitcast<u32>(x) & 0u)); }`,
  },
  pinf: {
    deps: [],
    code: `fn pinf(x: f32) -> f32 { return bitcast<f32>(0x7f800000u | (bitcast<u32>(x) & 0u)); }`,
  },
  with_sign: {
    deps: [],
    code: `
fn with_sign(m: f32, s: f32) -> f32 {
  return bitcast<f32>((bitcast<u32>(m) & 0x7fffffffu) | (bitcast<u32>(s) & 0x80000000u));
}`,
  },
  // 2^n as an exact f32 for n in [-126, 127].
  pow2i: {
    deps: [],
    code: `fn pow2i(n: i32) -> f32 { return bitcast<f32>(u32(n + 127) << 23u); }`,
  },
  // e^x for finite x in [-104, 88.73): Cody–Waite reduction by ln 2, degree-7 polynomial.
  exp_acc: {
    deps: ["pow2i"],
    code: `
fn exp_acc(x: f32) -> f32 {
  let k = round(x * 1.44269504);
  let r = (x - k * 0.693145752) - k * 1.42860677e-6;
  let p = 1.0 + r * (1.0 + r * (0.5 + r * (0.166666667 + r * (0.0416666667 +
    r * (0.00833333333 + r * (0.00138888889 + r * 0.000198412698))))));
  let ki = i32(k);
  let k1 = ki / 2;
  return (p * pow2i(k1)) * pow2i(ki - k1);
}`,
  },
  // ln x for finite positive normal x: x = m·2^e with m in [√½, √2), ln m = 2·atanh(s).
  ln_acc: {
    deps: [],
    code: `
fn ln_acc(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  var e = i32((b >> 23u) & 0xffu) - 127;
  var m = bitcast<f32>((b & 0x7fffffu) | 0x3f800000u);
  if (m > 1.41421356) { m = m * 0.5; e = e + 1; }
  let s = (m - 1.0) / (m + 1.0);
  let s2 = s * s;
  let poly = s2 * (0.33333333 + s2 * (0.2 + s2 * (0.14285714 + s2 * (0.11111111 + s2 * 0.09090909))));
  let lm = 2.0 * s + 2.0 * s * poly;
  let fe = f32(e);
  return fe * 0.693145752 + (fe * 1.42860677e-6 + lm);
}`,
  },
  exp_js: {
    deps: ["is_nan", "pinf", "exp_acc"],
    code: `
fn exp_js(x: f32) -> f32 {
  if (is_nan(x)) { return x; }
  if (x >= 88.72284) { return pinf(x); }
  if (x < -104.0) { return 0.0; }
  return exp_acc(x);
}`,
  },
  log_js: {
    deps: ["is_nan", "pinf", "qnan", "ln_acc"],
    code: `
fn log_js(x: f32) -> f32 {
  if (is_nan(x) || x == pinf(x)) { return x; }
  if (x < 0.0) { return qnan(x); }
  if (x == 0.0) { return -pinf(x); }
  if (x < 1.17549435e-38) { return ln_acc(x * 16777216.0) - 16.6355323; }
  return ln_acc(x);
}`,
  },
  sqrt_js: {
    deps: ["is_nan", "pinf", "qnan"],
    code: `
fn sqrt_js(x: f32) -> f32 {
  if (is_nan(x) || x == 0.0 || x == pinf(x)) { return x; }
  if (x < 0.0) { return qnan(x); }
  return sqrt(x);
}`,
  },
  rsqrt_js: {
    deps: ["is_nan", "pinf", "qnan", "with_sign"],
    code: `
fn rsqrt_js(x: f32) -> f32 {
  if (is_nan(x)) { return x; }
  if (x == 0.0) { return with_sign(pinf(x), x); }
  if (x < 0.0) { return qnan(x); }
  if (x == pinf(x)) { return 0.0; }
  return 1.0 / sqrt(x);
}`,
  },
  // tanh: odd polynomial below 0.25, e/(e + 2) with e = expm1(2|x|) by its Taylor series below
  // 0.625 (no cancellation), 1 - 2/(e^2|x| + 1) above, ±1 from 10.
  tanh_js: {
    deps: ["is_nan", "with_sign", "exp_acc"],
    code: `
fn tanh_js(x: f32) -> f32 {
  if (is_nan(x)) { return x; }
  let a = abs(x);
  if (a >= 10.0) { return with_sign(1.0, x); }
  if (a < 0.25) {
    let z = x * x;
    return x + x * z * (-0.333333333 + z * (0.133333333 + z * (-0.0539682540 +
      z * (0.0218694885 + z * (-0.00886323552 + z * 0.00359212803)))));
  }
  if (a < 0.625) {
    let t = 2.0 * a;
    let e = t * (1.0 + t * (0.5 + t * (0.166666667 + t * (0.0416666667 + t * (0.00833333333 +
      t * (0.00138888889 + t * (1.98412698e-4 + t * (2.48015873e-5 + t * (2.75573192e-6 +
      t * (2.75573192e-7 + t * (2.50521084e-8 + t * 2.08767570e-9)))))))))));
    return with_sign(e / (e + 2.0), x);
  }
  return with_sign(1.0 - 2.0 / (exp_acc(2.0 * a) + 1.0), x);
}`,
  },
  sigmoid_js: {
    deps: ["is_nan", "exp_js"],
    code: `
fn sigmoid_js(x: f32) -> f32 {
  if (is_nan(x)) { return x; }
  if (x >= 0.0) { return 1.0 / (1.0 + exp_js(-x)); }
  let e = exp_js(x);
  return e / (1.0 + e);
}`,
  },
  // a / b rounded once to nearest even: 26 quotient bits by long division, then round_mag.
  div_rne: {
    deps: ["qnan", "norm_f32", "round_mag"],
    code: `
fn div_rne(a: f32, b: f32) -> f32 {
  let ua = bitcast<u32>(a);
  let ub = bitcast<u32>(b);
  let s = (ua ^ ub) & 0x80000000u;
  let xa = ua & 0x7fffffffu;
  let xb = ub & 0x7fffffffu;
  if (xa > 0x7f800000u || xb > 0x7f800000u || (xa == 0u && xb == 0u) ||
      (xa == 0x7f800000u && xb == 0x7f800000u)) { return qnan(a); }
  if (xa == 0x7f800000u || xb == 0u) { return bitcast<f32>(s | 0x7f800000u); }
  if (xa == 0u || xb == 0x7f800000u) { return bitcast<f32>(s); }
  let na = norm_f32(xa);
  let nb = norm_f32(xb);
  var ma = na.y >> 8u;
  let mb = nb.y >> 8u;
  var e = bitcast<i32>(na.x) - bitcast<i32>(nb.x);
  if (ma < mb) { ma = ma << 1u; e = e - 1; }
  var q = 0u;
  var rem = ma;
  for (var i = 0u; i < 26u; i = i + 1u) {
    q = q << 1u;
    if (rem >= mb) { rem = rem - mb; q = q | 1u; }
    rem = rem << 1u;
  }
  return bitcast<f32>(s | round_mag(e, q << 6u, rem, 23u, -126, 0x7f7fffffu, 0x7f800000u));
}`,
  },
  // Math.pow's special cases; integer exponents up to 64 by repeated squaring (b = 2 is exact).
  pow_js: {
    deps: ["is_nan", "is_inf", "qnan", "pinf", "div_rne", "exp_js", "ln_acc"],
    code: `
fn pow_js(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  if (is_nan(a) || is_nan(b)) { return qnan(a); }
  let ab = abs(a);
  let binf = is_inf(b);
  let isint = !binf && trunc(b) == b;
  let odd = isint && abs(b) < 16777216.0 && (u32(abs(b)) & 1u) == 1u;
  let neg = (bitcast<u32>(a) >> 31u) == 1u;
  if (binf) {
    if (ab == 1.0) { return qnan(a); }
    if ((ab > 1.0) == (b > 0.0)) { return pinf(a); }
    return 0.0;
  }
  if (ab == 0.0 || is_inf(a)) {
    var r = select(0.0, pinf(a), (ab == 0.0) == (b < 0.0));
    if (odd && neg) { r = -r; }
    return r;
  }
  if (neg && !isint) { return qnan(a); }
  var r = 1.0;
  if (isint && abs(b) <= 64.0) {
    var n = u32(abs(b));
    var base = ab;
    loop {
      if ((n & 1u) == 1u) { r = r * base; }
      n = n >> 1u;
      if (n == 0u) { break; }
      base = base * base;
    }
    if (b < 0.0) { r = div_rne(1.0, r); }
  } else if (b == 0.5) {
    r = sqrt(ab);
  } else {
    var l = 0.0;
    if (ab < 1.17549435e-38) { l = ln_acc(ab * 16777216.0) - 16.6355323; } else { l = ln_acc(ab); }
    r = exp_js(b * l);
  }
  if (neg && odd) { r = -r; }
  return r;
}`,
  },
  max_js: {
    deps: ["is_nan", "qnan"],
    code: `
fn max_js(a: f32, b: f32) -> f32 {
  if (is_nan(a) || is_nan(b)) { return qnan(a); }
  return select(b, a, a > b);
}`,
  },
  min_js: {
    deps: ["is_nan", "qnan"],
    code: `
fn min_js(a: f32, b: f32) -> f32 {
  if (is_nan(a) || is_nan(b)) { return qnan(a); }
  return select(b, a, a < b);
}`,
  },
  // (cos 2πu, sin 2πu) for u in [0, 1]: u·4 is exact, so the quadrant reduction is exact.
  sincos_turn: {
    deps: [],
    code: `
fn sincos_turn(u: f32) -> vec2<f32> {
  let q = round(u * 4.0);
  let f = u - q * 0.25;
  let a = f * 6.28318531;
  let a2 = a * a;
  let s = a * (1.0 - a2 * (0.16666667 - a2 * (0.0083333333 - a2 * (0.00019841270 - a2 * 2.7557319e-6))));
  let c = 1.0 - a2 * (0.5 - a2 * (0.041666667 - a2 * (0.0013888889 - a2 * (2.4801587e-5 - a2 * 2.7557319e-7))));
  let qi = u32(q) & 3u;
  if (qi == 0u) { return vec2<f32>(c, s); }
  if (qi == 1u) { return vec2<f32>(-s, c); }
  if (qi == 2u) { return vec2<f32>(-c, -s); }
  return vec2<f32>(s, -c);
}`,
  },
};
