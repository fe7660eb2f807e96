/**
 * 2-D pooling on NCHW input as PyTorch's: `maxPool2d` (implicit −∞ padding; its gradient goes
 * to the FIRST maximum of each window, as torch's) and `avgPool2d` (zero padding counted in
 * the divisor: torch's default `count_include_pad=True`). Both read the windows of the padded
 * input through the same one-copy im2col view as `conv2d` (`windows.ts`) and reduce them with
 * the backends' `reduce` kernel.
 *
 * @module
 */
import { isFloating } from "../dtype.ts";
import { apply, expectTensor, type OpDef, temporaries } from "../op.ts";
import { arange, type Tensor } from "../tensor.ts";
import { div, equal, where } from "./elementwise.ts";
import { argmax, sum } from "./reduce.ts";
import { pad } from "./pad.ts";
import { reshape } from "./shape.ts";
import { outSize, pair } from "./conv.ts";
import { windows } from "./windows.ts";

/** Options of {@linkcode maxPool2d} and {@linkcode avgPool2d} (torch's names and defaults). */
export interface Pool2dOptions {
  /** Stride, one number or `[sh, sw]` (default: the kernel size). */
  stride?: number | readonly number[];
  /** Padding on both sides, one number or `[ph, pw]`, at most half the kernel (default 0). */
  padding?: number | readonly number[];
  /** Dilation, one number or `[dh, dw]` (default 1; maxPool2d only). */
  dilation?: number | readonly number[];
}

/** Max over the middle axis of `[outer, R, inner]`; VJP to the first maximum (argmax). */
const windowMaxOp: OpDef<undefined> = {
  name: "maxPool2d",
  tags: ["reduction"],
  infer: ([x]) => ({ shape: [x.shape[0], x.shape[2]], dtype: x.dtype }),
  kernel: (be, [x]) =>
    be.reduce(
      "max",
      { h: x.handle, dtype: x.dtype, size: x.size },
      x.shape[0],
      x.shape[1],
      x.shape[2],
      x.dtype,
    ),
  vjp: (g, [x]) => {
    const r = x.shape[1];
    const first = argmax(x, 1, true);
    const mask = equal(first, reshape(arange(r, undefined, 1, { device: x.device }), [1, r, 1]));
    return [where(mask, reshape(g, [x.shape[0], 1, x.shape[2]]), 0)];
  },
};

interface Geometry {
  readonly kernel: [number, number];
  readonly stride: [number, number];
  readonly dilation: [number, number];
  readonly out: [number, number];
  readonly pads: number[];
}

function geometry(
  op: string,
  x: Tensor,
  kernel: number | readonly number[],
  opts: Pool2dOptions,
): Geometry {
  expectTensor(op, x, "argument 1 (x)");
  if (x.ndim !== 4) {
    throw new Error(
      `${op}: x must be 4-D [N, C, H, W], got [${x.shape}]; add a batch axis with expandDims(x, 0)`,
    );
  }
  if (!isFloating(x.dtype)) {
    throw new Error(`${op}: x must be a float tensor, got ${x.dtype}; cast it with astype first`);
  }
  const k = pair(op, "kernel", kernel);
  const stride = pair(op, "stride", opts.stride ?? k);
  const dilation = pair(op, "dilation", opts.dilation ?? 1);
  const [ph, pw] = pair(op, "padding", opts.padding ?? 0, 0);
  [ph, pw].forEach((p, i) => {
    const span = dilation[i] * (k[i] - 1) + 1;
    if (2 * p > span) {
      throw new Error(
        `${op}: padding ${p} is more than half the kernel's span ${span} (as torch requires)`,
      );
    }
  });
  const [, , h, w] = x.shape;
  const out: [number, number] = [
    outSize(op, h, h + 2 * ph, k[0], stride[0], dilation[0], "H"),
    outSize(op, w, w + 2 * pw, k[1], stride[1], dilation[1], "W"),
  ];
  return { kernel: k, stride, dilation, out, pads: [pw, pw, ph, ph] };
}

/** The windows of the padded input as `[N·C, KH·KW, OH·OW]`. */
function patches(x: Tensor, g: Geometry, value: number): Tensor {
  const [n, c] = x.shape;
  const xp = g.pads.some((p) => p !== 0) ? pad(x, g.pads, { value }) : x;
  const p = windows(xp, { groups: c, ...g });
  return reshape(p, [n * c, g.kernel[0] * g.kernel[1], g.out[0] * g.out[1]]);
}

/**
 * Max pooling as `F.max_pool2d(x, kernel, stride, padding, dilation)`: `[N, C, H, W]` →
 * `[N, C, OH, OW]`; NaN in a window wins. The gradient goes to the first maximum of each
 * window (row-major order), as torch's.
 *
 * @example
 * ```ts
 * maxPool2d(ones([1, 1, 28, 28]), 2).shape; // [1, 1, 14, 14]
 * ```
 */
export function maxPool2d(
  x: Tensor,
  kernel: number | readonly number[],
  opts: Pool2dOptions = {},
): Tensor {
  const g = geometry("maxPool2d", x, kernel, opts);
  return temporaries(() => {
    const m = apply(windowMaxOp, [patches(x, g, -Infinity)], undefined);
    return reshape(m, [x.shape[0], x.shape[1], ...g.out]);
  });
}

/**
 * Average pooling as `F.avg_pool2d(x, kernel, stride, padding)` with torch's defaults
 * (`count_include_pad=True`: the divisor is always KH·KW). Sums accumulate in at least f32.
 *
 * @example
 * ```ts
 * avgPool2d(ones([1, 1, 28, 28]), 2).shape; // [1, 1, 14, 14]
 * ```
 */
export function avgPool2d(
  x: Tensor,
  kernel: number | readonly number[],
  opts: Pool2dOptions = {},
): Tensor {
  if (opts.dilation !== undefined) {
    throw new Error("avgPool2d: dilation is not an option of avg_pool2d (torch has none)");
  }
  const g = geometry("avgPool2d", x, kernel, opts);
  return temporaries(() => {
    const s = sum(patches(x, g, 0), 1);
    const m = div(s, g.kernel[0] * g.kernel[1]);
    return reshape(m, [x.shape[0], x.shape[1], ...g.out]);
  });
}
