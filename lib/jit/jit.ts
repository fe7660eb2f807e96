/**
 * `jit(fn)`: trace a pure function of tensor trees once per signature into a graph of the
 * Backend's kernels, optimize it (CSE, DCE, constants computed once, elementwise fusion, buffers
 * freed after their last use) and run the compiled program on later calls without running the
 * function's JavaScript again. Results are bitwise equal to eager execution on the same device.
 *
 * Signature: the argument trees' structure, each tensor's shape, dtype and device, and the
 * values of the other leaves (numbers, strings, booleans: static, like JAX's static
 * arguments). Random keys in the arguments are inputs: a new key does not retrace.
 *
 * Donation (JAX's `donate_argnums`): tensors given up by the caller, with the `donate` option
 * (argument positions, every call) or `f.donating(tensors)` (one call). The program then frees
 * or reuses a donated tensor's buffer, so the new state takes the old one's memory (and, when
 * recorded on WebGPU, no copy in or out); each donated tensor is retired, and using it again
 * is an error that says it was donated. A donated tensor whose buffer another tensor shares
 * (a reshape of it, or the same tensor passed twice) is still retired, but its buffer is left
 * alone; one the function returns unchanged comes back as a new tensor on the same buffer.
 *
 * @module
 */
import type { Backend, Handle } from "../backend/backend.ts";
import { isKey, type Key } from "../prng.ts";
import { created, fromHandle, retire, shareBuffer, takeBuffer, Tensor, tidy } from "../tensor.ts";
import { compile, type CompileOptions, type Program, type ProgramStats } from "./program.ts";
import { isTracing, recorder, traceBackend, type TraceHandle } from "./trace.ts";

/** Options of {@linkcode jit}. */
export interface JitOptions extends CompileOptions {
  /**
   * Tensors the function closes over become extra inputs of the program instead of an error:
   * the program keeps a reference to each (freed by `clear()`), so every call sees the values
   * the trace saw. `evaluate` uses this for a metric function that closes over the params.
   */
  readonly captureInputs?: boolean;
  /**
   * Argument positions whose tensors are donated on every call (JAX's `donate_argnums`; for a
   * Step, `[0]` donates the state): see the module doc. Default: none.
   */
  readonly donate?: readonly number[];
}

/** What a jitted function adds: its cache, for tests and benchmarks. */
export interface Jitted {
  /** Number of compiled programs (one per signature seen). */
  readonly cacheSize: number;
  /** Number of traces run so far (a cache miss traces once). */
  readonly traces: number;
  /** Stats of the program compiled for the last call's signature. */
  readonly lastStats: ProgramStats | undefined;
  /** Free every compiled program's constants (and captured tensors); empty the cache. */
  clear(): void;
  /**
   * The same jitted function, donating `tensors` (leaves of the arguments the caller gives up)
   * on the calls made through it, in addition to the `donate` option's. Each donated tensor is
   * retired by the call.
   *
   * @example
   * ```ts
   * const [next] = step.donating(tree.leaves(state))(state, batch); // state is gone now
   * ```
   */
  donating(tensors: Iterable<Tensor>): this;
}

/** The message a donated tensor gives when it is used after the call. */
export const DONATED = "jit: this tensor was donated to a jitted call (the donate option, " +
  "donating(...), or fit, which donates the states it replaces): its buffer now belongs to " +
  "that call's results. Use the tensors the call returned, or do not donate a tensor you use again";

interface Flat {
  tensors: Tensor[];
  keys: Key[];
  signature: string;
}

/** Flatten argument trees: tensor and key leaves are inputs, the rest is in the signature. */
function flatten(args: readonly unknown[]): Flat {
  const tensors: Tensor[] = [];
  const keys: Key[] = [];
  const walk = (x: unknown, path: string): unknown => {
    if (x instanceof Tensor) {
      tensors.push(x);
      return ["T", x.dtype, x.shape, x.device.name];
    }
    if (isKey(x)) {
      keys.push(x);
      return ["K"];
    }
    if (Array.isArray(x)) return ["A", x.map((v, i) => walk(v, `${path}[${i}]`))];
    if (x !== null && typeof x === "object") {
      if (Object.getPrototypeOf(x) !== Object.prototype) {
        throw new Error(
          `jit: argument ${path} is a ${x.constructor?.name ?? "non-plain"} object; jitted ` +
            "functions take trees of plain objects, arrays, tensors, keys, numbers and strings",
        );
      }
      return ["O", Object.entries(x).map(([k, v]) => [k, walk(v, `${path}.${k}`)])];
    }
    if (typeof x === "function" || typeof x === "symbol" || typeof x === "bigint") {
      throw new Error(
        `jit: argument ${path} is a ${typeof x}; pass functions by closing over them, and ` +
          "only data as arguments",
      );
    }
    return ["S", x === undefined ? "undefined" : Object.is(x, -0) ? "-0" : x];
  };
  const sig = args.map((a, i) => walk(a, `#${i}`));
  return { tensors, keys, signature: JSON.stringify(sig) };
}

/** Rebuild argument trees with tensors and keys replaced in flatten order. */
function rebuild(args: readonly unknown[], tensors: readonly Tensor[]): unknown[] {
  let t = 0;
  const walk = (x: unknown): unknown => {
    if (x instanceof Tensor) return tensors[t++];
    if (Array.isArray(x)) return x.map(walk);
    if (x !== null && typeof x === "object" && !isKey(x)) {
      return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, walk(v)]));
    }
    return x;
  };
  return args.map(walk);
}

/** The output template: the result tree with tensor leaves numbered. */
interface Template {
  readonly tree: unknown;
  readonly shapes: readonly (readonly number[])[];
  readonly dtypes: readonly Tensor["dtype"][];
}

const SLOT = Symbol("jit.slot");

function templateOf(result: unknown, check: (t: Tensor, path: string) => void): {
  t: Template;
  leaves: Tensor[];
} {
  const leaves: Tensor[] = [];
  const walk = (x: unknown, path: string): unknown => {
    if (x instanceof Tensor) {
      check(x, path);
      leaves.push(x);
      return { [SLOT]: leaves.length - 1 };
    }
    if (Array.isArray(x)) return x.map((v, i) => walk(v, `${path}[${i}]`));
    if (x !== null && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype) {
      return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, walk(v, `${path}.${k}`)]));
    }
    return x;
  };
  const tree = walk(result, "result");
  return {
    t: { tree, shapes: leaves.map((l) => l.shape), dtypes: leaves.map((l) => l.dtype) },
    leaves,
  };
}

function fill(tree: unknown, outs: readonly Tensor[]): unknown {
  if (tree !== null && typeof tree === "object" && SLOT in (tree as object)) {
    return outs[(tree as Record<symbol, number>)[SLOT]];
  }
  if (Array.isArray(tree)) return tree.map((v) => fill(v, outs));
  if (tree !== null && typeof tree === "object") {
    return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, fill(v, outs)]));
  }
  return tree;
}

interface Compiled {
  readonly program: Program;
  readonly template: Template;
  /** Tensors the function closed over (with `captureInputs`), inputs after the arguments. */
  readonly captured: readonly Tensor[];
}

function deviceOf(tensors: readonly Tensor[]): Backend | undefined {
  const dev = tensors[0]?.device;
  for (const t of tensors) {
    if (t.device !== dev) {
      throw new Error(
        `jit: the arguments live on different devices (${dev!.name} and ${t.device.name}); ` +
          "a jitted function runs on one device: move the tensors first",
      );
    }
  }
  return dev;
}

/** Trace `fn` on `args` for `device` and compile it. */
function traceAndCompile(
  fn: (...args: unknown[]) => unknown,
  args: readonly unknown[],
  flat: Flat,
  device: Backend,
  opts: JitOptions,
): Compiled {
  const rec = recorder(flat.keys, flat.tensors.length, opts.captureInputs ?? false);
  const dev = traceBackend(device, rec);
  let template: Template | undefined;
  let outIds: number[] = [];
  try {
    tidy(() => {
      const [, made] = created(() => trace());
      // Retire the tracers: one kept in closure state and used later fails with this message.
      for (const t of made) if (!t.disposed && t.device === dev) retire(t, ESCAPED);
    });
  } finally {
    rec.closed = true;
    for (const t of rec.liftedTracers.values()) retire(t, ESCAPED);
  }
  const program = compile({ nodes: rec.nodes, outputs: outIds }, device, opts);
  return { program, template: template!, captured: rec.captured };

  function trace(): void {
    const tracers = flat.tensors.map((t, i) =>
      fromHandle(dev, dev.input(i, t.dtype, t.size), t.dtype, t.shape)
    );
    const result = fn(...rebuild(args, tracers));
    if (result && typeof (result as { then?: unknown }).then === "function") {
      (result as Promise<unknown>).then(() => {}, () => {});
      throw new Error(
        "jit: the function returned a Promise; a jitted function must be synchronous " +
          "(values cannot be read inside it with await t.data(): return the tensors instead)",
      );
    }
    if (rec.readAttempt) {
      throw new Error(
        `jit: the function tried to read the values of a ${rec.readAttempt} tensor while ` +
          "being traced; values cannot be read inside a jitted function: return the tensor " +
          "and read it after the call",
      );
    }
    const { t, leaves } = templateOf(result, (x, path) => {
      if (x.disposed || x.device !== dev) {
        throw new Error(
          `jit: ${path} is a tensor that does not come from the function's arguments ` +
            `(${x.dtype}[${x.shape}] on ${x.disposed ? "a disposed buffer" : x.device.name}); ` +
            "pass every tensor the function uses as an argument",
        );
      }
    });
    template = t;
    outIds = leaves.map((l) => (l.handle as TraceHandle).id);
  }
}

const ESCAPED = "jit: a tensor from a finished trace was used; a jitted function must not keep " +
  "traced tensors in closure state (a side effect): return them and pass them back as arguments";

/**
 * Compile `fn`, a pure function of tensor trees, for each signature it is called with. A
 * {@linkcode Step} stays a Step (same `init` and parts), so `jit(step)` composes with `pipe`,
 * `fit` and every plugin. Tensors must come in through the arguments; values cannot be read
 * inside; random keys are arguments too.
 *
 * @example
 * ```ts
 * const f = jitFunction((x: Tensor, y: Tensor) => relu(add(mul(x, 2), y)));
 * const z = f(tensor([1, -2]), tensor([0.5, 0.5])); // one fused kernel
 * ```
 */
export function jitFunction<F extends (...args: never[]) => unknown>(
  fn: F,
  opts: JitOptions = {},
): F & Jitted {
  const f = fn as unknown as (...a: unknown[]) => unknown;
  const cache = new Map<string, Compiled>();
  let traces = 0;
  let last: Compiled | undefined;
  const call = (donate: ReadonlySet<Tensor>, args: unknown[]): unknown => {
    const flat = flatten(args);
    const device = deviceOf(flat.tensors);
    // Inside another trace (nested jit) or with no tensors at all: run the function as is.
    if (!device || isTracing(device)) return f(...args);
    const key = `${device.name}|${flat.signature}`;
    let c = cache.get(key);
    if (!c) {
      traces++;
      c = traceAndCompile(f, args, flat, device, opts);
      cache.set(key, c);
    }
    last = c;
    const all = [...flat.tensors, ...c.captured];
    const given = donatedOf(opts.donate ?? [], args, donate);
    const passthrough = c.program.passthrough;
    const handles0 = all.map((t) => t.handle);
    // A donated buffer the program may take: its tensor is its only holder, is passed once,
    // and is not returned unchanged.
    const holders = new Map<unknown, number>();
    for (const t of all) holders.set(t.ref, (holders.get(t.ref) ?? 0) + 1);
    const donated = flat.tensors.map((t, i) =>
      given.has(t) && holders.get(t.ref) === 1 && !passthrough.includes(i) &&
      takeBuffer(t, DONATED) !== undefined
    );
    const handles = c.program.run(handles0, flat.keys, donated);
    const { shapes, dtypes } = c.template;
    const seen = new Map<Handle, Tensor>();
    const outs = handles.map((h, i) => {
      const p = passthrough[i];
      if (p >= 0) {
        const x = all[p];
        return x.shape.join() === shapes[i].join() && !given.has(x) ? x : shareBuffer(x, shapes[i]);
      }
      const prev = seen.get(h);
      if (prev) return shareBuffer(prev, shapes[i]);
      const t = fromHandle(device, h, dtypes[i], shapes[i]);
      seen.set(h, t);
      return t;
    });
    // Donated tensors whose buffer was shared are retired too (the buffer stays for the others).
    for (const t of flat.tensors) if (given.has(t) && !t.disposed) retire(t, DONATED);
    return fill(c.template.tree, outs);
  };
  const make = (donate: ReadonlySet<Tensor>): F & Jitted =>
    Object.defineProperties((...args: unknown[]) => call(donate, args), {
      cacheSize: { get: () => cache.size },
      traces: { get: () => traces },
      lastStats: { get: () => last?.program.stats },
      clear: {
        value: () => {
          for (const c of cache.values()) {
            c.program.dispose();
            for (const t of c.captured) t.dispose();
          }
          cache.clear();
        },
      },
      donating: { value: (ts: Iterable<Tensor>) => make(new Set([...donate, ...ts])) },
    }) as unknown as F & Jitted;
  return make(new Set());
}

/** The argument tensors donated on this call: those at `positions` and those in `extra`. */
function donatedOf(
  positions: readonly number[],
  args: readonly unknown[],
  extra: ReadonlySet<Tensor>,
): Set<Tensor> {
  const out = new Set<Tensor>(extra);
  const walk = (x: unknown): void => {
    if (x instanceof Tensor) out.add(x);
    else if (Array.isArray(x)) x.forEach(walk);
    else if (x !== null && typeof x === "object" && !isKey(x)) Object.values(x).forEach(walk);
  };
  for (const p of positions) walk(args[p]);
  return out;
}
