/**
 * Block-wise 8-bit quantization as bitsandbytes does it: the dynamic quantization maps and the
 * `quantizeBlockwise` / `dequantizeBlockwise` ops that 8-bit optimizer states are stored with.
 *
 * A tensor is split (flat, row-major) into blocks of `blockSize` elements; each block keeps its
 * absolute maximum in f32 and every element keeps a u8 index into a 256-entry map of values in
 * [−1, 1]: the entry nearest to `x / absmax`. Dequantizing gives `map[code] · absmax`. The ops
 * run on the tensors' device through `apply` (backend kernels `quantize` and `dequantize`; the
 * block absmax is an `abs` + `max` reduction).
 *
 * @example
 * ```ts
 * const map = dynamicMap();
 * const q = quantizeBlockwise(tensor([0, 0.5, -0.25, 1]), map, 256);
 * await dequantizeBlockwise(q, map, 256).data(); // ≈ [0, 0.50078, -0.24766, 1]
 * ```
 *
 * @module
 */
import { type DType, isFloating, parseDType } from "../dtype.ts";
import type { Arg, Backend } from "../backend/backend.ts";
import { apply, type Meta, type OpDef } from "../op.ts";
import { shapeSize, Tensor, tensor, zeros } from "../tensor.ts";
import { abs, astype } from "../ops/elementwise.ts";
import { max } from "../ops/reduce.ts";
import { concat, reshape } from "../ops/shape.ts";

/** Powers of ten for the seven decades of the dynamic map (1e−6 … 1e0). */
const DECADES = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];

/**
 * `torch.linspace(start, end, steps)` in f32 as torch's CPU kernel computes it
 * (`pytorch/pytorch aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp`): an f32 step
 * `(end − start) / (steps − 1)`, the first half counted up from `start` and the second down
 * from `end`, each point rounded to f32 from `start + step·i` (`end − step·(steps−1−i)`).
 * Which rounding a torch build uses there (a fused multiply-add or not) can change single map
 * entries by one f32 ulp: published dumps of bitsandbytes' map differ in such entries (e.g.
 * ±0.7117187976837158 vs ±0.711718738079071), so nbit pins its own entries in
 * tests/quantize_test.ts and does not claim bit-for-bit equality with every bitsandbytes build.
 */
function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const f = Math.fround;
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  return Float32Array.from(
    { length: steps },
    (_, i) => i < half ? f(s + step * i) : f(e - step * (steps - i - 1)),
  );
}

/**
 * The bitsandbytes dynamic quantization map: 256 ascending f32 values, built by the algorithm of
 * `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)` in
 * `bitsandbytes-foundation/bitsandbytes bitsandbytes/functional.py` (after Dettmers, "8-Bit
 * Approximations for Parallelism in Deep Learning", arXiv 1511.04561).
 * For decades i = 0…6, the midpoints of `linspace(0.1, 1, k + 1)` (f32) times 10^(i−6), with
 * k = 2^i (signed, plus the negated values) or 2^(i+1) (unsigned); then 0 and 1.0. The signed
 * map (for momentum) runs from −0.99296874 (index 0) through 0 (index 127) to 1 (index 255) and
 * has no −1; the unsigned map (for Adam's v) from 0 to 1.
 *
 * @example
 * ```ts
 * const m = dynamicMap(); // signed
 * m[0]; // -0.9929687...
 * dynamicMap({ signed: false })[1]; // 3.25e-7
 * ```
 */
export function dynamicMap(opts: { signed?: boolean } = {}): Float32Array {
  const signed = opts.signed ?? true;
  const f = Math.fround;
  const data: number[] = [];
  DECADES.forEach((decade, i) => {
    const items = (signed ? 2 ** i : 2 ** (i + 1)) + 1;
    const b = linspaceF32(0.1, 1, items);
    for (let j = 0; j + 1 < items; j++) {
      const v = f(f(decade) * f(f(b[j] + b[j + 1]) / 2));
      data.push(v);
      if (signed) data.push(-v);
    }
  });
  data.push(0, 1);
  while (data.length < 256) data.push(0);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** A block-wise quantized tensor: u8 codes shaped like the input, one f32 absmax per block. */
export interface Quantized {
  /** u8 indices into the map, in the input's shape. */
  readonly codes: Tensor;
  /** f32 absolute maximum of each block, shape `[⌈n / blockSize⌉]`. */
  readonly absmax: Tensor;
}

interface BlockAttrs {
  readonly blockSize: number;
}

interface QuantizeAttrs extends BlockAttrs {
  readonly signGuard: boolean;
}

interface DequantizeAttrs extends BlockAttrs {
  readonly dtype: DType;
}

const argOf = (t: Tensor): Arg => ({ h: t.handle, dtype: t.dtype, size: t.size });

function checkBlockSize(op: string, blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    throw new Error(`${op}: blockSize must be a positive integer (e.g. 256), got ${blockSize}`);
  }
}

function checkScales(op: string, n: number, absmax: Meta, map: Meta, blockSize: number): void {
  const blocks = Math.ceil(n / blockSize);
  if (absmax.dtype !== "f32" || shapeSize(absmax.shape) !== blocks) {
    throw new Error(
      `${op}: absmax must be f32 with ${blocks} elements (⌈${n} / ${blockSize}⌉), got ` +
        `${absmax.dtype}[${absmax.shape}]; was it made with another blockSize?`,
    );
  }
  if (map.dtype !== "f32" || shapeSize(map.shape) !== 256) {
    throw new Error(`${op}: the map must be f32 with 256 entries, got ${map.dtype}[${map.shape}]`);
  }
}

const blockAbsmaxOp: OpDef<BlockAttrs> = {
  name: "blockAbsmax",
  tags: ["reduction"],
  compose: ([x], { blockSize }) => {
    const n = x.size;
    const blocks = Math.ceil(n / blockSize);
    let a = abs(reshape(x, [n]));
    const pad = blocks * blockSize - n;
    if (pad > 0) a = concat([a, zeros([pad], { dtype: a.dtype, device: a.device })]);
    return astype(max(reshape(a, [blocks, blockSize]), 1), "f32");
  },
};

const quantizeOp: OpDef<QuantizeAttrs> = {
  name: "quantizeBlockwise",
  tags: ["cast"],
  infer: ([x, absmax, map], a) => {
    checkScales("quantizeBlockwise", shapeSize(x.shape), absmax, map, a.blockSize);
    return { shape: x.shape, dtype: "u8" };
  },
  kernel: (b, [x, absmax, map], a) =>
    b.quantize(argOf(x), argOf(absmax), argOf(map), a.blockSize, a.signGuard),
};

const dequantizeOp: OpDef<DequantizeAttrs> = {
  name: "dequantizeBlockwise",
  tags: ["cast"],
  infer: ([codes, absmax, map], a) => {
    if (codes.dtype !== "u8") {
      throw new Error(`dequantizeBlockwise: codes must be u8, got ${codes.dtype}`);
    }
    checkScales("dequantizeBlockwise", shapeSize(codes.shape), absmax, map, a.blockSize);
    return { shape: codes.shape, dtype: a.dtype };
  },
  kernel: (b, [codes, absmax, map], a) =>
    b.dequantize(argOf(codes), argOf(absmax), argOf(map), a.blockSize, a.dtype),
};

function checkFloat(op: string, x: Tensor): void {
  if (!(x instanceof Tensor)) throw new Error(`${op}: expected a tensor, got ${typeof x}`);
  if (!isFloating(x.dtype)) throw new Error(`${op}: expected a float tensor, got ${x.dtype}`);
}

function mapOn(op: string, map: Tensor | Float32Array, device: Backend): Tensor {
  if (map instanceof Tensor) return map;
  if (!(map instanceof Float32Array) || map.length !== 256) {
    throw new Error(`${op}: the map must be a Float32Array(256) or an f32 tensor of 256`);
  }
  return tensor(map, { dtype: "f32", device });
}

/**
 * The absolute maximum of each block of `blockSize` consecutive elements of `x` (flattened
 * row-major; the last block may be shorter), as an f32 tensor of `⌈n / blockSize⌉`. NaN in a
 * block gives NaN.
 *
 * @example
 * ```ts
 * await blockAbsmax(tensor([1, -3, 2]), 2).data(); // [3, 2]
 * ```
 */
export function blockAbsmax(x: Tensor, blockSize = 256): Tensor {
  checkFloat("blockAbsmax", x);
  checkBlockSize("blockAbsmax", blockSize);
  return apply(blockAbsmaxOp, [x], { blockSize });
}

/** Options of {@linkcode quantizeBlockwise}. */
export interface QuantizeOptions {
  /**
   * Never quantize a negative value to a code ≥ 0 (nor a positive one to a negative code):
   * bitsandbytes' guard for momentum states, so their sign never flips. Default false (plain
   * nearest, as `bitsandbytes.functional.quantize_blockwise`).
   */
  readonly signGuard?: boolean;
}

/**
 * Quantize `x` block-wise to 8 bits with `map` (256 ascending values, see
 * {@linkcode dynamicMap}; a `Float32Array` is uploaded to `x`'s device): per block of
 * `blockSize`, `absmax = max|x|` (f32) and each code is the index of the map entry nearest to
 * `clamp(x / absmax, −1, 1)` (in f32, ties to the lower index). An all-zero block gets the
 * map's zero code. A positive element equal to the absmax round-trips exactly; a negative one
 * comes back as −0.99297·absmax with the signed map, which has no −1.
 *
 * @example
 * ```ts
 * const q = quantizeBlockwise(tensor([0, 0.5, -0.25, 1, -1, 0.001]), dynamicMap());
 * await q.codes.data(); // [127, 219, 53, 255, 0, 142]
 * await q.absmax.data(); // [1]
 * ```
 */
export function quantizeBlockwise(
  x: Tensor,
  map: Tensor | Float32Array,
  blockSize = 256,
  opts: QuantizeOptions = {},
): Quantized {
  checkFloat("quantizeBlockwise", x);
  checkBlockSize("quantizeBlockwise", blockSize);
  const absmax = apply(blockAbsmaxOp, [x], { blockSize });
  const m = mapOn("quantizeBlockwise", map, x.device);
  const signGuard = opts.signGuard ?? false;
  return { codes: apply(quantizeOp, [x, absmax, m], { blockSize, signGuard }), absmax };
}

/**
 * Dequantize block-wise 8-bit codes: `map[code] · absmax[block]`, computed in f32 and rounded
 * once to `dtype` (default f32), in `shape` (default the codes' shape).
 *
 * @example
 * ```ts
 * const map = dynamicMap();
 * const x = dequantizeBlockwise(quantizeBlockwise(w, map), map, 256, w.shape, "bf16");
 * ```
 */
export function dequantizeBlockwise(
  q: Quantized,
  map: Tensor | Float32Array,
  blockSize = 256,
  shape: readonly number[] = q.codes.shape,
  dtype: DType = "f32",
): Tensor {
  checkBlockSize("dequantizeBlockwise", blockSize);
  const d = parseDType(dtype);
  if (!isFloating(d)) throw new Error(`dequantizeBlockwise: dtype must be a float, got ${d}`);
  if (shapeSize(shape) !== q.codes.size) {
    throw new Error(
      `dequantizeBlockwise: shape [${shape}] holds ${shapeSize(shape)} values but there are ` +
        `${q.codes.size} codes`,
    );
  }
  const m = mapOn("dequantizeBlockwise", map, q.codes.device);
  const out = apply(dequantizeOp, [q.codes, q.absmax, m], { blockSize, dtype: d });
  const same = shape.length === out.ndim && shape.every((s, i) => s === out.shape[i]);
  return same ? out : reshape(out, shape);
}
