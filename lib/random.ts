/**
 * Explicit PRNG keys, as in JAX: `key(seed)`, `split(key, n)`, and samplers that take a key.
 * Streams are counter-based (Threefry-2x32), so every backend produces the same values for the
 * same key: uniform and bernoulli bit for bit, normal up to the last ulps of log/cos/sin.
 *
 * @module
 */
import { type DType, isFloating, parseDType } from "./dtype.ts";
import type { Backend } from "./backend/backend.ts";
import { cpu } from "./backend/cpu/cpu.ts";
import { foldIn as foldKey, type Key, keyFromSeed, permutation as perm, splitKey } from "./prng.ts";
import { checkDevice, fromHandle, shapeSize, Tensor, tensor } from "./tensor.ts";
import { add, log, neg } from "./ops/elementwise.ts";
import { argmax } from "./ops/reduce.ts";
import { broadcastTo, transpose } from "./ops/shape.ts";
import { temporaries } from "./op.ts";
import { normAxis } from "./ops/util.ts";

export type { Key };

/** Options of the samplers. */
export interface SampleOptions {
  /** Float dtype of the result (default f32); values are drawn in f32 and rounded once. */
  dtype?: DType;
  /** Device (default cpu). */
  device?: Backend;
}

/** A key from an integer seed. @example `const k = key(0);` */
export const key = (seed: number): Key => keyFromSeed(seed);

/** `n` independent keys derived from `k`. @example `const [k1, k2] = split(key(0), 2);` */
export const split = (k: Key, n = 2): Key[] => splitKey(k, n);

/** A key derived from `k` and an integer (e.g. a step number). @example `foldIn(key(0), step)` */
export const foldIn = (k: Key, data: number): Key => foldKey(k, data);

function sample(
  what: string,
  k: Key,
  shape: readonly number[],
  opts: SampleOptions,
  dist: Parameters<Backend["random"]>[3],
  defaultDtype: DType,
): Tensor {
  const device = opts.device ?? cpu;
  const dtype = parseDType(opts.dtype ?? defaultDtype);
  if (dist.kind !== "bernoulli" && !isFloating(dtype)) {
    throw new Error(`random.${what}: dtype must be a float dtype, got ${dtype}`);
  }
  checkDevice(device, dtype, `random.${what}`);
  return fromHandle(device, device.random(k, shapeSize(shape), dtype, dist), dtype, shape);
}

/**
 * Standard normal samples (Box–Muller on the Threefry stream).
 *
 * @example
 * ```ts
 * const w = normal(key(0), [784, 256]);
 * ```
 */
export function normal(k: Key, shape: readonly number[], opts: SampleOptions = {}): Tensor {
  return sample("normal", k, shape, opts, { kind: "normal" }, "f32");
}

/**
 * Uniform samples in `[lo, hi)` (default `[0, 1)`).
 *
 * @example
 * ```ts
 * const u = uniform(key(1), [3], { lo: -1, hi: 1 });
 * ```
 */
export function uniform(
  k: Key,
  shape: readonly number[],
  opts: SampleOptions & { lo?: number; hi?: number } = {},
): Tensor {
  return sample("uniform", k, shape, opts, {
    kind: "uniform",
    lo: opts.lo ?? 0,
    hi: opts.hi ?? 1,
  }, "f32");
}

/**
 * Bernoulli samples: `true` with probability `p` (bool by default).
 *
 * @example
 * ```ts
 * const keepMask = bernoulli(key(2), 0.9, [128, 512]);
 * ```
 */
export function bernoulli(
  k: Key,
  p: number,
  shape: readonly number[],
  opts: SampleOptions = {},
): Tensor {
  if (!(p >= 0 && p <= 1)) throw new Error(`random.bernoulli: p must be in [0, 1], got ${p}`);
  return sample("bernoulli", k, shape, opts, { kind: "bernoulli", p }, "bool");
}

/**
 * A random permutation of `0 … n−1` (i32).
 *
 * @example
 * ```ts
 * const order = permutation(key(3), 8000);
 * ```
 */
export function permutation(k: Key, n: number, opts: { device?: Backend } = {}): Tensor {
  return tensor(perm(k, n), { dtype: "i32", device: opts.device });
}

/** Options of {@linkcode categorical}. */
export interface CategoricalOptions {
  /** The class axis of `logits` (default -1). */
  axis?: number;
  /**
   * Shape of the result (default: `logits`' shape without the class axis); the batch shape
   * must broadcast to it (e.g. `[8, ...batch]` for 8 samples per row).
   */
  shape?: readonly number[];
}

/**
 * Class indices (i32) drawn with probabilities `softmax(logits)` along `axis`, by the
 * Gumbel-max trick as `jax.random.categorical`: `argmax(logits − log(−log u))` with `u`
 * uniform in `[tiny, 1)` from `k` (f32; f64 for f64 logits). Reproducible from the key on
 * every backend up to ties; a `-Infinity` logit is never drawn.
 *
 * @example
 * ```ts
 * const next = categorical(key(0), logits); // logits [batch, vocab] → [batch]
 * const many = categorical(key(1), tensor([0, Math.log(3)]), { shape: [1000] }); // ~75% ones
 * ```
 */
export function categorical(k: Key, logits: Tensor, opts: CategoricalOptions = {}): Tensor {
  if (!(logits instanceof Tensor)) {
    throw new TypeError(
      "random.categorical: logits must be a Tensor of unnormalized log-probabilities",
    );
  }
  if (logits.ndim === 0) {
    throw new Error("random.categorical: logits need a class axis; got a scalar (shape [])");
  }
  const axis = normAxis("random.categorical", opts.axis ?? -1, logits.ndim);
  const dtype = logits.dtype === "f64" ? "f64" : "f32";
  if (!isFloating(logits.dtype)) {
    throw new Error(`random.categorical: logits must be floats, got ${logits.dtype}`);
  }
  const batch = logits.shape.filter((_, i) => i !== axis);
  const shape = opts.shape ?? batch;
  const lead = shape.length - batch.length;
  if (lead < 0 || batch.some((d, i) => d !== 1 && d !== shape[lead + i])) {
    throw new Error(
      `random.categorical: the logits' batch shape [${batch}] does not broadcast to shape ` +
        `[${shape}]; give a shape that ends with it (e.g. [n, ${batch}])`,
    );
  }
  return temporaries(() => {
    const classes = logits.shape[axis];
    // Classes last, then broadcast to [...shape, classes].
    const perm = [...logits.shape.keys()].filter((i) => i !== axis).concat(axis);
    const moved = axis === logits.ndim - 1 ? logits : transpose(logits, perm);
    const full = broadcastTo(moved, [...shape, classes]);
    const u = uniform(k, full.shape, { dtype, device: logits.device, lo: TINY[dtype], hi: 1 });
    const gumbel = neg(log(neg(log(u))));
    return argmax(add(full, gumbel), -1);
  });
}

const TINY = { f32: 1.1754943508222875e-38, f64: 2.2250738585072014e-308 } as const;
