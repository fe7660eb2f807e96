/**
 * Op declarations and the single place where ops run (`apply`). An op is declared once with a
 * shape/dtype rule (`infer`), a kernel written against the {@linkcode Backend} interface, and a
 * VJP written with other ops — so every backend runs forward and backward passes through the
 * same declaration. Composite ops (`compose`) are built from other ops and differentiated
 * through them.
 *
 * `apply` offers one policy-free hook, the interceptor scope ({@linkcode intercept}): it sees
 * each top-level op call (its declaration, tags and inputs) and may replace the inputs, e.g. to
 * cast them. Precision policy lives in `plugins/`, never here.
 *
 * @module
 */
import type { DType } from "./dtype.ts";
import type { Backend, Handle } from "./backend/backend.ts";
import { checkDevice, fromHandle, shareBuffer, Tensor, tidy } from "./tensor.ts";

/**
 * Neutral tags that describe what an op does; plugins map them to policies.
 * - `matmul`: matrix products (matmul, linear).
 * - `elementwise`: arithmetic maps (add, mul, relu …); `transcendental`: exp, log, pow, tanh …
 * - `compare`: comparisons producing bool; `reduction`: sum, mean, max …
 * - `softmax`: softmax, logSoftmax, logsumexp; `loss`: losses; `norm`: normalisation layers.
 * - `scatter`: scatter/accumulate ops; `movement`: reshape, transpose, slice, concat …
 * - `gather`: indexing reads; `cast`: dtype conversion; `creation`: random and constant fills.
 * - `multi-input`: joins several tensors of possibly different dtypes (concat, stack, where).
 */
export type OpTag =
  | "matmul"
  | "elementwise"
  | "transcendental"
  | "compare"
  | "reduction"
  | "softmax"
  | "loss"
  | "norm"
  | "scatter"
  | "movement"
  | "gather"
  | "cast"
  | "creation"
  | "multi-input";

/** Shape and dtype of a tensor, as seen by shape rules. */
export interface Meta {
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
}

/** The declaration of one op. Provide `infer` + `kernel` (+ `vjp`), or `compose`. */
export interface OpDef<A = unknown> {
  /** The public name, used in errors. */
  readonly name: string;
  /** What the op does, for interceptors (see {@linkcode OpTag}). */
  readonly tags: readonly OpTag[];
  /** Shape/dtype rule: throws a clear error naming the op for bad input. */
  readonly infer?: (inputs: readonly Meta[], attrs: A) => Meta;
  /** The kernel, written against the backend interface. Return `"share"` to alias input 0. */
  readonly kernel?: (b: Backend, inputs: readonly Tensor[], attrs: A, out: Meta) => Handle;
  /** Aliases the first input's buffer with a new shape (reshape) instead of running a kernel. */
  readonly view?: boolean;
  /**
   * Cotangents of the inputs given the output's (`null` for non-differentiable inputs). `needs[i]`
   * says whether input i's cotangent is wanted; others may be `null`.
   */
  readonly vjp?: (
    g: Tensor,
    inputs: readonly Tensor[],
    out: Tensor,
    attrs: A,
    needs: readonly boolean[],
  ) => readonly (Tensor | null)[];
  /** A composite op: the body, made of other ops (differentiated through them). */
  readonly compose?: (inputs: readonly Tensor[], attrs: A) => Tensor;
}

/** One op call as an interceptor sees it. */
export interface OpCall {
  /** The op's declaration (name, tags). */
  readonly op: OpDef<unknown>;
  /** The op's attributes (axis, shape …). */
  readonly attrs: unknown;
}

/**
 * An interceptor: sees each top-level op call and returns the inputs to use (possibly cast).
 * Calls made inside an op's own body, inside another interceptor, or by `grad`'s backward pass
 * are not intercepted. `next` hands the inputs to the enclosing interceptor scope (or the op).
 */
export type Interceptor = (
  call: OpCall,
  inputs: readonly Tensor[],
  next: (inputs: readonly Tensor[]) => Tensor,
) => Tensor;

const interceptors: Interceptor[] = [];
let depth = 0;

/**
 * Run `body` with `fn` intercepting every top-level op call made inside it. Scopes nest; the
 * innermost interceptor runs first and may call `next` to pass on to the outer ones.
 *
 * @example
 * ```ts
 * const seen: string[] = [];
 * intercept((call, inputs, next) => (seen.push(call.op.name), next(inputs)), () => add(x, 1));
 * ```
 */
export function intercept<T>(fn: Interceptor, body: () => T): T {
  interceptors.push(fn);
  try {
    return body();
  } finally {
    interceptors.splice(interceptors.lastIndexOf(fn), 1);
  }
}

/** Run `body` with no interception and no tape recording of its own (used by backward). */
export function opaque<T>(body: () => T): T {
  depth++;
  const saved = tapes.splice(0);
  try {
    return body();
  } finally {
    depth--;
    tapes.push(...saved);
  }
}

// ---------------------------------------------------------------------------------------------
// Tape hooks (used by lib/autodiff.ts)

/** @internal One recorded op application. */
export interface TapeNode {
  readonly op: OpDef<unknown>;
  readonly inputs: readonly Tensor[];
  readonly out: Tensor;
  readonly attrs: unknown;
}

/** @internal A recording of the ops that depend on watched tensors. */
export interface Tape {
  readonly watched: Set<Tensor>;
  readonly nodes: TapeNode[];
}

const tapes: Tape[] = [];

/** @internal Record ops into `tape` while `body` runs. */
export function recording<T>(tape: Tape, body: () => T): T {
  tapes.push(tape);
  try {
    return body();
  } finally {
    tapes.splice(tapes.lastIndexOf(tape), 1);
  }
}

/**
 * @internal Run `fn` and free every tensor it creates except its result (scalar operands,
 * promotion casts, the insides of composite ops), so an op called outside `tidy` leaks nothing.
 * While a tape records, the temporaries are kept: the backward pass reads them, and the
 * enclosing `grad` frees them when it returns.
 *
 * @example
 * ```ts
 * const y = temporaries(() => add(x, full([], 1))); // the scalar tensor is freed
 * ```
 */
export function temporaries<T>(fn: () => T): T {
  return tapes.length ? fn() : tidy(fn);
}

// ---------------------------------------------------------------------------------------------
// apply

function sameDevice(op: string, inputs: readonly Tensor[]): Backend {
  const dev = inputs[0].device;
  for (const t of inputs) {
    if (t.device !== dev) {
      if (dev.tracing || t.device.tracing) {
        const other = dev.tracing ? t : inputs[0];
        throw new Error(
          `jit: ${op} mixes a traced tensor with a ${other.dtype}[${other.shape}] tensor on ` +
            `${other.device.name} that does not come from the jitted function's arguments (a ` +
            "captured tensor, or one created without { device }); pass it as an argument, e.g. " +
            "jit((params, batch, w) => …)(params, batch, w), or create it on the argument's " +
            "device (zeros(shape, { device: x.device }))",
        );
      }
      throw new Error(
        `${op}: inputs are on different devices (${dev.name} and ${t.device.name}); ` +
          "copy one over first, e.g. tensor(await t.data(), { shape: t.shape, dtype: t.dtype, device })",
      );
    }
  }
  return dev;
}

/** Inside a trace that allows captures, replace tensors the function closes over by tracers. */
function liftCaptured(inputs: readonly Tensor[]): readonly Tensor[] {
  const tracing = inputs.find((t) => t.device.tracing)?.device as
    | { lift?: (t: Tensor) => Tensor | undefined }
    | undefined;
  if (!tracing?.lift) return inputs;
  return inputs.map((t) => t.device === tracing as unknown ? t : tracing.lift!(t) ?? t);
}

function run<A>(op: OpDef<A>, given: readonly Tensor[], attrs: A): Tensor {
  const inputs = liftCaptured(given);
  depth++;
  let out: Tensor;
  try {
    if (op.compose) out = temporaries(() => op.compose!(inputs, attrs));
    else {
      const dev = sameDevice(op.name, inputs);
      const meta = op.infer!(inputs, attrs);
      if (op.view) out = shareBuffer(inputs[0], meta.shape);
      else {
        checkDevice(dev, meta.dtype, op.name);
        out = fromHandle(dev, op.kernel!(dev, inputs, attrs, meta), meta.dtype, meta.shape);
      }
    }
  } finally {
    depth--;
  }
  if (!op.compose && tapes.length) {
    for (const tape of tapes) {
      if (inputs.some((t) => tape.watched.has(t))) {
        tape.nodes.push({ op: op as OpDef<unknown>, inputs, out, attrs });
        tape.watched.add(out);
      }
    }
  }
  return out;
}

/** What a non-tensor argument is, with the usual cause or fix. */
function describeArg(x: unknown): string {
  if (x === undefined) {
    return "undefined (a key missing from the batch or params tree, or a missing argument?)";
  }
  if (x === null) return "null";
  if (Array.isArray(x)) return "a plain array; wrap it in tensor([...])";
  if (typeof x === "string") {
    return `the string ${JSON.stringify(x)}; strings are never converted, pass a number or tensor`;
  }
  if (typeof x === "number") return `the number ${x}; pass tensor(${x}) or full(shape, ${x})`;
  if (typeof x === "object") return `an object (${x.constructor?.name ?? "no prototype"})`;
  return `a ${typeof x}`;
}

/**
 * Throw a clear error unless `x` is a Tensor, naming the op, the argument's position (1-based)
 * or name, and what was passed instead.
 *
 * @example
 * ```ts
 * expectTensor("matmul", a, 1); // "matmul: argument 1 must be a Tensor, got undefined (…)"
 * ```
 */
export function expectTensor(
  op: string,
  x: unknown,
  arg: number | string,
  expected = "a Tensor",
): asserts x is Tensor {
  if (x instanceof Tensor) return;
  const which = typeof arg === "number" ? `argument ${arg}` : arg;
  throw new TypeError(`${op}: ${which} must be ${expected}, got ${describeArg(x)}`);
}

/**
 * Run an op: interception (top-level calls only), device and shape checks, the kernel, and
 * tape recording for autodiff.
 *
 * @example
 * ```ts
 * const y = apply(addOp, [a, b], undefined);
 * ```
 */
export function apply<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A): Tensor {
  inputs.forEach((t, i) => expectTensor(op.name, t, i + 1));
  if (depth > 0 || interceptors.length === 0) return run(op, inputs, attrs);
  const call: OpCall = { op: op as OpDef<unknown>, attrs };
  const chain = (level: number, xs: readonly Tensor[]): Tensor => {
    if (level < 0) return run(op, xs, attrs);
    depth++;
    let replaced: readonly Tensor[] | undefined;
    let result: Tensor | undefined;
    try {
      result = interceptors[level](call, xs, (ys) => {
        replaced = ys;
        depth--;
        try {
          return chain(level - 1, ys);
        } finally {
          depth++;
        }
      });
    } finally {
      depth--;
    }
    if (replaced === undefined) {
      throw new Error(`interceptor for ${op.name} returned without calling next(inputs)`);
    }
    return result;
  };
  return chain(interceptors.length - 1, inputs);
}
