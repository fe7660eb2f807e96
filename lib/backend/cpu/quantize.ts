/**
 * CPU kernels of block-wise 8-bit quantization (bitsandbytes): the nearest entry of a 256-entry
 * map by binary search over the midpoints of consecutive entries, and the lookup back.
 *
 * @module
 */

/**
 * u8 codes of `x` (`n` elements in blocks of `blockSize`, block b scaled by `absmax[b]`): the
 * index of the `map` entry nearest to `clamp(x / absmax, −1, 1)` computed in f32, ties to the
 * lower index; 0 for a block whose absmax is 0 (or not a number) and for NaN ratios. With
 * `signGuard`, a negative x never gets a code ≥ 0 and a positive x never a negative one: the
 * code moves one step toward x's sign (bitsandbytes' guard for momentum). The codes go to `out`
 * (default a new array) and `y` (default a new array) holds the scaled values.
 *
 * @example
 * ```ts
 * quantizeKernel([0.5, -1], [1], dynamicMap(), 256, false, 2); // Uint8Array [219, 0]
 * ```
 */
export function quantizeKernel(
  x: ArrayLike<number>,
  absmax: ArrayLike<number>,
  map: ArrayLike<number>,
  blockSize: number,
  signGuard: boolean,
  n: number,
  out: Uint8Array = new Uint8Array(n),
  y: Float32Array = new Float32Array(n),
): Uint8Array {
  if (out.length !== n || y.length !== n) {
    throw new RangeError(
      `quantizeKernel: out and y need ${n} elements, got ${out.length}, ${y.length}`,
    );
  }
  const mids = new Float32Array(255);
  for (let i = 0; i < 255; i++) mids[i] = (map[i] + map[i + 1]) / 2;
  scaleBlocks(x, absmax, blockSize, y);
  nearest(mids, y, out);
  if (signGuard) guardSigns(x, map, out);
  return out;
}

/** `y = clamp(x / absmax, −1, 1)` rounded to f32; 0 where absmax is not > 0 or y is NaN. */
function scaleBlocks(
  x: ArrayLike<number>,
  absmax: ArrayLike<number>,
  blockSize: number,
  y: Float32Array,
): void {
  const n = y.length;
  for (let b = 0, start = 0; start < n; b++, start += blockSize) {
    const a = absmax[b];
    const end = Math.min(n, start + blockSize);
    if (!(a > 0)) {
      y.fill(0, start, end); // y may be a reused array
      continue;
    }
    for (let i = start; i < end; i++) y[i] = x[i] / a;
  }
  for (let i = 0; i < n; i++) {
    const v = y[i];
    if (v > 1) y[i] = 1;
    else if (v < -1) y[i] = -1;
    else if (v !== v) y[i] = 0;
  }
}

/** The number of midpoints below each y, i.e. the nearest entry: a branch-free binary search. */
function nearest(mids: Float32Array, y: Float32Array, out: Uint8Array): void {
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    let c = +(mids[127] < v) << 7;
    c += +(mids[c + 63] < v) << 6;
    c += +(mids[c + 31] < v) << 5;
    c += +(mids[c + 15] < v) << 4;
    c += +(mids[c + 7] < v) << 3;
    c += +(mids[c + 3] < v) << 2;
    c += +(mids[c + 1] < v) << 1;
    c += +(mids[c] < v);
    out[i] = c;
  }
}

/** Move codes whose entry has the other sign than x one step toward x's sign. */
function guardSigns(x: ArrayLike<number>, map: ArrayLike<number>, out: Uint8Array): void {
  for (let i = 0; i < out.length; i++) {
    const v = x[i];
    const c = out[i];
    if (v < 0 && map[c] >= 0 && c > 0) out[i] = c - 1;
    else if (v > 0 && map[c] < 0 && c < 255) out[i] = c + 1;
  }
}

/**
 * `out[i] = map[codes[i]] · absmax[⌊i / blockSize⌋]`, the product rounded to f32 (then stored
 * in `out`'s type).
 *
 * @example
 * ```ts
 * const out = new Float32Array(2);
 * dequantizeKernel(new Uint8Array([255, 127]), [2], dynamicMap(), 256, out); // [2, 0]
 * ```
 */
export function dequantizeKernel(
  codes: ArrayLike<number>,
  absmax: ArrayLike<number>,
  map: ArrayLike<number>,
  blockSize: number,
  out: Float32Array | Float64Array,
): void {
  const n = out.length;
  const f = Math.fround;
  for (let b = 0, start = 0; start < n; b++, start += blockSize) {
    const a = absmax[b];
    const end = Math.min(n, start + blockSize);
    for (let i = start; i < end; i++) out[i] = f(map[codes[i]] * a);
  }
}
