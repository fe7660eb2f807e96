/**
 * WGSL of the counter-based PRNG: Threefry-2x32 with 20 rounds on u32 words, the same counters
 * as lib/prng.ts (element `i` is word `i & 1` of block `(i >> 1, 0)`), so uniform and bernoulli
 * match the CPU bitwise. Uniform keeps its multiply and add apart (the product passes through
 * an opaque integer xor, so no compiler can fuse them). Normal uses Box–Muller with an accurate
 * log and a sin/cos whose argument reduction is exact (the angle is `2π·u2` with `u2` on a
 * 2^-24 grid), so it is within a few f32 ulps of the CPU's f64 values.
 *
 * @example
 * ```ts
 * const src = THREEFRY; // WGSL: fn threefry(k0, k1, x0, x1) -> vec2<u32>
 * ```
 *
 * @module
 */

function rounds(rs: readonly number[]): string {
  return rs.map((r) => `  a = a + b; b = rotl(b, ${r}u) ^ a;`).join("\n");
}

/** WGSL of `threefry(k0, k1, x0, x1) -> vec2<u32>`. */
export const THREEFRY = `
fn rotl(x: u32, r: u32) -> u32 { return (x << r) | (x >> (32u - r)); }
fn threefry(k0: u32, k1: u32, x0: u32, x1: u32) -> vec2<u32> {
  let k2 = 0x1bd11bdau ^ k0 ^ k1;
  var a = x0 + k0;
  var b = x1 + k1;
${rounds([13, 15, 26, 6])}
  a = a + k1; b = b + k2 + 1u;
${rounds([17, 29, 16, 24])}
  a = a + k2; b = b + k0 + 2u;
${rounds([13, 15, 26, 6])}
  a = a + k0; b = b + k1 + 3u;
${rounds([17, 29, 16, 24])}
  a = a + k1; b = b + k2 + 4u;
${rounds([13, 15, 26, 6])}
  return vec2<u32>(a + k2, b + k0 + 5u);
}`;
