/**
 * MNIST on a device, and batches drawn from it: the whole split is uploaded once, and each batch
 * is a `take` of its rows at indices from a per-epoch permutation made with nbit's PRNG (so a
 * seed fixes the order on every device). Each batch's tensors are freed when the next one is
 * asked for (and when the loop ends), so `fit` can run over the generator without leaking.
 *
 * @example
 * ```ts
 * const train = toDevice(loadMnist({ seed: 0 }).train);
 * for (const b of shuffled(train, { batch: 64, key: key(0), epoch: 0 })) b.x.shape; // [64, 784]
 * dispose(train);
 * ```
 *
 * @module
 */
import type { MnistSplit } from "../data/mnist.ts";
import type { Backend } from "../../lib/backend/backend.ts";
import type { DType } from "../../lib/dtype.ts";
import { foldIn, type Key } from "../../lib/random.ts";
import { permutation } from "../../lib/prng.ts";
import { dispose, type Tensor, tensor } from "../../lib/tensor.ts";
import { take } from "../../lib/ops/index.ts";
import { slice } from "../../lib/ops/shape.ts";
import { shiftImages } from "./augment.ts";

/** A batch: images `x` `[n, 784]` and integer labels `y` `[n]` (i32). */
export interface Batch {
  readonly x: Tensor;
  readonly y: Tensor;
}

/** A whole split on a device: `x` `[count, 784]`, `y` `[count]` i32. Free it with `dispose`. */
export interface DeviceSplit extends Batch {
  readonly count: number;
}

/**
 * Upload a split once (images in `dtype`, default f32; labels i32).
 *
 * @example
 * ```ts
 * const test = toDevice(loadMnist().test, { dtype: "f64" });
 * ```
 */
export function toDevice(
  split: MnistSplit,
  opts: { dtype?: DType; device?: Backend } = {},
): DeviceSplit {
  const { count } = split;
  const x = tensor(split.images, { shape: [count, 784], dtype: opts.dtype, device: opts.device });
  const y = tensor(split.labels, { shape: [count], dtype: "i32", device: opts.device });
  return { x, y, count };
}

/** Number of batches of size `batch` in `count` samples (a partial last one included). */
export const batchCount = (count: number, batch: number, dropLast = false): number =>
  dropLast ? Math.floor(count / batch) : Math.ceil(count / batch);

/**
 * The sample order of epoch `epoch`: a permutation of `0 … count−1` from `foldIn(key, epoch)`.
 *
 * @example
 * ```ts
 * epochOrder(key(0), 3, 10); // the same Int32Array on every run
 * ```
 */
export function epochOrder(k: Key, epoch: number, count: number): Int32Array {
  return permutation(foldIn(k, epoch), count);
}

function* rows(
  data: DeviceSplit,
  order: Int32Array | undefined,
  batch: number,
  dropLast: boolean,
  mapX?: (x: Tensor, index: number) => Tensor,
): Generator<Batch> {
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`batch size must be a positive integer, got ${batch}`);
  }
  let current: Batch | undefined;
  // A slice of the whole split may be the split's own tensor: never free those.
  const release = (b: Batch | undefined) =>
    dispose([b?.x, b?.y].filter((t) => t !== data.x && t !== data.y));
  try {
    const n = batchCount(data.count, batch, dropLast);
    for (let i = 0; i < n; i++) {
      const start = i * batch;
      const size = Math.min(batch, data.count - start);
      release(current);
      if (order) {
        const idx = tensor(order.subarray(start, start + size), {
          dtype: "i32",
          device: data.x.device,
        });
        const x = take(data.x, idx);
        const moved = mapX ? mapX(x, i) : x;
        if (moved !== x) x.dispose();
        current = { x: moved, y: take(data.y, idx) };
        idx.dispose();
      } else {
        current = {
          x: slice(data.x, [start, 0], [size, data.x.shape[1]]),
          y: slice(data.y, [start], [size]),
        };
      }
      yield current;
    }
  } finally {
    release(current);
  }
}

/** Options of {@linkcode shuffled}. */
export interface ShuffleOptions {
  /** Batch size. */
  batch: number;
  /** Key of the sample order. */
  key: Key;
  /** Epoch index: epoch `e` uses the order `epochOrder(key, e, count)`. */
  epoch: number;
  /** Drop a last, partial batch (default false). */
  dropLast?: boolean;
  /**
   * Shift each image by up to `max` pixels (see `shiftImages`), with keys
   * `foldIn(foldIn(key, epoch), batchIndex)`.
   */
  shift?: { key: Key; max: number };
}

/**
 * Shuffled batches for one epoch (order from {@linkcode epochOrder}). Each batch is freed when
 * the next is requested; do not keep one past the loop body.
 *
 * @example
 * ```ts
 * const epochs = (e: number) => shuffled(train, { batch: 64, key: key(0), epoch: e });
 * await fit(step, state, epochs, { epochs: 5 });
 * ```
 */
export function shuffled(data: DeviceSplit, opts: ShuffleOptions): Generator<Batch> {
  const order = epochOrder(opts.key, opts.epoch, data.count);
  const { shift } = opts;
  const mapX = shift && shift.max > 0
    ? (x: Tensor, i: number) => shiftImages(x, foldIn(foldIn(shift.key, opts.epoch), i), shift.max)
    : undefined;
  return rows(data, order, opts.batch, opts.dropLast ?? false, mapX);
}

/**
 * Batches in the stored order (for evaluation). Each batch is freed when the next is requested.
 *
 * @example
 * ```ts
 * for (const b of inOrder(test, 500)) console.log(b.x.shape); // [500, 784] …
 * ```
 */
export function inOrder(data: DeviceSplit, batch: number): Generator<Batch> {
  return rows(data, undefined, batch, false);
}
