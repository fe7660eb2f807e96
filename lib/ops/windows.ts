/**
 * @internal im2col as ONE strided view: the sliding windows of an `[N, C, H, W]` tensor laid
 * out as `[N, G, C/G, KH, KW, OH, OW]` (patch element `(n, g, c, i, j, y, x)` is
 * `input[n, g·C/G + c, y·sh + i·dh, x·sw + j·dw]`). That view has plain strides, so the
 * backends' `copy` kernel materialises it in one pass (and `jit` fuses it like any copy). Its
 * VJP (col2im) is the sum over the KH·KW window offsets of the strided placements of the
 * cotangent's slices, made of `slice`, `pad` and `add`: no scatter. The caller pads first.
 *
 * @module
 */
import { apply, type OpDef } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import { add } from "./elementwise.ts";
import { pad } from "./pad.ts";
import { reshape, slice } from "./shape.ts";

/** Window geometry: kernel, stride, dilation per spatial axis, groups, output size. */
export interface WindowAttrs {
  /** Channel groups G (C is split into G blocks of C/G). */
  readonly groups: number;
  /** Kernel height and width. */
  readonly kernel: readonly [number, number];
  /** Stride along H and W. */
  readonly stride: readonly [number, number];
  /** Dilation along H and W. */
  readonly dilation: readonly [number, number];
  /** Output height and width. */
  readonly out: readonly [number, number];
}

const windowsOp: OpDef<WindowAttrs> = {
  name: "windows",
  tags: ["movement"],
  infer: ([x], a) => ({
    shape: [x.shape[0], a.groups, x.shape[1] / a.groups, ...a.kernel, ...a.out],
    dtype: x.dtype,
  }),
  kernel: (be, [x], a, out) => {
    const [, c, h, w] = x.shape;
    const cg = c / a.groups;
    return be.copy({
      h: x.handle,
      dtype: x.dtype,
      size: x.size,
      shape: out.shape,
      strides: [
        c * h * w,
        cg * h * w,
        h * w,
        a.dilation[0] * w,
        a.dilation[1],
        a.stride[0] * w,
        a.stride[1],
      ],
      offset: 0,
    }, x.dtype);
  },
  vjp: (g, [x], _o, a) => [col2im(g, x.shape, a)],
};

/** @internal The windows view of `x` (`[N, C, H, W]`, already padded), materialised. */
export function windows(x: Tensor, a: WindowAttrs): Tensor {
  return apply(windowsOp, [x], a);
}

/** Sum the window cotangents `g` (`[N, G, C/G, KH, KW, OH, OW]`) back onto `[N, C, H, W]`. */
function col2im(g: Tensor, shape: readonly number[], a: WindowAttrs): Tensor {
  const [n, c, h, w] = shape;
  const [oh, ow] = a.out;
  const [sh, sw] = a.stride;
  let acc: Tensor | undefined;
  for (let i = 0; i < a.kernel[0]; i++) {
    for (let j = 0; j < a.kernel[1]; j++) {
      const part = slice(g, [0, 0, 0, i, j, 0, 0], [n, a.groups, c / a.groups, 1, 1, oh, ow]);
      let s = reshape(part, [n, c, oh, ow]);
      if (sh > 1 || sw > 1) {
        // Interleave stride−1 zeros after each row and column: [oh·sh, ow·sw].
        s = reshape(pad(reshape(s, [n, c, oh, 1, ow, 1]), [0, sw - 1, 0, 0, 0, sh - 1]), [
          n,
          c,
          oh * sh,
          ow * sw,
        ]);
      }
      const top = i * a.dilation[0];
      const left = j * a.dilation[1];
      // The bottom/right amounts may be negative: they crop only interleaved zeros.
      const placed = pad(s, [left, w - left - ow * sw, top, h - top - oh * sh]);
      acc = acc ? add(acc, placed) : placed;
    }
  }
  return acc!;
}
