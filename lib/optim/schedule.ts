/**
 * Learning-rate schedules (optax style). A {@linkcode Schedule} maps the applied-update count
 * (an f32 scalar tensor, 0 for the first update) to the learning rate, on the device, so a
 * skipped step (selected away by a plugin) does not advance it.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { full } from "../tensor.ts";
import { add, astype, div, less, maximum, minimum, mul, sub, where } from "../ops/elementwise.ts";
import type { Schedule } from "./types.ts";
import { checkNumber } from "./common.ts";

export type { Schedule };

/**
 * A constant learning rate, as a schedule.
 *
 * @example
 * ```ts
 * await constant(0.1)(zeros([])).item(); // 0.1 (in f32)
 * ```
 */
export function constant(lr: number): Schedule {
  checkNumber("constant", "lr", lr, 0);
  return (count) => full([], lr, { dtype: "f32", device: count.device });
}

/**
 * Linear warmup from 0 to `peak` over `steps` updates, then `peak` (optax's `linear_schedule`
 * from 0): `peak · min(count, steps) / steps`. The first update (count 0) uses 0.
 *
 * @example
 * ```ts
 * const lr = warmup(1e-3, 100); // count 50 → 5e-4, count ≥ 100 → 1e-3
 * ```
 */
export function warmup(peak: number, steps: number): Schedule {
  checkNumber("warmup", "peak", peak, 0);
  checkSteps("warmup", "steps", steps, 1);
  return (count) => mul(div(minimum(asF32(count), steps), steps), peak);
}

/** Options of {@linkcode cosine}. */
export interface CosineOptions {
  /** The final learning rate as a fraction of `peak` (default 0). */
  alpha?: number;
  /** Linear warmup from 0 over this many updates before the decay (default 0). */
  warmupSteps?: number;
}

/**
 * Cosine decay from `peak` to `alpha · peak` (optax's `cosine_decay_schedule`, and with
 * `warmupSteps` its `warmup_cosine_decay_schedule`): a linear warmup from 0 over `warmupSteps`
 * updates, then `peak · ((1 − alpha) · ½(1 + cos(π·u)) + alpha)` with
 * `u = min(count − warmupSteps, D) / D` and `D = decaySteps − warmupSteps`. `decaySteps` is the
 * whole schedule's length, warmup included; after it the rate stays at `alpha · peak`.
 *
 * @example
 * ```ts
 * const lr = cosine(1e-3, 10_000, { warmupSteps: 500, alpha: 0.1 });
 * ```
 */
export function cosine(peak: number, decaySteps: number, opts: CosineOptions = {}): Schedule {
  const { alpha = 0, warmupSteps = 0 } = opts;
  checkNumber("cosine", "peak", peak, 0);
  checkNumber("cosine", "alpha", alpha, 0, false, 1);
  checkSteps("cosine", "warmupSteps", warmupSteps, 0);
  checkSteps("cosine", "decaySteps", decaySteps, warmupSteps + 1);
  const span = decaySteps - warmupSteps;
  return (count) => {
    const c = asF32(count);
    const u = div(minimum(maximum(sub(c, warmupSteps), 0), span), span);
    const decayed = add(mul(halfCosine(u), (1 - alpha) * peak), alpha * peak);
    if (warmupSteps === 0) return decayed;
    return where(less(c, warmupSteps), mul(div(c, warmupSteps), peak), decayed);
  };
}

function checkSteps(op: string, name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    const why = name === "decaySteps" ? ` (more than warmupSteps)` : "";
    throw new Error(`${op}: ${name} must be an integer ≥ ${min}${why}, got ${value}`);
  }
}

const asF32 = (count: Tensor): Tensor => astype(count, "f32");

/**
 * ½(1 + cos(π·u)) for u in [0, 1], built from arithmetic ops (the backends have no cosine
 * kernel) as sin²(π·(1 − u)/2), with sin(x) for 0 ≤ x ≤ π/2 by its Taylor series to x¹³
 * (error below 1e-9, under an f32 ulp). This form is exactly 1 at u = 0 and 0 at u = 1.
 */
function halfCosine(u: Tensor): Tensor {
  const x = mul(sub(1, u), Math.PI / 2);
  const x2 = mul(x, x);
  // Horner in x²: 1 − x²/3! + x⁴/5! − … + x¹²/13!
  const coeff = (k: number) => (k % 2 === 0 ? 1 : -1) / factorial(2 * k + 1);
  let acc = add(mul(x2, coeff(6)), coeff(5));
  for (let k = 4; k >= 0; k--) acc = add(mul(acc, x2), coeff(k));
  const sine = mul(x, acc);
  return mul(sine, sine);
}

function factorial(n: number): number {
  let f = 1;
  for (let i = 2; i <= n; i++) f *= i;
  return f;
}
