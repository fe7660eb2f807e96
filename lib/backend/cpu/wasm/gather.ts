/**
 * `gather` and `scatterAdd` in WebAssembly over the CPU heap, with i32 or u8 indices. Both check
 * every index first, in the TypeScript kernel's order, and return the position of the first one
 * out of range (the caller throws the same message as the TypeScript kernel) or −1; only then do
 * they write. A gather copies a row of `inner` elements per index with `memory.copy` (raw bits,
 * any dtype); a scatter adds f32 rows into an f32 accumulator four lanes at a time (the tail one
 * by one), in index order, one f32 rounding per addition, as the TypeScript kernel does.
 *
 * Spec: WebAssembly Core 2.0 (§4.4.7 memory instructions: `memory.copy`; §4.4.3 SIMD).
 *
 * @module
 */
import { type Code, I, T, V, wasmModule } from "./emit.ts";
import { wasmEnabled } from "./features.ts";
import { heapMemory } from "../heap.ts";

const i32Load: Code = [0x28, 2, 0];
const i32Load8u: Code = [0x2d, 0, 0];
const memoryCopy: Code = [0xfc, 10, 0, 0];
const f32Store: Code = [0x38, 2, 0];
const i32Store: Code = [0x36, 2, 0];
const f32Add = 0x92;
const ltS = 0x48;
const geU = 0x4f;
const f32x4Add: Code = [0xfd, 0xe4, 0x01];
const returnOp = 0x0f;

/** `for (i = 0; i < n; i++) body` over locals `i`, `n` (body at depth 1 for `br 1` to exit). */
const count = (i: number, n: number, body: Code): Code => [
  I.i32(0),
  I.set(i),
  I.block(I.loop(
    I.get(i),
    I.get(n),
    I.geU,
    I.brIf(1),
    body,
    [I.get(i), I.i32(1), I.add, I.set(i)],
    I.br(0),
  )),
];

/** The parameters and locals both functions share (see {@link wasmGather}). */
const P = { idx: 1, outer: 3, n: 4, axis: 5, wide: 7, wrap: 8, j: 9, k: 10, o: 11 };

/** `k = idx[j]` (+ axis when negative and wrapping), leaving nothing on the stack. */
const loadIndex: Code = [
  I.get(P.wide),
  I.ifElse(
    [I.get(P.idx), I.get(P.j), I.i32(2), I.shl, I.add, i32Load, I.set(P.k)],
    [I.get(P.idx), I.get(P.j), I.add, i32Load8u, I.set(P.k)],
  ),
  [I.get(P.k), I.get(P.axis), I.add, I.get(P.k), I.get(P.k), I.i32(0), ltS, I.get(P.wrap), I.and],
  [I.select, I.set(P.k)],
];

/** Check every index: return `j` of the first out of range (after wrapping). */
const checkAll: Code = count(P.j, P.n, [
  loadIndex,
  I.get(P.k),
  I.get(P.axis),
  geU, // unsigned: a negative index is out of range too
  I.if(I.get(P.j), returnOp),
]);

/**
 * `gather(src, idx, dst, outer, n, axis, rowBytes, wide, wrap) → −1 | j`: row `k = idx[j]` of
 * each of the `outer` blocks of `axis` rows (of `rowBytes` bytes) to `dst`, in order.
 */
function gatherFunc() {
  const [src, dst, rowBytes] = [0, 2, 6];
  const body: Code = [
    checkAll,
    count(P.o, P.outer, [
      count(P.j, P.n, [
        loadIndex,
        // memory.copy(dst, src + (o·axis + k)·rowBytes, rowBytes); dst += rowBytes
        [I.get(src), I.get(P.o), I.get(P.axis), I.mul, I.get(P.k), I.add, I.get(rowBytes), I.mul],
        [I.add, I.set(P.k)],
        [I.get(rowBytes), I.i32(4), I.eq],
        I.ifElse(
          [I.get(dst), I.get(P.k), i32Load, i32Store], // one 4-byte element: cheaper than a copy
          [I.get(dst), I.get(P.k), I.get(rowBytes), memoryCopy],
        ),
        [I.get(dst), I.get(rowBytes), I.add, I.set(dst)],
      ]),
    ]),
    I.i32(-1),
  ];
  const params = new Array(9).fill(T.i32);
  return { name: "gather", params, results: [T.i32], locals: [T.i32, T.i32, T.i32], body };
}

/**
 * `scatter(acc, idx, upd, outer, n, axis, inner, wide) → −1 | j`: `acc[o, idx[j], :] +=
 * upd[o, j, :]` in f32, for o, then j, in increasing order (negative indices wrap once).
 */
function scatterFunc() {
  const [acc, upd, inner, i, to] = [0, 2, 6, 12, 13];
  const from = upd; // advances row by row: updates are read in order
  const at = (base: number) => [I.get(base), I.get(i), I.i32(2), I.shl, I.add];
  const body: Code = [
    I.i32(1),
    I.set(P.wrap),
    checkAll,
    count(P.o, P.outer, [
      count(P.j, P.n, [
        loadIndex,
        [I.get(acc), I.get(P.o), I.get(P.axis), I.mul, I.get(P.k), I.add, I.get(inner), I.mul],
        [I.i32(2), I.shl, I.add, I.set(to)],
        // four lanes at a time, then the tail
        I.i32(0),
        I.set(i),
        I.block(I.loop(
          [I.get(i), I.i32(4), I.add, I.get(inner), I.gtS, I.brIf(1)],
          at(to),
          at(to),
          V.load(),
          at(from),
          V.load(),
          f32x4Add,
          V.store(),
          [I.get(i), I.i32(4), I.add, I.set(i)],
          I.br(0),
        )),
        I.block(I.loop(
          [I.get(i), I.get(inner), I.geU, I.brIf(1)],
          at(to),
          at(to),
          I.f32Load(),
          at(from),
          I.f32Load(),
          f32Add,
          f32Store,
          [I.get(i), I.i32(1), I.add, I.set(i)],
          I.br(0),
        )),
        [I.get(from), I.get(inner), I.i32(2), I.shl, I.add, I.set(from)],
      ]),
    ]),
    I.i32(-1),
  ];
  // params acc, idx, upd, outer, n, axis, inner, wide; locals wrap, j, k, o, i, to
  const params = new Array(8).fill(T.i32);
  const locals = new Array(6).fill(T.i32);
  return { name: "scatter", params, results: [T.i32], locals, body };
}

/** The module's exports. */
interface Kernels {
  gather: (...a: number[]) => number;
  scatter: (...a: number[]) => number;
}

let kernels: Kernels | null | undefined;

function module(): Kernels | null {
  if (kernels !== undefined) return kernels;
  const memory = heapMemory();
  kernels = null;
  if (typeof SharedArrayBuffer !== "function" || !(memory.buffer instanceof SharedArrayBuffer)) {
    return kernels;
  }
  try {
    const bytes = wasmModule([gatherFunc(), scatterFunc()], {
      shared: true,
      minPages: 1,
      maxPages: 65536,
    });
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), { e: { m: memory } });
    kernels = inst.exports as unknown as Kernels;
  } catch {
    kernels = null; // e.g. a page whose CSP forbids compiling WebAssembly
  }
  return kernels;
}

const stats = { gathers: 0, scatters: 0 };

/** How many gathers and scatters ran in WebAssembly so far. */
export function wasmGatherInfo(): { gathers: number; scatters: number } {
  return { ...stats };
}

/** Index dtypes these kernels read. */
const INDEX = new Set(["i32", "u8"]);

/**
 * Gather rows in WebAssembly: `out[o, j, :] = x[o, idx[j], :]` (rows of `rowBytes` bytes,
 * byte addresses `src`, `idx`, `dst`). Returns −1, or the position of the first index out of
 * range (nothing written then); `undefined` where this path does not run (`NBIT_WASM=0`, a heap
 * that is not shared, indices that are not i32 or u8), and then the TypeScript kernel does.
 */
export function wasmGather(
  src: number,
  idx: number,
  idxDtype: string,
  dst: number,
  outer: number,
  n: number,
  axis: number,
  rowBytes: number,
  wrap: boolean,
): number | undefined {
  if (!INDEX.has(idxDtype) || !wasmEnabled()) return undefined;
  const k = module();
  if (!k) return undefined;
  stats.gathers++;
  return k.gather(src, idx, dst, outer, n, axis, rowBytes, idxDtype === "i32" ? 1 : 0, +wrap);
}

/**
 * Scatter-add f32 rows in WebAssembly: `acc[o, idx[j], :] += upd[o, j, :]` over `inner`
 * elements, negative indices wrapped once. Returns −1, or the position of the first index out of
 * range (nothing written then); `undefined` where this path does not run (as
 * {@linkcode wasmGather}).
 */
export function wasmScatterAdd(
  acc: number,
  idx: number,
  idxDtype: string,
  upd: number,
  outer: number,
  n: number,
  axis: number,
  inner: number,
): number | undefined {
  if (!INDEX.has(idxDtype) || !wasmEnabled()) return undefined;
  const k = module();
  if (!k) return undefined;
  stats.scatters++;
  return k.scatter(acc, idx, upd, outer, n, axis, inner, idxDtype === "i32" ? 1 : 0);
}
