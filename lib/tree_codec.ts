/**
 * Trees ↔ named tensors plus a JSON skeleton: the part of checkpoints that knows about tree
 * structure (used by `lib/checkpoint.ts`). Pure; no files.
 *
 * ## Names
 *
 * A tensor leaf is stored under its dotted tree path, as `tree.paths` gives it: object keys and
 * array indices joined by `.` (`{ layers: [{ w }] }` → `"layers.0.w"`; a lone tensor → `""`).
 *
 * ## The skeleton
 *
 * {@linkcode treeSkeleton} describes the whole tree in JSON, so that a checkpoint rebuilds it
 * exactly (key order, arrays, empty nodes, keys containing dots, non-tensor leaves). Each node is
 * an object with one key:
 *
 * | node | skeleton |
 * |---|---|
 * | tensor | `{"tensor": "<name>"}` |
 * | plain object | `{"object": [["<key>", node], …]}` (in key order) |
 * | array | `{"array": [node, …]}` |
 * | string, boolean, null, finite number (not −0) | `{"value": v}` |
 * | NaN, ±Infinity, −0 | `{"number": "NaN" \| "Infinity" \| "-Infinity" \| "-0"}` |
 * | undefined | `{"undefined": true}` |
 *
 * Anything else (functions, class instances, bigint, symbols, cycles) cannot be stored, and a
 * tree may nest at most {@linkcode MAX_TREE_DEPTH} levels.
 *
 * ## Without a skeleton
 *
 * A file written elsewhere (e.g. by Python) has only names. {@linkcode treeFromNames} splits
 * them on `.` into nested objects, keys sorted; a node whose keys are exactly `"0"` … `"n-1"`
 * (canonical decimal, no leading zeros) becomes an array. A name that is both a tensor and a
 * prefix of another (`"a"` and `"a.b"`) is an error.
 *
 * @module
 */
import { Tensor } from "./tensor.ts";

/**
 * The deepest tree a checkpoint stores or loads: 1000 levels of nesting.
 *
 * @example
 * ```ts
 * MAX_TREE_DEPTH; // 1000
 * ```
 */
export const MAX_TREE_DEPTH = 1000;

/**
 * One node of a tree skeleton (see the module docs).
 *
 * @example
 * ```ts
 * const s: Skeleton = { object: [["w", { tensor: "w" }], ["lr", { value: 0.1 }]] };
 * ```
 */
export type Skeleton =
  | { readonly tensor: string }
  | { readonly object: readonly (readonly [string, Skeleton])[] }
  | { readonly array: readonly Skeleton[] }
  | { readonly value: string | number | boolean | null }
  | { readonly number: "NaN" | "Infinity" | "-Infinity" | "-0" }
  | { readonly undefined: true };

/**
 * Why a checkpoint could not be written or read (the `code` of a thrown `CheckpointError`; its
 * message starts with `checkpoint:`):
 *
 * | code | meaning |
 * |---|---|
 * | `unsupported-leaf` | save: a leaf that is not a tensor, number, string, boolean, null or undefined |
 * | `cyclic-tree` | save: the tree contains itself |
 * | `tree-too-deep` | more than {@linkcode MAX_TREE_DEPTH} levels of nesting |
 * | `name-collision` | save: two tensors have the same dotted name (keys containing `.`) |
 * | `reserved-metadata` | save: user metadata uses a key starting with `nbit.` |
 * | `bad-skeleton` | load: the `nbit.tree` / `nbit.state` metadata is not a valid skeleton |
 * | `skeleton-mismatch` | load: the skeleton and the file's tensors disagree |
 * | `name-conflict` | load without skeleton: a name is both a tensor and a prefix (`a`, `a.b`) |
 * | `not-a-state` | loadState: the file has no `nbit.state` metadata |
 * | `state-mismatch` | loadState: the file's structure differs from what `step.init` makes |
 * | `bad-plugin-state` | loadState: a plugin's state or config breaks that plugin's rules |
 * | `no-file-system` | a path was given where `Deno.readFile`/`Deno.writeFile` do not exist |
 *
 * @example
 * ```ts
 * try { await loadState(path, step); } catch (e) { checkpointErrorCode(e); // "state-mismatch" }
 * ```
 */
export type CheckpointErrorCode =
  | "unsupported-leaf"
  | "cyclic-tree"
  | "tree-too-deep"
  | "name-collision"
  | "reserved-metadata"
  | "bad-skeleton"
  | "skeleton-mismatch"
  | "name-conflict"
  | "not-a-state"
  | "state-mismatch"
  | "bad-plugin-state"
  | "no-file-system";

/** @internal Throw a `CheckpointError` with `code`. */
export function checkpointFail(code: CheckpointErrorCode, message: string): never {
  const e = new Error(`checkpoint: ${message}`);
  e.name = "CheckpointError";
  throw Object.assign(e, { code });
}

/**
 * The {@linkcode CheckpointErrorCode} of an error thrown by a checkpoint function, else
 * `undefined` (file-format errors have a `safetensorsErrorCode` instead).
 *
 * @example
 * ```ts
 * checkpointErrorCode(new Error("x")); // undefined
 * ```
 */
export function checkpointErrorCode(e: unknown): CheckpointErrorCode | undefined {
  return e instanceof Error && e.name === "CheckpointError"
    ? (e as Error & { code: CheckpointErrorCode }).code
    : undefined;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype;
}

/** Define an own enumerable property (safe for keys like `__proto__`). */
function setOwn(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

const childPath = (p: string, k: string | number): string => p ? `${p}.${k}` : `${k}`;
const shown = (p: string): string => JSON.stringify(p);

/**
 * The skeleton of a tree and its tensors by dotted name (in `tree.leaves` order).
 *
 * @example
 * ```ts
 * const { skeleton, tensors } = treeSkeleton({ w: ones([2]), lr: 0.1 });
 * tensors[0].name; // "w"
 * ```
 */
export function treeSkeleton(
  tree: unknown,
): { skeleton: Skeleton; tensors: { name: string; tensor: Tensor }[] } {
  const tensors: { name: string; tensor: Tensor }[] = [];
  const names = new Set<string>();
  const ancestors = new Set<unknown>();
  const walk = (x: unknown, path: string, depth: number): Skeleton => {
    if (depth > MAX_TREE_DEPTH) {
      checkpointFail("tree-too-deep", `the tree nests deeper than ${MAX_TREE_DEPTH} levels`);
    }
    if (x instanceof Tensor) {
      if (names.has(path)) {
        checkpointFail(
          "name-collision",
          `two tensors would be stored as ${shown(path)} (a key contains "."); rename one`,
        );
      }
      names.add(path);
      tensors.push({ name: path, tensor: x });
      return { tensor: path };
    }
    if (Array.isArray(x) || isPlainObject(x)) {
      if (ancestors.has(x)) {
        checkpointFail("cyclic-tree", `the tree contains itself at ${shown(path)}`);
      }
      ancestors.add(x);
      const node: Skeleton = Array.isArray(x)
        ? { array: x.map((v, i) => walk(v, childPath(path, i), depth + 1)) }
        : {
          object: Object.entries(x).map(([k, v]) => [k, walk(v, childPath(path, k), depth + 1)]),
        };
      ancestors.delete(x);
      return node;
    }
    if (x === undefined) return { undefined: true };
    if (typeof x === "number") {
      if (Number.isNaN(x)) return { number: "NaN" };
      if (x === Infinity) return { number: "Infinity" };
      if (x === -Infinity) return { number: "-Infinity" };
      if (Object.is(x, -0)) return { number: "-0" };
      return { value: x };
    }
    if (x === null || typeof x === "string" || typeof x === "boolean") return { value: x };
    return checkpointFail(
      "unsupported-leaf",
      `cannot store ${describe(x)} at ${shown(path)}: a checkpoint holds tensors, plain objects, ` +
        "arrays, numbers, strings, booleans, null and undefined",
    );
  };
  const skeleton = walk(tree, "", 0);
  return { skeleton, tensors };
}

function describe(x: unknown): string {
  if (typeof x === "object" && x !== null) return `an object of type ${x.constructor?.name}`;
  return `a ${typeof x}`;
}

const SPECIAL: Readonly<Record<string, number>> = {
  "NaN": NaN,
  "Infinity": Infinity,
  "-Infinity": -Infinity,
  "-0": -0,
};

/**
 * Rebuild a tree from its skeleton; `make(name)` gives the tensor stored under each name. Checks
 * that the skeleton is well formed, names each tensor of `names` exactly once and nothing else.
 *
 * @example
 * ```ts
 * treeFromSkeleton({ array: [{ tensor: "0" }] }, new Set(["0"]), (n) => tensors[n]); // [t]
 * ```
 */
export function treeFromSkeleton(
  skeleton: unknown,
  names: ReadonlySet<string>,
  make: (name: string) => Tensor,
): unknown {
  const used = new Set<string>();
  const bad = (path: string, why: string): never =>
    checkpointFail("bad-skeleton", `the skeleton at ${shown(path)} ${why}`);
  const build = (s: unknown, path: string, depth: number): unknown => {
    if (depth > MAX_TREE_DEPTH) {
      checkpointFail("tree-too-deep", `the tree nests deeper than ${MAX_TREE_DEPTH} levels`);
    }
    if (!isPlainObject(s)) return bad(path, "is not an object");
    const keys = Object.keys(s);
    if (keys.length !== 1) return bad(path, `must have exactly one key, has [${keys}]`);
    const [kind] = keys;
    const v = s[kind];
    switch (kind) {
      case "tensor": {
        if (typeof v !== "string") return bad(path, "names a tensor with a non-string");
        if (!names.has(v)) {
          checkpointFail("skeleton-mismatch", `the file has no tensor ${shown(v)}`);
        }
        if (used.has(v)) checkpointFail("skeleton-mismatch", `tensor ${shown(v)} is used twice`);
        used.add(v);
        return make(v);
      }
      case "array":
        if (!Array.isArray(v)) return bad(path, "has a non-list array");
        return v.map((c, i) => build(c, childPath(path, i), depth + 1));
      case "object": {
        if (!Array.isArray(v)) return bad(path, "has a non-list object");
        const out: Record<string, unknown> = {};
        for (const pair of v) {
          if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string") {
            return bad(path, "has an entry that is not a [key, node] pair");
          }
          if (Object.hasOwn(out, pair[0])) return bad(path, `repeats key ${shown(pair[0])}`);
          setOwn(out, pair[0], build(pair[1], childPath(path, pair[0]), depth + 1));
        }
        return out;
      }
      case "value":
        if (v !== null && !["string", "number", "boolean"].includes(typeof v)) {
          return bad(path, "has a value that is not a string, number, boolean or null");
        }
        return v;
      case "number":
        if (typeof v !== "string" || !Object.hasOwn(SPECIAL, v)) {
          return bad(path, `has an unknown number ${JSON.stringify(v)}`);
        }
        return SPECIAL[v];
      case "undefined":
        if (v !== true) return bad(path, "has an undefined node that is not `true`");
        return undefined;
      default:
        return bad(path, `has an unknown node kind ${shown(kind)}`);
    }
  };
  const tree = build(skeleton, "", 0);
  for (const n of names) {
    if (!used.has(n)) {
      checkpointFail("skeleton-mismatch", `the file has a tensor ${shown(n)} the skeleton lacks`);
    }
  }
  return tree;
}

const INDEX = /^(0|[1-9][0-9]*)$/;

/**
 * Rebuild a tree from dotted names alone (see the module docs); `make(name)` gives each tensor.
 *
 * @example
 * ```ts
 * treeFromNames(["layers.0.w", "layers.1.w"], make); // { layers: [{ w }, { w }] }
 * ```
 */
export function treeFromNames(names: readonly string[], make: (name: string) => Tensor): unknown {
  if (names.includes("")) {
    if (names.length > 1) {
      checkpointFail("name-conflict", `the file has a root tensor "" and other tensors`);
    }
    return make("");
  }
  type Dir = Map<string, Dir | string>;
  const root: Dir = new Map();
  for (const name of [...names].sort()) {
    const segs = name.split(".");
    if (segs.length > MAX_TREE_DEPTH) {
      checkpointFail("tree-too-deep", `tensor ${shown(name)} nests deeper than ${MAX_TREE_DEPTH}`);
    }
    let dir = root;
    for (let i = 0; i < segs.length - 1; i++) {
      let next = dir.get(segs[i]);
      if (next === undefined) dir.set(segs[i], next = new Map());
      if (typeof next === "string") {
        checkpointFail(
          "name-conflict",
          `tensors ${shown(next)} and ${shown(name)} conflict: the first would have to be a node`,
        );
      }
      dir = next;
    }
    const last = segs[segs.length - 1];
    if (dir.has(last)) {
      checkpointFail("name-conflict", `tensor ${shown(name)} is also a node of other tensors`);
    }
    dir.set(last, name);
  }
  const convert = (dir: Dir): unknown => {
    const keys = [...dir.keys()];
    const asArray = keys.length > 0 && keys.every((k) => INDEX.test(k) && Number(k) < keys.length);
    const value = (k: string) => {
      const c = dir.get(k)!;
      return typeof c === "string" ? make(c) : convert(c);
    };
    if (asArray) return Array.from({ length: keys.length }, (_, i) => value(String(i)));
    const out: Record<string, unknown> = {};
    for (const k of keys) setOwn(out, k, value(k));
    return out;
  };
  return convert(root);
}
