/**
 * Convolutions as PyTorch's: `conv2d` on NCHW input with a `[out, in/groups, kh, kw]` weight
 * and `conv1d` on `[N, C, L]`. Computed as im2col + matmul: the padded input's windows are
 * materialised by one strided copy (`windows.ts`) as `[N, G, C/G·KH·KW, OH·OW]`, then one
 * batched matmul with the weight viewed as `[G, O/G, C/G·KH·KW]` (broadcast over N) gives
 * `[N, O, OH, OW]` directly. Backward reuses the matmul VJP (dW: a matmul of the patches, dX:
 * col2im by strided slice-adds, no scatter). `conv2d` is one op tagged `matmul`, so autocast
 * runs it in the low-precision dtype (bias included), as torch does.
 *
 * @module
 */
import { apply, expectTensor, type OpDef, temporaries } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import { add } from "./elementwise.ts";
import { matmul } from "./matmul.ts";
import { pad } from "./pad.ts";
import { reshape } from "./shape.ts";
import { type WindowAttrs, windows } from "./windows.ts";

/** Padding of a convolution: one amount, `[h, w]`, `"valid"` (none) or `"same"` (stride 1). */
export type ConvPadding = number | readonly number[] | "same" | "valid";

/** Options of {@linkcode conv2d} (PyTorch's names and defaults). */
export interface Conv2dOptions {
  /** Bias `[out]`, added to every output position (default none). */
  bias?: Tensor;
  /** Stride, one number or `[sh, sw]` (default 1). */
  stride?: number | readonly number[];
  /** Zero padding: a number, `[ph, pw]` (both sides), `"valid"` or `"same"` (default 0). */
  padding?: ConvPadding;
  /** Dilation, one number or `[dh, dw]` (default 1). */
  dilation?: number | readonly number[];
  /** Channel groups; in and out channels must both divide by it (default 1). */
  groups?: number;
}

interface ConvAttrs extends WindowAttrs {
  /** `[left, right, top, bottom]` zero padding (F.pad order). */
  readonly pads: readonly number[];
}

const conv2dOp: OpDef<ConvAttrs> = {
  name: "conv2d",
  tags: ["matmul"],
  compose: ([x, w, b], a) => {
    const [n] = x.shape;
    const [o, cg, kh, kw] = w.shape;
    const xp = a.pads.some((p) => p !== 0) ? pad(x, a.pads) : x;
    const k = cg * kh * kw;
    const patches = reshape(windows(xp, a), [n, a.groups, k, a.out[0] * a.out[1]]);
    const y = matmul(reshape(w, [a.groups, o / a.groups, k]), patches);
    const out = reshape(y, [n, o, a.out[0], a.out[1]]);
    return b ? add(out, reshape(b, [o, 1, 1])) : out;
  },
};

/** @internal A positive integer pair from a number or a pair, with a clear error. */
export function pair(op: string, name: string, v: unknown, min = 1): [number, number] {
  const p = typeof v === "number" ? [v, v] : v;
  if (
    !Array.isArray(p) || p.length !== 2 || !p.every((d) => Number.isInteger(d) && d >= min)
  ) {
    throw new Error(
      `${op}: ${name} must be an integer ≥ ${min} or a pair of them, got ${JSON.stringify(v)}`,
    );
  }
  return [p[0], p[1]];
}

/** @internal Output size of a window sweep, with a clear error when nothing fits. */
export function outSize(
  op: string,
  size: number,
  padded: number,
  k: number,
  s: number,
  d: number,
  axis: string,
): number {
  const span = d * (k - 1) + 1;
  if (padded < span) {
    throw new Error(
      `${op}: the ${axis} axis (${size}, ${padded} padded) is smaller than the kernel's span ` +
        `${span} (kernel ${k}, dilation ${d}); pad more or use a smaller kernel`,
    );
  }
  return Math.floor((padded - span) / s) + 1;
}

/**
 * 2-D convolution (cross-correlation, as PyTorch's `F.conv2d`): `x` is `[N, C, H, W]`, `w` is
 * `[O, C/groups, KH, KW]`; the result is `[N, O, OH, OW]` with
 * `OH = ⌊(H + 2·ph − dh·(KH−1) − 1) / sh⌋ + 1`. Dtypes promote; narrow dtypes accumulate in f32
 * (the matmul kernels). `padding: "same"` needs stride 1 and pads an odd total one more at the
 * bottom/right, as torch.
 *
 * @example
 * ```ts
 * conv2d(ones([8, 3, 28, 28]), ones([16, 3, 3, 3]), { padding: 1 }).shape; // [8, 16, 28, 28]
 * ```
 */
export function conv2d(x: Tensor, w: Tensor, opts: Conv2dOptions = {}): Tensor {
  const op = "conv2d";
  expectTensor(op, x, "argument 1 (x)");
  expectTensor(op, w, "argument 2 (w)");
  if (opts.bias !== undefined) expectTensor(op, opts.bias, "options.bias");
  const groups = opts.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) {
    throw new Error(`${op}: groups must be a positive integer, got ${JSON.stringify(groups)}`);
  }
  if (x.ndim !== 4) {
    throw new Error(
      `${op}: x must be 4-D [N, C, H, W], got [${x.shape}]; add a batch axis with expandDims(x, 0)`,
    );
  }
  if (w.ndim !== 4) {
    throw new Error(`${op}: w must be 4-D [out, in/groups, kh, kw], got [${w.shape}]`);
  }
  const [, c, h, wd] = x.shape;
  const [o, cg, kh, kw] = w.shape;
  if (c % groups !== 0 || o % groups !== 0 || cg * groups !== c) {
    throw new Error(
      `${op}: x has ${c} channels and w is [${w.shape}] with groups ${groups}; need ` +
        `w.shape[1] · groups = C (${cg} · ${groups} ≠ ${c}) and out channels ${o} divisible by groups`,
    );
  }
  if (opts.bias && (opts.bias.ndim !== 1 || opts.bias.shape[0] !== o)) {
    throw new Error(`${op}: bias must be [${o}] (one per out channel), got [${opts.bias.shape}]`);
  }
  const stride = pair(op, "stride", opts.stride ?? 1);
  const dilation = pair(op, "dilation", opts.dilation ?? 1);
  const padding = opts.padding ?? 0;
  let pads: number[];
  if (padding === "valid") pads = [0, 0, 0, 0];
  else if (padding === "same") {
    if (stride[0] !== 1 || stride[1] !== 1) {
      throw new Error(`${op}: padding "same" needs stride 1, got stride [${stride}]`);
    }
    const th = dilation[0] * (kh - 1);
    const tw = dilation[1] * (kw - 1);
    pads = [tw >> 1, tw - (tw >> 1), th >> 1, th - (th >> 1)];
  } else {
    const [ph, pw] = pair(op, "padding", padding, 0);
    pads = [pw, pw, ph, ph];
  }
  const out: [number, number] = [
    outSize(op, h, h + pads[2] + pads[3], kh, stride[0], dilation[0], "H"),
    outSize(op, wd, wd + pads[0] + pads[1], kw, stride[1], dilation[1], "W"),
  ];
  const attrs: ConvAttrs = { groups, kernel: [kh, kw], stride, dilation, out, pads };
  return apply(conv2dOp, opts.bias ? [x, w, opts.bias] : [x, w], attrs);
}

/** Options of {@linkcode conv1d}: as conv2d's, with single numbers. */
export interface Conv1dOptions {
  /** Bias `[out]` (default none). */
  bias?: Tensor;
  /** Stride (default 1). */
  stride?: number;
  /** Zero padding on both sides, `"valid"` or `"same"` (default 0). */
  padding?: number | "same" | "valid";
  /** Dilation (default 1). */
  dilation?: number;
  /** Channel groups (default 1). */
  groups?: number;
}

/**
 * 1-D convolution as PyTorch's `F.conv1d`: `x` is `[N, C, L]`, `w` is `[O, C/groups, K]`; runs
 * as `conv2d` over a height of 1.
 *
 * @example
 * ```ts
 * conv1d(ones([2, 4, 10]), ones([8, 4, 3])).shape; // [2, 8, 8]
 * ```
 */
export function conv1d(x: Tensor, w: Tensor, opts: Conv1dOptions = {}): Tensor {
  expectTensor("conv1d", x, "argument 1 (x)");
  expectTensor("conv1d", w, "argument 2 (w)");
  if (x.ndim !== 3 || w.ndim !== 3) {
    throw new Error(
      `conv1d: x must be [N, C, L] and w [out, in/groups, k], got [${x.shape}] and [${w.shape}]`,
    );
  }
  for (const k of ["stride", "dilation"] as const) {
    if (opts[k] !== undefined && typeof opts[k] !== "number") {
      throw new Error(`conv1d: ${k} must be a number, got ${JSON.stringify(opts[k])}`);
    }
  }
  const p = opts.padding ?? 0;
  if (typeof p !== "number" && p !== "same" && p !== "valid") {
    throw new Error(
      `conv1d: padding must be a number, "same" or "valid", got ${JSON.stringify(p)}`,
    );
  }
  return temporaries(() => {
    const x2 = reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]]);
    const w2 = reshape(w, [w.shape[0], w.shape[1], 1, w.shape[2]]);
    const y = conv2d(x2, w2, {
      bias: opts.bias,
      stride: [1, opts.stride ?? 1],
      padding: typeof p === "number" ? [0, p] : p,
      dilation: [1, opts.dilation ?? 1],
      groups: opts.groups,
    });
    return reshape(y, [y.shape[0], y.shape[1], y.shape[3]]);
  });
}
