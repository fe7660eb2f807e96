/**
 * Train and test an MLP on MNIST under one precision preset and optimizer: the loop the demo,
 * the compare script and the accuracy tests share. Data, init, batch order and image shifts
 * follow from the seed alone. One `fit` call per epoch; after each, the test set goes through
 * the step's own objective (so under the preset's casts and autocast) and the right answers are
 * summed on the device by `evaluate`.
 *
 * @example
 * ```ts
 * const r = await trainMnist({ ...DEFAULTS, device: cpu, epochs: 1 });
 * console.log(r.testAccuracy, r.msPerStep);
 * ```
 *
 * @module
 */
import type { Backend } from "../../lib/backend/backend.ts";
import { byteSize } from "../../lib/dtype.ts";
import { key, split } from "../../lib/random.ts";
import { dispose, type Tensor } from "../../lib/tensor.ts";
import { leaves } from "../../lib/tree.ts";
import {
  disposeReplaced,
  evaluate,
  fit,
  type LogEntry,
  type Step,
  type TrainState,
  trainStep,
} from "../../lib/train.ts";
import { crossEntropy, mlp, mlpInit, type MlpParams } from "../../lib/nn/mod.ts";
import { cosine } from "../../lib/optim/mod.ts";
import type { LearningRate } from "../../lib/optim/types.ts";
import { loadState, saveState } from "../../lib/checkpoint.ts";
import { loadMnist, type Mnist } from "../data/mnist.ts";
import {
  type Batch,
  batchCount,
  type DeviceSplit,
  inOrder,
  shuffled,
  toDevice,
} from "./batches.ts";
import { correct } from "./accuracy.ts";
import { makeOptimizer } from "./optimizers.ts";
import type { DemoOptions } from "./options.ts";
import { precision } from "./precision.ts";

/** What a run needs: the demo's options with a resolved device. */
export type MnistConfig =
  & Omit<DemoOptions, "device" | "json" | "help">
  & { device: Backend };

/** One epoch's progress. */
export interface EpochReport {
  /** 1-based epoch number. */
  readonly epoch: number;
  /** Steps done so far (all epochs). */
  readonly steps: number;
  /** Mean training loss over the epoch. */
  readonly loss: number;
  /** Test accuracy after the epoch, in [0, 1]. */
  readonly testAccuracy: number;
  /** Mean test loss after the epoch. */
  readonly testLoss: number;
  /** Training steps per second in this epoch (evaluation excluded). */
  readonly stepsPerSec: number;
  /** Seconds since training started (evaluation included). */
  readonly elapsedSec: number;
  /** Steps skipped so far in this run (non-finite gradients under loss scaling). */
  readonly skipped: number;
}

/** The result of {@linkcode trainMnist}. */
export interface MnistResult {
  readonly epochs: EpochReport[];
  /** Every loss readback (`logEvery` steps apart): the loss curve. */
  readonly history: LogEntry[];
  /** The state's step count at the end. */
  readonly steps: number;
  readonly testAccuracy: number;
  readonly testLoss: number;
  /** Mean training loss over the last epoch. */
  readonly finalLoss: number;
  /** Training time per step, evaluation excluded. */
  readonly msPerStep: number;
  readonly seconds: number;
  /** Number of parameters. */
  readonly paramCount: number;
  /** Bytes of `state.params` (the master weights under mixed presets). */
  readonly paramBytes: number;
  /** Bytes of `state.opt`. */
  readonly optimizerStateBytes: number;
  /** Bytes of the whole train state (params, optimizer and plugin state) per parameter. */
  readonly bytesPerParam: number;
  /** Steps skipped in this run (non-finite gradients under loss scaling). */
  readonly skippedSteps: number;
}

/** Callbacks and reusable inputs of {@linkcode trainMnist}. */
export interface MnistHooks {
  /** Called after each epoch's evaluation. */
  onEpoch?: (r: EpochReport) => void;
  /** Called with each loss readback. */
  onLog?: (e: LogEntry) => void;
  /** Already loaded digits (must come from `loadMnist` with the config's seed and counts). */
  data?: Mnist;
}

/** Bytes of the distinct tensors of a tree. */
const bytesOf = (tree: unknown): number =>
  [...new Set(leaves(tree))].reduce((n, t) => n + t.size * byteSize(t.dtype), 0);

/** The keys of a run: params init, batch order, image shifts. */
const runKeys = (seed: number) => split(key(seed), 3);

/**
 * The learning rate of a run: constant, or a linear warmup over 5% of the steps and a cosine
 * decay to 0 at the last step.
 *
 * @example
 * ```ts
 * const lr = learningRate({ lr: 3e-3, schedule: "cosine" }, 625);
 * ```
 */
export function learningRate(
  cfg: Pick<MnistConfig, "lr" | "schedule">,
  totalSteps: number,
): LearningRate {
  if (cfg.schedule === "constant") return cfg.lr;
  const warmupSteps = Math.max(1, Math.round(totalSteps * 0.05));
  return cosine(cfg.lr, Math.max(totalSteps, warmupSteps + 1), { warmupSteps });
}

/**
 * The f32 parameters a run starts from (the preset casts them in `init`).
 *
 * @example
 * ```ts
 * const p = initParams({ seed: 0, hidden: [512, 512], device: cpu });
 * ```
 */
export function initParams(cfg: Pick<MnistConfig, "seed" | "hidden" | "device">): MlpParams {
  const [initKey] = runKeys(cfg.seed);
  return mlpInit(initKey, [784, ...cfg.hidden, 10], { device: cfg.device });
}

/**
 * The examples' loss: softmax cross-entropy of the MLP's logits, with the number of right
 * answers as aux (so evaluation can reuse the step's objective).
 *
 * @example
 * ```ts
 * const [loss, { correct }] = mnistLoss(params, batch);
 * ```
 */
export function mnistLoss(p: MlpParams, b: Batch): [Tensor, { correct: Tensor }] {
  const logits = mlp(p, b.x);
  return [crossEntropy(logits, b.y), { correct: correct(logits, b.y) }];
}

/**
 * Adam's epsilon under a preset: 1e-4 where the moments are stored in f16 ("16-true" and its
 * alias "O3"), as Lightning's docs advise for pure f16 training. There `(1 − b2)·g²` underflows
 * f16 to 0 for small gradients and the default 1e-8 then lets `m / (√v + eps)` blow up on the
 * first steps; bf16 has f32's range and keeps the default.
 *
 * @example
 * ```ts
 * adamEps("16-true"); // 1e-4
 * ```
 */
export function adamEps(preset: string): number | undefined {
  return preset === "16-true" || preset === "O3" ? 1e-4 : undefined;
}

/**
 * The train step of a config: its optimizer and learning-rate schedule under its preset.
 *
 * @example
 * ```ts
 * const step = mnistStep({ ...DEFAULTS, device: cpu }, 625);
 * ```
 */
export function mnistStep(
  cfg: Pick<MnistConfig, "precision" | "optimizer" | "lr" | "schedule">,
  totalSteps: number,
): Step<Batch> {
  const optimizer = makeOptimizer(cfg.optimizer, learningRate(cfg, totalSteps), {
    eps: adamEps(cfg.precision),
  });
  return precision(cfg.precision)(trainStep<MlpParams, Batch>({ loss: mnistLoss, optimizer }));
}

/**
 * Test accuracy and mean loss of `state` on `test`, computed by the step's objective (the
 * preset's casts and autocast apply, no gradients).
 *
 * @example
 * ```ts
 * const { accuracy, loss } = await testMetrics(step, state, test);
 * ```
 */
export async function testMetrics(
  step: Step<Batch>,
  state: TrainState,
  test: DeviceSplit,
  batch = 500,
): Promise<{ accuracy: number; loss: number }> {
  const { sum, mean } = await evaluate((b: Batch) => {
    const out = step.parts.objective(state.params, b, state);
    return { correct: (out.aux as { correct: Tensor }).correct, loss: out.loss };
  }, inOrder(test, batch));
  // Batches are equal-sized when `batch` divides the count (the default 2000 / 500).
  return { accuracy: sum.correct / test.count, loss: mean.loss };
}

/**
 * Train for `cfg.epochs` epochs (counting those a resumed state already did), test after each
 * epoch, and save the final state when `cfg.save` is set. Resume with the flags of the saved
 * run (the schedule follows `--epochs`).
 *
 * @example
 * ```ts
 * const r = await trainMnist({ ...DEFAULTS, device: cpu }, { onEpoch: (e) => console.log(e) });
 * ```
 */
export async function trainMnist(cfg: MnistConfig, hooks: MnistHooks = {}): Promise<MnistResult> {
  const data = hooks.data ?? loadMnist({ seed: cfg.seed, train: cfg.train, test: cfg.test });
  const perEpoch = batchCount(data.train.count, cfg.batch);
  const step = mnistStep(cfg, perEpoch * cfg.epochs);
  const [, dataKey, shiftKey] = runKeys(cfg.seed);
  let state: TrainState;
  if (cfg.resume) state = await loadState(cfg.resume, step, { device: cfg.device });
  else {
    const params = initParams(cfg);
    state = step.init(params);
    disposeReplaced(params, state); // the f32 draw, when the preset cast it
  }
  const train = toDevice(data.train, { device: cfg.device });
  const test = toDevice(data.test, { device: cfg.device });
  const history: LogEntry[] = [];
  const epochs: EpochReport[] = [];
  let trainMs = 0;
  let trainSteps = 0;
  let skipped = 0;
  const started = performance.now();
  try {
    for (let e = Math.floor(state.step / perEpoch); e < cfg.epochs; e++) {
      const batches = shuffled(train, {
        batch: cfg.batch,
        key: dataKey,
        epoch: e,
        shift: { key: shiftKey, max: cfg.shift },
      });
      const before = history.length;
      const stepsBefore = state.step;
      const t0 = performance.now();
      const out = await fit(step, state, batches, {
        logEvery: cfg.logEvery,
        onLog: (entry) => {
          const withEpoch = { ...entry, epoch: e };
          history.push(withEpoch);
          hooks.onLog?.(withEpoch);
        },
      });
      const ms = performance.now() - t0;
      disposeReplaced(state, out.state);
      state = out.state;
      const done = state.step - stepsBefore;
      trainMs += ms;
      trainSteps += done;
      let lossSum = 0;
      let prev = stepsBefore;
      for (const h of history.slice(before)) {
        lossSum += h.loss * (h.step - prev);
        prev = h.step;
        skipped += h.metrics.skipped ?? 0;
      }
      const t = await testMetrics(step, state, test);
      const report: EpochReport = {
        epoch: e + 1,
        steps: state.step,
        loss: lossSum / Math.max(1, done),
        testAccuracy: t.accuracy,
        testLoss: t.loss,
        stepsPerSec: done / (ms / 1000),
        elapsedSec: (performance.now() - started) / 1000,
        skipped,
      };
      epochs.push(report);
      hooks.onEpoch?.(report);
    }
    if (epochs.length === 0) {
      throw new Error(
        `nothing to do: the resumed state is at step ${state.step} (epoch ` +
          `${Math.floor(state.step / perEpoch)}), --epochs is ${cfg.epochs}`,
      );
    }
    if (cfg.save) await saveState(cfg.save, state, { preset: cfg.precision });
    const paramCount = leaves(state.params).reduce((n, t) => n + t.size, 0);
    const last = epochs[epochs.length - 1];
    return {
      epochs,
      history,
      steps: state.step,
      testAccuracy: last.testAccuracy,
      testLoss: last.testLoss,
      finalLoss: last.loss,
      msPerStep: trainMs / trainSteps,
      seconds: (performance.now() - started) / 1000,
      paramCount,
      paramBytes: bytesOf(state.params),
      optimizerStateBytes: bytesOf(state.opt),
      bytesPerParam: bytesOf(state) / paramCount,
      skippedSteps: skipped,
    };
  } finally {
    dispose(state);
    dispose([train, test]);
  }
}
