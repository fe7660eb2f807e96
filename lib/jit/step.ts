/**
 * `jit` for train steps: a jitted {@linkcode Step} is a Step again (same `init`, same parts), so
 * it composes with `pipe`, `fit` and every plugin. The host-side step counter stays outside the
 * compiled program (it would otherwise be a new static value, and a new trace, every call).
 * `jit(step, { donate: [0] })` donates the state on every call, `step.donating(tensors)` on the
 * calls made through it (what `fit` does with the states it replaces). The step's key
 * (`foldIn(state.key, state.step)`) is derived on the host too and passed in as data; `state.key`
 * itself stays outside the program and is carried to the new state unchanged.
 *
 * @module
 */
import type { Metrics, Step, TrainState } from "../train.ts";
import { runParts, withStepKey } from "../train.ts";
import type { Tensor } from "../tensor.ts";
import { jitFunction, type JitOptions, type Jitted } from "./jit.ts";

const JITTED = Symbol("nbit.jitted");

/** A jitted step: a Step with the jitted function's cache counters. */
export type JittedStep<B> = Step<B> & Jitted;

/** Whether `x` is a step that `jitStep` made. */
export function isJittedStep(x: unknown): boolean {
  return typeof x === "function" && JITTED in x;
}

/** The state the trace sees: `step` is a host counter that traced code must not read. */
function withoutCounter(state: Omit<TrainState, "step">): TrainState {
  const s = { ...state };
  Object.defineProperty(s, "step", {
    enumerable: false,
    get() {
      throw new Error(
        "jit: state.step is a host-side counter and cannot be read inside a jitted step; keep " +
          "a device counter in state.plugins (as gradScale does) if the step needs one",
      );
    },
  });
  return s as TrainState;
}

/**
 * Compile a train step (see {@linkcode jit}); a step that is already jitted is returned as is.
 *
 * @example
 * ```ts
 * const step = jitStep(pipe(trainStep({ loss, optimizer: adam() }), gradScale()));
 * const [next, metrics] = step(step.init(params), batch);
 * ```
 */
export function jitStep<B>(step: Step<B>, opts: JitOptions = {}): JittedStep<B> {
  if (isJittedStep(step)) return step as JittedStep<B>;
  const inner = jitFunction(
    (state: Omit<TrainState, "step">, batch: B): [Omit<TrainState, "step">, Metrics] => {
      const [next, metrics] = runParts(step.parts, withoutCounter(state), batch);
      // Own enumerable fields only: reading `step` would hit the guard above.
      const rest = Object.fromEntries(Object.entries(next).filter(([k]) => k !== "step"));
      return [rest as Omit<TrainState, "step">, metrics];
    },
    opts,
  );
  const wrap = (f: typeof inner): JittedStep<B> => {
    const fn = (state: TrainState, batch: B): [TrainState, Metrics] => {
      // The step key is derived on the host (a key is an input of the program, not a trace).
      // `key` stays on the host: a key the program returned would be the traced one.
      const { step: counter, key, ...rest } = withStepKey(state, state.step);
      const [next, metrics] = f(rest, batch);
      const withKey = key === undefined ? next : { ...next, key };
      return [{ ...withKey, step: counter + 1 } as TrainState, metrics];
    };
    return Object.defineProperties(Object.assign(fn, { init: step.init, parts: step.parts }), {
      [JITTED]: { value: true },
      cacheSize: { get: () => inner.cacheSize },
      traces: { get: () => inner.traces },
      lastStats: { get: () => inner.lastStats },
      clear: { value: () => inner.clear() },
      donating: { value: (ts: Iterable<Tensor>) => wrap(f.donating(ts)) },
    }) as JittedStep<B>;
  };
  return wrap(inner);
}
