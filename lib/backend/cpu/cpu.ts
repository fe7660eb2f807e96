/**
 * The CPU backend: the reference implementation of every kernel, and the only home of f64.
 * Buffers are typed arrays in each dtype's storage layout (f16/bf16 as raw `Uint16Array` bits,
 * f8 as raw `Uint8Array` bits). Narrow floats are widened to f32, computed, and rounded once.
 *
 * @module
 */
import {
  type CastOptions,
  decode,
  type DType,
  encode,
  isFloating,
  type Storage,
  storageFor,
} from "../../dtype.ts";
import type { Arg, Backend, Handle, MatmulGeometry, RandomKind, View } from "../backend.ts";
import { fillBernoulli, fillNormal, fillUniform, type Key } from "../../prng.ts";
import { binaryFn, unaryFn } from "./elementwise.ts";
import { matmulKernel } from "./matmul.ts";
import { wasmMatmul } from "./wasm/matmul.ts";
import { reduceKernel } from "./reduce.ts";
import { dequantizeKernel, quantizeKernel } from "./quantize.ts";
import type { FusedKernel } from "../fused.ts";
import { runFused } from "./fused.ts";

type Num = Float64Array | Float32Array | Int32Array | Uint8Array;

/** Widened values of a buffer (no copy for f32, f64, i32, u8, bool). */
function values(x: Arg): Num {
  return decode(x.dtype, x.h as Storage);
}

/** A compute array for the output dtype: f64 stays f64, ints stay ints, every float is f32. */
function computeArray(out: DType, n: number): Num {
  switch (out) {
    case "f64":
      return new Float64Array(n);
    case "i32":
      return new Int32Array(n);
    case "u8":
    case "bool":
      return new Uint8Array(n);
    default:
      return new Float32Array(n);
  }
}

/** Round a compute array to the output dtype's storage. */
function store(out: DType, data: Num): Storage {
  if (out === "f64") return data instanceof Float64Array ? data : Float64Array.from(data);
  if (out === "f32" && data instanceof Float32Array) return data;
  if (out === "i32" && data instanceof Int32Array) return data;
  if (out === "u8" && data instanceof Uint8Array) return data;
  return encode(out, data);
}

function isContiguous(v: View): boolean {
  let expect = 1;
  for (let d = v.shape.length - 1; d >= 0; d--) {
    if (v.shape[d] !== 1 && v.strides[d] !== expect) return false;
    expect *= v.shape[d];
  }
  return true;
}

function isScalarView(v: View): boolean {
  return v.strides.every((s, d) => s === 0 || v.shape[d] === 1);
}

/** Contiguous values of a strided view (a copy unless already contiguous at offset 0). */
function materialize(v: View): Num {
  const src = values(v);
  const n = v.shape.reduce((a, b) => a * b, 1);
  if (v.offset === 0 && isContiguous(v) && src.length === n) return src;
  const out = new (src.constructor as { new (n: number): Num })(n);
  const nd = v.shape.length;
  if (nd === 0) {
    out[0] = src[v.offset];
    return out;
  }
  // Odometer over all but the last axis; the last axis is a strided inner loop.
  const inner = v.shape[nd - 1];
  const innerStride = v.strides[nd - 1];
  const idx = new Array(nd).fill(0);
  let base = v.offset;
  for (let o = 0; o < n; o += inner) {
    for (let i = 0, s = base; i < inner; i++, s += innerStride) out[o + i] = src[s];
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]++;
      base += v.strides[d];
      if (idx[d] < v.shape[d]) break;
      base -= v.strides[d] * v.shape[d];
      idx[d] = 0;
    }
  }
  return out;
}

/**
 * The CPU device. Always available.
 *
 * @example
 * ```ts
 * const t = tensor([1, 2, 3], { device: cpu });
 * ```
 */
export const cpu: Backend = {
  kind: "cpu",
  name: "cpu",
  unsupported: () => undefined,
  upload: (dtype: DType, data: Storage): Handle => {
    const out = storageFor(dtype, data.length);
    out.set(data as never);
    return out;
  },
  fill(dtype: DType, size: number, value: number): Handle {
    const one = encode(dtype, [value]);
    const out = storageFor(dtype, size);
    if (!Object.is(one[0], 0)) out.fill(one[0] as never); // −0 too
    return out;
  },
  read: (x: Arg) => Promise.resolve(x.h as Storage),
  free: () => {},
  cast: (x: Arg, to: DType, opts?: CastOptions) => {
    if (x.dtype === to) return (x.h as Storage).slice();
    return encode(to, values(x), opts);
  },
  copy: (x: View, outDtype: DType) => {
    const m = materialize(x);
    return store(outDtype, m === x.h ? m.slice() : m);
  },
  unary(op, x, outDtype) {
    const src = values(x);
    const out = computeArray(outDtype, x.size);
    unaryFn(op, src, out);
    return store(outDtype, out);
  },
  binary(op, a, b, outDtype) {
    const n = a.shape.reduce((p, d) => p * d, 1);
    const out = computeArray(outDtype, n);
    const av = isScalarView(a) ? values(a)[a.offset] : materialize(a);
    const bv = isScalarView(b) ? values(b)[b.offset] : materialize(b);
    binaryFn(op, av, bv, out);
    return store(outDtype, out);
  },
  where(cond, a, b, outDtype) {
    const n = a.shape.reduce((p, d) => p * d, 1);
    const c = materialize(cond);
    const out = computeArray(outDtype, n);
    // A broadcast scalar branch (e.g. where(mask, g, 0)) is read once, not materialized.
    const av = isScalarView(a) ? values(a)[a.offset] : materialize(a);
    const bv = isScalarView(b) ? values(b)[b.offset] : materialize(b);
    if (typeof av === "number" && typeof bv === "number") {
      for (let i = 0; i < n; i++) out[i] = c[i] ? av : bv;
    } else if (typeof av === "number") {
      const bs = bv as Num;
      for (let i = 0; i < n; i++) out[i] = c[i] ? av : bs[i];
    } else if (typeof bv === "number") {
      for (let i = 0; i < n; i++) out[i] = c[i] ? av[i] : bv;
    } else {
      for (let i = 0; i < n; i++) out[i] = c[i] ? av[i] : bv[i];
    }
    return store(outDtype, out);
  },
  reduce(op, x, outer, reduce, inner, outDtype) {
    // A narrow float sum is rounded once, from the f64 accumulator (not f64 → f32 → narrow).
    const once = op === "sum" && outDtype !== "f64" && outDtype !== "f32" && isFloating(outDtype);
    const out = once ? new Float64Array(outer * inner) : computeArray(outDtype, outer * inner);
    reduceKernel(op, values(x), outer, reduce, inner, out);
    return store(outDtype, out);
  },
  matmul(a: Arg, b: Arg, g: MatmulGeometry, outDtype: DType) {
    const fast = wasmMatmul(
      a.h as Storage,
      a.dtype,
      b.h as Storage,
      b.dtype,
      g,
      outDtype,
      () => [values(a), values(b)],
    );
    if (fast) return fast;
    const size = g.batch * g.m * g.n;
    // Narrow float outputs round once from the f64 accumulator (no f32 step in between).
    const out = isFloating(outDtype) && outDtype !== "f32"
      ? new Float64Array(size)
      : computeArray(outDtype, size);
    matmulKernel(values(a), values(b), g, out as Float32Array | Float64Array);
    return store(outDtype, out);
  },
  concat(xs, outer, sizes, inner, outDtype) {
    const total = sizes.reduce((p, s) => p + s, 0);
    const out = computeArray(outDtype, outer * total * inner);
    let col = 0;
    xs.forEach((x, i) => {
      const src = values(x);
      const w = sizes[i] * inner;
      for (let o = 0; o < outer; o++) {
        out.set(src.subarray(o * w, (o + 1) * w) as never, o * total * inner + col);
      }
      col += w;
    });
    return store(outDtype, out);
  },
  gather(x, idx, outer, axis, inner) {
    const src = values(x);
    const ix = values(idx);
    const nIdx = idx.size;
    const out = new (src.constructor as { new (n: number): Num })(outer * nIdx * inner);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < nIdx; j++) {
        let k = ix[j];
        if (k < 0) k += axis;
        if (!(k >= 0 && k < axis)) {
          throw new Error(`take: index ${ix[j]} is out of range for an axis of size ${axis}`);
        }
        const from = (o * axis + k) * inner;
        out.set(src.subarray(from, from + inner) as never, (o * nIdx + j) * inner);
      }
    }
    return store(x.dtype, out);
  },
  scatterAdd(base, idx, upd, outer, axis, inner) {
    // As the WebGPU kernel: f32 and narrower floats accumulate in f32, one addition per index
    // in index order, then round once to the dtype (storing an f64 sum of two f32 values into a
    // Float32Array is exactly the f32 sum: 53 ≥ 2·24 + 2 bits). f64 and i32 accumulate in their
    // own type; u8 and bool in f64.
    const out = computeArray(base.dtype, base.size);
    const acc = out instanceof Float32Array || out instanceof Int32Array || base.dtype === "f64"
      ? out
      : new Float64Array(base.size);
    acc.set(values(base) as never);
    const ix = values(idx);
    const u = values(upd);
    const nIdx = idx.size;
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < nIdx; j++) {
        let k = ix[j];
        if (k < 0) k += axis;
        if (!(k >= 0 && k < axis)) {
          throw new Error(`scatterAdd: index ${ix[j]} is out of range for an axis of size ${axis}`);
        }
        const to = (o * axis + k) * inner;
        const from = (o * nIdx + j) * inner;
        for (let i = 0; i < inner; i++) acc[to + i] += u[from + i];
      }
    }
    if (acc !== out) out.set(acc as never);
    return store(base.dtype, out);
  },
  random(key: Key, size: number, dtype: DType, dist: RandomKind) {
    if (dist.kind === "bernoulli") {
      const bits = new Uint8Array(size);
      fillBernoulli(key, dist.p, bits);
      return store(dtype, dtype === "bool" || dtype === "u8" ? bits : Float32Array.from(bits));
    }
    const out = dtype === "f64" ? new Float64Array(size) : new Float32Array(size);
    if (dist.kind === "uniform") fillUniform(key, out, dist.lo, dist.hi);
    else fillNormal(key, out);
    return store(dtype, out);
  },
  quantize: (x, absmax, map, blockSize, signGuard) =>
    quantizeKernel(values(x), values(absmax), values(map), blockSize, signGuard, x.size),
  dequantize(codes, absmax, map, blockSize, outDtype) {
    const out = computeArray(outDtype, codes.size) as Float32Array | Float64Array;
    dequantizeKernel(values(codes), values(absmax), values(map), blockSize, out);
    return store(outDtype, out);
  },
  fused(k: FusedKernel, inputs: readonly View[]) {
    const srcs = inputs.map((v) => isScalarView(v) ? values(v)[v.offset] : materialize(v));
    return runFused(k, srcs).map((o, j) => store(k.ops[k.outputs[j]].dtype, o));
  },
};
