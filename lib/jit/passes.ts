/**
 * Graph passes of `jit`: casts folded into matmuls (on backends with `matmulCasts`), common
 * subexpression elimination, dead code elimination and the split into constants (computed once
 * per compiled program) and per-call work. Each pass keeps the order and the results of eager
 * execution, so results stay bitwise equal.
 *
 * @module
 */
import { type Graph, inputsOf, type Node, nodeKey, remap } from "./graph.ts";

/** A graph after the passes, with the role of every node. */
export interface Simplified {
  /** The surviving nodes (ids are positions in this array), in issue order. */
  readonly nodes: readonly Node[];
  /** Output node ids. */
  readonly outputs: readonly number[];
  /** `constant[id]`: the node depends on no argument (computed once, at compile time). */
  readonly constant: readonly boolean[];
  /** Consumers of each node (ids of nodes that read it). */
  readonly consumers: readonly number[][];
}

/**
 * Rewrite `matmul(cast(x: f32 → f16|bf16), …)` into `matmul(x, …)` with `g.aCast` (and the same
 * for `b` with `g.bCast`): the backend rounds `x` while it packs it, bitwise as the cast would
 * (see `MatmulGeometry.aCast`). A cast that nothing else reads then dies in DCE, saving its
 * kernel and its buffer. Only for backends whose `matmulCasts` is true.
 *
 * @example
 * ```ts
 * const g2 = foldMatmulCasts(graph); // same outputs, fewer cast nodes alive
 * ```
 */
export function foldMatmulCasts(g: Graph): Graph {
  const { nodes } = g;
  const source = (id: number): number | undefined => {
    const c = nodes[id];
    if (c.op !== "cast" || (c.dtype !== "f16" && c.dtype !== "bf16")) return undefined;
    return nodes[c.x].dtype === "f32" ? c.x : undefined;
  };
  let changed = false;
  const out = nodes.map((n): Node => {
    if (n.op !== "matmul") return n;
    const a = n.g.aCast === undefined ? source(n.a) : undefined;
    const b = n.g.bCast === undefined ? source(n.b) : undefined;
    if (a === undefined && b === undefined) return n;
    changed = true;
    return {
      ...n,
      a: a ?? n.a,
      b: b ?? n.b,
      g: {
        ...n.g,
        ...(a === undefined ? {} : { aCast: nodes[n.a].dtype }),
        ...(b === undefined ? {} : { bCast: nodes[n.b].dtype }),
      },
    };
  });
  return changed ? { nodes: out, outputs: g.outputs } : g;
}

const CONST_KEY_LIMIT = 4096;

function constKey(n: Node): string | undefined {
  if (n.op !== "const" || n.size > CONST_KEY_LIMIT) return undefined;
  return `const:${n.dtype}:${Array.prototype.join.call(n.data, ",")}`;
}

/**
 * Merge nodes that compute the same thing from the same inputs (CSE), drop nodes no output
 * needs (DCE), and mark the nodes that depend on no argument.
 *
 * @example
 * ```ts
 * const s = simplify({ nodes, outputs });
 * s.nodes.length <= nodes.length; // true
 * ```
 */
export function simplify(g: Graph): Simplified {
  // CSE: one forward pass; a node's key is its computation over canonical input ids.
  const canon: number[] = [];
  const seen = new Map<string, number>();
  const merged: Node[] = [];
  g.nodes.forEach((n, id) => {
    const r = remap(n, (i) => canon[i]);
    const key = r.op === "const" ? constKey(r) : nodeKey(r);
    const hit = key === undefined ? undefined : seen.get(key);
    if (hit !== undefined) canon[id] = hit;
    else {
      canon[id] = merged.length;
      merged.push(r);
      if (key !== undefined) seen.set(key, canon[id]);
    }
  });
  const outs = g.outputs.map((o) => canon[o]);

  // DCE: keep what the outputs reach.
  const live = new Array(merged.length).fill(false);
  const stack = [...outs];
  while (stack.length) {
    const id = stack.pop()!;
    if (live[id]) continue;
    live[id] = true;
    stack.push(...inputsOf(merged[id]));
  }
  // A multi-output kernel makes all its outputs: keep them (one no step reads is freed at once).
  merged.forEach((n, id) => {
    if (n.op === "part" && live[n.x]) live[id] = true;
  });
  const renum: number[] = [];
  const nodes: Node[] = [];
  merged.forEach((n, id) => {
    if (!live[id]) return;
    renum[id] = nodes.length;
    nodes.push(remap(n, (i) => renum[i]));
  });
  const outputs = outs.map((o) => renum[o]);

  const constant = nodes.map(() => false);
  const consumers: number[][] = nodes.map(() => []);
  nodes.forEach((n, id) => {
    const ins = inputsOf(n);
    for (const i of ins) consumers[i].push(id);
    constant[id] = n.op !== "input" && n.op !== "random" && ins.every((i) => constant[i]);
  });
  return { nodes, outputs, constant, consumers };
}
