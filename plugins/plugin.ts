/**
 * The plugin API: {@linkcode definePlugin} turns a few hooks into a step transformer
 * (`Step → Step`) by wrapping the step's parts and rebuilding it with `makeStep`. Every built-in
 * precision plugin (`autocast`, `castParams`, `gradScale`) is written with it, and so is a user's.
 *
 * Hooks (all optional):
 * - `params(params)`: transform the params before the inner `init` sees them (cast them).
 * - `init(state)`: this plugin's initial state, stored under `state.plugins[name]`.
 * - `objective(params, batch, state, next)`: wraps the forward pass and loss (it runs inside
 *   differentiation); return `{ loss, value?, aux? }`, where `value` is what gets differentiated.
 * - `update(state, grads, next, extras)`: sees the gradients before the inner update (and the
 *   optimizer) and its result after; call `next(state, grads)` exactly once. The result's
 *   `consumed` holds the gradients the optimizer was given. `extras` holds what objectives
 *   returned in `ObjectiveOut.extras` this step (a plugin's objective hands data to its update
 *   this way, never through closure state, so a step stays pure under `jit`).
 *
 * @example
 * ```ts
 * const halveGrads = definePlugin("halveGrads", {
 *   update: (state, grads, next) => next(state, tree.map((g) => mul(g, 0.5), grads)),
 * });
 * const step = pipe(trainStep({ loss, optimizer }), halveGrads);
 * ```
 *
 * @module
 */
import type { DType } from "../lib/dtype.ts";
import { isFloating } from "../lib/dtype.ts";
import { Tensor } from "../lib/tensor.ts";
import { map } from "../lib/tree.ts";
import { astype, where } from "../lib/ops/mod.ts";
import {
  makeStep,
  type Objective,
  type ObjectiveOut,
  type Step,
  type TrainState,
  type Transformer,
  type UpdateOut,
} from "../lib/train.ts";

/** The inner update a plugin's `update` hook hands the (transformed) gradients to. */
export type NextUpdate = (state: TrainState, grads: unknown) => UpdateOut;

/** The hooks of {@linkcode definePlugin} (see the module docs). */
export interface PluginHooks {
  /** Transform the params given to `init` before the inner `init` sees them. */
  params?: (params: unknown) => unknown;
  /** This plugin's initial state (trees of tensors and plain numbers), from the inner state. */
  init?: (state: TrainState) => unknown;
  /** Wrap the objective: call `next` with the params and batch the model should see. */
  objective?: (
    params: unknown,
    batch: unknown,
    state: TrainState,
    next: Objective<unknown>,
  ) => ObjectiveOut;
  /** Wrap the update: call `next(state, grads)` once and return (or adjust) its result. */
  update?: (
    state: TrainState,
    grads: unknown,
    next: NextUpdate,
    extras: Readonly<Record<string, unknown>>,
  ) => UpdateOut;
}

/**
 * Make a step transformer named `name` from hooks. A plugin with an `init` hook keeps its state
 * in `state.plugins[name]`, so applying it twice to one step is an error.
 *
 * @example
 * ```ts
 * const countSteps = definePlugin("countSteps", {
 *   init: () => ({ n: zeros([], { dtype: "i32" }) }),
 *   update: (state, grads, next) => {
 *     const out = next(state, grads);
 *     const n = add(pluginState<{ n: Tensor }>(state, "countSteps").n, 1);
 *     return { ...out, state: withPluginState(out.state, "countSteps", { n }) };
 *   },
 * });
 * ```
 */
export function definePlugin(name: string, hooks: PluginHooks): Transformer {
  if (typeof name !== "string" || name === "") {
    throw new Error("definePlugin: the name must be a non-empty string (the state slot's key)");
  }
  return <B>(step: Step<B>): Step<B> => {
    const inner = step.parts;

    const { params, init, objective, update } = hooks;
    return makeStep<B>({
      init: (p) => {
        const state = inner.init(params ? params(p) : p);
        if (!init) return state;
        if (name in state.plugins) {
          throw new Error(
            `${name}: this plugin is applied twice to one step; its state slot ` +
              `state.plugins.${name} is already taken`,
          );
        }
        return withPluginState(state, name, init(state));
      },
      objective: objective
        ? (p, batch, state) => objective(p, batch, state, inner.objective as Objective<unknown>)
        : inner.objective,
      gradient: inner.gradient,
      update: update
        ? (state, grads, extras) => {
          let innerOut: UpdateOut | undefined;
          const next: NextUpdate = (s, g) => (innerOut = inner.update(s, g, extras));
          const out = update(state, grads, next, extras ?? {});
          // Keep what the optimizer consumed visible to outer plugins.
          return out.consumed === undefined && innerOut?.consumed !== undefined
            ? { ...out, consumed: innerOut.consumed }
            : out;
        }
        : inner.update,
    });
  };
}

/**
 * Run `fn` (which calls an update's `next`) and return its result with the gradients the
 * innermost update (the optimizer) consumed: the result's `consumed` field, plain data.
 *
 * @example
 * ```ts
 * const [out, consumed] = traceGrads(() => next(state, grads));
 * const finite = allFinite(...tree.leaves(consumed));
 * ```
 */
export function traceGrads(fn: () => UpdateOut): [UpdateOut, unknown] {
  const result = fn();
  return [result, result.consumed];
}

/**
 * The state a plugin keeps under `state.plugins[name]`; a clear error when it is missing.
 *
 * @example
 * ```ts
 * const { scale } = pluginState<GradScaleState>(state, "gradScale");
 * ```
 */
export function pluginState<S>(state: TrainState, name: string): S {
  const s = state.plugins?.[name];
  if (s === undefined) {
    throw new Error(
      `${name}: this TrainState has no state.plugins.${name}; make the state with the wrapped ` +
        "step's init(params) (or load a checkpoint saved from such a state)",
    );
  }
  return s as S;
}

/**
 * A copy of `state` whose `state.plugins[name]` is `value`.
 *
 * @example
 * ```ts
 * const next = withPluginState(state, "gradScale", { ...gs, scale: newScale });
 * ```
 */
export function withPluginState(state: TrainState, name: string, value: unknown): TrainState {
  return { ...state, plugins: { ...state.plugins, [name]: value } };
}

/**
 * Choose between two trees of one structure on the device: each tensor leaf becomes
 * `where(pred, a, b)` (bitwise one of the two), with no readback. Leaves that are the same
 * tensor in both are kept as they are; other values come from `onTrue`.
 *
 * @example
 * ```ts
 * const kept = selectTree(allFinite(...tree.leaves(grads)), newState, oldState);
 * ```
 */
export function selectTree<T>(pred: Tensor, onTrue: T, onFalse: T): T {
  if (!(pred instanceof Tensor) || pred.dtype !== "bool" || pred.size !== 1) {
    throw new Error("selectTree: pred must be a bool scalar tensor (e.g. from allFinite)");
  }
  return map((a, b) => (a === b ? a : where(pred, a, b)), onTrue, onFalse);
}

/**
 * Cast the floating tensor leaves of a tree to `dtype` (integer and bool leaves, and other
 * values, are kept). Differentiable: gradients flow back in each leaf's own dtype.
 *
 * @example
 * ```ts
 * const half = castFloating({ x: images, y: labels }, "f16"); // x becomes f16, y stays i32
 * ```
 */
export function castFloating<T>(tree: T, dtype: DType): T {
  return map((t) => (isFloating(t.dtype) ? astype(t, dtype) : t), tree);
}
