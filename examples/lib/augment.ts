/**
 * Data augmentation for 28×28 images: each image moves by its own random whole-pixel shift of
 * up to `max` pixels along each axis, filling with 0. The shifts come from nbit's PRNG (so a key
 * fixes them); the move itself is one `take` on the device.
 *
 * @example
 * ```ts
 * const moved = shiftImages(batch.x, key(7), 1); // [n, 784], each image moved by −1, 0 or +1
 * ```
 *
 * @module
 */
import { type Key, randomBits } from "../../lib/prng.ts";
import { type Tensor, tensor, tidy, zeros } from "../../lib/tensor.ts";
import { concat, reshape } from "../../lib/ops/shape.ts";
import { take } from "../../lib/ops/index.ts";

const SIDE = 28;
const PIXELS = SIDE * SIDE;

/**
 * For `n` images, the source index of every output pixel in the images' flat buffer, or
 * `n · 784` (a zero appended after the images) where the shifted image has no source pixel.
 *
 * @example
 * ```ts
 * shiftIndices(new Int32Array([1]), new Int32Array([0]))[1]; // 0: pixel (0, 1) comes from (0, 0)
 * ```
 */
export function shiftIndices(dx: Int32Array, dy: Int32Array): Int32Array {
  const n = dx.length;
  const idx = new Int32Array(n * PIXELS);
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < SIDE; r++) {
      const sr = r - dy[i];
      for (let c = 0; c < SIDE; c++) {
        const sc = c - dx[i];
        const inside = sr >= 0 && sr < SIDE && sc >= 0 && sc < SIDE;
        idx[i * PIXELS + r * SIDE + c] = inside ? i * PIXELS + sr * SIDE + sc : n * PIXELS;
      }
    }
  }
  return idx;
}

/**
 * Shift each image of `x` (`[n, 784]`) by a random `(dx, dy)`, each uniform in `[−max, max]`,
 * drawn from `k`. `max = 0` returns `x` itself.
 *
 * @example
 * ```ts
 * const augmented = shiftImages(x, foldIn(key(0), step), 1);
 * ```
 */
export function shiftImages(x: Tensor, k: Key, max: number): Tensor {
  if (!Number.isInteger(max) || max < 0) {
    throw new RangeError(`shiftImages: max must be an integer ≥ 0, got ${max}`);
  }
  if (max === 0) return x;
  if (x.ndim !== 2 || x.shape[1] !== PIXELS) {
    throw new Error(`shiftImages: expected images of shape [n, ${PIXELS}], got [${x.shape}]`);
  }
  const n = x.shape[0];
  const bits = randomBits(k, 2 * n);
  const span = 2 * max + 1;
  const dx = new Int32Array(n);
  const dy = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    dx[i] = (bits[2 * i] % span) - max;
    dy[i] = (bits[2 * i + 1] % span) - max;
  }
  return tidy(() => {
    const padded = concat([
      reshape(x, [n * PIXELS]),
      zeros([1], { dtype: x.dtype, device: x.device }),
    ]);
    const idx = tensor(shiftIndices(dx, dy), { dtype: "i32", device: x.device });
    return reshape(take(padded, idx), [n, PIXELS]);
  });
}
