/**
 * A small seeded PRNG (mulberry32) for reproducible plain-JS test data, shared by the test
 * files. Tests that check nbit's own PRNG use lib/prng.ts instead.
 */

/** Uniform numbers in [0, 1) from a 32-bit seed. @example `const u = rng(1); u();` */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
