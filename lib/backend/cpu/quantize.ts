/**
 * CPU kernels of block-wise 8-bit quantization (bitsandbytes): the nearest entry of a 256-entry
 * map (the number of midpoints of consecutive entries below the value, found from a table over
 * the value's top 16 bits and a short step), in one pass per element; and the lookup back.
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
  const { mids, start, guard } = searchTables(map);
  const yBits = new Uint32Array(y.buffer, y.byteOffset, n);
  for (let b = 0, from = 0; from < n; b++, from += blockSize) {
    const a = absmax[b];
    const to = Math.min(n, from + blockSize);
    const live = a > 0;
    for (let i = from; i < to; i++) {
      // y = clamp(x / absmax, −1, 1) in f32; 0 for a dead block or a NaN ratio.
      y[i] = live ? x[i] / a : 0;
      const v0 = y[i];
      if (v0 > 1) y[i] = 1;
      else if (v0 < -1) y[i] = -1;
      else if (v0 !== v0) y[i] = 0;
      const v = y[i];
      // The number of midpoints below v: from the first candidate of v's bucket (its top 16
      // bits), step up while the next midpoint is still below v.
      let c = start[yBits[i] >>> 16];
      while (c < 255 && mids[c] < v) c++;
      if (signGuard) {
        // A negative x never keeps a code ≥ 0 (one step down), a positive x never a negative
        // one (one step up): a table over (code, sign of x), without branches on the sign.
        const xv = x[i];
        c = guard[c | (+(xv > 0) << 8) | (+(xv < 0) << 9)];
      }
      out[i] = c;
    }
  }
  return out;
}

/** The tables of the nearest-entry search of a map (also laid out on the heap for WebAssembly). */
export interface SearchTables {
  /** `(map[i] + map[i + 1]) / 2` rounded to f32: the code is the number of these below y. */
  readonly mids: Float32Array;
  /** Per f32 bit prefix (sign, exponent, 7 mantissa bits): the code of the bucket's least value. */
  readonly start: Uint8Array;
  /** The sign guard's code by `code | (x > 0) << 8 | (x < 0) << 9`. */
  readonly guard: Uint8Array;
  /** The most steps up from `start` any y in [−1, 1] takes. */
  readonly steps: number;
}

const tableCache = new Map<string, SearchTables>();

/**
 * The search tables of a 256-entry map (cached by its values).
 *
 * @example
 * ```ts
 * searchTables(dynamicMap()).steps; // 1
 * ```
 */
export function searchTables(map: ArrayLike<number>): SearchTables {
  const key = Array.prototype.join.call(map, ",");
  let t = tableCache.get(key);
  if (t) return t;
  const mids = new Float32Array(255);
  for (let i = 0; i < 255; i++) mids[i] = (map[i] + map[i + 1]) / 2;
  const below = (v: number) => {
    let c = 0;
    while (c < 255 && mids[c] < v) c++;
    return c;
  };
  const start = new Uint8Array(65536);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  let steps = 0;
  for (let p = 0; p < 65536; p++) {
    // The least value of the bucket: low bits 0 for a positive prefix, all ones for a negative.
    u[0] = (p << 16 | (p & 0x8000 ? 0xffff : 0)) >>> 0;
    const v = f[0];
    start[p] = v === v ? below(v) : 0;
    // Its greatest value: the steps of the clamped ratios in the bucket are at most these.
    u[0] = (p << 16 | (p & 0x8000 ? 0 : 0xffff)) >>> 0;
    const hi = f[0];
    if (v === v && v <= 1 && hi >= -1) steps = Math.max(steps, below(Math.min(hi, 1)) - start[p]);
  }
  const guard = new Uint8Array(1024);
  for (let c = 0; c < 256; c++) {
    guard[c] = c;
    guard[c | 256] = map[c] < 0 && c < 255 ? c + 1 : c; // x > 0
    guard[c | 512] = map[c] >= 0 && c > 0 ? c - 1 : c; // x < 0
  }
  if (tableCache.size > 16) tableCache.clear();
  tableCache.set(key, t = { mids, start, guard, steps });
  return t;
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
