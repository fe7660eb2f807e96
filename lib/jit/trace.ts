/**
 * The tracing device: a {@linkcode Backend} that records each kernel call as a graph node
 * instead of running it. Every op already reaches its device through the Backend interface,
 * so running a function on tensors of this device records exactly the kernels eager execution
 * would issue, with the autodiff, autocast and optimizer logic resolved at trace time.
 *
 * @module
 */
import type { DType, Storage } from "../dtype.ts";
import type { Arg, Backend, Handle, View } from "../backend/backend.ts";
import type { Key } from "../prng.ts";
import type { Node, NodeOp, ViewRef } from "./graph.ts";
import { fromHandle, keep, shareBuffer, type Tensor } from "../tensor.ts";
import { blockwise8bitOutputs } from "../backend/optim8.ts";

/** A buffer of the tracing device: the id of the node that makes it. */
export interface TraceHandle {
  /** Node id. */
  readonly id: number;
  /** The recorder that owns it (a handle from another trace is a captured value). */
  readonly rec: Recorder;
}

/** The state of one trace: its nodes, the key arguments, and what went wrong. */
export interface Recorder {
  /** Recorded nodes in issue order. */
  readonly nodes: Node[];
  /** The key arguments (random keys are inputs, matched by identity). */
  readonly keys: readonly Key[];
  /** Whether the trace has finished (a handle used after that escaped through a closure). */
  closed: boolean;
  /** Set when the traced function tried to read values. */
  readAttempt?: string;
  /**
   * Whether tensors the function closes over become extra inputs (`evaluate` uses this for
   * its closure over the params); otherwise a captured tensor is an error.
   */
  readonly allowCapture: boolean;
  /**
   * References to the captured tensors (held by the compiled program), in the order their
   * input nodes were made (after the arguments).
   */
  readonly captured: Tensor[];
  /** Tracers made for captured tensors (freed when the trace ends). */
  readonly liftedTracers: Map<Tensor, Tensor>;
  /** Number of argument tensors (captured inputs are numbered after them). */
  readonly argCount: number;
}

/** Make a recorder for one trace. */
export function recorder(
  keys: readonly Key[],
  argCount: number,
  allowCapture = false,
): Recorder {
  return {
    nodes: [],
    keys,
    closed: false,
    allowCapture,
    captured: [],
    liftedTracers: new Map(),
    argCount,
  };
}

/** Whether a backend is a tracing device. */
export function isTracing(b: Backend): b is TraceBackend {
  return b.tracing === true;
}

/** The tracing device, a Backend that records. One per (trace, target device). */
export interface TraceBackend extends Backend {
  /** The device the program will run on. */
  readonly target: Backend;
  /** The trace this device records into. */
  readonly rec: Recorder;
  /** Record an input node (argument leaf `index`) and return its handle. */
  input(index: number, dtype: DType, size: number): TraceHandle;
  /**
   * The tracer standing for a tensor of the target device that the function closes over, or
   * `undefined` when this trace does not allow captures (then it is an error).
   */
  lift(t: Tensor): Tensor | undefined;
}

/**
 * A tracing device for `target` recording into `rec`.
 *
 * @example
 * ```ts
 * const dev = traceBackend(cpu, recorder([]));
 * ```
 */
export function traceBackend(target: Backend, rec: Recorder): TraceBackend {
  const id = (h: Handle): number => {
    const t = h as TraceHandle;
    if (rec.closed) {
      throw new Error(
        "jit: a tensor from a finished trace was used; a jitted function must not keep traced " +
          "tensors in closure state (a side effect): return them and pass them back as arguments",
      );
    }
    if (!t || t.rec !== rec) {
      throw new Error(
        "jit: a tensor from another jitted call was mixed into this trace; pass every tensor the " +
          "function uses as an argument",
      );
    }
    return t.id;
  };
  const view = (v: View): ViewRef => ({
    id: id(v.h),
    shape: v.shape,
    strides: v.strides,
    offset: v.offset,
  });
  const node = (n: NodeOp, dtype: DType, size: number): TraceHandle => {
    rec.nodes.push({ ...n, dtype, size } as Node);
    return { id: rec.nodes.length - 1, rec };
  };
  const sizeOf = (v: View) => v.shape.reduce((p, d) => p * d, 1);
  const dev: TraceBackend = {
    kind: target.kind,
    name: `jit(${target.name})`,
    tracing: true,
    target,
    rec,
    input: (index, dtype, size) => node({ op: "input", index }, dtype, size),
    lift(t) {
      if (!rec.allowCapture || t.device !== target) return undefined;
      let tracer = rec.liftedTracers.get(t);
      if (!tracer) {
        const h = node({ op: "input", index: rec.argCount + rec.captured.length }, t.dtype, t.size);
        // The program holds its own reference, so the value stays what the trace saw.
        rec.captured.push(keep(shareBuffer(t, t.shape)));
        tracer = keep(fromHandle(dev, h, t.dtype, t.shape));
        rec.liftedTracers.set(t, tracer);
      }
      return tracer;
    },
    unsupported: (d) => target.unsupported(d),
    upload: (dtype: DType, data: Storage) =>
      node({ op: "const", data: data.slice() }, dtype, data.length),
    fill: (dtype, size, value) => node({ op: "fill", value }, dtype, size),
    read(x: Arg): Promise<Storage> {
      rec.readAttempt ??= `${x.dtype}[${x.size}]`;
      throw new Error(
        "jit: values cannot be read inside a jitted function (await t.data(), t.item(), " +
          "t.toArray()); return the tensor from the function and read it after the call",
      );
    },
    free: () => {},
    cast: (x, to, opts) => node({ op: "cast", x: id(x.h), opts }, to, x.size),
    copy: (x, outDtype) => node({ op: "copy", x: view(x) }, outDtype, sizeOf(x)),
    unary: (kind, x, outDtype) => node({ op: "unary", kind, x: id(x.h) }, outDtype, x.size),
    binary: (kind, a, b, outDtype) =>
      node({ op: "binary", kind, a: view(a), b: view(b) }, outDtype, sizeOf(a)),
    where: (c, a, b, outDtype) =>
      node({ op: "where", c: view(c), a: view(a), b: view(b) }, outDtype, sizeOf(a)),
    reduce: (kind, x, outer, reduce, inner, outDtype) =>
      node({ op: "reduce", kind, x: id(x.h), outer, reduce, inner }, outDtype, outer * inner),
    matmul: (a, b, g, outDtype) =>
      node({ op: "matmul", a: id(a.h), b: id(b.h), g }, outDtype, g.batch * g.m * g.n),
    concat: (xs, outer, sizes, inner, outDtype) =>
      node(
        { op: "concat", xs: xs.map((x) => id(x.h)), outer, sizes: [...sizes], inner },
        outDtype,
        outer * inner * sizes.reduce((p, s) => p + s, 0),
      ),
    gather: (x, idx, outer, axis, inner) =>
      node(
        { op: "gather", x: id(x.h), idx: id(idx.h), outer, axis, inner },
        x.dtype,
        outer * idx.size * inner,
      ),
    scatterAdd: (base, idx, upd, outer, axis, inner) =>
      node(
        { op: "scatterAdd", base: id(base.h), idx: id(idx.h), upd: id(upd.h), outer, axis, inner },
        base.dtype,
        base.size,
      ),
    random(key, size, dtype, dist) {
      const k = rec.keys.indexOf(key);
      if (k < 0) {
        throw new Error(
          "jit: a random key made inside the jitted function (split, foldIn or key(seed) " +
            "inside it) would be frozen at trace time; derive keys outside and pass them as " +
            "arguments, e.g. jit((state, batch, key) => …)(state, batch, foldIn(k, step))",
        );
      }
      return node({ op: "random", key: k, dist }, dtype, size);
    },
    quantize: (x, absmax, map, blockSize, signGuard) =>
      node(
        { op: "quantize", x: id(x.h), absmax: id(absmax.h), map: id(map.h), blockSize, signGuard },
        "u8",
        x.size,
      ),
    dequantize: (codes, absmax, map, blockSize, outDtype) =>
      node(
        {
          op: "dequantize",
          codes: id(codes.h),
          absmax: id(absmax.h),
          map: id(map.h),
          blockSize,
        },
        outDtype,
        codes.size,
      ),
  };
  if (target.blockwise8bitUpdate) {
    // One node for the kernel (its first output) and a `part` node per further output.
    dev.blockwise8bitUpdate = (u, inputs) => {
      const outs = blockwise8bitOutputs(u, inputs[0].dtype, inputs[0].size);
      const main = node(
        { op: "blockwise8bit", update: u, inputs: inputs.map((x) => id(x.h)) },
        outs[0].dtype,
        outs[0].size,
      );
      const parts = outs.slice(1).map((o, k) =>
        node({ op: "part", x: main.id, index: k + 1 }, o.dtype, o.size)
      );
      return [main, ...parts];
    };
  }
  return dev;
}
