/**
 * A compiled program: constants computed once, a schedule of kernels (fused where the backend
 * can), and a memory plan from liveness (each intermediate buffer is freed right after its last
 * reader, so the device's pool reuses it for the next one, step after step).
 *
 * Donated arguments (see `Program.run`) are the program's to free: run kernel by kernel, each
 * is freed right after its last reader, so a new state of the same size reuses the old one's
 * memory; recorded (WebGPU), the recording trades buffers with them (see `Backend.record`).
 * Random keys are per-call data: a recorded program reads them from a small key buffer, so a
 * step that draws random numbers (dropout) is recorded and replayed like any other.
 *
 * @module
 */
import type { Arg, Backend, Handle, Recording, View } from "../backend/backend.ts";
import type { Key } from "../prng.ts";
import { type Graph, inputsOf, type Node, type ViewRef } from "./graph.ts";
import { foldMatmulCasts, type Simplified, simplify } from "./passes.ts";
import { schedule, type Step } from "./fuse.ts";

/** Counts that describe a compiled program (for tests and benchmarks). */
export interface ProgramStats {
  /** Nodes traced. */
  readonly traced: number;
  /** Nodes left after CSE and DCE. */
  readonly nodes: number;
  /** Nodes computed once at compile time. */
  readonly constants: number;
  /** Kernels per call (fused kernels count once). */
  readonly kernels: number;
  /** Fused kernels per call. */
  readonly fused: number;
  /** Kernels per call by kind (`fused`, or the Backend method of a single node). */
  readonly byKind: Readonly<Record<string, number>>;
  /** One short line per kernel, in order (what it is, its size), for reading a schedule. */
  readonly schedule: readonly string[];
}

/** A program compiled for one device. */
export interface Program {
  /**
   * Run on argument buffers and keys; returns one new buffer per output (see `passthrough`).
   * `donated[i]` gives argument `i`'s buffer to the program, which frees or reuses it: the
   * caller must not free it, and must not donate a buffer passed twice or an argument that
   * `passthrough` returns.
   */
  run(args: readonly Handle[], keys: readonly Key[], donated?: readonly boolean[]): Handle[];
  /**
   * For each output, `-1` when `run` made a new buffer for it, else the argument index it is
   * (an output that is an input unchanged is returned as that very tensor).
   */
  readonly passthrough: readonly number[];
  /** Free the program's constants. */
  dispose(): void;
  /** What was compiled. */
  readonly stats: ProgramStats;
}

/** Compile options. */
export interface CompileOptions {
  /** Fuse elementwise chains (default true when the backend has `fused`). */
  readonly fuse?: boolean;
  /** Record and replay the kernels where the backend can (default true; see `Backend.record`). */
  readonly record?: boolean;
  /**
   * Fold casts f32 → f16/bf16 of matmul operands into the matmul (default true where the
   * backend has `matmulCasts`; see `foldMatmulCasts`).
   */
  readonly foldCasts?: boolean;
}

function arg(n: Node, h: Handle): Arg {
  return { h, dtype: n.dtype, size: n.size };
}

function view(nodes: readonly Node[], v: ViewRef, h: Handle): View {
  const n = nodes[v.id];
  return { h, dtype: n.dtype, size: n.size, shape: v.shape, strides: v.strides, offset: v.offset };
}

/** The outputs of a multi-output kernel, by its first output's handle (read by `part` nodes). */
const siblings = new WeakMap<object, Handle[]>();

/** Run one node's kernel on `b` with buffers from `get` (the same call eager execution makes). */
function exec(
  b: Backend,
  nodes: readonly Node[],
  n: Node,
  get: (id: number) => Handle,
  keys: readonly Key[],
): Handle {
  const a = (id: number) => arg(nodes[id], get(id));
  const v = (x: ViewRef) => view(nodes, x, get(x.id));
  switch (n.op) {
    case "input":
      throw new Error("jit: internal error, an input node has no kernel");
    case "const":
      return b.upload(n.dtype, n.data);
    case "fill":
      return b.fill(n.dtype, n.size, n.value);
    case "cast":
      return b.cast(a(n.x), n.dtype, n.opts);
    case "copy":
      return b.copy(v(n.x), n.dtype);
    case "unary":
      return b.unary(n.kind, a(n.x), n.dtype);
    case "binary":
      return b.binary(n.kind, v(n.a), v(n.b), n.dtype);
    case "where":
      return b.where(v(n.c), v(n.a), v(n.b), n.dtype);
    case "reduce":
      return b.reduce(n.kind, a(n.x), n.outer, n.reduce, n.inner, n.dtype);
    case "matmul":
      return b.matmul(a(n.a), a(n.b), n.g, n.dtype);
    case "concat":
      return b.concat(n.xs.map(a), n.outer, n.sizes, n.inner, n.dtype);
    case "gather":
      return b.gather(a(n.x), a(n.idx), n.outer, n.axis, n.inner);
    case "scatterAdd":
      return b.scatterAdd(a(n.base), a(n.idx), a(n.upd), n.outer, n.axis, n.inner);
    case "random":
      return b.random(keys[n.key], n.size, n.dtype, n.dist);
    case "quantize":
      return b.quantize(a(n.x), a(n.absmax), a(n.map), n.blockSize, n.signGuard);
    case "dequantize":
      return b.dequantize(a(n.codes), a(n.absmax), a(n.map), n.blockSize, n.dtype);
    case "blockwise8bit": {
      const hs = b.blockwise8bitUpdate!(n.update, n.inputs.map(a));
      siblings.set(hs[0] as object, hs);
      return hs[0];
    }
    case "part":
      return siblings.get(get(n.x) as object)![n.index];
  }
}

function stepReads(s: Simplified, st: Step): number[] {
  if (st.kind === "node") return inputsOf(s.nodes[st.id]);
  if (st.matmul !== undefined) {
    return [...inputsOf(s.nodes[st.matmul]), ...st.inputs.slice(1).map((v) => v.id)];
  }
  return st.inputs.map((v) => v.id);
}

function stepWrites(st: Step): readonly number[] {
  return st.kind === "node" ? [st.id] : st.outputs;
}

/**
 * Compile a traced graph for device `b`.
 *
 * @example
 * ```ts
 * const p = compile(graph, cpu);
 * const [out] = p.run([xHandle], []);
 * ```
 */
export function compile(g: Graph, b: Backend, opts: CompileOptions = {}): Program {
  const fold = (opts.foldCasts ?? true) && b.matmulCasts === true;
  const s = simplify(fold ? foldMatmulCasts(g) : g);
  const { nodes, constant } = s;
  const fuse = (opts.fuse ?? true) && typeof b.fused === "function";
  const steps = schedule(s, {
    fuse,
    maxBuffers: b.maxFusedBuffers ?? Infinity,
    reduce: b.fusedReduce === true,
    matmul: typeof b.matmulFused === "function",
    fits: b.matmulFusedFits?.bind(b),
  });

  // Constants that per-call work or the outputs read, and the constants they are made from.
  const needed = new Set<number>();
  for (const st of steps) for (const i of stepReads(s, st)) if (constant[i]) needed.add(i);
  for (const o of s.outputs) if (constant[o]) needed.add(o);
  const consts = new Map<number, Handle>();
  {
    const want = new Set<number>();
    const mark = (id: number) => {
      if (want.has(id)) return;
      want.add(id);
      inputsOf(nodes[id]).forEach(mark);
    };
    needed.forEach(mark);
    const lastUse = new Map<number, number>();
    for (const id of [...want].sort((x, y) => x - y)) {
      for (const i of inputsOf(nodes[id])) lastUse.set(i, id);
    }
    for (const id of [...want].sort((x, y) => x - y)) {
      consts.set(id, exec(b, nodes, nodes[id], (i) => consts.get(i)!, []));
      for (const i of inputsOf(nodes[id])) {
        if (lastUse.get(i) === id && !needed.has(i)) {
          b.free(consts.get(i)!, nodes[i].dtype, nodes[i].size);
          consts.delete(i);
        }
      }
    }
  }

  // Liveness: free each per-call buffer after the last step that reads it.
  const isOutput = new Set(s.outputs);
  const lastRead = new Map<number, number>();
  steps.forEach((st, k) => {
    for (const i of stepReads(s, st)) lastRead.set(i, k);
  });
  const frees: number[][] = steps.map(() => []);
  steps.forEach((st, k) => {
    for (const w of stepWrites(st)) {
      if (isOutput.has(w)) continue;
      const last = lastRead.get(w);
      // A value no step reads (only possible for fused outputs) is freed right away.
      frees[last ?? k].push(w);
    }
  });

  // A donated input is freed after the last step that reads it (at once when none does).
  const inputFrees: number[][] = [[], ...steps.map(() => [])];
  for (const [id] of nodes.flatMap((n, id) => n.op === "input" ? [[id]] : [])) {
    if (!isOutput.has(id)) inputFrees[(lastRead.get(id) ?? -1) + 1].push(id);
  }

  const passthrough = s.outputs.map((o) =>
    nodes[o].op === "input" ? (nodes[o] as { index: number }).index : -1
  );
  const inputIds = nodes.flatMap((n, id) => n.op === "input" ? [[id, n.index]] : []);
  let kernels = 0;
  let fused = 0;
  const byKind: Record<string, number> = {};
  for (const st of steps) {
    kernels++;
    if (st.kind === "fused") fused++;
    const kind = st.kind === "fused" ? "fused" : nodes[st.id].op;
    byKind[kind] = (byKind[kind] ?? 0) + 1;
  }
  const describe = (st: Step): string => {
    if (st.kind === "fused") {
      const ops = st.kernel.ops.map((o) => (o.op === "unary" || o.op === "binary" ? o.kind : o.op));
      const r = st.kernel.reduce ? ` → ${st.kernel.reduce.op}` : "";
      const mm = st.matmul === undefined ? "" : `matmul ${nodes[st.matmul].dtype} + `;
      return `${mm}fused ${st.kernel.size}: ${ops.join(" ")}${r} → ${st.outputs.length} out`;
    }
    const n = nodes[st.id];
    const what = "kind" in n ? `${n.op}:${n.kind}` : n.op;
    return `${what} ${n.dtype}[${n.size}]`;
  };
  const stats: ProgramStats = {
    traced: g.nodes.length,
    nodes: nodes.length,
    constants: constant.filter(Boolean).length,
    kernels,
    fused,
    byKind,
    schedule: steps.map(describe),
  };

  // Outputs that per-call work computes (the others are arguments or constants).
  const computed = s.outputs.flatMap((o, i) => passthrough[i] < 0 && !constant[o] ? [o] : []);
  const runSteps = (
    inputs: readonly Handle[],
    keys: readonly Key[],
    donated?: ReadonlySet<number>,
  ): Handle[] => {
    const env = new Map<number, Handle>(consts);
    inputIds.forEach(([id], j) => env.set(id, inputs[j]));
    const get = (id: number) => env.get(id)!;
    const freeInputs = (k: number) => {
      for (const id of inputFrees[k]) {
        if (donated?.has(id)) b.free(env.get(id)!, nodes[id].dtype, nodes[id].size);
      }
    };
    freeInputs(0);
    steps.forEach((st, k) => {
      if (st.kind === "node") env.set(st.id, exec(b, nodes, nodes[st.id], get, keys));
      else if (st.matmul !== undefined) {
        const mm = nodes[st.matmul] as Node & { op: "matmul" };
        const views = st.inputs.slice(1).map((v) => view(nodes, v, get(v.id)));
        const hs = b.matmulFused!(
          arg(nodes[mm.a], get(mm.a)),
          arg(nodes[mm.b], get(mm.b)),
          mm.g,
          mm.dtype,
          st.kernel,
          views,
        );
        st.outputs.forEach((o, i) => env.set(o, hs[i]));
      } else {
        const hs = b.fused!(st.kernel, st.inputs.map((v) => view(nodes, v, get(v.id))));
        st.outputs.forEach((o, i) => env.set(o, hs[i]));
      }
      for (const id of frees[k]) b.free(env.get(id)!, nodes[id].dtype, nodes[id].size);
      freeInputs(k + 1);
    });
    return computed.map(get);
  };
  const recordable = typeof b.record === "function" && (opts.record ?? true);
  let recording: Recording | undefined;
  const used = new Set(inputIds.map(([, index]) => index));
  const argInfo = new Map<number, Node>();
  for (const n of g.nodes) if (n.op === "input") argInfo.set(n.index, n);
  const run = (
    args: readonly Handle[],
    keys: readonly Key[],
    donated?: readonly boolean[],
  ): Handle[] => {
    const inputs = inputIds.map(([id, index]) => arg(nodes[id], args[index]));
    const given = inputIds.map(([, index]) => donated?.[index] === true);
    let outs: Handle[];
    if (!recordable) {
      const ids = new Set(inputIds.flatMap(([id], j) => given[j] ? [id] : []));
      outs = runSteps(inputs.map((a) => a.h), keys, ids);
    } else if (recording) outs = recording.replay(inputs, { keys, donated: given });
    else {
      const r = b.record!(inputs, (owned, standIns) => runSteps(owned, standIns), {
        keys,
        donated: given,
      });
      recording = r.recording;
      outs = r.outputs;
    }
    // A donated argument that no kernel reads (dropped as dead code) is simply freed.
    donated?.forEach((d, i) => {
      const n = argInfo.get(i);
      if (d && !used.has(i) && n) b.free(args[i], n.dtype, n.size);
    });
    let next = 0;
    return s.outputs.map((o, i) => {
      if (passthrough[i] >= 0) return args[passthrough[i]];
      // A constant output gets a fresh copy each call: the caller owns what `run` returns.
      if (constant[o]) return b.cast(arg(nodes[o], consts.get(o)!), nodes[o].dtype);
      return outs[next++];
    });
  };
  return {
    run,
    passthrough,
    stats,
    dispose() {
      recording?.dispose();
      recording = undefined;
      for (const [id, h] of consts) b.free(h, nodes[id].dtype, nodes[id].size);
      consts.clear();
    },
  };
}
