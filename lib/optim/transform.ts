/**
 * Composable gradient transformations (optax style) and `chain`.
 *
 * A {@linkcode GradientTransform} turns gradients into other gradients (clip, scale, …) and
 * carries its own state (a tree of tensors, possibly empty). `chain(t1, t2, …, optimizer)`
 * runs the transforms in order and hands the result to the optimizer, giving an
 * {@linkcode Optimizer}; `chain(t1, t2)` with no optimizer is again a transform. The chain's
 * state is the array of its parts' states, so it checkpoints and selects like any tree.
 *
 * @example
 * ```ts
 * const opt = chain(clipByGlobalNorm(1), adam({ lr: 1e-3 }));
 * let s = opt.init(params);
 * [params, s] = opt.update(grads, s, params);
 * ```
 *
 * @module
 */
import { tidy } from "../tensor.ts";
import type { Optimizer } from "./types.ts";
import { defineOptimizer } from "./common.ts";

/**
 * A pure gradient transformation: `init(params)` makes its state; `transform(grads, state,
 * params)` returns the transformed grads (same structure and dtypes) and the new state.
 *
 * @example
 * ```ts
 * const double: GradientTransform<Record<never, never>> = {
 *   init: () => ({}),
 *   transform: (g, s) => [tree.map((t) => mul(t, 2), g), s],
 * };
 * ```
 */
export interface GradientTransform<S = unknown> {
  /** The initial state for `params`. */
  init<P>(params: P): S;
  /** New grads and new state; never mutates its inputs. */
  transform<P>(grads: P, state: S, params: P): [P, S];
}

/**
 * A transform whose `init` and `transform` run inside `tidy` (the same ownership rule as
 * {@linkcode defineOptimizer}): its intermediates are freed, its results are the caller's.
 *
 * @example
 * ```ts
 * const double = defineTransform({ init: () => ({}), transform: (g, s) => [tree.map((t) => mul(t, 2), g), s] });
 * ```
 */
export function defineTransform<S>(t: GradientTransform<S>): GradientTransform<S> {
  return {
    init: <P>(params: P): S => tidy(() => t.init(params)),
    transform: <P>(grads: P, state: S, params: P): [P, S] =>
      tidy(() => t.transform(grads, state, params)),
  };
}

type Part = GradientTransform | Optimizer;

const isOptimizer = (x: Part): x is Optimizer => typeof (x as Optimizer).update === "function";
const isTransform = (x: Part): x is GradientTransform =>
  typeof (x as GradientTransform).transform === "function";

/**
 * Compose gradient transforms, optionally ending with an optimizer. With a final optimizer the
 * result is an {@linkcode Optimizer}; otherwise a {@linkcode GradientTransform}. The state is
 * the array of the parts' states, in order.
 *
 * @example
 * ```ts
 * const opt = chain(clipByGlobalNorm(1), adamw({ lr: cosine(1e-3, 10_000) }));
 * ```
 */
export function chain(...parts: [...GradientTransform[], Optimizer]): Optimizer<unknown[]>;
/** Compose gradient transforms only: the result is again a transform. @example `chain(clipByGlobalNorm(1), myScale)` */
export function chain(...parts: GradientTransform[]): GradientTransform<unknown[]>;
export function chain(
  ...parts: Part[]
): Optimizer<unknown[]> | GradientTransform<unknown[]> {
  if (parts.length === 0) {
    throw new Error("chain: needs at least one transform, e.g. chain(clipByGlobalNorm(1), adam())");
  }
  parts.forEach((p, i) => {
    if (!p || (!isOptimizer(p) && !isTransform(p))) {
      throw new Error(`chain: part ${i} is neither a GradientTransform nor an Optimizer`);
    }
    if (isOptimizer(p) && i !== parts.length - 1) {
      throw new Error(
        `chain: part ${i} is an optimizer, but only the last part may be one; put the gradient ` +
          "transforms (clip, scale, …) before it",
      );
    }
  });
  const last = parts[parts.length - 1];
  const transforms = (isOptimizer(last) ? parts.slice(0, -1) : parts) as GradientTransform[];
  const init = <P>(params: P): unknown[] => parts.map((p) => p.init(params));
  const run = <P>(grads: P, state: unknown[], params: P): [P, unknown[]] => {
    if (!Array.isArray(state) || state.length !== parts.length) {
      throw new Error(
        `chain: expected a state array of ${parts.length} parts; use the state made by init(params)`,
      );
    }
    const next: unknown[] = [];
    let g = grads;
    transforms.forEach((t, i) => {
      const [g2, s2] = t.transform(g, state[i], params);
      g = g2;
      next.push(s2);
    });
    return [g, next];
  };
  if (isOptimizer(last)) {
    return defineOptimizer({
      init,
      update<P>(grads: P, state: unknown[], params: P): [P, unknown[]] {
        const [g, next] = run(grads, state, params);
        const [newParams, s] = last.update(g, state[state.length - 1], params);
        return [newParams, [...next, s]];
      },
    });
  }
  return defineTransform({ init, transform: run });
}
