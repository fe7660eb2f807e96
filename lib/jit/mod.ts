/**
 * `jit`: compile a pure function of tensor trees, or a train step, once per signature.
 *
 * @module
 */
import type { Step } from "../train.ts";
import { jitFunction, type JitOptions, type Jitted } from "./jit.ts";
import { jitStep, type JittedStep } from "./step.ts";

export type { JitOptions, Jitted, JittedStep };
export type { CompileOptions, ProgramStats } from "./program.ts";

function isStep(x: unknown): x is Step<unknown> {
  return typeof x === "function" && "parts" in x && "init" in x;
}

/**
 * Trace `fn` once per signature (argument tree structure, shapes, dtypes, device, and the values
 * of non-tensor leaves) into a graph of kernels, optimize it (constants once, CSE, DCE,
 * elementwise fusion, buffers freed after last use) and replay the compiled program on later
 * calls, bitwise equal to eager execution. A {@linkcode Step} stays a Step (same `init` and
 * parts). Values cannot be read inside, tensors must come in as arguments, and random keys are
 * arguments too; each of these fails at trace time with a message saying what to do.
 *
 * @example
 * ```ts
 * import { add, jit, mul, relu, tensor } from "./mod.ts";
 * const f = jit((x, y) => relu(add(mul(x, 2), y)));
 * await f(tensor([1, -2]), tensor([0.5, 0.5])).data(); // Float32Array [2.5, 0]
 * ```
 */
export function jit<B>(fn: Step<B>, opts?: JitOptions): JittedStep<B>;
/**
 * Trace `fn` once per signature (see the Step overload).
 *
 * @example
 * ```ts
 * const f = jit((x: Tensor) => relu(x));
 * ```
 */
export function jit<F extends (...args: never[]) => unknown>(fn: F, opts?: JitOptions): F & Jitted;
export function jit(fn: (...args: never[]) => unknown, opts: JitOptions = {}): unknown {
  return isStep(fn) ? jitStep(fn, opts) : jitFunction(fn, opts);
}
