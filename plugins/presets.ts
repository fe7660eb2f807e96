/**
 * Precision presets by name, as Lightning's `precision=` strings and Apex's opt levels:
 *
 * | name (aliases)            | what it is                                             |
 * | ------------------------- | ------------------------------------------------------ |
 * | "64-true" (64, "64")      | params and floating inputs in f64                      |
 * | "32-true" (32, "32", O0)  | nothing to do: f32                                     |
 * | "16-mixed" (16, "16", O1) | f32 params, autocast f16, dynamic loss scaling         |
 * | "bf16-mixed" ("bf16")     | f32 params, autocast bf16, no scaler                   |
 * | "16-true" (O3)            | params, grads, optimizer state and inputs in f16       |
 * | "bf16-true"               | params, grads, optimizer state and inputs in bf16      |
 * | "O2"                      | f32 master params, f16 compute copies, loss scaling    |
 * | "fp8-mixed"               | "bf16-mixed" + fp8 GEMMs with delayed scaling (`fp8`)  |
 *
 * @example
 * ```ts
 * const step = precision("16-mixed")(trainStep({ loss, optimizer: adam() }));
 * ```
 *
 * @module
 */
import type { Step, Transformer } from "../lib/train.ts";
import { autocast } from "./autocast.ts";
import { castParams } from "./cast_params.ts";
import { gradScale } from "./grad_scale.ts";
import { fp8 } from "./fp8.ts";

const chain = (...ts: Transformer[]): Transformer => <B>(step: Step<B>) =>
  ts.reduce((s, t) => t(s), step);

const presets: Record<string, () => Transformer> = {
  "64-true": () => castParams("f64", { master: null }),
  "32-true": () => chain(),
  "16-mixed": () => chain(autocast("f16"), gradScale()),
  "bf16-mixed": () => autocast("bf16"),
  "16-true": () => castParams("f16", { master: null }),
  "bf16-true": () => castParams("bf16", { master: null }),
  "O2": () => chain(castParams("f16"), gradScale()),
  // f32 params, bf16 autocast, fp8 GEMMs; Lightning's nearest is "transformer-engine" (bf16 weights).
  "fp8-mixed": () => chain(autocast("bf16"), fp8()),
};

const aliases: Record<string, string> = {
  "64": "64-true",
  "32": "32-true",
  "16": "16-mixed",
  "bf16": "bf16-mixed",
  "O0": "32-true",
  "O1": "16-mixed",
  "O3": "16-true",
};

/** Every name {@linkcode precision} accepts (numbers 64, 32 and 16 are accepted as well). */
export const presetNames: readonly string[] = Object.freeze([
  ...["64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "fp8-mixed"],
  ...["64", "32", "16", "bf16", "O0", "O1", "O2", "O3"],
]);

/** A preset name, or the numbers 64, 32 and 16. */
export type PresetName = string | 64 | 32 | 16;

/**
 * The step transformer of a precision preset (see the table in the module docs).
 *
 * @example
 * ```ts
 * const step = precision("bf16-mixed")(trainStep({ loss, optimizer }));
 * precision("fp4"); // Error: precision: unknown preset "fp4"; valid names: 64-true, …
 * ```
 */
export function precision(name: PresetName): Transformer {
  const key = String(name);
  const canonical = Object.hasOwn(aliases, key) ? aliases[key] : key;
  if (!Object.hasOwn(presets, canonical)) {
    throw new Error(
      `precision: unknown preset ${JSON.stringify(name)}; valid names: ${
        presetNames.join(", ")
      } (and the numbers 64, 32, 16)`,
    );
  }
  return presets[canonical]();
}
