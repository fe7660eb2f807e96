/**
 * Trees (pytrees): nested plain objects and arrays whose leaves are tensors. Other values
 * (numbers, strings, `null`, keys) are kept as they are by `map` and skipped by `leaves`.
 *
 * @module
 */
import { Tensor } from "./tensor.ts";

/** A nested structure of plain objects and arrays holding tensors (and other plain values). */
export type Tree = Tensor | readonly Tree[] | { readonly [k: string]: Tree } | unknown;

function isNode(x: unknown): x is Record<string, unknown> | unknown[] {
  return Array.isArray(x) ||
    (x !== null && typeof x === "object" && !(x instanceof Tensor) &&
      Object.getPrototypeOf(x) === Object.prototype);
}

/**
 * The tensor leaves of a tree, depth first, object keys in insertion order.
 *
 * @example
 * ```ts
 * leaves({ w: ones([2]), b: [zeros([1])] }).length; // 2
 * ```
 */
export function leaves(tree: unknown): Tensor[] {
  const out: Tensor[] = [];
  const walk = (x: unknown) => {
    if (x instanceof Tensor) out.push(x);
    else if (Array.isArray(x)) x.forEach(walk);
    else if (isNode(x)) Object.values(x).forEach(walk);
  };
  walk(tree);
  return out;
}

/**
 * Dotted paths of the tensor leaves, in `leaves` order (`"layers.0.w"`).
 *
 * @example
 * ```ts
 * paths({ w: ones([2]), b: [zeros([1])] }); // ["w", "b.0"]
 * ```
 */
export function paths(tree: unknown): string[] {
  const out: string[] = [];
  const walk = (x: unknown, p: string) => {
    if (x instanceof Tensor) out.push(p);
    else if (Array.isArray(x)) x.forEach((v, i) => walk(v, p ? `${p}.${i}` : `${i}`));
    else if (isNode(x)) {
      for (const [k, v] of Object.entries(x)) walk(v, p ? `${p}.${k}` : k);
    }
  };
  walk(tree, "");
  return out;
}

/**
 * Map `fn` over the tensor leaves of one or more trees of the same structure; the result has
 * the first tree's structure. Non-tensor leaves of the first tree are copied over.
 *
 * @example
 * ```ts
 * const doubled = map((t) => mul(t, 2), params);
 * const sums = map((a, b) => add(a, b), params, grads);
 * ```
 */
export function map<T>(fn: (...xs: Tensor[]) => Tensor, tree: T, ...rest: unknown[]): T {
  const walk = (x: unknown, others: unknown[], path: string): unknown => {
    if (x instanceof Tensor) {
      others.forEach((o) => {
        if (!(o instanceof Tensor)) {
          throw new Error(`tree.map: structures differ at "${path}": a tensor against ${kind(o)}`);
        }
      });
      return fn(x, ...(others as Tensor[]));
    }
    if (Array.isArray(x)) {
      others.forEach((o) => {
        if (!Array.isArray(o) || o.length !== x.length) {
          throw new Error(
            `tree.map: structures differ at "${path}": an array of ${x.length} against ${kind(o)}`,
          );
        }
      });
      return x.map((v, i) => walk(v, others.map((o) => (o as unknown[])[i]), `${path}.${i}`));
    }
    if (isNode(x)) {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(x)) {
        const sub = others.map((o) => {
          if (!isNode(o) || !(k in o)) {
            throw new Error(`tree.map: structures differ at "${path}": key "${k}" is missing`);
          }
          return (o as Record<string, unknown>)[k];
        });
        out[k] = walk(v, sub, path ? `${path}.${k}` : k);
      }
      return out;
    }
    return x;
  };
  return walk(tree, rest, "") as T;
}

function kind(x: unknown): string {
  if (x instanceof Tensor) return "a tensor";
  if (Array.isArray(x)) return `an array of ${x.length}`;
  return x === null ? "null" : typeof x;
}

/**
 * Rebuild a tree of `like`'s structure from a list of leaves (in `leaves` order).
 *
 * @example
 * ```ts
 * unflatten(params, leaves(params).map((t) => mul(t, 2)));
 * ```
 */
export function unflatten<T>(like: T, newLeaves: readonly Tensor[]): T {
  let i = 0;
  const out = map(() => {
    if (i >= newLeaves.length) throw new Error("tree.unflatten: too few leaves");
    return newLeaves[i++];
  }, like);
  if (i !== newLeaves.length) {
    throw new Error(`tree.unflatten: ${newLeaves.length} leaves given for a tree of ${i}`);
  }
  return out;
}

/**
 * Pair up the leaves of several trees of the same structure.
 *
 * @example
 * ```ts
 * for (const [p, g] of zip(params, grads)) console.log(p.shape, g.shape);
 * ```
 */
export function zip(...trees: unknown[]): Tensor[][] {
  const lists = trees.map(leaves);
  const n = lists[0]?.length ?? 0;
  for (const l of lists) {
    if (l.length !== n) throw new Error(`tree.zip: trees have ${n} and ${l.length} leaves`);
  }
  return Array.from({ length: n }, (_, i) => lists.map((l) => l[i]));
}
