/**
 * Train the MNIST MLP under every precision preset (same seed, same flags) and compare: a table
 * of test accuracy, final loss, ms/step, skipped steps and bytes/param, and an SVG of the loss
 * curves.
 *
 * ```sh
 * deno task compare                               # every preset, the demo's defaults
 * deno task compare --presets 32-true,bf16-mixed --epochs 2 --out out/two.svg
 * ```
 *
 * @module
 */
import { dirname } from "node:path";
import { loadMnist } from "./data/mnist.ts";
import { compareUsage, parseCompareArgs } from "./lib/options.ts";
import { CANONICAL_PRESETS, needsF64 } from "./lib/precision.ts";
import { resolveDevice } from "./lib/device.ts";
import { type MnistResult, trainMnist } from "./lib/train_mnist.ts";
import { lineChart } from "./lib/svg.ts";

/** One row of the comparison. */
interface Row {
  readonly preset: string;
  readonly result?: MnistResult;
  readonly error?: string;
  /** Why the preset was not run on this device. */
  readonly skipped?: string;
}

/**
 * The comparison as a Markdown table.
 *
 * @example
 * ```ts
 * console.log(table(rows));
 * ```
 */
function table(rows: readonly Row[]): string {
  const head = "| preset | test acc | final loss | ms/step | skipped | bytes/param |";
  const lines = [head, "|---|---:|---:|---:|---:|---:|"];
  for (const { preset, result: r, error, skipped } of rows) {
    lines.push(
      r
        ? `| ${preset} | ${(100 * r.testAccuracy).toFixed(2)}% | ${r.finalLoss.toFixed(4)} | ` +
          `${r.msPerStep.toFixed(1)} | ${r.skippedSteps} | ${r.bytesPerParam.toFixed(2)} |`
        : `| ${preset} | ${skipped ? `not run: ${skipped}` : `failed: ${error}`} | | | | |`,
    );
  }
  return lines.join("\n");
}

async function main(args: string[]): Promise<number> {
  const parsed = parseCompareArgs(args, CANONICAL_PRESETS);
  if ("error" in parsed) {
    console.error(`error: ${parsed.error}`);
    return 2;
  }
  const o = parsed.options;
  if (o.help) {
    console.log(compareUsage(CANONICAL_PRESETS));
    return 0;
  }
  let device;
  try {
    device = await resolveDevice(o.device);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 2;
  }
  const log = o.json ? console.error : console.log;
  log(
    `nbit MNIST compare: MLP 784-${o.hidden.join("-")}-10, ${o.optimizer} lr ${o.lr} ` +
      `(${o.schedule}), batch ${o.batch}, ${o.epochs} epochs, seed ${o.seed}, on ${device.name}`,
  );
  const data = loadMnist({ seed: o.seed, train: o.train, test: o.test });
  const rows: Row[] = [];
  for (const preset of o.presets) {
    if (needsF64(preset) && device.kind !== "cpu") {
      const skipped = "f64 lives on the CPU backend only";
      rows.push({ preset, skipped });
      log(`${preset.padEnd(11)} not run: ${skipped}`);
      continue;
    }
    try {
      const result = await trainMnist({ ...o, precision: preset, device }, { data });
      rows.push({ preset, result });
      log(
        `${preset.padEnd(11)} test acc ${(100 * result.testAccuracy).toFixed(2)}%  ` +
          `loss ${result.finalLoss.toFixed(4)}  ${result.msPerStep.toFixed(1)} ms/step  ` +
          `${result.seconds.toFixed(1)} s`,
      );
    } catch (e) {
      // A preset the device cannot run (f64 on WebGPU) is reported, not fatal.
      rows.push({ preset, error: (e as Error).message.split("\n")[0] });
      log(`${preset.padEnd(11)} failed: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  log("");
  log(table(rows));
  const series = rows.filter((r) => r.result).map((r) => ({
    name: r.preset,
    points: r.result!.history.map((h) => [h.step, h.loss] as [number, number]),
  }));
  const svg = lineChart(series, {
    title: `MNIST training loss by precision preset (${o.optimizer}, seed ${o.seed})`,
    xLabel: "step",
    yLabel: `mean training loss over ${o.logEvery} steps`,
    logY: true,
  });
  await Deno.mkdir(dirname(o.out), { recursive: true });
  await Deno.writeTextFile(o.out, svg);
  log(`\nloss curves: ${o.out}`);
  if (o.json) {
    console.log(JSON.stringify(rows.map(({ preset, result: r, error, skipped }) =>
      r
        ? {
          precision: preset,
          device: device.name,
          optimizer: o.optimizer,
          epochs: o.epochs,
          steps: r.steps,
          testAccuracy: r.testAccuracy,
          finalLoss: r.finalLoss,
          msPerStep: r.msPerStep,
          paramBytes: r.paramBytes,
          optimizerStateBytes: r.optimizerStateBytes,
          bytesPerParam: r.bytesPerParam,
          skippedSteps: r.skippedSteps,
        }
        : { precision: preset, error, skipped }
    )));
  }
  return rows.some((r) => r.error) ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));

export { main, table };
