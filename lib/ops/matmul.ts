/**
 * `matmul`: batched matrix product with NumPy batch broadcasting, accumulating in f32 (f64 for
 * f64). 1-D operands are treated as a row (left) or a column (right) vector, as in NumPy.
 *
 * @module
 */
import { promoteTypes } from "../dtype.ts";
import { apply, expectTensor, type OpDef, temporaries } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import { broadcastShapes, prod } from "./util.ts";
import { astype } from "./elementwise.ts";
import { reshape } from "./shape.ts";
import { sumTo } from "./reduce.ts";

interface MatmulAttrs {
  readonly transA: boolean;
  readonly transB: boolean;
}

function dims(shape: readonly number[], trans: boolean): [number, number] {
  const r = shape[shape.length - 2];
  const c = shape[shape.length - 1];
  return trans ? [c, r] : [r, c];
}

function batchStrides(shape: readonly number[], batch: readonly number[]): number[] {
  const own = shape.slice(0, -2);
  const mat = shape[shape.length - 1] * shape[shape.length - 2];
  const strides = new Array(batch.length).fill(0);
  let acc = mat;
  for (let i = own.length - 1; i >= 0; i--) {
    const d = batch.length - own.length + i;
    strides[d] = own[i] === 1 ? 0 : acc;
    acc *= own[i];
  }
  return strides;
}

const matmulOp: OpDef<MatmulAttrs> = {
  name: "matmul",
  tags: ["matmul"],
  infer: ([a, b], t) => {
    if (a.shape.length < 2 || b.shape.length < 2) {
      throw new Error("matmul: internal error, operands must be at least 2-D here");
    }
    const [m, k] = dims(a.shape, t.transA);
    const [k2, n] = dims(b.shape, t.transB);
    if (k !== k2) {
      throw new Error(
        `matmul: inner dimensions differ: [${a.shape}] @ [${b.shape}] (${k} vs ${k2})`,
      );
    }
    let batch: number[];
    try {
      batch = broadcastShapes("matmul", a.shape.slice(0, -2), b.shape.slice(0, -2));
    } catch (e) {
      throw new Error(`${(e as Error).message}; the operands are [${a.shape}] @ [${b.shape}]`);
    }
    return { shape: [...batch, m, n], dtype: promoteTypes(a.dtype, b.dtype) };
  },
  kernel: (be, [a, b], t, out) => {
    const batchShape = out.shape.slice(0, -2);
    const [m, k] = dims(a.shape, t.transA);
    const n = out.shape[out.shape.length - 1];
    return be.matmul(
      { h: a.handle, dtype: a.dtype, size: a.size },
      { h: b.handle, dtype: b.dtype, size: b.size },
      {
        batch: prod(batchShape),
        m,
        k,
        n,
        batchShape,
        aBatchStride: batchStrides(a.shape, batchShape),
        bBatchStride: batchStrides(b.shape, batchShape),
        transA: t.transA,
        transB: t.transB,
      },
      out.dtype,
    );
  },
  vjp: (g, [a, b], _out, t, needs) => {
    // C = op(A) op(B): dA = g op(B)ᵀ (or its transpose), dB = op(A)ᵀ g (or its transpose).
    const da = !needs[0] ? null : t.transA ? mm(b, g, t.transB, true) : mm(g, b, false, !t.transB);
    const db = !needs[1] ? null : t.transB ? mm(g, a, true, t.transA) : mm(a, g, !t.transA, false);
    return [da && sumTo(da, a), db && sumTo(db, b)];
  },
};

function mm(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  return apply(matmulOp, [a, b], { transA, transB });
}

/**
 * Matrix product `a @ b`, batched over leading dims (which broadcast). Dtypes promote; narrow
 * inputs accumulate in f32 and round once.
 *
 * @example
 * ```ts
 * matmul(ones([8, 2, 3]), ones([3, 4])).shape; // [8, 2, 4]
 * ```
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  expectTensor("matmul", a, 1);
  expectTensor("matmul", b, 2);
  if (a.ndim === 0 || b.ndim === 0) {
    throw new Error(`matmul: operands must be at least 1-D, got [${a.shape}] and [${b.shape}]`);
  }
  const d = promoteTypes(a.dtype, b.dtype);
  if (a.ndim >= 2 && b.ndim >= 2 && a.dtype === d && b.dtype === d) return mm(a, b, false, false);
  return temporaries(() => {
    const a2 = a.ndim === 1 ? reshape(a, [1, a.shape[0]]) : a;
    const b2 = b.ndim === 1 ? reshape(b, [b.shape[0], 1]) : b;
    let out = mm(astype(a2, d), astype(b2, d), false, false);
    if (a.ndim === 1) out = reshape(out, [...out.shape.slice(0, -2), out.shape[out.ndim - 1]]);
    if (b.ndim === 1) out = reshape(out, out.shape.slice(0, -1));
    return out;
  });
}

/**
 * `a @ bᵀ` without materialising the transpose (`b` is `[..., n, k]`).
 *
 * @example
 * ```ts
 * matmulT(ones([2, 3]), ones([4, 3])).shape; // [2, 4]
 * ```
 */
export function matmulT(a: Tensor, b: Tensor): Tensor {
  expectTensor("matmulT", a, 1);
  expectTensor("matmulT", b, 2);
  const d = promoteTypes(a.dtype, b.dtype);
  if (a.dtype === d && b.dtype === d) return mm(a, b, false, true);
  return temporaries(() => mm(astype(a, d), astype(b, d), false, true));
}
