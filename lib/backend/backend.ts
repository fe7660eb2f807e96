/**
 * The backend interface: the small set of whole-operation kernels on flat buffers that every
 * device implements. Ops (`lib/ops/`) are declared once on top of these; a new backend adds
 * only kernels. Buffers are opaque handles owned by the backend; the frontend (`lib/tensor.ts`)
 * counts references and frees them deterministically.
 *
 * @module
 */
import type { CastOptions, DType, Storage } from "../dtype.ts";
import type { Key } from "../prng.ts";
import type { FusedKernel } from "./fused.ts";
import type { Blockwise8bitUpdate } from "./optim8.ts";

/** An opaque buffer handle owned by a backend. */
export type Handle = unknown;

/** A flat buffer with its element type and length. */
export interface Arg {
  /** The buffer. */
  readonly h: Handle;
  /** Element type of the buffer. */
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
}

/**
 * A strided read of a buffer laid out as an output of shape `shape`: element at index
 * `[i0, i1, …]` is `buffer[offset + Σ ik·strides[k]]`. A stride of 0 broadcasts.
 */
export interface View extends Arg {
  /** Shape of the view (the output's shape). */
  readonly shape: readonly number[];
  /** Element stride per axis (0 broadcasts). */
  readonly strides: readonly number[];
  /** Element offset of index `[0, …, 0]`. */
  readonly offset: number;
}

/** Elementwise unary kernels. Narrow float dtypes compute in f32 and round once. */
export type UnaryOp =
  | "neg"
  | "abs"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "square"
  | "tanh"
  | "sigmoid"
  | "relu"
  | "sign"
  | "isfinite"
  | "not";

/** Elementwise binary kernels (comparisons produce bool). */
export type BinaryOp =
  | "add"
  | "sub"
  | "mul"
  | "div"
  | "pow"
  | "maximum"
  | "minimum"
  | "equal"
  | "notEqual"
  | "less"
  | "lessEqual"
  | "greater"
  | "greaterEqual";

/** Reductions over the middle axis of an `[outer, reduce, inner]` layout. */
export type ReduceOp = "sum" | "max" | "min" | "argmax" | "argmin" | "all" | "any";

/** Matrix product geometry: `batch` products of `[m, k] × [k, n]`. */
export interface MatmulGeometry {
  /** Number of products (the product of `batchShape`). */
  readonly batch: number;
  /** Rows of the output. */
  readonly m: number;
  /** The contracted dimension. */
  readonly k: number;
  /** Columns of the output. */
  readonly n: number;
  /** Element stride of `a` per batch dim (0 broadcasts). */
  readonly aBatchStride: readonly number[];
  /** Element stride of `b` per batch dim (0 broadcasts). */
  readonly bBatchStride: readonly number[];
  /** Batch dims of the output, whose product is `batch`. */
  readonly batchShape: readonly number[];
  /** `a` is stored as `[k, m]` (read transposed). */
  readonly transA: boolean;
  /** `b` is stored as `[n, k]` (read transposed). */
  readonly transB: boolean;
  /**
   * Round `a`'s values to this dtype (`"f16"` or `"bf16"`, ties to even) before the product,
   * exactly as if `a` had been cast first: `a` is f32 and the result equals
   * `matmul(cast(a, aCast), …)` bitwise. Only for backends with `matmulCasts`.
   */
  readonly aCast?: DType;
  /** As `aCast`, for `b`. */
  readonly bCast?: DType;
}

/** Random fills produced from a counter-based key (identical stream on every backend). */
export type RandomKind =
  | { readonly kind: "uniform"; readonly lo: number; readonly hi: number }
  | { readonly kind: "normal" }
  | { readonly kind: "bernoulli"; readonly p: number };

/**
 * A device. `cpu` always exists; `await webgpu()` makes a GPU one. Every kernel returns a new
 * buffer; none mutates its inputs.
 *
 * @example
 * ```ts
 * import { cpu } from "./cpu/cpu.ts";
 * cpu.kind; // "cpu"
 * ```
 */
export interface Backend {
  /** `"cpu"` or `"webgpu"`. */
  readonly kind: string;
  /** A readable name, e.g. `"cpu"` or `"webgpu (lavapipe)"`. */
  readonly name: string;
  /** Why `dtype` cannot live here, or `undefined` when it can. */
  unsupported(dtype: DType): string | undefined;
  /** Copy host storage (in `dtype`'s storage layout) to a new buffer. */
  upload(dtype: DType, data: Storage): Handle;
  /** A new buffer of `size` elements all equal to `value` (rounded once to `dtype`). */
  fill(dtype: DType, size: number, value: number): Handle;
  /** Read a buffer back to host storage (same layout as `upload` takes). */
  read(x: Arg): Promise<Storage>;
  /** Release a buffer. Called exactly once per handle by the frontend. */
  free(h: Handle, dtype: DType, size: number): void;

  /** Convert to `to`, rounding once (ties to even). */
  cast(x: Arg, to: DType, opts?: CastOptions): Handle;
  /** Materialise a strided view (transpose, slice, broadcast) as a contiguous buffer. */
  copy(x: View, outDtype: DType): Handle;
  /** Elementwise unary map. */
  unary(op: UnaryOp, x: Arg, outDtype: DType): Handle;
  /** Elementwise binary map over broadcast views of the output shape. */
  binary(op: BinaryOp, a: View, b: View, outDtype: DType): Handle;
  /** `cond ? a : b` elementwise over broadcast views of the output shape. */
  where(cond: View, a: View, b: View, outDtype: DType): Handle;
  /**
   * Reduce the middle axis of `[outer, reduce, inner]`. Sums accumulate in at least f32 and
   * round once to `outDtype`; the accumulator is a backend's choice (WebGPU: f32; the CPU
   * backend: f64), so long sums of arbitrary values may differ between backends in the last
   * bits. f64 sums accumulate in f64.
   */
  reduce(
    op: ReduceOp,
    x: Arg,
    outer: number,
    reduce: number,
    inner: number,
    outDtype: DType,
  ): Handle;
  /**
   * Batched matrix product, accumulating in at least f32 and rounding once to `outDtype`. The
   * accumulator is a backend's choice (WebGPU: f32; the CPU backend's kernels: f64 or f32, see
   * their module docs), so results may differ between backends in the last bits. f64 in f64.
   */
  matmul(a: Arg, b: Arg, g: MatmulGeometry, outDtype: DType): Handle;
  /** Concatenate `[outer, sizes[i], inner]` blocks along the middle axis. */
  concat(
    xs: readonly Arg[],
    outer: number,
    sizes: readonly number[],
    inner: number,
    outDtype: DType,
  ): Handle;
  /**
   * `out[o, j, i] = x[o, idx[j], i]` for `x` laid out as `[outer, axis, inner]`; i32 indices.
   * An index out of range is an error naming `check.op` (default `take`, negatives wrap once;
   * `oneHot` rejects them): the CPU throws, the GPU reports it at the next readback.
   */
  gather(
    x: Arg,
    idx: Arg,
    outer: number,
    axis: number,
    inner: number,
    check?: { op: "take" | "oneHot"; wrap: boolean },
  ): Handle;
  /**
   * `out = base; out[o, idx[j], i] += upd[o, j, i]`; i32 indices. Every backend adds in the same
   * order and precision, so results agree bitwise: each output starts from `base` and adds the
   * updates of the indices that hit it in increasing `j`, one rounding per addition, in f32 for
   * f32 and narrower floats (then rounded once to the dtype), in f64 for f64, with i32
   * wrap-around for i32 (WGSL may flush f32 subnormals to zero: see the WebGPU backend).
   */
  scatterAdd(base: Arg, idx: Arg, upd: Arg, outer: number, axis: number, inner: number): Handle;
  /** Fill a new buffer from the counter-based PRNG. */
  random(key: Key, size: number, dtype: DType, dist: RandomKind): Handle;
  /**
   * Block-wise 8-bit quantization (bitsandbytes), u8 output of `x.size`. Element i of block
   * `b = ⌊i / blockSize⌋` gets the index of the `map` entry (256 ascending f32) nearest to
   * `y = clamp(x[i] / absmax[b], −1, 1)` computed in f32, ties to the lower index; `y = 0` when
   * `absmax[b]` is not > 0 or `y` is NaN. With `signGuard`, if `x[i] < 0` and `map[c] ≥ 0` then
   * `c − 1` (when c > 0); if `x[i] > 0` and `map[c] < 0` then `c + 1` (when c < 255).
   * `x` is any float dtype; `absmax` f32 of ⌈n / blockSize⌉.
   */
  quantize(x: Arg, absmax: Arg, map: Arg, blockSize: number, signGuard: boolean): Handle;
  /**
   * `out[i] = map[codes[i]] · absmax[⌊i / blockSize⌋]` computed in f32, rounded once to
   * `outDtype` (a float dtype); `codes` u8, `absmax` and `map` f32.
   */
  dequantize(codes: Arg, absmax: Arg, map: Arg, blockSize: number, outDtype: DType): Handle;

  // -- Optional: what `jit` uses when a backend offers it -----------------------------------

  /**
   * Run a fused elementwise kernel (see `fused.ts`): one pass that reads each input view once
   * and writes one buffer per output, bitwise equal to running its operations one by one.
   */
  fused?(k: FusedKernel, inputs: readonly View[]): Handle[];
  /**
   * An 8-bit optimizer's update of one tensor in one pass per block (see `optim8.ts`): returns
   * the new param and each moment's codes and absmax, bitwise equal to the composed ops.
   */
  blockwise8bitUpdate?(u: Blockwise8bitUpdate, inputs: readonly Arg[]): Handle[];
  /**
   * Whether `fused` accepts kernels with `reduce` set (a reduction computed in the same pass
   * as its elementwise prologue) whose `outputs` are all 4-byte dtypes (f32, i32).
   */
  readonly fusedReduce?: boolean;
  /**
   * A matmul whose product goes straight into the fused kernel `k` (an epilogue: `k`'s input 0
   * is the product, rounded to `outDtype`; `inputs` are the views of its other inputs). Bitwise
   * equal to `fused(k, [matmul(a, b, g, outDtype), ...inputs])`; returns `k`'s outputs.
   */
  matmulFused?(
    a: Arg,
    b: Arg,
    g: MatmulGeometry,
    outDtype: DType,
    k: FusedKernel,
    inputs: readonly View[],
  ): Handle[];
  /**
   * Whether `matmulFused` runs `k` inside the matmul's own kernel (one dispatch) for this
   * geometry; where it does not, `jit` runs the matmul and `k` as two kernels (default: yes).
   */
  matmulFusedFits?(g: MatmulGeometry, outDtype: DType, k: FusedKernel): boolean;
  /** Whether `matmul` accepts `MatmulGeometry.aCast`/`bCast` (a cast folded into the product). */
  readonly matmulCasts?: boolean;
  /** The most buffers (inputs + outputs) one fused kernel may bind (default: unlimited). */
  readonly maxFusedBuffers?: number;
  /**
   * Record the kernels `body` issues so they can be replayed without re-encoding them (WebGPU:
   * pipelines, bind groups and uniforms built once; one submit per replay). The backend copies
   * `inputs` into buffers the recording owns and passes those to `body`; buffers made inside
   * `body` belong to the recording (a `free` there makes a buffer reusable by later kernels of
   * the same recording); `body` returns the output buffers, and `record` returns the first run's
   * outputs (owned by the caller) with the recording. `body` gets one stand-in per key of
   * `opts.keys`: a kernel drawing from a stand-in reads its key from the replay's keys (plain
   * data, like the inputs), so a program that draws random numbers is recorded too. The first
   * run is `replay(inputs, opts)`.
   */
  record?(
    inputs: readonly Arg[],
    body: (inputs: readonly Handle[], keys: readonly Key[]) => readonly Handle[],
    opts?: ReplayOptions,
  ): { readonly outputs: Handle[]; readonly recording: Recording };
  /** Set on `jit`'s tracing devices only: they record kernel calls instead of running them. */
  readonly tracing?: boolean;
}

/** Per-call data of a {@linkcode Recording}'s replay (and of the first run, in `record`). */
export interface ReplayOptions {
  /** This call's random keys, in the order of `record`'s stand-ins (as many). */
  readonly keys?: readonly Key[];
  /**
   * Per input: the caller gives up that input's buffer (donation). The recording then owns it:
   * it reads the input there (no copy in) and keeps the buffer for a later replay's output of
   * the same size, handing this call's output over in the buffer it was written to (no copy
   * out); or it frees it. The caller must not free or read a donated buffer again.
   */
  readonly donated?: readonly boolean[];
}

/** A recorded sequence of kernels (see `Backend.record`). */
export interface Recording {
  /**
   * Run the recorded kernels on new inputs (same dtypes and sizes) and keys; returns output
   * buffers the caller owns (fresh, or a donated input's partner: see `ReplayOptions.donated`).
   */
  replay(inputs: readonly Arg[], opts?: ReplayOptions): Handle[];
  /** Free every buffer the recording owns. */
  dispose(): void;
}
