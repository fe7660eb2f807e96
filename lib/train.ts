/**
 * Pure train steps, precision transformers' contract, and the training loop.
 *
 * ## The Step contract
 *
 * A {@linkcode Step} is a pure function `(state, batch) → [newState, metrics]` that only enqueues
 * device work (nothing is read back). It carries its {@linkcode StepParts}, which a transformer
 * (`Step → Step`) may wrap one by one; `makeStep(parts)` rebuilds the function from the parts:
 *
 * 1. `init(params)` makes the {@linkcode TrainState}. A plugin that needs state adds it under
 *    `state.plugins[name]` (plain trees of tensors, so checkpoints hold them).
 * 2. `objective(params, batch, state)` computes `{ loss, value?, aux? }` inside differentiation:
 *    `value` (default `loss`) is what is differentiated, `loss` what is reported. Wrap it to
 *    change what the model sees (compute-dtype copies of params, autocast, loss scaling).
 * 3. `gradient(objective, state, batch)` differentiates `objective` w.r.t. `state.params` and
 *    returns `{ grads, loss, aux }`; grads have the params' dtypes.
 * 4. `update(state, grads)` returns `{ state, metrics }`: the base one runs the optimizer. Wrap
 *    it to transform gradients before the update (unscale, clip) or to select between the new
 *    and the old state (skip non-finite steps).
 *
 * ## Aux metrics and the step key
 *
 * A loss may return `[loss, aux]` with `aux` a tree of scalar tensors: each leaf becomes a metric
 * named by its dotted tree path (`[loss, { acc }]` gives metrics `loss` and `acc`). A state made
 * with a key (`trainStep({ key })`) gives every step its own key, `foldIn(state.key, state.step)`,
 * which the loss gets as `ctx.key` (its third argument): dropout needs no key in the batch, and
 * the step stays pure (the key is data: it checkpoints, and a jitted step takes it as an input).
 *
 * In `pipe(step, a, b)`, `b` wraps `a`: `b`'s `update` runs first and hands (e.g. unscaled)
 * gradients down to `a`'s. The step runs inside `tidy`: every intermediate is freed; the new
 * state and metrics are returned; the input state is not touched (and not freed).
 *
 * @module
 */
import { Tensor } from "./tensor.ts";
import { created, dispose, tidy } from "./tensor.ts";
import { valueAndGrad } from "./autodiff.ts";
import { leaves } from "./tree.ts";
import { foldIn, isKey, type Key } from "./prng.ts";
import { add, astype } from "./ops/elementwise.ts";
import { concat, reshape } from "./ops/shape.ts";
import type { Optimizer } from "./optim/types.ts";
import { jitFunction } from "./jit/jit.ts";
import { jitStep } from "./jit/step.ts";

/** Everything a training run carries from step to step. Plain data: trees of tensors. */
export interface TrainState<P = unknown, O = unknown> {
  /** The parameters the optimizer updates (master weights under `castParams`). */
  readonly params: P;
  /** The optimizer state. */
  readonly opt: O;
  /** Number of step calls so far (applied or skipped), a host number. */
  readonly step: number;
  /** Plugin state slots by plugin name (e.g. `gradScale: { scale, tracker }`). */
  readonly plugins: Readonly<Record<string, unknown>>;
  /** The run's PRNG key (from `trainStep({ key })`); step `n` draws from `foldIn(key, n)`. */
  readonly key?: Key;
  /**
   * This step's key, `foldIn(key, step)`: set on the state the parts see while a step runs
   * (computed on the host, so a jitted step takes it as an input); never in a returned state.
   */
  readonly stepKey?: Key;
}

/** Scalar tensors reported by a step (`loss` always; `scale`, `skipped` under `gradScale`). */
export type Metrics = Record<string, Tensor>;

/** What the differentiated objective returns. */
export interface ObjectiveOut {
  /** The loss to report (unscaled). */
  readonly loss: Tensor;
  /** The value to differentiate (defaults to `loss`; `gradScale` puts the scaled loss here). */
  readonly value?: Tensor;
  /** Anything else the loss function returned (not differentiated). */
  readonly aux?: unknown;
  /**
   * Values plugins hand from their objective to their update in the same step, by plugin name
   * (not differentiated; e.g. fp8's observed amaxes). Plain data flow: never closure state.
   */
  readonly extras?: Readonly<Record<string, unknown>>;
}

/** The objective part: runs inside differentiation. */
export type Objective<B = unknown> = (
  params: unknown,
  batch: B,
  state: TrainState,
) => ObjectiveOut;

/** The gradient part's result. */
export interface GradientOut {
  /** Gradients, same tree as the params, in the params' dtypes. */
  readonly grads: unknown;
  /** The reported (unscaled) loss. */
  readonly loss: Tensor;
  /** The loss function's aux output. */
  readonly aux?: unknown;
  /** The objective's `extras`, passed on to the update. */
  readonly extras?: Readonly<Record<string, unknown>>;
}

/** The update part's result. */
export interface UpdateOut {
  /** The new state (params, optimizer and plugin state). */
  readonly state: TrainState;
  /** Metrics added by the update (e.g. `scale`, `skipped`). */
  readonly metrics: Metrics;
  /**
   * The gradients the innermost update (the optimizer) consumed, after every transformation
   * the plugins between made (unscaling, clipping): what `gradScale` checks for finiteness.
   */
  readonly consumed?: unknown;
}

/** The wrappable parts of a step (see the module docs for the contract). */
export interface StepParts<B = unknown> {
  /** Make the initial state from params. */
  readonly init: (params: unknown) => TrainState;
  /** The differentiated objective. */
  readonly objective: Objective<B>;
  /** Differentiate an objective w.r.t. `state.params`. */
  readonly gradient: (objective: Objective<B>, state: TrainState, batch: B) => GradientOut;
  /** Apply gradients to the state (`extras`: the objective's, from the gradient part). */
  readonly update: (
    state: TrainState,
    grads: unknown,
    extras?: Readonly<Record<string, unknown>>,
  ) => UpdateOut;
}

/** A pure train step with its parts. */
export interface Step<B = unknown> {
  (state: TrainState, batch: B): [TrainState, Metrics];
  /** Make the initial state from params (which the state then shares; it does not copy). */
  init(params: unknown): TrainState;
  /** The parts, for transformers. */
  readonly parts: StepParts<B>;
}

/** A step transformer (a precision plugin). */
export type Transformer = <B>(step: Step<B>) => Step<B>;

/**
 * Build a step function from parts.
 *
 * @example
 * ```ts
 * const wrapped = makeStep({ ...step.parts, objective: myObjective });
 * ```
 */
export function makeStep<B>(parts: StepParts<B>): Step<B> {
  const fn = (state: TrainState, batch: B): [TrainState, Metrics] =>
    tidy(() => {
      const [next, metrics] = runParts(parts, withStepKey(state, state.step), batch);
      return [{ ...next, step: state.step + 1 }, metrics];
    });
  return Object.assign(fn, { init: (p: unknown) => parts.init(p), parts });
}

/**
 * `state` with its `stepKey` for step number `step` set (`foldIn(state.key, step)`), or as is
 * when it has no key. `makeStep` and the jitted step call it on the host before `runParts`.
 *
 * @example
 * ```ts
 * const [next, metrics] = runParts(step.parts, withStepKey(state, state.step), batch);
 * ```
 */
export function withStepKey(state: TrainState, step: number): TrainState {
  if (state.key === undefined) return state;
  if (!isKey(state.key)) {
    throw new TypeError(
      "train step: state.key must be a PRNG key (random.key(seed)); got " +
        `${typeof state.key === "object" ? "an object that is not a key" : typeof state.key}`,
    );
  }
  return { ...state, stepKey: foldIn(state.key, step) };
}

/**
 * One step's work from its parts: the gradient, then the update. Returns the new state (its
 * `step` counter not yet advanced, no `stepKey`) and the metrics: `loss`, the loss's aux
 * scalars by tree path, then the update's. `makeStep` and `jit` both run this.
 *
 * @example
 * ```ts
 * const [next, metrics] = runParts(step.parts, state, batch);
 * ```
 */
export function runParts<B>(
  parts: StepParts<B>,
  state: TrainState,
  batch: B,
): [TrainState, Metrics] {
  const g = parts.gradient(parts.objective, state, batch);
  const u = parts.update(state, g.grads, g.extras);
  const metrics: Metrics = { loss: g.loss };
  for (const [name, t] of auxMetrics(g.aux)) {
    if (name in u.metrics || name === "loss") {
      throw new Error(
        `train step: the loss's aux output ${JSON.stringify(name)} has the name of a step ` +
          "metric (loss, or one a plugin reports); rename it in the aux tree",
      );
    }
    metrics[name] = t;
  }
  Object.assign(metrics, u.metrics);
  const { stepKey: _, ...next } = u.state;
  return [next as TrainState, metrics];
}

/** The aux tree's leaves as named metrics; each must be a scalar tensor. */
function auxMetrics(aux: unknown): [string, Tensor][] {
  if (aux === undefined) return [];
  const out: [string, Tensor][] = [];
  const walk = (x: unknown, path: string) => {
    if (x instanceof Tensor) out.push([path, checkScalar(x, path)]);
    else if (Array.isArray(x)) x.forEach((v, i) => walk(v, path ? `${path}.${i}` : `${i}`));
    else if (x !== null && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype) {
      for (const [k, v] of Object.entries(x)) walk(v, path ? `${path}.${k}` : k);
    } else {
      throw new TypeError(
        `train step: the loss's aux output ${JSON.stringify(path || "aux")} is ` +
          `${x === null ? "null" : `a ${typeof x}`}, not a tensor; aux must be a tree of ` +
          "scalar tensors (they become the step's metrics)",
      );
    }
  };
  walk(aux, "");
  return out.map(([p, t]) => [p || "aux", t]);
}

function checkScalar(t: Tensor, path: string): Tensor {
  if (t.shape.length !== 0) {
    throw new Error(
      `train step: the loss's aux output ${JSON.stringify(path)} has shape [${t.shape}]; aux ` +
        "metrics must be scalars (reduce it, e.g. mean(x))",
    );
  }
  return t;
}

/** What a loss gets as its third argument. */
export interface StepContext {
  /**
   * This step's PRNG key, `foldIn(state.key, state.step)` (different each step, the same when
   * a step is repeated). Throws when the state has no key: pass `trainStep({ key })`.
   */
  readonly key: Key;
}

/** The user's loss: `(params, batch, ctx) → loss` or `→ [loss, aux]` (aux: scalar tensors). */
export type LossFn<P, B> = (params: P, batch: B, ctx: StepContext) => Tensor | [Tensor, unknown];

function contextOf(state: TrainState): StepContext {
  return {
    get key(): Key {
      if (state.stepKey === undefined) {
        throw new Error(
          "train step: the loss read ctx.key but the state has no key; make the step with " +
            "trainStep({ loss, optimizer, key: random.key(seed) }) (and init the state from it)",
        );
      }
      return state.stepKey;
    },
  };
}

/** Options of {@linkcode trainStep}. */
export interface TrainStepOptions<P, B> {
  /** The loss: `(params, batch, ctx) → loss` or `→ [loss, aux]`. */
  loss: LossFn<P, B>;
  /** The optimizer. */
  optimizer: Optimizer;
  /** The run's PRNG key, kept in the state (`state.key`); each step gets `ctx.key` from it. */
  key?: Key;
}

/**
 * A plain train step: differentiate `loss` w.r.t. the params and apply `optimizer`. With a
 * `key`, the loss gets a fresh key each step as `ctx.key`; an aux tree of scalars it returns
 * becomes metrics.
 *
 * @example
 * ```ts
 * const step = trainStep({
 *   loss: (p, b, ctx) => {
 *     const logits = mlp(p, dropout(ctx.key, b.x, 0.1));
 *     return [crossEntropy(logits, b.y), { acc: mean(equal(argmax(logits), b.y)) }];
 *   },
 *   optimizer: adam(),
 *   key: random.key(0),
 * });
 * const [next, metrics] = step(step.init(params), batch); // metrics: { loss, acc }
 * ```
 */
export function trainStep<P, B>(opts: TrainStepOptions<P, B>): Step<B> {
  const { loss, optimizer, key } = opts;
  if (key !== undefined && !isKey(key)) {
    throw new TypeError(
      "trainStep: key must be a PRNG key, e.g. trainStep({ key: random.key(0) })",
    );
  }
  return makeStep<B>({
    init: (params) => ({
      params,
      opt: optimizer.init(params),
      step: 0,
      plugins: {},
      ...(key === undefined ? {} : { key }),
    }),
    objective: (params, batch, state) => {
      const out = loss(params as P, batch, contextOf(state));
      return Array.isArray(out) ? { loss: out[0], aux: out[1] } : { loss: out };
    },
    gradient: (objective, state, batch) => {
      const f = (p: unknown) => {
        const o = objective(p, batch, state);
        return [o.value ?? o.loss, { loss: o.loss, aux: o.aux, extras: o.extras }] as [
          Tensor,
          ObjectiveOut,
        ];
      };
      const [[, out], grads] = valueAndGrad(f, { hasAux: true })(state.params);
      return { grads, loss: out.loss, aux: out.aux, extras: out.extras };
    },
    update: (state, grads) => {
      const [params, opt] = optimizer.update(grads, state.opt, state.params);
      return { state: { ...state, params, opt }, metrics: {}, consumed: grads };
    },
  });
}

/**
 * Apply transformers in order: `pipe(step, a, b)` is `b(a(step))`.
 *
 * @example
 * ```ts
 * const step = pipe(trainStep({ loss, optimizer }), castParams("f16"), gradScale());
 * ```
 */
export function pipe<B>(step: Step<B>, ...transformers: Transformer[]): Step<B> {
  return transformers.reduce((s, t) => t(s), step);
}

/**
 * Dispose the tensors of `old` that neither `next` nor `alsoKeep` holds (a replaced state's own
 * buffers).
 *
 * @example
 * ```ts
 * const [next] = step(state, batch);
 * disposeReplaced(state, next);
 * ```
 */
export function disposeReplaced(old: unknown, next: unknown, alsoKeep?: unknown): void {
  const keepSet = new Set([...leaves(next), ...leaves(alsoKeep)]);
  for (const t of leaves(old)) if (!keepSet.has(t)) t.dispose();
}

/** One logged entry of {@linkcode fit}'s history. */
export interface LogEntry {
  /** Steps done so far. */
  readonly step: number;
  /** Epoch index (0-based) of the last step. */
  readonly epoch: number;
  /** Mean of `metrics.loss` over the steps since the previous log. */
  readonly loss: number;
  /** The other metrics of the last step (e.g. `scale`), and `skipped`: the count since the previous log. */
  readonly metrics: Readonly<Record<string, number>>;
}

/** Options of {@linkcode fit}. */
export interface FitOptions {
  /** Passes over `batches` (default 1). */
  epochs?: number;
  /** Read metrics back every this many steps (default 100; also at the end). */
  logEvery?: number;
  /** Called with each log entry. */
  onLog?: (entry: LogEntry) => void;
  /**
   * Compile the step with `jit` (default true): traced once per batch signature, then replayed;
   * bitwise equal to the eager step. `false` runs it eagerly, op by op (the reference).
   */
  jit?: boolean;
}

/**
 * Run `step` over `batches` for `epochs`. Metrics are accumulated on the device and read back
 * only every `logEvery` steps.
 *
 * Ownership (who frees what):
 * - The state passed in stays the caller's: `fit` never frees a tensor it holds.
 * - Every state and metrics record a step returns is `fit`'s. A tensor of a replaced state, or
 *   of metrics that were replaced or logged, is freed once neither the current state, the
 *   current metrics nor the caller's state holds it. So a metric that is also plugin state
 *   (`countSkipped`'s `skippedTotal` in docs/plugins.md) lives as long as that state does.
 * - Tensors created while `fit` pulls batches (inside the epoch function, or the iterator's
 *   `next()`) are `fit`'s: those in a batch are freed after the step that used it, the others
 *   (a per-epoch permutation, say) at the end of the epoch. Tensors that existed before `fit`
 *   started (an array of prepared batches, a dataset the epoch function slices) stay the
 *   caller's, and so does a tensor the epoch function or iterator passes to `keep(...)`.
 * - The returned state is the caller's to free.
 * - A jitted step (the default) is called with the tensors of the state it replaces donated
 *   (`donating`, see `jit`) when `fit` would free them anyway: the new state takes their
 *   buffers. The caller's state, the last metrics and the batch are never donated.
 *
 * @example
 * ```ts
 * const { state: trained, history } = await fit(step, state, (epoch) => batchesFor(epoch), {
 *   epochs: 5,
 *   logEvery: 50,
 * });
 * ```
 */
export async function fit<B>(
  step: Step<B>,
  state: TrainState,
  batches: Iterable<B> | ((epoch: number) => Iterable<B>),
  opts: FitOptions = {},
): Promise<{ state: TrainState; history: LogEntry[] }> {
  const epochs = opts.epochs ?? 1;
  const logEvery = opts.logEvery ?? 100;
  const jitted = opts.jit === false ? undefined : jitStep(step);
  const history: LogEntry[] = [];
  const callers = leaves(state);
  let current = state;
  let lossSum: Tensor | undefined;
  let skippedSum: Tensor | undefined;
  let last: Metrics | undefined;
  let window = 0;
  let epoch = 0;
  /** Free the tensors of `old` that the caller's state, the current state and metrics don't hold. */
  const release = (old: unknown) => freeUnheld(old, [callers, current, last]);
  const flush = async () => {
    if (!last || !lossSum) return;
    // One readback for every logged value (each GPU→host read costs milliseconds).
    const named: [string, Tensor][] = [["loss", lossSum]];
    for (const [k, v] of Object.entries(last)) if (k !== "loss") named.push([k, v]);
    if (skippedSum) named.push(["skipped", skippedSum]);
    const values = await readScalars(named.map(([, v]) => v));
    const metrics: Record<string, number> = {};
    named.forEach(([k], i) => (metrics[k] = values[i]));
    const loss = metrics.loss / window;
    delete metrics.loss;
    const entry = { step: current.step, epoch, loss, metrics };
    history.push(entry);
    opts.onLog?.(entry);
    dispose([lossSum, skippedSum]); // fit's own sums
    const logged = last;
    last = undefined;
    release(logged);
    lossSum = skippedSum = undefined;
    window = 0;
  };
  for (epoch = 0; epoch < epochs; epoch++) {
    for (const [batch, made] of pullBatches(batches, epoch, () => [callers, current, last])) {
      // A jitted step gets the state it replaces donated (its buffers take the new state):
      // every tensor of it that fit would free after the step, i.e. not the caller's, not in
      // the last metrics and not in the batch.
      const run = jitted ? jitted.donating(donatable(current, [callers, last, batch])) : step;
      const [next, metrics] = run(current, batch);
      const acc = tidy(() => ({
        loss: lossSum ? add(lossSum, metrics.loss) : add(metrics.loss, 0),
        skipped: metrics.skipped
          ? (skippedSum ? add(skippedSum, metrics.skipped) : add(metrics.skipped, 0))
          : undefined,
      }));
      dispose([lossSum, skippedSum]);
      const replaced = [current, last];
      [current, last] = [next, metrics];
      release(replaced);
      release(made); // the batch's own tensors, unless the new state or metrics hold them
      lossSum = acc.loss;
      skippedSum = acc.skipped;
      window++;
      if (window >= logEvery) await flush();
    }
  }
  epoch = Math.max(0, epoch - 1);
  await flush();
  return { state: current, history };
}

/** The tensors of `state` that none of `holders` holds (what `fit` may donate). */
function donatable(state: unknown, holders: unknown[]): Tensor[] {
  const held = new Set(leaves(holders));
  return leaves(state).filter((t) => !held.has(t));
}

/** Dispose the tensors of `old` that none of `holders` holds. */
function freeUnheld(old: unknown, holders: unknown[]): void {
  const held = new Set(leaves(holders));
  for (const t of leaves(old)) if (!held.has(t)) t.dispose();
}

/**
 * One epoch's batches with, for each, the tensors of that batch created while pulling it (see
 * `fit`'s ownership rule). Every other tensor created by the pulls is freed when the epoch ends
 * (or the loop exits early), unless `held()` holds it.
 */
function* pullBatches<B>(
  batches: Iterable<B> | ((epoch: number) => Iterable<B>),
  epoch: number,
  held: () => unknown[],
): Generator<[B, Tensor[]]> {
  const made = new Set<Tensor>();
  const note = <T>([value, ts]: [T, Set<Tensor>]): T => {
    for (const t of ts) made.add(t);
    return value;
  };
  try {
    const source = note(created(() => typeof batches === "function" ? batches(epoch) : batches));
    const it = note(created(() => source[Symbol.iterator]()));
    while (true) {
      const [r, ts] = created(() => it.next());
      note([r, ts]);
      if (r.done) break;
      yield [r.value, leaves(r.value).filter((t) => ts.has(t))];
    }
  } finally {
    freeUnheld([...made], held());
  }
}

/** Read several scalar tensors (one device) back with a single readback. */
async function readScalars(xs: readonly Tensor[]): Promise<number[]> {
  const dtype = xs.some((x) => x.dtype === "f64") ? "f64" : "f32";
  const packed = tidy(() => concat(xs.map((x) => astype(reshape(x, [1]), dtype)), 0));
  const out = Array.from(await packed.data());
  packed.dispose();
  return out;
}

/**
 * Run `fn` over `batches` without gradients and return the sum and the mean (over batches) of
 * each scalar metric it returns. Sums are accumulated on the device and read once. Batches
 * follow `fit`'s rule: tensors created while pulling a batch are freed after it, prepared ones
 * stay the caller's. `fn` is jitted (`{ jit: false }` runs it eagerly); the tensors it closes
 * over (the params) are inputs of the compiled program, held until `evaluate` returns.
 *
 * @example
 * ```ts
 * const { sum } = await evaluate((b) => ({ correct: sum(equal(argmax(mlp(p, b.x)), b.y)) }), test);
 * ```
 */
export async function evaluate<B>(
  fn: (batch: B) => Record<string, Tensor>,
  batches: Iterable<B>,
  opts: { jit?: boolean } = {},
): Promise<{ sum: Record<string, number>; mean: Record<string, number>; batches: number }> {
  // Jitted by default; tensors `fn` closes over (the params) become inputs of the program.
  const metricsOf = opts.jit === false ? fn : jitFunction(fn, { captureInputs: true });
  let acc: Record<string, Tensor> | undefined;
  let n = 0;
  for (const [batch, made] of pullBatches(batches, 0, () => [])) {
    const nextAcc: Record<string, Tensor> = tidy(() => {
      const m = metricsOf(batch);
      const out: Record<string, Tensor> = {};
      for (const [k, v] of Object.entries(m)) out[k] = add(acc?.[k] ?? 0, v);
      return out;
    });
    dispose(acc);
    dispose(made); // tensors created while pulling the batch (as in `fit`)
    acc = nextAcc;
    n++;
  }
  if (metricsOf !== fn) (metricsOf as typeof metricsOf & { clear(): void }).clear();
  const sum: Record<string, number> = {};
  const mean: Record<string, number> = {};
  const entries = Object.entries(acc ?? {});
  const values = entries.length ? await readScalars(entries.map(([, v]) => v)) : [];
  entries.forEach(([k], i) => {
    sum[k] = values[i];
    mean[k] = sum[k] / n;
  });
  dispose(acc);
  return { sum, mean, batches: n };
}
