/**
 * Autocast, as `torch.autocast`: inside a region, each op call is classified by its tags and
 * name, and its floating inputs are cast before it runs (never f64, never ints or bools):
 *
 * - `"lower"`: ops tagged `matmul` (matmul, linear, …) run in the compute dtype (f16/bf16).
 * - `"f32"`: ops tagged `softmax`, `loss`, `norm` or `scatter`, the transcendentals torch lists
 *   as fp32 (`exp`, `log`, `pow`, `rsqrt`, …) and the sum-like reductions (`sum`, `prod`,
 *   `cumsum`, `cumprod`) run in f32.
 * - `"promote"`: everything else runs on its inputs as they are (the ops promote to the widest
 *   input themselves): add, mul, where, concat, tanh, sigmoid, sqrt, gelu, mean, max, …
 *
 * Each input is cast once per region (a cache keyed by the source tensor, cleared when the
 * region exits), so a weight used by several matmuls is copied once per step. The innermost
 * region decides: `withAutocast(false, fn)` turns autocast off inside `fn`.
 *
 * @example
 * ```ts
 * const step = pipe(trainStep({ loss, optimizer }), autocast("f16"), gradScale());
 * const logits = withAutocast("bf16", () => mlp(params, x)); // bf16 logits
 * ```
 *
 * @module
 */
import { type DType, isFloating } from "../lib/dtype.ts";
import { intercept, type Interceptor, type OpTag } from "../lib/op.ts";
import type { Tensor } from "../lib/tensor.ts";
import { astype } from "../lib/ops/mod.ts";
import type { Transformer } from "../lib/train.ts";
import { definePlugin } from "./plugin.ts";

/** How autocast treats an op: cast to the compute dtype, cast to f32, or leave the inputs. */
export type OpClass = "lower" | "f32" | "promote";

/** What a classifier sees of an op: its name and tags. */
export interface OpInfo {
  /** The op's public name (`"matmul"`, `"exp"` …). */
  readonly name: string;
  /** The op's neutral tags (`"matmul"`, `"transcendental"` …). */
  readonly tags: readonly OpTag[];
}

/** A full autocast policy: the compute dtype and (optionally) a custom op classifier. */
export interface AutocastPolicy {
  /** The dtype of the `"lower"` class (f16 or bf16; any float but f64 is accepted). */
  readonly dtype: DType;
  /** Op → class (default {@linkcode classifyOp}). */
  readonly classify?: (op: OpInfo) => OpClass;
}

/** A compute dtype, a policy, or `false` for a region with autocast off. */
export type AutocastSpec = DType | AutocastPolicy | false;

/** Tags whose ops always run in f32 (torch's fp32 lists; scatter as Lightning advises). */
const F32_TAGS: readonly OpTag[] = ["softmax", "loss", "norm", "scatter"];

/** Transcendentals torch autocasts to f32; tanh, sigmoid, sqrt, gelu are on no torch list. */
const F32_TRANSCENDENTAL = new Set([
  "exp",
  "expm1",
  "log",
  "log1p",
  "log2",
  "log10",
  "pow",
  "reciprocal",
  "rsqrt",
  "softplus",
  "acos",
  "asin",
  "cosh",
  "sinh",
  "tan",
  "erfinv",
]);

/** Reductions torch runs with an f32 output (`fp32_set_opt_dtype`); mean, max, min are not. */
const F32_REDUCTIONS = new Set(["sum", "prod", "cumsum", "cumprod"]);

/**
 * The default op classifier (torch's CUDA lists, see docs/plugins.md for the table).
 *
 * @example
 * ```ts
 * classifyOp({ name: "matmul", tags: ["matmul"] }); // "lower"
 * classifyOp({ name: "tanh", tags: ["elementwise", "transcendental"] }); // "promote"
 * ```
 */
export function classifyOp(op: OpInfo): OpClass {
  const has = (t: OpTag) => op.tags.includes(t);
  if (has("matmul")) return "lower";
  if (F32_TAGS.some(has)) return "f32";
  if (has("transcendental") && F32_TRANSCENDENTAL.has(op.name)) return "f32";
  if (has("reduction") && F32_REDUCTIONS.has(op.name)) return "f32";
  return "promote";
}

interface Region {
  /** The compute dtype, or null for a region with autocast off. */
  readonly dtype: DType | null;
  readonly classify: (op: OpInfo) => OpClass;
  /** Casts made in this region: source tensor → target dtype → copy. */
  readonly cache: Map<Tensor, Map<DType, Tensor>>;
}

/** Open regions, innermost last. */
const regions: Region[] = [];

function makeRegion(spec: AutocastSpec, who: string): Region {
  if (spec === false) return { dtype: null, classify: classifyOp, cache: new Map() };
  const policy = typeof spec === "string" ? { dtype: spec } : spec;
  if (!policy || typeof policy !== "object" || typeof policy.dtype !== "string") {
    throw new Error(
      `${who}: expected a compute dtype ("f16" or "bf16"), a policy { dtype, classify? } or ` +
        `false, got ${JSON.stringify(spec)}`,
    );
  }
  if (!isFloating(policy.dtype) || policy.dtype === "f64") {
    throw new Error(
      `${who}: the compute dtype must be a float narrower than f64 ("f16" or "bf16"), got ` +
        JSON.stringify(policy.dtype),
    );
  }
  return { dtype: policy.dtype, classify: policy.classify ?? classifyOp, cache: new Map() };
}

/** Cast `x` to `d` if it is eligible (floating, not f64, not already `d`), once per region. */
function castOnce(region: Region, x: Tensor, d: DType): Tensor {
  if (!isFloating(x.dtype) || x.dtype === "f64" || x.dtype === d) return x;
  let byDtype = region.cache.get(x);
  const hit = byDtype?.get(d);
  if (hit && !hit.disposed) return hit;
  const y = astype(x, d);
  if (!byDtype) region.cache.set(x, byDtype = new Map());
  byDtype.set(d, y);
  return y;
}

function interceptorFor(region: Region, dtype: DType): Interceptor {
  return (call, inputs, next) => {
    if (regions.at(-1) !== region) return next(inputs); // an inner region decides
    const cls = region.classify(call.op);
    if (cls === "promote") return next(inputs);
    const target = cls === "lower" ? dtype : "f32";
    return next(inputs.map((x) => castOnce(region, x, target)));
  };
}

/**
 * Run the synchronous `fn` with autocast to `spec` (a compute dtype, a policy, or `false` for
 * autocast off). Regions nest and the innermost decides. Call it inside the differentiated function (as
 * `autocast()` does), so that every cached copy is on the gradient's path.
 *
 * @example
 * ```ts
 * const y = withAutocast("f16", () => {
 *   const h = matmul(x, w); // f16
 *   return withAutocast(false, () => matmul(astype(h, "f32"), w)); // f32
 * });
 * ```
 */
export function withAutocast<T>(spec: AutocastSpec, fn: () => T): T {
  const region = makeRegion(spec, "withAutocast");
  regions.push(region);
  try {
    const out = region.dtype === null ? fn() : intercept(interceptorFor(region, region.dtype), fn);
    if (out instanceof Promise) {
      throw new Error(
        "withAutocast: fn returned a Promise, but a region only covers synchronous code (ops " +
          "never await); open the region around the synchronous part instead",
      );
    }
    return out;
  } finally {
    regions.splice(regions.lastIndexOf(region), 1);
    region.cache.clear();
  }
}

/**
 * A step transformer that runs the objective (forward pass and loss) in an autocast region.
 * The reported `loss` is widened to f32 when the region left it narrower (as Lightning's
 * `convert_output`); gradients come back in each param's own dtype.
 *
 * @example
 * ```ts
 * const step = pipe(trainStep({ loss, optimizer: adam() }), autocast("bf16"));
 * ```
 */
export function autocast(spec: AutocastSpec): Transformer {
  makeRegion(spec, "autocast"); // validate now, not at the first step
  return definePlugin("autocast", {
    objective: (params, batch, state, next) => {
      const out = withAutocast(spec, () => next(params, batch, state));
      const narrow = isFloating(out.loss.dtype) && out.loss.dtype !== "f64" &&
        out.loss.dtype !== "f32";
      return narrow ? { ...out, loss: astype(out.loss, "f32") } : out;
    },
  });
}
