/**
 * Fusion: groups chains of elementwise nodes (unary, binary, where, cast, copy) that share one
 * iteration space into {@linkcode FusedKernel}s. A node joins the groups of the producers it
 * reads element for element (same size, contiguous, offset 0); a producer read any other way
 * (broadcast, transposed, sliced) ends its group first. Groups may have several outputs (Adam's
 * params and both moments in one pass). Scalar fills become immediates. Groups are split when
 * they would bind more buffers than the backend allows. Where the backend takes reductions
 * (`Backend.fusedReduce`), a reduce of a group's value runs in the same kernel as the members
 * it needs (a reduction prologue; the other values they make that later kernels read are
 * written out too, when 4 bytes wide). Where it runs matmuls with epilogues
 * (`Backend.matmulFused`), a matmul heads a group and its readers run in its store. A cheap
 * producer (a chain of at most {@linkcode MAX_INLINE} unary/cast nodes) whose every reader reads
 * it through a broadcast view is never computed: each reader's kernel reads the chain's input
 * through the same view and applies the same ops (same rounding, so the same bits), e.g. the
 * bias casts of a mixed-precision MLP run inside the matmul epilogues that add them.
 *
 * @module
 */
import { byteSize, decode, encode } from "../dtype.ts";
import type { DType } from "../dtype.ts";
import type { MatmulGeometry } from "../backend/backend.ts";
import type { FusedKernel, FusedOp, FusedOperand } from "../backend/fused.ts";
import { inputsOf as nodeInputs, type Node, type ViewRef } from "./graph.ts";
import type { Simplified } from "./passes.ts";

/** One step of a compiled schedule: a single node's kernel, or a fused kernel. */
export type Step =
  | { readonly kind: "node"; readonly id: number }
  | {
    readonly kind: "fused";
    readonly kernel: FusedKernel;
    /** The views the kernel reads, in `kernel.inputs` order. */
    readonly inputs: readonly ViewRef[];
    /** Node ids the kernel's outputs define, in `kernel.outputs` order. */
    readonly outputs: readonly number[];
    /** Every node the kernel computes (outputs and values kept in registers). */
    readonly members: readonly number[];
    /**
     * A matmul node whose product is the kernel's input 0 (`inputs[0]` reads it): the kernel is
     * its epilogue, run by `Backend.matmulFused`.
     */
    readonly matmul?: number;
  };

const FUSIBLE = new Set(["unary", "binary", "where", "cast", "copy"]);
/** How many of the latest groups a node with no fused producer may join (horizontal fusion). */
const HORIZON = 8;
/** The longest unary/cast chain recomputed inside the kernels that broadcast it. */
export const MAX_INLINE = 4;

/** A graph being scheduled: `inlined[id]` marks the nodes recomputed inside their readers. */
interface Sched extends Simplified {
  readonly inlined: readonly boolean[];
}

/** Whether a node can be part of a fused kernel. */
export function fusible(n: Node): boolean {
  return FUSIBLE.has(n.op);
}

/** The reads of a fusible node as views of its iteration space (unary and cast read whole). */
function reads(n: Node): ViewRef[] {
  const whole = (id: number): ViewRef => ({ id, shape: [n.size], strides: [1], offset: 0 });
  switch (n.op) {
    case "unary":
    case "cast":
      return [whole(n.x)];
    case "copy":
      return [n.x];
    case "binary":
      return [n.a, n.b];
    case "where":
      return [n.c, n.a, n.b];
    default:
      return [];
  }
}

/**
 * The nodes recomputed inside their readers' kernels: unary and cast nodes (not outputs, not
 * constant) that every reader either reads through a broadcast view (a larger iteration space)
 * or is such a node itself, in chains of at most {@linkcode MAX_INLINE} on a value no fused
 * kernel computes (an input, a constant, a matmul's or a reduction's result).
 */
function inlinable(s: Simplified): boolean[] {
  const { nodes, constant, consumers } = s;
  const outs = new Set(s.outputs);
  const cand = nodes.map(() => false);
  for (let p = nodes.length - 1; p >= 0; p--) {
    const n = nodes[p];
    if (constant[p] || outs.has(p) || (n.op !== "cast" && n.op !== "unary")) continue;
    cand[p] = consumers[p].length > 0 &&
      consumers[p].every((c) =>
        cand[c] || (!constant[c] && fusible(nodes[c]) && nodes[c].size > n.size)
      );
  }
  const depth = nodes.map(() => 0);
  const inl = nodes.map(() => false);
  nodes.forEach((n, p) => {
    if (!cand[p] || (n.op !== "cast" && n.op !== "unary")) return;
    // A chain on a value that a fused kernel computes would share that kernel: recomputing it
    // per element of its readers would save no kernel.
    if (!inl[n.x] && !constant[n.x] && fusible(nodes[n.x])) return;
    depth[p] = 1 + depth[n.x];
    inl[p] = depth[p] <= MAX_INLINE;
  });
  return inl;
}

/** `v` with inlined producers replaced by their input (they read it whole: same indices). */
function resolve(s: Sched, v: ViewRef): ViewRef {
  const n = s.nodes[v.id];
  if (!s.inlined[v.id] || (n.op !== "cast" && n.op !== "unary")) return v;
  return resolve(s, { ...v, id: n.x });
}

/** A view that reads a buffer of `size` elements element for element. */
function isIdentity(v: ViewRef, size: number): boolean {
  if (v.offset !== 0) return false;
  let expect = 1;
  for (let d = v.shape.length - 1; d >= 0; d--) {
    if (v.shape[d] !== 1 && v.strides[d] !== expect) return false;
    expect *= v.shape[d];
  }
  return expect === size;
}

interface Group {
  members: number[];
  /** Still taking members; a closed group is scheduled, a merged one emptied into another. */
  open: boolean;
}

/**
 * Schedule the non-constant nodes of `s`, fusing where possible.
 *
 * @example
 * ```ts
 * const steps = schedule(simplify(graph), { fuse: true, maxBuffers: 8 });
 * ```
 */
export function schedule(
  s: Simplified,
  opts: {
    readonly fuse: boolean;
    readonly maxBuffers: number;
    /** The backend's `fused` takes reductions (`Backend.fusedReduce`). */
    readonly reduce?: boolean;
    /** The backend runs matmuls with epilogues (`Backend.matmulFused`). */
    readonly matmul?: boolean;
    /** Whether a matmul epilogue runs in the matmul's own kernel (`Backend.matmulFusedFits`). */
    readonly fits?: (g: MatmulGeometry, dtype: DType, k: FusedKernel) => boolean;
  },
): Step[] {
  const { nodes, constant } = s;
  const sc: Sched = { ...s, inlined: opts.fuse ? inlinable(s) : nodes.map(() => false) };
  const out: Step[] = [];
  const groupOf: (Group | undefined)[] = nodes.map(() => undefined);
  const groups: Group[] = [];
  const close = (g: Group) => {
    if (!g.open) return;
    g.open = false;
    out.push(...emitGroup(sc, g.members, opts.maxBuffers, opts.fits));
  };
  // A value of an open group is needed now (by a kernel that cannot join it): compute it and
  // the members it depends on now, and leave the rest of the group open (so, e.g., gradScale's
  // finite check runs before the Adam update, and its select joins the update's pass).
  // Whether node `c`, not yet scheduled, could still join the group of value `y` (it reads `y`
  // element for element).
  const mayJoin = (c: number, y: number, now: number) =>
    c > now && !constant[c] && fusible(nodes[c]) &&
    reads(nodes[c]).some((v) => v.id === y && isIdentity(v, nodes[y].size));
  // The members that must run now for value `id` (its ancestors in `g`, and the members no
  // later kernel can join).
  const needed = (g: Group, id: number, now: number): Set<number> => {
    const inside = new Set(g.members);
    const anc = new Set<number>();
    // Members no later kernel can join (every reader is outside the group and cannot fuse)
    // gain nothing from waiting: they go now too.
    const done = g.members.filter((y) =>
      s.consumers[y].every((c) => !inside.has(c) && !mayJoin(c, y, now))
    );
    const stack = [id, ...done];
    while (stack.length) {
      const m = stack.pop()!;
      if (anc.has(m)) continue;
      anc.add(m);
      for (const v of reads(nodes[m])) if (inside.has(v.id)) stack.push(v.id);
    }
    return anc;
  };
  const need = (g: Group, id: number, now: number) => {
    const anc = needed(g, id, now);
    if (anc.size === g.members.length) return close(g);
    const part: Group = { members: g.members.filter((m) => anc.has(m)), open: true };
    g.members = g.members.filter((m) => !anc.has(m));
    for (const m of part.members) groupOf[m] = part;
    close(part);
  };
  // A reduce of an open group's value: the members it needs and the reduce as one kernel.
  const prologue = (n: Node & { op: "reduce" }, id: number): boolean => {
    const g = groupOf[n.x];
    if (!g?.open || n.reduce === 0) return false;
    const anc = needed(g, n.x, id);
    const part = g.members.filter((m) => anc.has(m));
    const step = buildReduce(sc, part, id, opts.maxBuffers);
    if (!step) return false;
    g.members = g.members.filter((m) => !anc.has(m));
    if (g.members.length === 0) g.open = false;
    const closed: Group = { members: part, open: false };
    for (const m of part) groupOf[m] = closed;
    out.push(step);
    return true;
  };
  nodes.forEach((n, id) => {
    if (constant[id] || n.op === "input" || sc.inlined[id]) return;
    if (opts.fuse && opts.reduce && n.op === "reduce" && prologue(n, id)) return;
    if (!opts.fuse || !fusible(n)) {
      for (const i of new Set(inputIds(n))) {
        const g = groupOf[i];
        if (g?.open) need(g, i, id);
      }
      if (opts.fuse && opts.matmul && n.op === "matmul") {
        // A matmul heads a group: its readers join it as the epilogue of its store.
        const g: Group = { members: [id], open: true };
        groups.push(g);
        groupOf[id] = g;
        return;
      }
      out.push({ kind: "node", id });
      return;
    }
    const views = reads(n).map((v) => resolve(sc, v));
    for (const v of views) {
      const g = groupOf[v.id];
      if (g?.open && !isIdentity(v, nodes[v.id].size)) need(g, v.id, id);
    }
    const joined = new Set<Group>();
    const heads = new Set<Group>();
    for (const v of views) {
      const g = groupOf[v.id];
      if (!g?.open) continue;
      // One kernel has at most one matmul: the values of other matmul groups are computed now.
      if (headOf(s, g.members) !== undefined && heads.size && !heads.has(g)) need(g, v.id, id);
      else {
        if (headOf(s, g.members) !== undefined) heads.add(g);
        joined.add(g);
      }
    }
    for (const g of joined) if (!g.open) joined.delete(g);
    let g: Group;
    // Nothing read joins it: share the pass of a recent open group of the same size
    // (independent work over one iteration space; each kernel call then does more).
    const sibling = joined.size === 0
      ? groups.slice(-HORIZON).reverse().find((h) => h.open && nodes[h.members[0]].size === n.size)
      : undefined;
    if (sibling) g = sibling;
    else if (joined.size === 0) {
      g = { members: [], open: true };
      groups.push(g);
    } else {
      const [first, ...rest] = joined;
      g = first;
      for (const r of rest) {
        for (const m of r.members) groupOf[m] = g;
        g.members.push(...r.members);
        r.open = false;
      }
      g.members.sort((a, b) => a - b);
    }
    g.members.push(id);
    groupOf[id] = g;
  });
  for (const g of groups) close(g); // a merged group is closed already: no-op
  return out;
}

function inputIds(n: Node): number[] {
  return reads(n).length ? reads(n).map((v) => v.id) : nodeInputs(n);
}

/** The matmul node among `members`, if any (the head of a matmul group). */
function headOf(s: Simplified, members: readonly number[]): number | undefined {
  return members.find((m) => s.nodes[m].op === "matmul");
}

/**
 * Split a group to the buffer limit and build its kernels (one member: the plain node). A
 * matmul group becomes one matmul with the rest as its epilogue when it fits the limit (the
 * matmul's operands count too), else the matmul alone and the rest as usual.
 */
function emitGroup(
  s: Sched,
  members: readonly number[],
  maxBuffers: number,
  fits?: (g: MatmulGeometry, dtype: DType, k: FusedKernel) => boolean,
): Step[] {
  const mm = headOf(s, members);
  if (mm !== undefined) {
    const rest = members.filter((m) => m !== mm);
    const ins = externalReads(s, rest).filter((v) => v.id !== mm).length;
    if (rest.length && 2 + ins + outputsOf(s, members).length <= maxBuffers) {
      const st = build(s, rest, undefined, mm);
      const n = s.nodes[mm];
      if (st.kind === "fused" && n.op === "matmul" && (fits?.(n.g, n.dtype, st.kernel) ?? true)) {
        return [st];
      }
    }
    return [{ kind: "node", id: mm }, ...emitGroup(s, rest, maxBuffers, fits)];
  }
  const steps: Step[] = [];
  let part: number[] = [];
  for (const m of members) {
    const trial = [...part, m];
    if (part.length && buffersOf(s, trial) > maxBuffers) {
      steps.push(build(s, part));
      part = [m];
    } else part = trial;
  }
  if (part.length) steps.push(build(s, part));
  return steps;
}

function isFill(s: Simplified, id: number): boolean {
  return s.nodes[id].op === "fill";
}

function outputsOf(s: Simplified, members: readonly number[], reader?: number): number[] {
  const inside = new Set(members);
  if (reader !== undefined) inside.add(reader);
  const outs = new Set(s.outputs);
  return members.filter((m) => outs.has(m) || s.consumers[m].some((c) => !inside.has(c)));
}

function externalReads(s: Sched, members: readonly number[]): ViewRef[] {
  const inside = new Set(members);
  const seen = new Set<string>();
  const res: ViewRef[] = [];
  for (const m of members) {
    for (const v of reads(s.nodes[m]).map((r) => resolve(s, r))) {
      if (inside.has(v.id) || isFill(s, v.id)) continue;
      const key = viewKey(v);
      if (!seen.has(key)) {
        seen.add(key);
        res.push(v);
      }
    }
  }
  return res;
}

function viewKey(v: ViewRef): string {
  return `${v.id}:${v.shape}:${v.strides}:${v.offset}`;
}

function buffersOf(s: Sched, members: readonly number[]): number {
  return externalReads(s, members).length + outputsOf(s, members).length;
}

/**
 * The fused kernel of `members` with reduce node `id` of one of them, or `undefined` when the
 * backend's limits forbid it (a side output that is not 4 bytes wide, too many buffers).
 */
function buildReduce(
  s: Sched,
  members: readonly number[],
  id: number,
  maxBuffers: number,
): Step | undefined {
  if (headOf(s, members) !== undefined) return undefined;
  const side = outputsOf(s, members, id);
  if (side.some((o) => byteSize(s.nodes[o].dtype) !== 4)) return undefined;
  if (externalReads(s, members).length + side.length + 1 > maxBuffers) return undefined;
  return build(s, members, id);
}

function build(
  s: Sched,
  members: readonly number[],
  reduce?: number,
  matmul?: number,
): Step {
  const readsInlined = members.some((m) => reads(s.nodes[m]).some((v) => s.inlined[v.id]));
  if (members.length === 1 && reduce === undefined && matmul === undefined && !readsInlined) {
    return { kind: "node", id: members[0] };
  }
  const size = s.nodes[members[0]].size;
  const product = (id: number): ViewRef => ({ id, shape: [size], strides: [1], offset: 0 });
  const inputs = matmul === undefined
    ? externalReads(s, members)
    : [product(matmul), ...externalReads(s, members).filter((v) => v.id !== matmul)];
  const inputIndex = new Map(inputs.map((v, i) => [viewKey(v), i]));
  const ops: FusedOp[] = [];
  const opIndex = new Map<number, number>();
  const immediates: { value: number; dtype: Node["dtype"] }[] = [];
  const immIndex = new Map<string, number>();
  // The op computing an inlined node at each view its readers read it through.
  const inlineIndex = new Map<string, number>();
  const operand = (v: ViewRef): FusedOperand => {
    const op = opIndex.get(v.id);
    if (op !== undefined) return { kind: "op", index: op };
    const p = s.nodes[v.id];
    if (s.inlined[v.id] && (p.op === "cast" || p.op === "unary")) {
      const key = viewKey(v);
      let i = inlineIndex.get(key);
      if (i === undefined) {
        ops.push(fusedOp(p, [operand({ ...v, id: p.x })]));
        i = ops.length - 1;
        inlineIndex.set(key, i);
      }
      return { kind: "op", index: i };
    }
    if (v.id === matmul) return { kind: "input", index: 0 };
    const n = s.nodes[v.id];
    if (n.op === "fill") {
      const value = decode(n.dtype, encode(n.dtype, [n.value]))[0];
      const key = `${n.dtype}:${Object.is(value, -0) ? "-0" : value}`;
      let i = immIndex.get(key);
      if (i === undefined) {
        i = immediates.length;
        immediates.push({ value, dtype: n.dtype });
        immIndex.set(key, i);
      }
      return { kind: "imm", index: i };
    }
    return { kind: "input", index: inputIndex.get(viewKey(v))! };
  };
  for (const m of members) {
    const n = s.nodes[m];
    ops.push(fusedOp(n, reads(n).map(operand)));
    opIndex.set(m, ops.length - 1);
  }
  let outputs = outputsOf(s, members, reduce);
  if (matmul !== undefined && outputsOf(s, [matmul, ...members]).includes(matmul)) {
    // The product itself is needed later: the epilogue writes it out too (a same-dtype cast
    // copies the bits).
    ops.push({ op: "cast", x: { kind: "input", index: 0 }, dtype: s.nodes[matmul].dtype });
    opIndex.set(matmul, ops.length - 1);
    outputs = [matmul, ...outputs];
  }
  const r = reduce === undefined ? undefined : s.nodes[reduce];
  return {
    kind: "fused",
    kernel: {
      shape: [size],
      size,
      inputs: inputs.map((v) => s.nodes[v.id].dtype),
      immediates,
      ops,
      outputs: outputs.map((o) => opIndex.get(o)!),
      ...(r?.op === "reduce"
        ? {
          reduce: {
            op: r.kind,
            x: opIndex.get(r.x)!,
            outer: r.outer,
            reduce: r.reduce,
            inner: r.inner,
            dtype: r.dtype,
          },
        }
        : {}),
    },
    inputs,
    outputs: reduce === undefined ? outputs : [...outputs, reduce],
    members: [
      ...(matmul === undefined ? [] : [matmul]),
      ...members,
      ...(reduce === undefined ? [] : [reduce]),
    ],
    ...(matmul === undefined ? {} : { matmul }),
  };
}

/** The fused op of fusible node `n` on operands `r` (its reads, in order). */
function fusedOp(n: Node, r: readonly FusedOperand[]): FusedOp {
  switch (n.op) {
    case "unary":
      return { op: "unary", kind: n.kind, x: r[0], dtype: n.dtype };
    case "binary":
      return { op: "binary", kind: n.kind, a: r[0], b: r[1], dtype: n.dtype };
    case "where":
      return { op: "where", c: r[0], a: r[1], b: r[2], dtype: n.dtype };
    case "cast":
      return { op: "cast", x: r[0], dtype: n.dtype, opts: n.opts };
    case "copy":
      return { op: "cast", x: r[0], dtype: n.dtype };
    default:
      throw new Error(`jit fuse: ${n.op} is not an elementwise op (a fusion bug; please report)`);
  }
}
