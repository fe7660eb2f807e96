/**
 * `castParams`: run the model with its params (and floating inputs) in a narrow dtype, with or
 * without f32 master weights.
 *
 * - With a master dtype (default `"f32"`): `init` casts the params to the master dtype and the
 *   optimizer keeps them (and its state) there; the objective sees compute copies in `dtype`,
 *   made inside differentiation, so gradients come back in the master dtype (Apex O2).
 * - With `master: null`: `init` casts the params to `dtype`, so params, gradients and optimizer
 *   state are all in `dtype` (Lightning's "16-true" / "bf16-true", Apex O3).
 *
 * @example
 * ```ts
 * const mixed = pipe(trainStep({ loss, optimizer }), castParams("f16"), gradScale());
 * const pure = pipe(trainStep({ loss, optimizer }), castParams("bf16", { master: null }));
 * ```
 *
 * @module
 */
import { type DType, isFloating } from "../lib/dtype.ts";
import type { Transformer } from "../lib/train.ts";
import { castFloating, definePlugin } from "./plugin.ts";

/** Options of {@linkcode castParams}. */
export interface CastParamsOptions {
  /** dtype of the params the optimizer updates (default "f32"); `null`: the compute dtype. */
  master?: DType | null;
  /** Cast the batch's floating leaves to the compute dtype (default true). */
  castInputs?: boolean;
}

function checkFloat(what: string, d: unknown): void {
  if (typeof d !== "string" || !isFloating(d as DType)) {
    throw new Error(
      `castParams: ${what} must be a float dtype (e.g. "f16"), got ${JSON.stringify(d)}`,
    );
  }
}

/**
 * A step transformer that computes with params (and floating batch leaves) in `dtype`.
 *
 * @example
 * ```ts
 * const step = castParams("f64", { master: null })(trainStep({ loss, optimizer })); // "64-true"
 * ```
 */
export function castParams(dtype: DType, opts: CastParamsOptions = {}): Transformer {
  const master = opts.master === undefined ? "f32" : opts.master;
  const castInputs = opts.castInputs ?? true;
  checkFloat("the compute dtype", dtype);
  if (master !== null) checkFloat("master", master);
  return definePlugin("castParams", {
    params: (params) => castFloating(params, master ?? dtype),
    objective: (params, batch, state, next) =>
      next(castFloating(params, dtype), castInputs ? castFloating(batch, dtype) : batch, state),
  });
}
