/**
 * The WebGPU matmul entry: dispatches the tiled kernel of `wgsl/matmul.ts`, with a register
 * block chosen per adapter. Packed outputs whose rows do not fill whole words (f16/bf16 with
 * odd `n`, 1-byte dtypes with `n % 4 ≠ 0`) go through an f32 buffer and one cast, so no two
 * invocations write the same word.
 *
 * @example
 * ```ts
 * const h = matmul(ctx, a, b, { batch: 1, m: 2, k: 3, n: 4, aBatchStride: [], bBatchStride: [],
 *   batchShape: [], transA: false, transB: false }, "f32");
 * ```
 *
 * @module
 */
import type { DType } from "../../dtype.ts";
import type { Arg, MatmulGeometry } from "../backend.ts";
import { checkAlive, commandEncoder, type Ctx, dispatch } from "./runtime.ts";
import { flat, output, runMap } from "./elementwise.ts";
import { perWord, storeF32 } from "./wgsl/dtype.ts";
import {
  type MatmulBlock,
  matmulKernel,
  type MatmulSig,
  matmulTile,
  MAX_BATCH_DIMS,
} from "./wgsl/matmul.ts";
import { coalesce } from "./views.ts";

/**
 * The kernel signature, uniform words and workgroups of a product with an output dtype `dt`
 * (checking the device's limits).
 *
 * @example
 * ```ts
 * const { sig, params, groups } = product(ctx, a, b, g, "f32");
 * ```
 */
export function product(
  ctx: Ctx,
  a: Arg,
  b: Arg,
  g: MatmulGeometry,
  dt: DType,
): { sig: MatmulSig; params: number[]; groups: [number, number, number] } {
  const block: MatmulBlock = ctx.matmulBlock;
  const gx = Math.ceil(g.n / matmulTile(block));
  const gy = Math.ceil(g.m / matmulTile(block));
  if (gx > ctx.maxGroups || gy > ctx.maxGroups) {
    throw new Error(
      `matmul: a ${g.m}×${g.n} output needs more workgroups than ${ctx.name} allows ` +
        `(${ctx.maxGroups} per dimension); split the product`,
    );
  }
  const sig: MatmulSig = {
    a: a.dtype,
    b: b.dtype,
    out: dt,
    transA: g.transA,
    transB: g.transB,
    block,
    f16: ctx.f16,
    aCast: g.aCast,
    bCast: g.bCast,
  };
  const bd = coalesce(g.batchShape, [
    { strides: g.aBatchStride, offset: 0 },
    { strides: g.bBatchStride, offset: 0 },
  ]);
  const nb = bd.shape.length;
  if (nb > MAX_BATCH_DIMS) {
    throw new Error(
      `matmul: ${nb} batch dimensions that cannot be merged; WebGPU takes at most ` +
        `${MAX_BATCH_DIMS} (reshape the batch dimensions together first)`,
    );
  }
  const pad = (
    xs: readonly number[],
  ) => [...xs.map((x) => x >>> 0), ...new Array(MAX_BATCH_DIMS - xs.length).fill(0)];
  const params = [
    g.m,
    g.n,
    g.k,
    g.batch,
    nb,
    ...pad(bd.shape),
    ...pad(bd.strides[0]),
    ...pad(bd.strides[1]),
  ];
  return { sig, params, groups: [gx, gy, Math.min(g.batch, ctx.maxGroups)] };
}

/** A folded operand cast is only f32 → f16/bf16 (see `MatmulGeometry.aCast`). */
export function checkCast(name: string, x: Arg, to: DType | undefined): void {
  if (to === undefined) return;
  if (x.dtype !== "f32" || (to !== "f16" && to !== "bf16")) {
    throw new Error(
      `matmul: ${name} rounds an f32 operand to f16 or bf16; got a ${x.dtype} operand and ` +
        `${name} ${to} (cast the operand first instead)`,
    );
  }
}

/**
 * Batched matrix product (see `Backend.matmul`); accumulates in f32. `g.aCast`/`g.bCast` round
 * an f32 operand to f16/bf16 while loading it (same bits as casting it first).
 *
 * @example
 * ```ts
 * matmul(ctx, a, b, { batch: 1, m: 2, k: 3, n: 4, aBatchStride: [], bBatchStride: [], batchShape: [], transA: false, transB: false }, "f32");
 * ```
 */
export function matmul(
  ctx: Ctx,
  a: Arg,
  b: Arg,
  g: MatmulGeometry,
  outDtype: DType,
): GPUBuffer {
  checkAlive(ctx);
  checkCast("aCast", a, g.aCast);
  checkCast("bCast", b, g.bCast);
  const direct = g.n % perWord(outDtype) === 0;
  const dt: DType = direct ? outDtype : "f32";
  const size = g.batch * g.m * g.n;
  const buf = output(ctx, dt, size);
  if (size > 0) {
    if (g.k === 0) commandEncoder(ctx).clearBuffer(buf);
    else {
      const { sig, params, groups } = product(ctx, a, b, g, dt);
      dispatch(ctx, matmulKernel(sig), [a.h as GPUBuffer, b.h as GPUBuffer], buf, params, groups);
    }
  }
  if (direct) return buf;
  // Round the f32 sums once, as a compute-array store does (not a saturating cast).
  const out = runMap(
    ctx,
    "mmstore",
    [flat({ h: buf, dtype: "f32", size })],
    [size],
    outDtype,
    (v) => {
      const s = storeF32(outDtype, v.f(0));
      return { deps: s.deps, code: "", bits: s.expr };
    },
  );
  ctx.pool.release(buf);
  return out;
}
