/**
 * The immutable Tensor handle, tensor creation, and deterministic memory ownership.
 *
 * Ownership rules (see README "Memory"):
 * - A tensor owns a reference to a device buffer; views made by `reshape` share the buffer.
 * - `t.dispose()` drops the reference; the buffer is freed when its last reference goes.
 * - `tidy(fn)` disposes every tensor created inside `fn` except those it returns (and those
 *   passed to `keep`). Train steps, `grad` and `fit` run their work inside `tidy`.
 *
 * @module
 */
import {
  byteSize,
  type CastOptions,
  decode,
  type DType,
  dtypes,
  encode,
  isFloating,
  parseDType,
  type Storage,
  type Widened,
} from "./dtype.ts";
import type { Backend, Handle } from "./backend/backend.ts";
import { cpu } from "./backend/cpu/cpu.ts";
import { type HeapStats, heapStats } from "./backend/cpu/heap.ts";

/** A shared, reference-counted device buffer. */
interface DataRef {
  readonly backend: Backend;
  readonly h: Handle;
  readonly dtype: DType;
  readonly size: number;
  refs: number;
}

/** A nested array of numbers or booleans, as accepted by {@linkcode tensor}. */
export type NestedArray = number | boolean | readonly NestedArray[];

/** Set by `Tensor`'s static block: detaches a sole-holder tensor's buffer (see `takeBuffer`). */
let takeRef: (t: Tensor) => DataRef | undefined;

/**
 * An immutable n-dimensional array on a device. Create tensors with {@linkcode tensor},
 * {@linkcode zeros}, {@linkcode ones}, {@linkcode full} or {@linkcode arange}; compute with the
 * op functions; read with `await t.data()`.
 *
 * @example
 * ```ts
 * const t = tensor([[1, 2], [3, 4]]);
 * t.shape; // [2, 2]
 * await t.data(); // Float32Array [1, 2, 3, 4]
 * ```
 */
export class Tensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
  #ref: DataRef | undefined;

  /** @internal Use the creation functions instead. */
  constructor(ref: DataRef, shape: readonly number[]) {
    this.#ref = ref;
    this.shape = Object.freeze(shape.slice());
    this.dtype = ref.dtype;
    this.size = ref.size;
  }

  /** The device this tensor lives on. */
  get device(): Backend {
    return this.#live().backend;
  }

  /** Number of dimensions. */
  get ndim(): number {
    return this.shape.length;
  }

  /** Whether `dispose()` has been called. */
  get disposed(): boolean {
    return this.#ref === undefined;
  }

  /** @internal The device buffer (throws if disposed). */
  get handle(): Handle {
    return this.#live().h;
  }

  /** @internal The shared buffer record. */
  get ref(): DataRef {
    return this.#live();
  }

  #live(): DataRef {
    if (!this.#ref) {
      const why = retiredWhy.get(this);
      if (why) throw new Error(why);
      throw new Error(
        `This ${this.dtype} tensor of shape [${this.shape}] was disposed; keep it alive with ` +
          "keep(t) or return it from tidy(fn) if you still need it.",
      );
    }
    return this.#ref;
  }

  /**
   * Read the values back, widened exactly: `Float64Array` for f64, `Float32Array` for other
   * floats, `Int32Array` for i32, `Uint8Array` for u8 and bool.
   */
  async data(): Promise<Widened> {
    const ref = this.#live();
    // Every backend's read returns a fresh copy (the CPU never hands out its heap), so the
    // widened values are the caller's own: one copy for f32, f64 and ints.
    return decode(
      ref.dtype,
      await ref.backend.read({ h: ref.h, dtype: ref.dtype, size: ref.size }),
    );
  }

  /** The raw storage (f16/bf16 bits as `Uint16Array`, f8 bits as `Uint8Array`), a copy. */
  async bits(): Promise<Storage> {
    const ref = this.#live();
    return await ref.backend.read({ h: ref.h, dtype: ref.dtype, size: ref.size });
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new Error(`item() needs a tensor with one element, got shape [${this.shape}]`);
    }
    return (await this.data())[0];
  }

  /** The values as nested arrays (booleans for bool tensors). */
  async toArray(): Promise<NestedArray> {
    const flat = Array.from(await this.data(), (v) => this.dtype === "bool" ? v !== 0 : v);
    const build = (dim: number, offset: number): NestedArray => {
      if (dim === this.shape.length) return flat[offset];
      const stride = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, offset + i * stride));
    };
    return build(0, 0);
  }

  static {
    takeRef = (t) => {
      const ref = t.#ref;
      if (!ref || ref.refs !== 1) return undefined;
      t.#ref = undefined;
      return ref;
    };
  }

  /** Drop this tensor's reference to its buffer (idempotent). */
  dispose(): void {
    const ref = this.#ref;
    if (!ref) return;
    this.#ref = undefined;
    live.tensors--;
    release(ref);
  }

  /**
   * A tensor is not a JS number or boolean: `t > 0`, `+t` or `if (t < 1)` would compare an
   * object and silently give a wrong answer (and a data-dependent branch inside `jit`). Only
   * string conversion is allowed; read values with `await t.item()` instead.
   */
  [Symbol.toPrimitive](hint: string): string {
    if (hint === "string") return this.toString();
    throw new TypeError(
      `${this.toString()} was used as a JS ${hint === "number" ? "number" : "value"} (a ` +
        "comparison, arithmetic or a branch on a tensor); use the ops (greater, add, where) or " +
        "read the value first with await t.item(); inside jit, branch with where(cond, a, b)",
    );
  }

  /** A short description, e.g. `Tensor(f32[2,3] on cpu)`. */
  toString(): string {
    return `Tensor(${this.dtype}[${this.shape}] on ${this.#ref?.backend.name ?? "disposed"})`;
  }
}

/**
 * @internal Take the buffer away from `t` when `t` is its only holder (jit's donation): `t` is
 * retired (a later use fails with `why`) and the buffer leaves the memory accounting without
 * being freed; the caller owns the returned handle. Returns `undefined`, changing nothing, when
 * another tensor shares the buffer (or `t` is disposed).
 */
export function takeBuffer(t: Tensor, why: string): Handle | undefined {
  const ref = takeRef(t);
  if (!ref) return undefined;
  retiredWhy.set(t, why);
  live.tensors--;
  tensorsByDevice.set(ref.backend.name, (tensorsByDevice.get(ref.backend.name) ?? 1) - 1);
  ref.refs = 0;
  account(ref, -1);
  return ref.h;
}

/** Why a tensor was retired (see {@linkcode retire}), for the error a later use gives. */
const retiredWhy = new WeakMap<Tensor, string>();

/**
 * @internal Dispose `t` and make any later use of it fail with `why` (jit retires its tracers:
 * a tracer used after its trace escaped through closure state).
 */
export function retire(t: Tensor, why: string): void {
  retiredWhy.set(t, why);
  t.dispose();
}

// ---------------------------------------------------------------------------------------------
// Memory accounting

interface Live {
  tensors: number;
  buffers: Map<string, Map<DType, { buffers: number; bytes: number }>>;
  bytes: Map<string, number>;
  peak: Map<string, number>;
}

const live: Live = { tensors: 0, buffers: new Map(), bytes: new Map(), peak: new Map() };
const tensorsByDevice = new Map<string, number>();

function account(ref: DataRef, sign: 1 | -1): void {
  const dev = ref.backend.name;
  const bytes = sign * byteSize(ref.dtype) * ref.size;
  let perDtype = live.buffers.get(dev);
  if (!perDtype) live.buffers.set(dev, perDtype = new Map());
  const entry = perDtype.get(ref.dtype) ?? { buffers: 0, bytes: 0 };
  entry.buffers += sign;
  entry.bytes += bytes;
  perDtype.set(ref.dtype, entry);
  for (const key of [dev, ALL]) {
    const total = (live.bytes.get(key) ?? 0) + bytes;
    live.bytes.set(key, total);
    if (total > (live.peak.get(key) ?? 0)) live.peak.set(key, total);
  }
}

function release(ref: DataRef): void {
  ref.refs--;
  tensorsByDevice.set(ref.backend.name, (tensorsByDevice.get(ref.backend.name) ?? 1) - 1);
  if (ref.refs === 0) {
    account(ref, -1);
    ref.backend.free(ref.h, ref.dtype, ref.size);
  }
}

/** Live memory of one device (or, from `memory()` with no argument, of all devices). */
export interface MemoryInfo {
  /** Device name (`"all"` for the all-devices total). */
  readonly device: string;
  /** Live tensor handles. */
  readonly tensors: number;
  /** Live buffers (several tensors may share one through `reshape`). */
  readonly buffers: number;
  /** Live bytes. */
  readonly bytes: number;
  /** Highest live bytes since the last `resetPeak` (for `"all"`: of the sum over devices). */
  readonly peakBytes: number;
  /** Buffers and bytes per dtype. */
  readonly byDtype: Readonly<Partial<Record<DType, { buffers: number; bytes: number }>>>;
  /**
   * CPU only: the heap allocator's counters (`liveBytes` in blocks rounded to their size class,
   * `reservedBytes` carved out of the memory including cached free blocks, `memoryBytes`, ...).
   */
  readonly heap?: HeapStats;
}

/** {@linkcode memory}'s all-devices report: the totals, and each device that ever held a tensor. */
export interface AllMemoryInfo extends MemoryInfo {
  /** The per-device reports, by device name. */
  readonly devices: Readonly<Record<string, MemoryInfo>>;
}

/** The key under which the all-devices total (and its peak) is kept. */
const ALL = "all";

/**
 * Live tensors, buffers and bytes (per dtype), and the peak since `resetPeak`. With no argument
 * the report covers every device (CPU and GPU together, each also under `devices`); with a
 * device, only that device.
 *
 * @example
 * ```ts
 * const before = memory().bytes;
 * const t = zeros([1024], { dtype: "f16" });
 * memory().bytes - before; // 2048
 * memory(cpu).tensors; // live tensors on the CPU only
 * ```
 */
export function memory(): AllMemoryInfo;
/** Live memory of one device. @example `memory(gpu).bytes` */
export function memory(device: Backend): MemoryInfo;
export function memory(device?: Backend): MemoryInfo | AllMemoryInfo {
  if (device) return deviceMemory(device.name);
  const devices: Record<string, MemoryInfo> = {};
  const byDtype: Partial<Record<DType, { buffers: number; bytes: number }>> = {};
  let tensors = 0, buffers = 0;
  for (const name of new Set([...live.buffers.keys(), ...tensorsByDevice.keys()])) {
    const m = devices[name] = deviceMemory(name);
    tensors += m.tensors;
    buffers += m.buffers;
    for (
      const [d, e] of Object.entries(m.byDtype) as [DType, { buffers: number; bytes: number }][]
    ) {
      const acc = byDtype[d] ??= { buffers: 0, bytes: 0 };
      acc.buffers += e.buffers;
      acc.bytes += e.bytes;
    }
  }
  return {
    device: ALL,
    tensors,
    buffers,
    bytes: live.bytes.get(ALL) ?? 0,
    peakBytes: live.peak.get(ALL) ?? 0,
    byDtype,
    devices,
  };
}

function deviceMemory(name: string): MemoryInfo {
  const perDtype = live.buffers.get(name) ?? new Map();
  const byDtype: Partial<Record<DType, { buffers: number; bytes: number }>> = {};
  let buffers = 0;
  for (const [d, e] of perDtype) {
    if (e.buffers) byDtype[d as DType] = { ...e };
    buffers += e.buffers;
  }
  return {
    device: name,
    tensors: tensorsByDevice.get(name) ?? 0,
    buffers,
    bytes: live.bytes.get(name) ?? 0,
    peakBytes: live.peak.get(name) ?? 0,
    byDtype,
    ...(name === cpu.name ? { heap: heapStats() } : {}),
  };
}

/**
 * Reset the peak of {@linkcode memory} to the current live bytes: of one device, or with no
 * argument of every device and of the all-devices total.
 */
export function resetPeak(device?: Backend): void {
  const names = device ? [device.name] : [...live.bytes.keys()];
  for (const n of names) live.peak.set(n, live.bytes.get(n) ?? 0);
}

// ---------------------------------------------------------------------------------------------
// Scopes

const scopes: Set<Tensor>[] = [];

/** @internal Wrap a new backend buffer in a tensor, registered with the current scope. */
export function fromHandle(
  backend: Backend,
  h: Handle,
  dtype: DType,
  shape: readonly number[],
): Tensor {
  const ref: DataRef = { backend, h, dtype, size: shapeSize(shape), refs: 1 };
  account(ref, 1);
  return track(new Tensor(ref, shape), ref);
}

/** @internal A new tensor sharing `t`'s buffer with another shape of the same size. */
export function shareBuffer(t: Tensor, shape: readonly number[]): Tensor {
  const ref = t.ref;
  ref.refs++;
  return track(new Tensor(ref, shape), ref);
}

function track(t: Tensor, ref: DataRef): Tensor {
  live.tensors++;
  tensorsByDevice.set(ref.backend.name, (tensorsByDevice.get(ref.backend.name) ?? 0) + 1);
  scopes.at(-1)?.add(t);
  return t;
}

/**
 * Run `fn` and dispose every tensor it created except those in its result (any tree) and
 * those passed to {@linkcode keep}. Returned tensors belong to the enclosing scope.
 *
 * @example
 * ```ts
 * const y = tidy(() => add(mul(x, 2), 1)); // the temporary mul(x, 2) is freed
 * ```
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  const keepers = new Set<Tensor>();
  collectTensors(result, keepers);
  const parent = scopes.at(-1);
  for (const t of scope) {
    if (keepers.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}

/**
 * @internal Run `fn` and return its result with the set of tensors created while it ran
 * (including ones it already disposed). Nothing is disposed: the created tensors stay in the
 * enclosing scope, so whoever calls this decides which of them to free.
 */
export function created<T>(fn: () => T): [T, Set<Tensor>] {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  try {
    return [fn(), scope];
  } finally {
    scopes.pop();
    const parent = scopes.at(-1);
    if (parent) { for (const t of scope) parent.add(t); }
  }
}

/** Exempt `t` from disposal by the enclosing {@linkcode tidy} scopes. Returns `t`. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

/** Dispose every tensor in a tree (objects, arrays, tensors). */
export function dispose(tree: unknown): void {
  const all = new Set<Tensor>();
  collectTensors(tree, all);
  for (const t of all) t.dispose();
}

function collectTensors(x: unknown, out: Set<Tensor>): void {
  if (x instanceof Tensor) out.add(x);
  else if (Array.isArray(x)) { for (const v of x) collectTensors(v, out); }
  else if (x && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype) {
    for (const v of Object.values(x)) collectTensors(v, out);
  }
}

// ---------------------------------------------------------------------------------------------
// Creation

/** Options for creating a tensor. */
export interface TensorOptions {
  /** Element type (default `"f32"`, or `"bool"` for boolean input). */
  dtype?: DType;
  /** Device (default `cpu`). */
  device?: Backend;
  /** Shape; defaults to the nesting of `values`. Its size must equal the number of values. */
  shape?: readonly number[];
}

/** Product of the dimensions (1 for a scalar). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function checkShape(shape: readonly number[], what: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new Error(`${what}: invalid shape [${shape}]; dimensions must be integers ≥ 0`);
    }
  }
}

/** @internal Check a dtype can live on a device, with an error that says what to do. */
export function checkDevice(device: Backend, dtype: DType, what: string): void {
  const why = device.unsupported(dtype);
  if (why) throw new Error(`${what}: ${why}`);
}

function flatten(
  values: NestedArray,
  shape: number[],
  out: number[],
  depth: number,
  path: number[] = [],
): void {
  if (Array.isArray(values)) {
    if (shape.length === depth) shape.push(values.length);
    else if (shape[depth] !== values.length) {
      throw new Error(
        `tensor: ragged nested array (dimension ${depth} has lengths ${shape[depth]} and ` +
          `${values.length}); every row must have the same length`,
      );
    }
    for (let i = 0; i < values.length; i++) {
      path.push(i); // the element's index, named if it is not a number
      flatten(values[i] as NestedArray, shape, out, depth + 1, path);
      path.pop();
    }
  } else {
    if (typeof values !== "number" && typeof values !== "boolean") {
      const what = depth === 0 ? "values" : `element [${path}]`;
      const got = typeof values === "string"
        ? `the string ${JSON.stringify(values)} (strings are never converted)`
        : values instanceof Tensor
        ? "a Tensor (it already is one; use astype to change its dtype)"
        : values === undefined || values === null
        ? String(values)
        : typeof values === "object"
        ? "an object"
        : `a ${typeof values}`;
      throw new TypeError(
        `tensor: ${what} must be a number, a boolean, a nested array or a typed array, got ${got}`,
      );
    }
    if (shape.length > depth) {
      throw new Error(`tensor: ragged nested array (a number where a list was expected)`);
    }
    out.push(typeof values === "boolean" ? (values ? 1 : 0) : values as number);
  }
}

/**
 * Make a tensor from a number, a nested array or a typed array. Values are rounded once to
 * `dtype` (round to nearest, ties to even).
 *
 * @example
 * ```ts
 * const w = tensor([[1, 2], [3, 4]], { dtype: "bf16" });
 * const v = tensor(new Float32Array(6), { shape: [2, 3] });
 * ```
 */
export function tensor(
  values: NestedArray | ArrayLike<number>,
  opts: TensorOptions = {},
): Tensor {
  const device = opts.device ?? cpu;
  let flat: ArrayLike<number>;
  let inferred: number[];
  let isBool = false;
  if (ArrayBuffer.isView(values)) {
    flat = values as unknown as ArrayLike<number>;
    inferred = [flat.length];
  } else {
    const out: number[] = [];
    inferred = [];
    flatten(values as NestedArray, inferred, out, 0);
    isBool = typeof values === "boolean" ||
      (Array.isArray(values) && out.length > 0 && firstLeaf(values) === "boolean");
    flat = out;
  }
  const dtype = opts.dtype === undefined ? (isBool ? "bool" : "f32") : parseDType(opts.dtype);
  const shape = opts.shape ? [...opts.shape] : inferred;
  checkShape(shape, "tensor");
  if (shapeSize(shape) !== flat.length) {
    throw new Error(
      `tensor: shape [${shape}] holds ${shapeSize(shape)} values but ${flat.length} were given`,
    );
  }
  checkDevice(device, dtype, "tensor");
  return fromHandle(device, device.upload(dtype, encode(dtype, flat)), dtype, shape);
}

function firstLeaf(v: unknown): string {
  while (Array.isArray(v)) v = v[0];
  return typeof v;
}

/**
 * A tensor of `shape` filled with `value`.
 *
 * @example
 * ```ts
 * const t = full([2, 3], 0.5, { dtype: "f16" });
 * ```
 */
export function full(
  shape: readonly number[],
  value: number,
  opts: Omit<TensorOptions, "shape"> = {},
): Tensor {
  const device = opts.device ?? cpu;
  const dtype = parseDType(opts.dtype ?? "f32");
  checkShape(shape, "full");
  checkDevice(device, dtype, "full");
  return fromHandle(device, device.fill(dtype, shapeSize(shape), value), dtype, shape);
}

/** A tensor of zeros. @example `zeros([3, 4], { dtype: "bf16" })` */
export function zeros(shape: readonly number[], opts: Omit<TensorOptions, "shape"> = {}): Tensor {
  return full(shape, 0, opts);
}

/** A tensor of ones. @example `ones([3])` */
export function ones(shape: readonly number[], opts: Omit<TensorOptions, "shape"> = {}): Tensor {
  return full(shape, 1, opts);
}

/**
 * Evenly spaced values in `[start, stop)`; with one argument, `[0, start)`. Default dtype i32
 * when all arguments are integers, else f32.
 *
 * @example
 * ```ts
 * arange(4); // [0, 1, 2, 3] (i32)
 * arange(0, 1, 0.25, { dtype: "f32" }); // [0, 0.25, 0.5, 0.75]
 * ```
 */
export function arange(
  start: number,
  stop?: number,
  step = 1,
  opts: Omit<TensorOptions, "shape"> = {},
): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error("arange: step must not be 0");
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const allInt = [start, stop, step].every(Number.isInteger);
  const values = Array.from({ length: n }, (_, i) => start + i * step);
  return tensor(values, { ...opts, dtype: opts.dtype ?? (allInt ? "i32" : "f32"), shape: [n] });
}

/** @internal Upload already-encoded storage. */
export function fromStorage(
  data: Storage,
  dtype: DType,
  shape: readonly number[],
  device: Backend = cpu,
): Tensor {
  checkDevice(device, dtype, "fromStorage");
  return fromHandle(device, device.upload(dtype, data), dtype, shape);
}

/** Valid dtype names, re-exported for error messages. */
export { dtypes, isFloating };
export type { CastOptions };
