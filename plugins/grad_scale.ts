/**
 * `gradScale`: loss scaling with `torch.amp.GradScaler`'s semantics, on the device.
 *
 * Each step differentiates `loss · scale`, unscales the gradients in f32 (f64 for f64 grads) by
 * `inv = 1/scale`, and hands them to the inner update. Whether every gradient the optimizer
 * consumed is finite is a bool tensor: the new params, optimizer state and inner plugin state
 * are selected (`where`) against the old ones, so a skipped step leaves them bitwise unchanged,
 * and nothing is read back. Then the scale is updated by torch's kernel: back off on a
 * non-finite step (tracker reset), grow after `growthInterval` consecutive finite steps, but
 * never to Inf (the tracker still resets).
 *
 * State, made by `init`: `state.plugins.gradScale = { scale: f32 scalar, tracker: i32 scalar,
 * dynamic, growthFactor, backoffFactor, growthInterval, minScale }`; the step reads its config
 * from the state, so a restored checkpoint keeps its own. Metrics: `scale` (the scale used this
 * step, f32) and `skipped` (i32 0 or 1).
 *
 * @example
 * ```ts
 * const step = pipe(trainStep({ loss, optimizer }), autocast("f16"), gradScale());
 * const fixed = gradScale({ static: 1024 });
 * ```
 *
 * @module
 */
import { isFloating } from "../lib/dtype.ts";
import { full, Tensor } from "../lib/tensor.ts";
import { registerPluginStateCheck } from "../lib/checkpoint.ts";
import { leaves, map } from "../lib/tree.ts";
import {
  add,
  allFinite,
  astype,
  div,
  greaterEqual,
  isFinite,
  logicalNot,
  maximum,
  mul,
  where,
} from "../lib/ops/mod.ts";
import type { TrainState, Transformer } from "../lib/train.ts";
import { definePlugin, pluginState, selectTree, withPluginState } from "./plugin.ts";

/** Options of a dynamic {@linkcode gradScale} (torch's defaults). */
export interface GradScaleOptions {
  /** The first scale (default 2**16). */
  initScale?: number;
  /** Multiplier after `growthInterval` consecutive finite steps (default 2; must be > 1). */
  growthFactor?: number;
  /** Multiplier after a non-finite step (default 0.5; must be in (0, 1)). */
  backoffFactor?: number;
  /** Consecutive finite steps before growing (default 2000). */
  growthInterval?: number;
  /** Floor applied when backing off (default 0: none, as torch). */
  minScale?: number;
}

/** A fixed scale: `{ static: S }`. Non-finite steps are still skipped. */
export interface StaticScale {
  /** The fixed scale (finite, > 0). */
  readonly static: number;
}

/** The state of {@linkcode gradScale} in `state.plugins.gradScale`. */
export interface GradScaleState {
  /** The current scale (f32 scalar tensor). */
  readonly scale: Tensor;
  /** Consecutive finite steps since the last growth or back-off (i32 scalar tensor). */
  readonly tracker: Tensor;
  /** false for a static scale (never updated). */
  readonly dynamic: boolean;
  /** Multiplier after `growthInterval` consecutive finite steps. */
  readonly growthFactor: number;
  /** Multiplier after a non-finite step. */
  readonly backoffFactor: number;
  /** Consecutive finite steps before growing. */
  readonly growthInterval: number;
  /** Floor applied when backing off; 0 means none. */
  readonly minScale: number;
}

/** The state slot's name. */
export const GRAD_SCALE = "gradScale";

type Config = Omit<GradScaleState, "scale" | "tracker"> & { readonly initScale: number };

type Fail = (what: string, v: unknown) => never;

/** The rules of a dynamic config, shared by the options and a restored state. */
function checkDynamic(
  c: Pick<GradScaleState, "growthFactor" | "backoffFactor" | "growthInterval" | "minScale">,
  fail: Fail,
): void {
  const num = (v: unknown) => typeof v === "number" && Number.isFinite(v);
  const { growthFactor, backoffFactor, growthInterval, minScale } = c;
  if (!num(growthFactor) || growthFactor <= 1) fail("growthFactor must be > 1", growthFactor);
  if (!num(backoffFactor) || backoffFactor <= 0 || backoffFactor >= 1) {
    fail("backoffFactor must be in (0, 1)", backoffFactor);
  }
  if (!Number.isInteger(growthInterval) || growthInterval < 1) {
    fail("growthInterval must be an integer ≥ 1", growthInterval);
  }
  if (!num(minScale) || minScale < 0) fail("minScale must be a finite number ≥ 0", minScale);
}

/** The config numbers of a static scale (never used: the scale does not change). */
const STATIC_CONFIG = { growthFactor: 1, backoffFactor: 1, growthInterval: 1, minScale: 0 };

function configOf(opts: GradScaleOptions | StaticScale): Config {
  const fail: Fail = (what, v) => {
    throw new Error(`gradScale: ${what}, got ${v}`);
  };
  if (opts && "static" in opts) {
    const s = opts.static;
    if (!(typeof s === "number" && Number.isFinite(s) && s > 0)) {
      fail("static must be a finite number > 0", s);
    }
    return { initScale: s, dynamic: false, ...STATIC_CONFIG };
  }
  const {
    initScale = 2 ** 16,
    growthFactor = 2,
    backoffFactor = 0.5,
    growthInterval = 2000,
    minScale = 0,
  } = opts ?? {};
  if (!(typeof initScale === "number" && Number.isFinite(initScale) && initScale > 0)) {
    fail("initScale must be a finite number > 0", initScale);
  }
  const config = { growthFactor, backoffFactor, growthInterval, minScale };
  checkDynamic(config, fail);
  return { initScale, dynamic: true, ...config };
}

/**
 * Check a restored `state.plugins.gradScale` (e.g. from a checkpoint) with the same rules as
 * {@linkcode gradScale}'s options: an f32 scalar `scale`, an i32 scalar `tracker`, a boolean
 * `dynamic`, and for a dynamic scale the option rules for `growthFactor`, `backoffFactor`,
 * `growthInterval` and `minScale`. Throws an error naming the field, the rule and the value.
 *
 * @example
 * ```ts
 * checkGradScaleState({ ...state.plugins.gradScale, backoffFactor: 0 }); // throws
 * ```
 */
export function checkGradScaleState(s: unknown): void {
  const fail: Fail = (what, v) => {
    throw new Error(
      `gradScale: ${what}, got ${v} in state.plugins.${GRAD_SCALE}; the state (or the ` +
        "checkpoint it came from) holds an invalid config: save it again from a valid gradScale",
    );
  };
  if (s === null || typeof s !== "object") fail("the state must be an object", s);
  const st = s as Partial<Record<keyof GradScaleState, unknown>>;
  const scalar = (k: "scale" | "tracker", dtype: string) => {
    const t = st[k];
    if (!(t instanceof Tensor) || t.dtype !== dtype || t.shape.length !== 0) {
      fail(`${k} must be a ${dtype} scalar tensor`, t instanceof Tensor ? t.toString() : t);
    }
  };
  scalar("scale", "f32");
  scalar("tracker", "i32");
  if (typeof st.dynamic !== "boolean") fail("dynamic must be true or false", st.dynamic);
  if (st.dynamic) checkDynamic(st as GradScaleState, fail);
}

registerPluginStateCheck(GRAD_SCALE, checkGradScaleState);

/**
 * torch's scale-update kernel on the device: given whether this step's gradients were all
 * finite (a bool scalar), the next `{ scale, tracker }`. A static scale never changes.
 *
 * @example
 * ```ts
 * const { scale, tracker } = updateScale(state.plugins.gradScale, allFinite(...grads));
 * ```
 */
export function updateScale(
  s: GradScaleState,
  finite: Tensor,
): { scale: Tensor; tracker: Tensor } {
  if (!s.dynamic) return { scale: s.scale, tracker: s.tracker };
  const t = add(s.tracker, 1);
  const due = greaterEqual(t, s.growthInterval);
  const grown = mul(s.scale, s.growthFactor);
  const clean = where(due, where(isFinite(grown), grown, s.scale), s.scale);
  let backedOff = mul(s.scale, s.backoffFactor);
  if (s.minScale > 0) backedOff = maximum(backedOff, s.minScale);
  return {
    scale: where(finite, clean, backedOff),
    tracker: where(finite, where(due, 0, t), 0),
  };
}

/** Unscale one gradient in f32 (f64 for f64) and store it back in its own dtype. */
function unscale(g: Tensor, inv: Tensor): Tensor {
  if (!isFloating(g.dtype)) return g;
  const c = g.dtype === "f64" ? "f64" : "f32";
  return astype(mul(astype(g, c), inv), g.dtype);
}

/**
 * A step transformer for dynamic loss scaling (torch defaults: 2**16, ×2 after 2000 finite
 * steps, ×0.5 and skip on Inf/NaN), or a fixed scale with `{ static: S }`.
 *
 * @example
 * ```ts
 * const step = pipe(trainStep({ loss, optimizer }), castParams("f16"), gradScale({ initScale: 1024 }));
 * ```
 */
export function gradScale(opts: GradScaleOptions | StaticScale = {}): Transformer {
  const { initScale, ...config } = configOf(opts);
  return definePlugin(GRAD_SCALE, {
    init: (state: TrainState): GradScaleState => {
      const device = leaves(state.params)[0]?.device;
      // Key order as `update` writes it, so the state's tree (and a jit signature) is stable.
      return {
        ...config,
        scale: full([], initScale, { dtype: "f32", device }),
        tracker: full([], 0, { dtype: "i32", device }),
      };
    },
    objective: (params, batch, state, next) => {
      const out = next(params, batch, state);
      const { scale } = pluginState<GradScaleState>(state, GRAD_SCALE);
      return { ...out, value: mul(out.value ?? out.loss, scale) };
    },
    update: (state, grads, next) => {
      // The config stored in the state wins (a restored checkpoint keeps its own).
      const s = { ...config, ...pluginState<GradScaleState>(state, GRAD_SCALE) };
      // f32 division 1/s rounds once, which equals torch's f32(1/f64(s)) (see docs/plugins.md).
      const inv = div(1, s.scale);
      const unscaled = map((g) => unscale(g, inv), grads);
      const out = next(state, unscaled);
      const checked = leaves(out.consumed ?? unscaled);
      const finite = checked.length
        ? allFinite(...checked)
        : full([], 1, { dtype: "bool", device: s.scale.device });
      const kept = selectTree(finite, out.state, state);
      return {
        state: withPluginState(kept, GRAD_SCALE, { ...s, ...updateScale(s, finite) }),
        metrics: {
          ...out.metrics,
          scale: mul(s.scale, 1),
          skipped: astype(logicalNot(finite), "i32"),
        },
      };
    },
  });
}
