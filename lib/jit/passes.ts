/**
 * Graph passes of `jit`: common subexpression elimination, dead code elimination and the split
 * into constants (computed once per compiled program) and per-call work. Each pass keeps the
 * order and the kernels of eager execution, so results stay bitwise equal.
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
