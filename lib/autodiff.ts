/**
 * Reverse-mode autodiff over trees: `grad`, `valueAndGrad`, `vjp`. A tape records the ops that
 * depend on the differentiated argument; the backward pass runs each op's VJP (written with
 * ops, so it runs on the tensors' device) without interception. Intermediates are freed when
 * the call returns. Higher-order derivatives are not supported.
 *
 * @module
 */
import { isFloating } from "./dtype.ts";
import { opaque, recording, type Tape, type TapeNode } from "./op.ts";
import { created, ones, Tensor, tidy, zeros } from "./tensor.ts";
import { leaves, unflatten } from "./tree.ts";
import { add, astype } from "./ops/elementwise.ts";

/** Options of {@linkcode valueAndGrad}. */
export interface GradOptions {
  /** `f` returns `[loss, aux]`; aux is passed through (not differentiated). */
  hasAux?: boolean;
}

/**
 * Run the VJPs from the last tape node to the first. Each cotangent is freed as soon as its last
 * use is done: a node's cotangent after its VJP ran, a partial sum after it was added, and every
 * temporary a VJP made at once. Only tensors made here are freed (never the seed, a forward value
 * the tape still needs, or a tensor a VJP took from elsewhere), and a tensor is kept while any
 * cotangent entry (e.g. an input's gradient, returned) still refers to it.
 */
function backward(tape: Tape, y: Tensor, seed: Tensor, inputs: readonly Tensor[]): Tensor[] {
  return opaque(() => {
    const cot = new Map<Tensor, Tensor>([[y, seed]]);
    const uses = new Map<Tensor, number>([[seed, 1]]); // cot entries holding each tensor
    const mine = new Set<Tensor>(); // tensors made by this backward pass
    const hold = (t: Tensor) => uses.set(t, (uses.get(t) ?? 0) + 1);
    const drop = (t: Tensor) => {
      const n = (uses.get(t) ?? 0) - 1;
      if (n > 0) return void uses.set(t, n);
      uses.delete(t);
      if (mine.has(t)) t.dispose();
    };
    const returned = new Set(inputs);
    // A node's cotangent is final once its VJP ran (later nodes cannot use its output).
    const consume = (out: Tensor) => {
      const g = cot.get(out);
      if (!g || returned.has(out)) return;
      cot.delete(out);
      drop(g);
    };
    const producer = new Map<Tensor, TapeNode>(tape.nodes.map((n) => [n.out, n]));
    for (let i = tape.nodes.length - 1; i >= 0; i--) {
      const node = tape.nodes[i];
      const g = cot.get(node.out);
      if (!g) continue;
      checkIndexCast(node, producer.get(node.inputs[0]));
      const needs = node.inputs.map((t) => tape.watched.has(t) && isFloating(t.dtype));
      if (!needs.some(Boolean)) {
        consume(node.out);
        continue;
      }
      if (!node.op.vjp) {
        throw new Error(
          `grad: op "${node.op.name}" is not differentiable; wrap its input in ` +
            "stopGradient(...) or compute it outside the differentiated function",
        );
      }
      const [, made] = created(() => {
        const gs = node.op.vjp!(g, node.inputs, node.out, node.attrs, needs);
        node.inputs.forEach((x, j) => {
          const gj = gs[j];
          if (!needs[j] || !gj) return;
          if (gj.shape.length !== x.shape.length || gj.shape.some((d, k) => d !== x.shape[k])) {
            throw new Error(
              `grad: internal error, VJP of ${node.op.name} gave shape [${gj.shape}] for [${x.shape}]`,
            );
          }
          const gc = astype(gj, x.dtype);
          const prev = cot.get(x);
          const sum = prev ? add(prev, gc) : gc;
          hold(sum);
          cot.set(x, sum);
          if (prev) drop(prev);
        });
      });
      for (const t of made) mine.add(t);
      // The node's cotangent is used up; so is every temporary of its VJP not held by `cot`.
      consume(node.out);
      for (const t of made) if (!uses.has(t)) t.dispose();
    }
    return inputs.map((x) => cot.get(x) ?? zeros(x.shape, { dtype: x.dtype, device: x.device }));
  });
}

/** Gradients exist only for float leaves: an integer or bool leaf is an error, never zeros. */
function checkFloatLeaves(xs: readonly Tensor[]): void {
  xs.forEach((x, i) => {
    if (isFloating(x.dtype)) return;
    throw new TypeError(
      `grad: leaf ${i} (tree.leaves order) of the differentiated argument (params) is ${x.dtype}[${x.shape}], and ` +
        "gradients exist only for float tensors; pass integer data (labels, indices, counts) " +
        "in a later argument of the function, or astype the leaf to a float dtype",
    );
  });
}

/**
 * A float cast of an integer computed from the parameters by an op with no VJP (argmax, argmin)
 * would silently give a zero gradient: say which op instead. Bool masks (compare, all, any)
 * cast to float are fine: their gradient is zero by definition.
 */
function checkIndexCast(node: TapeNode, from: TapeNode | undefined): void {
  if (!node.op.tags.includes("cast") || !from || from.op.vjp) return;
  const x = node.inputs[0];
  if (isFloating(x.dtype) || x.dtype === "bool" || !isFloating(node.out.dtype)) return;
  throw new Error(
    `grad: op "${from.op.name}" is not differentiable, but its ${x.dtype} output is cast to ` +
      `${node.out.dtype} and reaches the loss; compute it outside the differentiated function ` +
      "or wrap it in stopGradient(...) if a zero gradient is what you want",
  );
}

/**
 * A function that returns `[f(params, ...rest), ∂f/∂params]`. `params` is a tree of tensors;
 * the gradient tree has the same structure and each gradient its parameter's dtype. With
 * `hasAux`, `f` returns `[loss, aux]` and the result is `[[loss, aux], grads]`.
 *
 * @example
 * ```ts
 * const f = (p: { w: Tensor }) => sum(square(p.w));
 * const [loss, g] = valueAndGrad(f)({ w: tensor([1, 2]) }); // loss 5, g.w = [2, 4]
 * ```
 */
export function valueAndGrad<P, R extends unknown[]>(
  f: (params: P, ...rest: R) => Tensor,
  opts?: { hasAux?: false },
): (params: P, ...rest: R) => [Tensor, P];
/**
 * A function that returns `[f(params, ...rest), ∂f/∂params]`. `params` is a tree of tensors;
 * the gradient tree has the same structure and each gradient its parameter's dtype. With
 * `hasAux`, `f` returns `[loss, aux]` and the result is `[[loss, aux], grads]`.
 *
 * @example
 * ```ts
 * const f = (p: { w: Tensor }) => sum(square(p.w));
 * const [loss, g] = valueAndGrad(f)({ w: tensor([1, 2]) }); // loss 5, g.w = [2, 4]
 * ```
 */
export function valueAndGrad<P, R extends unknown[], X>(
  f: (params: P, ...rest: R) => [Tensor, X],
  opts: { hasAux: true },
): (params: P, ...rest: R) => [[Tensor, X], P];
export function valueAndGrad<P, R extends unknown[]>(
  f: (params: P, ...rest: R) => unknown,
  opts: GradOptions = {},
): (params: P, ...rest: R) => unknown {
  return (params: P, ...rest: R) =>
    tidy(() => {
      const xs = leaves(params);
      checkFloatLeaves(xs);
      const tape: Tape = { watched: new Set(xs), nodes: [] };
      const res = recording(tape, () => f(params, ...rest));
      const [loss, aux] = opts.hasAux ? res as [Tensor, unknown] : [res as Tensor, undefined];
      if (!(loss instanceof Tensor)) {
        throw new Error(
          `grad: the function must return a scalar tensor${
            opts.hasAux ? " as the first element of [loss, aux]" : ""
          }, got ${typeof loss}`,
        );
      }
      if (loss.size !== 1 || !isFloating(loss.dtype)) {
        throw new Error(
          `grad: the function must return a floating scalar, got ${loss.dtype}[${loss.shape}]; ` +
            "reduce it first (e.g. mean(...))",
        );
      }
      const seed = ones(loss.shape, { dtype: loss.dtype, device: loss.device });
      const grads = unflatten(params, backward(tape, loss, seed, xs));
      return opts.hasAux ? [[loss, aux], grads] : [loss, grads];
    });
}

/**
 * The gradient of a scalar function with respect to its first argument (a tree of tensors).
 *
 * @example
 * ```ts
 * const g = grad((x: Tensor) => sum(square(x)))(tensor([3])); // [6]
 * ```
 */
export function grad<P, R extends unknown[]>(
  f: (params: P, ...rest: R) => Tensor,
): (params: P, ...rest: R) => P {
  const vg = valueAndGrad(f);
  return (params: P, ...rest: R) => {
    const [loss, g] = vg(params, ...rest);
    if (!leaves(params).includes(loss)) loss.dispose(); // f may return a parameter itself
    return g;
  };
}

/**
 * Vector–Jacobian product: `[f(x), (ct) => ctᵀ·∂f/∂x]` for a tensor-valued `f`. The pullback
 * reads the forward intermediates, which belong to the enclosing `tidy` scope: call `vjp` and
 * its pullback inside one `tidy`, which frees them when it ends.
 *
 * @example
 * ```ts
 * const g = tidy(() => {
 *   const [y, pull] = vjp((x: Tensor) => mul(x, 3), tensor([1, 2]));
 *   return pull(ones([2])); // [3, 3]
 * });
 * ```
 */
export function vjp<P>(f: (params: P) => Tensor, params: P): [Tensor, (ct: Tensor) => P] {
  const xs = leaves(params);
  const tape: Tape = { watched: new Set(xs), nodes: [] };
  const y = recording(tape, () => f(params));
  return [y, (ct: Tensor) => tidy(() => unflatten(params, backward(tape, y, ct, xs)))];
}
