/**
 * Weight-decay masks (optax's `mask`): which params an optimizer's weight decay applies to.
 *
 * @module
 */
import { Tensor } from "../tensor.ts";
import { leaves } from "../tree.ts";

/**
 * Which params get weight decay: a tree of booleans shaped like the params (`true`: decay), or
 * a function of each param's dotted tree path (`"layers.0.w"`) and the param.
 */
export type DecayMask = unknown | ((path: string, param: Tensor) => boolean);

/**
 * The usual recipe (GPT-2, nanoGPT): decay matrices and higher-rank weights only, not biases,
 * norm scales or other vectors and scalars.
 *
 * @example
 * ```ts
 * const opt = adamw({ lr: 3e-4, weightDecay: 0.1, mask: decayMatrices });
 * ```
 */
export const decayMatrices = (_path: string, param: Tensor): boolean => param.shape.length >= 2;

/**
 * The decay flag of every tensor leaf of `params`, in `tree.leaves` order (all `true` without a
 * mask). A tree mask must have a boolean where `params` has a tensor.
 *
 * @example
 * ```ts
 * decayFlags("adamw", { w: ones([2, 2]), b: zeros([2]) }, decayMatrices); // [true, false]
 * ```
 */
export function decayFlags(op: string, params: unknown, mask: DecayMask | undefined): boolean[] {
  const out: boolean[] = [];
  const walk = (p: unknown, m: unknown, path: string) => {
    const shown = JSON.stringify(path || "(root)");
    if (p instanceof Tensor) {
      const flag = typeof mask === "function" ? mask(path, p) : m;
      if (typeof flag !== "boolean") {
        throw new TypeError(
          `${op}: the weight-decay mask gives ${typeof flag} at ${shown}; it must be a ` +
            "boolean (true: decay) for every param, as a tree shaped like the params or a " +
            "function (path, param) => boolean",
        );
      }
      out.push(flag);
      return;
    }
    const sub = (k: string | number) => path ? `${path}.${k}` : `${k}`;
    const child = (k: string | number) => {
      if (typeof mask === "function") return undefined;
      if (m === null || typeof m !== "object") {
        throw new TypeError(
          `${op}: the weight-decay mask has ${m === null ? "null" : typeof m} at ${shown} where ` +
            "the params have a subtree; give it the params' structure with booleans at the leaves",
        );
      }
      return (m as Record<string | number, unknown>)[k];
    };
    if (Array.isArray(p)) p.forEach((v, i) => walk(v, child(i), sub(i)));
    else if (p !== null && typeof p === "object") {
      for (const [k, v] of Object.entries(p)) walk(v, child(k), sub(k));
    }
  };
  if (mask === undefined) return leaves(params).map(() => true);
  walk(params, mask, "");
  return out;
}
