/**
 * Command-line flags of the MNIST demo (`node:util` parseArgs), checked against the lists of
 * valid values; a bad flag gives an error message that names the valid values.
 *
 * @example
 * ```ts
 * const r = parseDemoArgs(["--precision", "64-true", "--epochs", "2"], ["32-true", "64-true"]);
 * if ("error" in r) console.error(r.error); else console.log(r.options.epochs); // 2
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";

/** Where to train: `auto` is WebGPU when an adapter exists, else the CPU. */
export const DEVICES = ["cpu", "webgpu", "auto"] as const;
/** Device flag values. */
export type DeviceName = (typeof DEVICES)[number];

/** Optimizer flag values. */
export const OPTIMIZERS = ["adam", "adamw", "sgd", "adam8bit", "adamw8bit", "sgd8bit"] as const;
/** An optimizer flag value. */
export type OptimizerName = (typeof OPTIMIZERS)[number];

/** Learning-rate schedules: constant, or linear warmup then cosine decay to 0 over the run. */
export const SCHEDULES = ["cosine", "constant"] as const;
/** A schedule flag value. */
export type ScheduleName = (typeof SCHEDULES)[number];

/** Everything the demo can be told. */
export interface DemoOptions {
  precision: string;
  device: DeviceName;
  epochs: number;
  batch: number;
  hidden: number[];
  optimizer: OptimizerName;
  /** Peak learning rate. */
  lr: number;
  schedule: ScheduleName;
  /** Largest random shift of the training images, in pixels (0: no augmentation). */
  shift: number;
  seed: number;
  /** Training and test sample counts (8000 + 2000 of the package's 10,000 digits). */
  train: number;
  test: number;
  /** Read the loss back every this many steps (a point of the loss curve). */
  logEvery: number;
  save?: string;
  resume?: string;
  json: boolean;
  help: boolean;
}

/** The learning rate each optimizer gets unless `--lr` says otherwise. */
export const DEFAULT_LR: Readonly<Record<OptimizerName, number>> = {
  adam: 3e-3,
  adamw: 3e-3,
  adam8bit: 3e-3,
  adamw8bit: 3e-3,
  sgd: 0.05,
  sgd8bit: 0.05,
};

/**
 * The demo's defaults (the measured settings of README's accuracy claim).
 *
 * @example
 * ```ts
 * const opts = { ...DEFAULTS, epochs: 1 };
 * ```
 */
export const DEFAULTS: Readonly<DemoOptions> = Object.freeze({
  precision: "32-true",
  device: "cpu",
  epochs: 5,
  batch: 64,
  hidden: [512, 512],
  optimizer: "adam",
  lr: DEFAULT_LR.adam,
  schedule: "cosine",
  shift: 1,
  seed: 0,
  train: 8000,
  test: 2000,
  logEvery: 25,
  json: false,
  help: false,
});

function commonHelp(): string[] {
  const d = DEFAULTS;
  const lrs = Object.entries(DEFAULT_LR).map(([k, v]) => `${k} ${v}`).join(", ");
  return [
    `  --device NAME      ${DEVICES.join(" | ")} (default ${d.device})`,
    `  --epochs N         passes over the training set (default ${d.epochs})`,
    `  --batch N          batch size (default ${d.batch})`,
    `  --hidden SIZES     hidden layer sizes, e.g. 512,512 or 256 (default ${d.hidden})`,
    `  --optimizer NAME   ${OPTIMIZERS.join(" | ")} (default ${d.optimizer})`,
    `  --lr X             peak learning rate (default ${lrs})`,
    `  --schedule NAME    ${SCHEDULES.join(" | ")} (default ${d.schedule}: 5% warmup, cosine to 0)`,
    `  --shift N          shift training images by up to N pixels, 0 = off (default ${d.shift})`,
    `  --seed N           seed of the data split, init, batch order, shifts (default ${d.seed})`,
    `  --train N          training digits (default ${d.train})`,
    `  --test N           test digits (default ${d.test}); train + test ≤ 10000`,
    `  --log-every N      steps between loss readbacks (default ${d.logEvery})`,
  ];
}

/**
 * The demo's help text.
 *
 * @example
 * ```ts
 * console.log(usage(["32-true", "64-true"]));
 * ```
 */
export function usage(precisions: readonly string[]): string {
  return [
    "Train an MLP on 8,000 real MNIST digits and test it on 2,000 others.",
    "",
    "Usage: deno task demo [flags]",
    "",
    `  --precision NAME   ${precisions.join(" | ")} (default ${DEFAULTS.precision})`,
    ...commonHelp(),
    "  --save PATH        save the final train state (safetensors)",
    "  --resume PATH      resume from a saved train state; --epochs is the total to reach",
    "  --json             print one JSON object with the results on the last line",
    "  --help             this text",
  ].join("\n");
}

/**
 * The compare script's help text.
 *
 * @example
 * ```ts
 * console.log(compareUsage(CANONICAL_PRESETS));
 * ```
 */
export function compareUsage(presets: readonly string[]): string {
  return [
    "Train the MNIST MLP under several precision presets (same seed) and compare them.",
    "",
    "Usage: deno task compare [flags]",
    "",
    `  --presets A,B      a subset of ${presets.join(", ")} (default: all)`,
    `  --out PATH         the loss-curve SVG (default ${DEFAULT_PLOT})`,
    ...commonHelp(),
    "  --json             print one JSON array with the results on the last line",
    "  --help             this text",
  ].join("\n");
}

const str = { type: "string" } as const;
const bool = { type: "boolean" } as const;

/** Flags the demo and the compare script share. */
const COMMON_FLAGS = {
  device: str,
  epochs: str,
  batch: str,
  hidden: str,
  optimizer: str,
  lr: str,
  schedule: str,
  shift: str,
  seed: str,
  train: str,
  test: str,
  "log-every": str,
  json: bool,
  help: { type: "boolean", short: "h" },
} as const;

const DEMO_FLAGS = { ...COMMON_FLAGS, precision: str, save: str, resume: str } as const;
const COMPARE_FLAGS = { ...COMMON_FLAGS, presets: str, out: str } as const;

function oneOf<T extends string>(flag: string, value: string, valid: readonly T[]): T {
  if (!(valid as readonly string[]).includes(value)) {
    throw new Error(`--${flag}: unknown value "${value}"; valid values: ${valid.join(", ")}`);
  }
  return value as T;
}

function integer(flag: string, value: string, min: number): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(n) || n < min) {
    throw new Error(`--${flag}: expected an integer ≥ ${min}, got "${value}"`);
  }
  return n;
}

function positive(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0) {
    throw new Error(`--${flag}: expected a positive number, got "${value}"`);
  }
  return n;
}

function sizes(value: string): number[] {
  const parts = value.split(",").map((s) => s.trim());
  if (parts.some((p) => !/^[1-9][0-9]*$/.test(p))) {
    throw new Error(
      `--hidden: expected positive integers separated by commas (e.g. 512,512 or 256), ` +
        `got "${value}"`,
    );
  }
  return parts.map(Number);
}

type Values = { [k: string]: string | boolean | undefined };
type Common = Omit<DemoOptions, "precision" | "save" | "resume">;

function common(v: Values): Common {
  const s = (k: string) => v[k] as string | undefined;
  const optimizer = s("optimizer") === undefined
    ? DEFAULTS.optimizer
    : oneOf("optimizer", s("optimizer")!, OPTIMIZERS);
  const pick = <T>(k: string, fallback: T, read: (x: string) => T): T => {
    const x = s(k);
    return x === undefined ? fallback : read(x);
  };
  const o: Common = {
    device: pick("device", DEFAULTS.device, (x) => oneOf("device", x, DEVICES)),
    epochs: pick("epochs", DEFAULTS.epochs, (x) => integer("epochs", x, 1)),
    batch: pick("batch", DEFAULTS.batch, (x) => integer("batch", x, 1)),
    hidden: pick("hidden", [...DEFAULTS.hidden], sizes),
    optimizer,
    lr: pick("lr", DEFAULT_LR[optimizer], (x) => positive("lr", x)),
    schedule: pick("schedule", DEFAULTS.schedule, (x) => oneOf("schedule", x, SCHEDULES)),
    shift: pick("shift", DEFAULTS.shift, (x) => integer("shift", x, 0)),
    seed: pick("seed", DEFAULTS.seed, (x) => integer("seed", x, 0)),
    train: pick("train", DEFAULTS.train, (x) => integer("train", x, 1)),
    test: pick("test", DEFAULTS.test, (x) => integer("test", x, 1)),
    logEvery: pick("log-every", DEFAULTS.logEvery, (x) => integer("log-every", x, 1)),
    json: (v.json as boolean | undefined) ?? false,
    help: (v.help as boolean | undefined) ?? false,
  };
  if (o.train + o.test > 10000) {
    throw new Error(
      `--train + --test must be at most 10000 (the package's digits), got ${o.train + o.test}`,
    );
  }
  return o;
}

function parseWith<T>(
  args: readonly string[],
  flags: Record<string, { type: "string" | "boolean"; short?: string }>,
  build: (v: Values) => T,
): { options: T } | { error: string } {
  try {
    const { values } = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: flags,
    });
    return { options: build(values as Values) };
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code?.startsWith("ERR_PARSE_ARGS")) {
      const names = Object.keys(flags).map((f) => `--${f}`).join(", ");
      return { error: `${err.message}\nvalid flags: ${names} (see --help)` };
    }
    return { error: err.message };
  }
}

/**
 * Parse and check the demo's flags. Returns the options, or an error message (print it and exit
 * with code 2).
 *
 * @example
 * ```ts
 * const r = parseDemoArgs(Deno.args, PRECISIONS);
 * if ("error" in r) { console.error(r.error); Deno.exit(2); }
 * ```
 */
export function parseDemoArgs(
  args: readonly string[],
  precisions: readonly string[],
): { options: DemoOptions } | { error: string } {
  return parseWith(args, DEMO_FLAGS, (v) => ({
    ...common(v),
    precision: v.precision === undefined
      ? DEFAULTS.precision
      : oneOf("precision", v.precision as string, precisions),
    save: v.save as string | undefined,
    resume: v.resume as string | undefined,
  }));
}

/** The compare script's options: the demo's shared ones, the presets to run and the SVG path. */
export type CompareOptions = Omit<DemoOptions, "precision" | "save" | "resume"> & {
  presets: string[];
  out: string;
};

/** Where the compare script writes its plot unless `--out` says otherwise. */
export const DEFAULT_PLOT = "out/compare.svg";

/**
 * Parse and check the compare script's flags (`--presets a,b` picks a subset of `presets`).
 *
 * @example
 * ```ts
 * const r = parseCompareArgs(["--presets", "32-true,bf16-mixed"], CANONICAL_PRESETS);
 * ```
 */
export function parseCompareArgs(
  args: readonly string[],
  presets: readonly string[],
): { options: CompareOptions } | { error: string } {
  return parseWith(args, COMPARE_FLAGS, (v) => ({
    ...common(v),
    presets: v.presets === undefined
      ? [...presets]
      : (v.presets as string).split(",").map((p) => oneOf("presets", p.trim(), presets)),
    out: (v.out as string | undefined) ?? DEFAULT_PLOT,
  }));
}
