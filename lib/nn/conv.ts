/**
 * The 2-D convolution layer and its initialiser, with PyTorch's `Conv2d` layout (`w` is
 * `[out, in/groups, kh, kw]`, so a torch `state_dict` saved as safetensors loads as is) and
 * init (`kaiming_uniform_(a=√5)`: both weight and bias uniform in ±1/√fan_in).
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Backend } from "../backend/backend.ts";
import { type Tensor, tidy } from "../tensor.ts";
import { expectTensor } from "../op.ts";
import { astype } from "../ops/elementwise.ts";
import { conv2d as conv2dOp, type Conv2dOptions, pair } from "../ops/conv.ts";
import { type Key, split, uniform } from "../random.ts";

/** Parameters of {@linkcode conv2d}: `w` `[out, in/groups, kh, kw]`, `b` `[out]` (optional). */
export interface Conv2dParams {
  /** The weight, `[out, in/groups, kh, kw]`. */
  readonly w: Tensor;
  /** The bias, `[out]`. */
  readonly b?: Tensor;
}

/** Options of {@linkcode conv2dInit}. */
export interface Conv2dInitOptions {
  /** Channel groups (default 1). */
  groups?: number;
  /** Whether to add a bias (default true). */
  bias?: boolean;
  /** Float dtype of the params (default f32); drawn in f32 and rounded once. */
  dtype?: DType;
  /** Device (default cpu). */
  device?: Backend;
}

/**
 * Initialise a conv layer as torch's `nn.Conv2d`: with `fan_in = in/groups · kh · kw`, `w` and
 * `b` are uniform in `[−1/√fan_in, 1/√fan_in)`, drawn from two keys split from `k`.
 *
 * @example
 * ```ts
 * const p = conv2dInit(key(0), 1, 32, 3); // w [32, 1, 3, 3], b [32]
 * ```
 */
export function conv2dInit(
  k: Key,
  inChannels: number,
  outChannels: number,
  kernelSize: number | readonly number[],
  opts: Conv2dInitOptions = {},
): Conv2dParams {
  const { groups = 1, bias = true, dtype = "f32", device } = opts;
  for (const [name, v] of [["inChannels", inChannels], ["outChannels", outChannels]] as const) {
    if (!Number.isInteger(v) || v < 1 || v % groups !== 0) {
      throw new Error(
        `conv2dInit: ${name} must be a positive integer divisible by groups ${groups}, got ${v}`,
      );
    }
  }
  const [kh, kw] = pair("conv2dInit", "kernelSize", kernelSize);
  const fanIn = (inChannels / groups) * kh * kw;
  const bound = 1 / Math.sqrt(fanIn);
  const [kW, kB] = split(k, 2);
  const draw = (key: Key, shape: number[]) =>
    tidy(() =>
      astype(
        uniform(key, shape, {
          dtype: dtype === "f64" ? "f64" : "f32",
          device,
          lo: -bound,
          hi: bound,
        }),
        dtype,
      )
    );
  const w = draw(kW, [outChannels, inChannels / groups, kh, kw]);
  return bias ? { w, b: draw(kB, [outChannels]) } : { w };
}

/** Options of the {@linkcode conv2d} layer: the op's, without the bias (it is a param). */
export type Conv2dLayerOptions = Omit<Conv2dOptions, "bias">;

/**
 * Apply a conv layer: `conv2d(x, p.w, { bias: p.b, ...opts })` on NCHW `x`. One op tagged
 * `matmul`, so autocast runs it in the low-precision dtype.
 *
 * @example
 * ```ts
 * const y = conv2d(p, x, { padding: 1 }); // x: [N, 1, 28, 28] → y: [N, 32, 28, 28]
 * ```
 */
export function conv2d(p: Conv2dParams, x: Tensor, opts: Conv2dLayerOptions = {}): Tensor {
  if (!p || !p.w) throw new Error("nn.conv2d: params must be { w, b? } as made by conv2dInit");
  expectTensor("nn.conv2d", x, "argument 2 (x)");
  return conv2dOp(x, p.w, { ...opts, bias: p.b });
}
