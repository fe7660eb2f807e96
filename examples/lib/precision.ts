/**
 * The precision presets the examples offer: every name of `plugins/presets.ts`, and the
 * canonical ones (aliases left out) that the compare script runs.
 *
 * @example
 * ```ts
 * const step = precision("bf16-mixed")(trainStep({ loss, optimizer }));
 * CANONICAL_PRESETS; // ["64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "O2"]
 * ```
 *
 * @module
 */
import { precision, presetNames } from "../../plugins/presets.ts";

/** Every preset name the demo accepts. */
export const PRECISIONS: readonly string[] = presetNames;

/** Names that only alias another preset (Lightning's short forms, Apex O0/O1/O3). */
const ALIASES = new Set(["64", "32", "16", "bf16", "O0", "O1", "O3"]);

/** The presets that differ from each other: every name but the aliases. */
export const CANONICAL_PRESETS: readonly string[] = presetNames.filter((n) => !ALIASES.has(n));

/**
 * Whether a preset computes in f64 (which only the CPU backend has).
 *
 * @example
 * ```ts
 * needsF64("64"); // true
 * ```
 */
export const needsF64 = (name: string): boolean => name === "64-true" || name === "64";

export { precision };
