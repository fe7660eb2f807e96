/**
 * `fp8`: fp8 matrix products with Transformer Engine's delayed scaling (`DelayedScaling`),
 * emulated by fake quantization (`NVIDIA/TransformerEngine transformer_engine/common/recipe/__init__.py`,
 * `transformer_engine/common/recipe/delayed_scaling.cu`).
 *
 * Inside the objective, every call of an op tagged `matmul` (`matmul`, `matmulT`, `linear`) is
 * a GEMM slot, numbered by its order in the step (0, 1, …). Each slot has three tensor roles:
 *
 * | role         | index | tensor                               | format (hybrid / e4m3) |
 * | ------------ | ----- | ------------------------------------ | ---------------------- |
 * | `input`      | 0     | the op's first operand (activations) | e4m3 / e4m3            |
 * | `weight`     | 1     | the op's second operand (weights)    | e4m3 / e4m3            |
 * | `gradOutput` | 2     | the cotangent of the op's output     | e5m2 / e4m3            |
 *
 * - Forward: each floating operand is fake-quantized with its role's scale `s`:
 *   `f32(x) · s`, rounded to fp8 with saturation, widened, divided by `s`, stored back in `x`'s
 *   dtype ({@linkcode fakeQuantize}). The gradient passes straight through to `x`. Other inputs
 *   (a bias) are left as they are, as TE adds the bias in higher precision.
 * - Backward: an identity op placed on the output fake-quantizes the cotangent in its VJP.
 *   The matmul's own VJP then computes `dgrad` and `wgrad` from fp8 values only, as TE's fp8
 *   GEMMs do.
 * - Amaxes: `max|x|` of each operand (before scaling) and of each output cotangent (in the
 *   VJP) are recorded, and the update hook rolls them into the history and updates the scales
 *   ({@linkcode updateFp8Scale}): pure tensor math with `where`, nothing is read back. The scale
 *   used at step t comes from the amaxes of steps up to t−1 ("delayed").
 *
 * **How the backward reports its amaxes.** A Step is pure, but the VJP runs inside `grad`'s
 * backward, after the objective returned, and only cotangents flow out of it. So each wrapped
 * step owns a private hand-off record: the objective opens it (keyed by the fp8 state it read),
 * the forward interceptor and the VJPs put their amaxes in it (kept past `grad`'s `tidy`), and
 * the update hook of the same step takes it, turns it into the next state and frees it. Nothing
 * of it reaches the state but the new history and scales; the step function stays
 * `(state, batch) → [state, metrics]`. A record whose update never ran (its objective or its
 * backward threw) is freed by the next objective call on another state.
 * Several objective calls on one state before one update (gradient accumulation) fold their
 * amaxes with `max`.
 *
 * State, made by `init`: `state.plugins.fp8 = { amaxHistory, scale, format, margin,
 * amaxComputeAlgo }`, `amaxHistory` f32 `[amaxHistoryLen, maxGemms, 3]` (zeros) and `scale`
 * f32 `[maxGemms, 3]` (ones, TE's initial scale). The slot count is fixed by `maxGemms` (default
 * 16) because `init` sees only the params: the calls are known when the loss runs, and a dry run
 * would need a batch. A step that makes more calls is a clear error naming the option.
 *
 * @example
 * ```ts
 * const step = pipe(trainStep({ loss, optimizer: adam() }), autocast("bf16"), fp8());
 * // the same as precision("fp8-mixed")(trainStep({ loss, optimizer: adam() }))
 * ```
 *
 * @module
 */
import { finfo, isFloating } from "../lib/dtype.ts";
import { apply, intercept, type OpDef } from "../lib/op.ts";
import { full, keep, ones, Tensor, tensor, zeros } from "../lib/tensor.ts";
import { registerPluginStateCheck } from "../lib/checkpoint.ts";
import { leaves } from "../lib/tree.ts";
import {
  abs,
  astype,
  concat,
  div,
  expandDims,
  greater,
  isFinite,
  max,
  maximum,
  minimum,
  mul,
  reshape,
  slice,
  stack,
  where,
} from "../lib/ops/mod.ts";
import type { Step, TrainState, Transformer } from "../lib/train.ts";
import { definePlugin, type PluginHooks, pluginState, withPluginState } from "./plugin.ts";

/** `"hybrid"`: e4m3 forward, e5m2 gradients (TE's default); `"e4m3"`: e4m3 everywhere. */
export type Fp8Format = "hybrid" | "e4m3";

/** How the scale's amax is taken from the history: its maximum, or the latest entry. */
export type AmaxComputeAlgo = "max" | "most_recent";

/** An fp8 dtype. */
export type Fp8DType = "f8e4m3" | "f8e5m2";

/** Options of {@linkcode fp8} (TE `DelayedScaling`'s, plus the slot count). */
export interface Fp8Options {
  /** Formats of the forward and backward tensors (default "hybrid"). */
  format?: Fp8Format;
  /** Amaxes kept per tensor (default 16; TE's default is 1024, see docs/plugins.md). */
  amaxHistoryLen?: number;
  /** `scale = fp8Max / amax / 2^margin` (default 0). */
  margin?: number;
  /** Amax of the window, or the latest one (default "max"). */
  amaxComputeAlgo?: AmaxComputeAlgo;
  /** Matmul-tagged op calls one step may make (default 16): the state holds this many slots. */
  maxGemms?: number;
}

/** The state of {@linkcode fp8} in `state.plugins.fp8`. */
export interface Fp8State {
  /** f32 `[amaxHistoryLen, maxGemms, 3]`; entry 0 is filled by the current step. */
  readonly amaxHistory: Tensor;
  /** f32 `[maxGemms, 3]`: the scale of each (slot, role), used by the next step. */
  readonly scale: Tensor;
  /** Formats of the forward and backward tensors. */
  readonly format: Fp8Format;
  /** `scale = fp8Max / amax / 2^margin`. */
  readonly margin: number;
  /** How the amax is taken from the history. */
  readonly amaxComputeAlgo: AmaxComputeAlgo;
}

/** The state slot's name. @example `state.plugins[FP8] as Fp8State` */
export const FP8 = "fp8";

/**
 * The tensor roles of one GEMM slot, in the order of the state's last axis.
 *
 * @example
 * ```ts
 * const gradScales = slice(state.plugins.fp8.scale, [0, FP8_ROLES.indexOf("gradOutput")]);
 * ```
 */
export const FP8_ROLES: readonly ["input", "weight", "gradOutput"] = Object.freeze(
  ["input", "weight", "gradOutput"] as const,
);

const ROLES = FP8_ROLES.length;
const F32_MAX = finfo("f32").max;

type Config = Omit<Fp8State, "amaxHistory" | "scale"> & {
  readonly amaxHistoryLen: number;
  readonly maxGemms: number;
};

type Fail = (what: string, v: unknown) => never;

/** A value for an error message (NaN and ±Infinity as such, tensors by dtype and shape). */
const shownValue = (v: unknown): string =>
  typeof v === "number" ? String(v) : v instanceof Tensor ? v.toString() : JSON.stringify(v);

/** The rules of a config, shared by the options and a restored state. */
function checkConfig(c: Config, fail: Fail): void {
  const { format, amaxHistoryLen, margin, amaxComputeAlgo, maxGemms } = c;
  if (format !== "hybrid" && format !== "e4m3") {
    fail(
      'format must be "hybrid" or "e4m3" (pure e5m2 training is not supported, as in TE)',
      format,
    );
  }
  if (!Number.isInteger(amaxHistoryLen) || amaxHistoryLen < 1) {
    fail("amaxHistoryLen must be an integer ≥ 1", amaxHistoryLen);
  }
  if (typeof margin !== "number" || !Number.isFinite(margin)) fail("margin must be finite", margin);
  if (amaxComputeAlgo !== "max" && amaxComputeAlgo !== "most_recent") {
    fail('amaxComputeAlgo must be "max" or "most_recent"', amaxComputeAlgo);
  }
  if (!Number.isInteger(maxGemms) || maxGemms < 1) {
    fail("maxGemms must be an integer ≥ 1", maxGemms);
  }
}

function configOf(opts: Fp8Options): Config {
  const {
    format = "hybrid",
    amaxHistoryLen = 16,
    margin = 0,
    amaxComputeAlgo = "max",
    maxGemms = 16,
  } = opts ?? {};
  const config = { format, amaxHistoryLen, margin, amaxComputeAlgo, maxGemms };
  checkConfig(config, (what, v) => {
    throw new Error(`fp8: ${what}, got ${shownValue(v)}`);
  });
  return config;
}

/**
 * Check a restored `state.plugins.fp8` (e.g. from a checkpoint) with the same rules as
 * {@linkcode fp8}'s options: `amaxHistory` f32 `[amaxHistoryLen, maxGemms, 3]` and `scale` f32
 * `[maxGemms, 3]` (which give `amaxHistoryLen` and `maxGemms`), `format`, `margin` and
 * `amaxComputeAlgo`. Throws an error naming the field, the rule and the value.
 *
 * @example
 * ```ts
 * checkFp8State({ ...state.plugins.fp8, margin: NaN }); // throws
 * ```
 */
export function checkFp8State(s: unknown): void {
  const fail: Fail = (what, v) => {
    throw new Error(
      `fp8: ${what}, got ${shownValue(v)} in ` +
        `state.plugins.${FP8}; the state (or the checkpoint it came from) holds an invalid ` +
        "config: save it again from a valid fp8 step",
    );
  };
  if (s === null || typeof s !== "object") fail("the state must be an object", s);
  const st = s as Partial<Record<keyof Fp8State, unknown>>;
  const { amaxHistory: h, scale } = st;
  if (!(h instanceof Tensor) || h.dtype !== "f32" || h.shape.length !== 3 || h.shape[2] !== 3) {
    fail("amaxHistory must be an f32 tensor [amaxHistoryLen, maxGemms, 3]", h);
  }
  const [amaxHistoryLen, maxGemms] = h.shape;
  if (
    !(scale instanceof Tensor) || scale.dtype !== "f32" ||
    `${scale.shape}` !== `${[maxGemms, ROLES]}`
  ) {
    fail(`scale must be an f32 tensor [${maxGemms}, ${ROLES}] (maxGemms from amaxHistory)`, scale);
  }
  checkConfig({ ...(st as Fp8State), amaxHistoryLen, maxGemms }, fail);
}

registerPluginStateCheck(FP8, checkFp8State);

/** The fp8 dtype of each role under `format`. */
function roleDtypes(format: Fp8Format): readonly Fp8DType[] {
  return ["f8e4m3", "f8e4m3", format === "hybrid" ? "f8e5m2" : "f8e4m3"];
}

// ---------------------------------------------------------------------------------------------
// Fake quantization

/**
 * Quantize-dequantize `x` with a per-tensor `scale`, computed in f32: `f32(x) · scale` is
 * rounded to `dtype` (nearest-even, saturating at ±max as TE's cast), widened back to f32 and
 * divided by `scale`; the result has `x`'s dtype. Not differentiable as such: `fp8` wraps it in
 * a straight-through op.
 *
 * @example
 * ```ts
 * fakeQuantize(tensor([0.3, 1000]), 2, "f8e4m3"); // [0.3125, 224]: 0.6 → 0.625, 2000 → 448
 * ```
 */
export function fakeQuantize(x: Tensor, scale: Tensor | number, dtype: Fp8DType): Tensor {
  if (dtype !== "f8e4m3" && dtype !== "f8e5m2") {
    throw new Error(
      `fakeQuantize: dtype must be "f8e4m3" or "f8e5m2", got ${JSON.stringify(dtype)}`,
    );
  }
  const scaled = mul(astype(x, "f32"), scale);
  const rounded = astype(astype(scaled, dtype, { saturate: true }), "f32");
  return astype(div(rounded, scale), x.dtype);
}

/** `max|x|` as an f32 scalar (NaN if any element is NaN). */
function amaxOf(x: Tensor): Tensor {
  return astype(max(abs(x)), "f32");
}

/** Forward: input 0 (the quantized value); gradient: straight through to input 1 (`x`). */
const straightThroughOp: OpDef<undefined> = {
  name: "fp8Quantize",
  tags: ["cast"],
  infer: ([q]) => ({ shape: q.shape, dtype: q.dtype }),
  view: true,
  vjp: (g) => [null, g],
};

interface GradQuantizeAttrs {
  readonly dtype: Fp8DType;
  /** Receives `max|cotangent|` (called from the VJP). */
  readonly observe: (amax: Tensor) => void;
}

/** Forward: identity on input 0; VJP: the cotangent fake-quantized with input 1 (the scale). */
const gradQuantizeOp: OpDef<GradQuantizeAttrs> = {
  name: "fp8GradQuantize",
  tags: ["cast"],
  infer: ([y]) => ({ shape: y.shape, dtype: y.dtype }),
  view: true,
  vjp: (g, [, scale], _out, attrs) => {
    attrs.observe(amaxOf(g));
    return [fakeQuantize(g, scale, attrs.dtype), null];
  },
};

// ---------------------------------------------------------------------------------------------
// The scale update

/** Options of {@linkcode updateFp8Scale}. */
export interface Fp8ScaleOptions {
  /** The format's largest finite value (448 or 57344), or a tensor broadcasting to the scale. */
  readonly fp8Max: number | Tensor;
  /** `scale = fp8Max / amax / 2^margin` (default 0). */
  readonly margin?: number;
  /** Amax of the window, or the latest one (default "max"). */
  readonly amaxComputeAlgo?: AmaxComputeAlgo;
}

/**
 * TE's delayed-scaling update for a batch of tensor slots, on the device. `amax` (the shape of
 * `scale`) is this step's `max|x|` per slot; `amaxHistory` is `[len, ...scale.shape]`.
 *
 * 1. `history[0] = amax`;
 * 2. `a = max(history)` (or `amax` under "most_recent");
 * 3. `scale = (fp8Max · 2^−margin) / a` (clamped to the f32 max), but the old scale where `a`
 *    is ≤ 0, NaN or Inf;
 * 4. roll: `[a0, a1, …, a(n−1)] → [0, a2, …, a(n−1), a0]`: entry 0 is zero again, for the next
 *    step's amax, and the window keeps the last `len` amaxes.
 *
 * @example
 * ```ts
 * const s = { amaxHistory: zeros([4, 1]), scale: ones([1]) };
 * const next = updateFp8Scale(s, tensor([2]), { fp8Max: 448 }); // scale [224], history [0,0,0,2]
 * ```
 */
export function updateFp8Scale(
  s: { readonly amaxHistory: Tensor; readonly scale: Tensor },
  amax: Tensor,
  opts: Fp8ScaleOptions,
): { amaxHistory: Tensor; scale: Tensor } {
  const { fp8Max, margin = 0, amaxComputeAlgo = "max" } = opts;
  const shape = s.scale.shape;
  const len = s.amaxHistory.shape[0];
  const same = (a: readonly number[], b: readonly number[]) =>
    a.length === b.length && a.every((d, i) => d === b[i]);
  if (!same(amax.shape, shape) || !same(s.amaxHistory.shape.slice(1), shape)) {
    throw new Error(
      `updateFp8Scale: amax [${amax.shape}] and amaxHistory [${s.amaxHistory.shape}] must have ` +
        `the scale's shape [${shape}] (the history with one leading axis)`,
    );
  }
  const older = (from: number) =>
    slice(s.amaxHistory, [from, ...shape.map(() => 0)], [len - from, ...shape]);
  const current = expandDims(astype(amax, "f32"), 0);
  const window = len > 1 ? concat([current, older(1)], 0) : current;
  const a = amaxComputeAlgo === "max" ? max(window, 0) : astype(amax, "f32");
  const scaledMax = typeof fp8Max === "number" ? fp8Max * 2 ** -margin : mul(fp8Max, 2 ** -margin);
  const computed = minimum(div(scaledMax, a), F32_MAX);
  const scale = where(greater(a, 0), where(isFinite(a), computed, s.scale), s.scale);
  const zero = zeros([1, ...shape], { device: s.scale.device });
  const rolled = len === 1 ? zero : concat([zero, ...(len > 2 ? [older(2)] : []), current], 0);
  return { amaxHistory: rolled, scale };
}

// ---------------------------------------------------------------------------------------------
// The hand-off record (objective and backward → update)

/** The amaxes a step observed, by `slot · 3 + role`; the tensors are owned by the record. */
interface Observed {
  readonly amax: (Tensor | undefined)[];
}

/** Fold `a` into entry `index` with `max` (NaN wins), keeping the result past `tidy`. */
function observe(obs: Observed, index: number, a: Tensor): void {
  const prev = obs.amax[index];
  obs.amax[index] = keep(prev ? maximum(prev, a) : a);
  prev?.dispose();
}

function release(obs: Observed | undefined): void {
  for (const t of obs?.amax ?? []) t?.dispose();
}

/** The observed amaxes as one f32 tensor shaped like the scale (0 where nothing was seen). */
function observedAmax(obs: Observed, scale: Tensor): Tensor {
  const zero = full([], 0, { device: scale.device });
  const all = Array.from({ length: scale.size }, (_, i) => obs.amax[i] ?? zero);
  return reshape(stack(all), scale.shape);
}

// ---------------------------------------------------------------------------------------------
// The interceptor

/** What the interceptor needs during one objective call. */
interface Gemms {
  readonly state: Fp8State;
  readonly obs: Observed;
  readonly dtypes: readonly Fp8DType[];
  next: number;
}

function scaleOf(g: Gemms, slot: number, role: number): Tensor {
  return reshape(slice(g.state.scale, [slot, role], [1, 1]), []);
}

function quantizeOperand(g: Gemms, slot: number, role: number, x: Tensor): Tensor {
  if (x.size > 0) observe(g.obs, slot * ROLES + role, amaxOf(x));
  const q = fakeQuantize(x, scaleOf(g, slot, role), g.dtypes[role]);
  return apply(straightThroughOp, [q, x], undefined);
}

function quantizeGradOf(g: Gemms, slot: number, y: Tensor): Tensor {
  const role = ROLES - 1;
  const index = slot * ROLES + role;
  const attrs: GradQuantizeAttrs = {
    dtype: g.dtypes[role],
    observe: (a) => observe(g.obs, index, a),
  };
  return apply(gradQuantizeOp, [y, scaleOf(g, slot, role)], attrs);
}

function takeSlot(g: Gemms, opName: string): number {
  const slots = g.state.scale.shape[0];
  if (g.next >= slots) {
    throw new Error(
      `fp8: the objective made more than ${slots} calls of matmul-tagged ops (this one: ` +
        `${opName}) in one step, one state slot each; make the step with fp8({ maxGemms: N }) ` +
        "for N ≥ the number of calls",
    );
  }
  return g.next++;
}

/** Run `body` with every matmul-tagged op call fake-quantized in both directions. */
function withFp8<T>(g: Gemms, body: () => T): T {
  return intercept((call, inputs, next) => {
    if (!call.op.tags.includes("matmul")) return next(inputs);
    const slot = takeSlot(g, call.op.name);
    const operands = inputs.map((x, i) =>
      i < 2 && isFloating(x.dtype) ? quantizeOperand(g, slot, i, x) : x
    );
    const y = next(operands);
    return isFloating(y.dtype) ? quantizeGradOf(g, slot, y) : y;
  }, body);
}

// ---------------------------------------------------------------------------------------------
// The plugin

/**
 * The hooks of the plugin. The objective makes a fresh record of observed amaxes, which the
 * backward pass of the same differentiation completes; it reaches the update as data, through
 * `ObjectiveOut.extras` (no closure state: each step call is independent, and `jit` traces it).
 */
function fp8Hooks(config: Config): PluginHooks {
  return {
    init: (state: TrainState): Fp8State => {
      const { amaxHistoryLen, maxGemms, ...rest } = config;
      const device = leaves(state.params)[0]?.device;
      return {
        amaxHistory: zeros([amaxHistoryLen, maxGemms, ROLES], { device }),
        scale: ones([maxGemms, ROLES], { device }),
        ...rest,
      };
    },
    objective: (params, batch, state, next) => {
      const s = pluginState<Fp8State>(state, FP8);
      const obs: Observed = { amax: [] };
      const g: Gemms = { state: s, obs, dtypes: roleDtypes(s.format), next: 0 };
      try {
        const out = withFp8(g, () => next(params, batch, state));
        return { ...out, extras: { ...out.extras, [FP8]: obs } };
      } catch (e) {
        release(obs);
        throw e;
      }
    },
    update: (state, grads, next, extras) => {
      // The config stored in the state wins (a restored checkpoint keeps its own).
      const s = pluginState<Fp8State>(state, FP8);
      const obs = extras[FP8] as Observed | undefined;
      if (!obs) {
        throw new Error(
          "fp8: the update ran without this step's objective; fp8 records its amaxes while the " +
            "objective runs, so call the step (or its gradient part) before its update",
        );
      }
      try {
        const out = next(state, grads);
        const maxes = roleDtypes(s.format).map((d) => finfo(d).max); // per role
        const scales = updateFp8Scale(s, observedAmax(obs, s.scale), {
          fp8Max: tensor(maxes, { device: s.scale.device }),
          margin: s.margin,
          amaxComputeAlgo: s.amaxComputeAlgo,
        });
        return { ...out, state: withPluginState(out.state, FP8, { ...s, ...scales }) };
      } finally {
        release(obs);
      }
    },
  };
}

/**
 * A step transformer for fp8 GEMMs with Transformer Engine's delayed scaling (see the module
 * docs): matmul-tagged ops see fake-quantized e4m3 operands, their output cotangents are
 * fake-quantized in e5m2 ("hybrid") or e4m3, and per-(call, role) scales follow the amax
 * history kept in `state.plugins.fp8`. Combine it with `autocast("bf16")` ("fp8-mixed").
 *
 * @example
 * ```ts
 * const step = pipe(trainStep({ loss, optimizer }), autocast("bf16"), fp8({ maxGemms: 32 }));
 * let state = step.init(params);
 * [state] = step(state, batch);
 * ```
 */
export function fp8(opts: Fp8Options = {}): Transformer {
  const config = configOf(opts);
  return <B>(step: Step<B>): Step<B> => definePlugin(FP8, fp8Hooks(config))(step);
}
