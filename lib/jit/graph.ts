/**
 * The graph that `jit` traces: one node per Backend kernel call, in the order the eager run
 * would issue them. Buffers are node ids; views keep their strides, so a node replays exactly
 * the call that eager execution makes.
 *
 * @module
 */
import type { CastOptions, DType, Storage } from "../dtype.ts";
import type {
  BinaryOp,
  MatmulGeometry,
  RandomKind,
  ReduceOp,
  UnaryOp,
} from "../backend/backend.ts";
import type { Blockwise8bitUpdate } from "../backend/optim8.ts";

/** A strided read of node `id`'s buffer, as a Backend `View` (see backend.ts). */
export interface ViewRef {
  /** The node whose buffer is read. */
  readonly id: number;
  /** Shape of the view. */
  readonly shape: readonly number[];
  /** Element strides (0 broadcasts). */
  readonly strides: readonly number[];
  /** Element offset of index 0. */
  readonly offset: number;
}

/** What a node computes (its Backend call with buffers replaced by node ids). */
export type NodeOp =
  | { readonly op: "input"; readonly index: number }
  | { readonly op: "const"; readonly data: Storage }
  | { readonly op: "fill"; readonly value: number }
  | { readonly op: "cast"; readonly x: number; readonly opts?: CastOptions }
  | { readonly op: "copy"; readonly x: ViewRef }
  | { readonly op: "unary"; readonly kind: UnaryOp; readonly x: number }
  | { readonly op: "binary"; readonly kind: BinaryOp; readonly a: ViewRef; readonly b: ViewRef }
  | { readonly op: "where"; readonly c: ViewRef; readonly a: ViewRef; readonly b: ViewRef }
  | {
    readonly op: "reduce";
    readonly kind: ReduceOp;
    readonly x: number;
    readonly outer: number;
    readonly reduce: number;
    readonly inner: number;
  }
  | { readonly op: "matmul"; readonly a: number; readonly b: number; readonly g: MatmulGeometry }
  | {
    readonly op: "concat";
    readonly xs: readonly number[];
    readonly outer: number;
    readonly sizes: readonly number[];
    readonly inner: number;
  }
  | {
    readonly op: "gather";
    readonly x: number;
    readonly idx: number;
    readonly outer: number;
    readonly axis: number;
    readonly inner: number;
  }
  | {
    readonly op: "scatterAdd";
    readonly base: number;
    readonly idx: number;
    readonly upd: number;
    readonly outer: number;
    readonly axis: number;
    readonly inner: number;
  }
  | {
    readonly op: "random";
    /** Index of the key among the traced function's key arguments. */
    readonly key: number;
    readonly dist: RandomKind;
  }
  | {
    readonly op: "quantize";
    readonly x: number;
    readonly absmax: number;
    readonly map: number;
    readonly blockSize: number;
    readonly signGuard: boolean;
  }
  | {
    readonly op: "dequantize";
    readonly codes: number;
    readonly absmax: number;
    readonly map: number;
    readonly blockSize: number;
  }
  /** A fused 8-bit optimizer update (`Backend.blockwise8bitUpdate`); the node is output 0. */
  | {
    readonly op: "blockwise8bit";
    readonly update: Blockwise8bitUpdate;
    readonly inputs: readonly number[];
  }
  /** Output `index` (≥ 1) of the multi-output node `x`, made by `x`'s kernel. */
  | { readonly op: "part"; readonly x: number; readonly index: number };

/** A node: its computation and the dtype and element count of its buffer. */
export type Node = NodeOp & { readonly dtype: DType; readonly size: number };

/** A traced function: nodes in issue order and the ids its outputs read. */
export interface Graph {
  /** Nodes in the order eager execution issued them (a topological order). */
  readonly nodes: readonly Node[];
  /** Node ids of the tensor outputs, in the order of the output tree's leaves. */
  readonly outputs: readonly number[];
}

/** The node ids a node reads, in argument order. */
export function inputsOf(n: NodeOp): number[] {
  switch (n.op) {
    case "input":
    case "const":
    case "fill":
    case "random":
      return [];
    case "cast":
    case "unary":
    case "reduce":
      return [n.x];
    case "copy":
      return [n.x.id];
    case "binary":
      return [n.a.id, n.b.id];
    case "where":
      return [n.c.id, n.a.id, n.b.id];
    case "matmul":
      return [n.a, n.b];
    case "concat":
      return [...n.xs];
    case "gather":
      return [n.x, n.idx];
    case "scatterAdd":
      return [n.base, n.idx, n.upd];
    case "quantize":
      return [n.x, n.absmax, n.map];
    case "dequantize":
      return [n.codes, n.absmax, n.map];
    case "blockwise8bit":
      return [...n.inputs];
    case "part":
      return [n.x];
  }
}

/** The same node with every input id passed through `f`. */
export function remap(n: Node, f: (id: number) => number): Node {
  const v = (x: ViewRef): ViewRef => ({ ...x, id: f(x.id) });
  switch (n.op) {
    case "input":
    case "const":
    case "fill":
    case "random":
      return n;
    case "cast":
    case "unary":
    case "reduce":
      return { ...n, x: f(n.x) };
    case "copy":
      return { ...n, x: v(n.x) };
    case "binary":
      return { ...n, a: v(n.a), b: v(n.b) };
    case "where":
      return { ...n, c: v(n.c), a: v(n.a), b: v(n.b) };
    case "matmul":
      return { ...n, a: f(n.a), b: f(n.b) };
    case "concat":
      return { ...n, xs: n.xs.map(f) };
    case "gather":
      return { ...n, x: f(n.x), idx: f(n.idx) };
    case "scatterAdd":
      return { ...n, base: f(n.base), idx: f(n.idx), upd: f(n.upd) };
    case "quantize":
      return { ...n, x: f(n.x), absmax: f(n.absmax), map: f(n.map) };
    case "dequantize":
      return { ...n, codes: f(n.codes), absmax: f(n.absmax), map: f(n.map) };
    case "blockwise8bit":
      return { ...n, inputs: n.inputs.map(f) };
    case "part":
      return { ...n, x: f(n.x) };
  }
}

/** A text key of a node's computation (for common subexpression elimination). */
export function nodeKey(n: Node): string {
  if (n.op === "const") return "";
  return JSON.stringify(n);
}
