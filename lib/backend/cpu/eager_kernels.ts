/**
 * One-operation {@linkcode FusedKernel}s for the CPU's eager elementwise kernels (`cast`,
 * `unary`, `binary`, `where`, `copy`), so that they run on the SIMD fused path when it applies.
 * A one-op kernel computes exactly what the eager kernel does (it is the same operation, rounded
 * once to its dtype). Each is built once per operation and dtypes and reused, so an eager call
 * costs one map lookup; its `shape` and `size` are placeholders (the caller gives the length).
 *
 * @module
 */
import type { CastOptions, DType } from "../../dtype.ts";
import type { BinaryOp, UnaryOp } from "../backend.ts";
import type { FusedKernel, FusedOp } from "../fused.ts";

const cache = new Map<string, FusedKernel>();

function oneOp(key: string, inputs: readonly DType[], op: FusedOp): FusedKernel {
  let k = cache.get(key);
  if (!k) {
    k = { shape: [], size: 0, inputs, immediates: [], ops: [op], outputs: [0] };
    cache.set(key, k);
  }
  return k;
}

const x0 = { kind: "input", index: 0 } as const;
const x1 = { kind: "input", index: 1 } as const;
const x2 = { kind: "input", index: 2 } as const;

/** `cast(x: from) → to` as a one-op kernel. */
export function castKernel(from: DType, to: DType, opts?: CastOptions): FusedKernel {
  const sat = opts?.saturate === true;
  return oneOp(`c|${from}|${to}|${sat}`, [from], {
    op: "cast",
    x: x0,
    dtype: to,
    ...(sat ? { opts: { saturate: true } } : {}),
  });
}

/** `op(x: xd) → out` as a one-op kernel. */
export function unaryKernel(op: UnaryOp, xd: DType, out: DType): FusedKernel {
  return oneOp(`u|${op}|${xd}|${out}`, [xd], { op: "unary", kind: op, x: x0, dtype: out });
}

/** `op(a: ad, b: bd) → out` as a one-op kernel. */
export function binaryKernel(op: BinaryOp, ad: DType, bd: DType, out: DType): FusedKernel {
  return oneOp(`b|${op}|${ad}|${bd}|${out}`, [ad, bd], {
    op: "binary",
    kind: op,
    a: x0,
    b: x1,
    dtype: out,
  });
}

/** `c ? a : b` as a one-op kernel. */
export function whereKernel(cd: DType, ad: DType, bd: DType, out: DType): FusedKernel {
  return oneOp(`w|${cd}|${ad}|${bd}|${out}`, [cd, ad, bd], {
    op: "where",
    c: x0,
    a: x1,
    b: x2,
    dtype: out,
  });
}
