/**
 * MNIST demo: train an MLP on 8,000 real digits under a precision preset and report the test
 * accuracy on 2,000 others.
 *
 * ```sh
 * deno task demo                                  # f32, Adam, 5 epochs
 * deno task demo --precision 64-true --json       # f64; JSON results on the last line
 * deno task demo --help
 * ```
 *
 * @module
 */
import { parseDemoArgs, usage } from "./lib/options.ts";
import { needsF64, PRECISIONS } from "./lib/precision.ts";
import { resolveDevice } from "./lib/device.ts";
import { type EpochReport, trainMnist } from "./lib/train_mnist.ts";

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

function progress(r: EpochReport, epochs: number): string {
  return [
    `epoch ${String(r.epoch).padStart(String(epochs).length)}/${epochs}`,
    `loss ${r.loss.toFixed(4)}`,
    `test acc ${pct(r.testAccuracy)}`,
    `${r.stepsPerSec.toFixed(1)} steps/s`,
    `${r.elapsedSec.toFixed(1)} s`,
    ...(r.skipped ? [`skipped ${r.skipped}`] : []),
  ].join("  ");
}

async function main(args: string[]): Promise<number> {
  const parsed = parseDemoArgs(args, PRECISIONS);
  if ("error" in parsed) {
    console.error(`error: ${parsed.error}`);
    return 2;
  }
  const o = parsed.options;
  if (o.help) {
    console.log(usage(PRECISIONS));
    return 0;
  }
  let device;
  try {
    device = await resolveDevice(o.device, { needsF64: needsF64(o.precision) });
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 2;
  }
  const log = o.json ? console.error : console.log;
  log(
    `nbit MNIST: ${o.train} train / ${o.test} test digits, MLP 784-${o.hidden.join("-")}-10, ` +
      `${o.precision} on ${device.name}, ${o.optimizer} lr ${o.lr} (${o.schedule}), ` +
      `batch ${o.batch}, shift ±${o.shift}px, ${o.epochs} epochs, seed ${o.seed}`,
  );
  let r;
  try {
    r = await trainMnist({ ...o, device }, { onEpoch: (e) => log(progress(e, o.epochs)) });
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  log(
    `test accuracy ${pct(r.testAccuracy)}  (${r.steps} steps, ${r.msPerStep.toFixed(1)} ms/step, ` +
      `${r.seconds.toFixed(1)} s, ${r.bytesPerParam.toFixed(2)} bytes/param of train state)`,
  );
  if (o.json) {
    console.log(JSON.stringify({
      precision: o.precision,
      device: device.name,
      optimizer: o.optimizer,
      epochs: o.epochs,
      batch: o.batch,
      hidden: o.hidden,
      lr: o.lr,
      schedule: o.schedule,
      shift: o.shift,
      seed: o.seed,
      steps: r.steps,
      testAccuracy: r.testAccuracy,
      finalLoss: r.finalLoss,
      msPerStep: r.msPerStep,
      seconds: r.seconds,
      paramCount: r.paramCount,
      paramBytes: r.paramBytes,
      optimizerStateBytes: r.optimizerStateBytes,
      bytesPerParam: r.bytesPerParam,
      skippedSteps: r.skippedSteps,
    }));
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));

export { main };
