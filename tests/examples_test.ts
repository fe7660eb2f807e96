/**
 * The MNIST examples' plumbing: flags, batches, image shifts, the SVG chart, the demo and the
 * compare script end to end (tiny configurations), and resuming from a checkpoint.
 */
import assert from "node:assert/strict";
import { loadMnist } from "../examples/data/mnist.ts";
import { epochOrder, inOrder, shuffled, toDevice } from "../examples/lib/batches.ts";
import { shiftImages, shiftIndices } from "../examples/lib/augment.ts";
import {
  DEFAULTS,
  DEVICES,
  OPTIMIZERS,
  parseCompareArgs,
  parseDemoArgs,
} from "../examples/lib/options.ts";
import { CANONICAL_PRESETS, PRECISIONS } from "../examples/lib/precision.ts";
import { lineChart } from "../examples/lib/svg.ts";
import { trainMnist } from "../examples/lib/train_mnist.ts";
import { main as compareMain } from "../examples/compare.ts";
import { presetNames } from "../plugins/presets.ts";
import { key } from "../lib/random.ts";
import { dispose, memory } from "../lib/tensor.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";

const ROOT = new URL("..", import.meta.url);
const data = loadMnist({ seed: 0, train: 640, test: 200 });
const TINY = {
  ...DEFAULTS,
  device: cpu,
  hidden: [16],
  batch: 32,
  train: 640,
  test: 200,
  logEvery: 5,
};

Deno.test("demo flags: defaults, every preset name, and errors that list the valid values", () => {
  const ok = parseDemoArgs([], PRECISIONS);
  assert.ok("options" in ok);
  assert.equal(ok.options.precision, "32-true");
  assert.deepEqual(ok.options.hidden, [512, 512]);
  assert.deepEqual(PRECISIONS, presetNames);
  for (const p of ["32-true", "64-true", ...presetNames]) {
    const r = parseDemoArgs(["--precision", p], PRECISIONS);
    assert.ok("options" in r && r.options.precision === p, p);
  }
  const r = parseDemoArgs(
    ["--hidden", "256", "--optimizer", "sgd8bit", "--device", "auto", "--json"],
    PRECISIONS,
  );
  assert.ok("options" in r);
  assert.deepEqual(r.options.hidden, [256]);
  assert.equal(r.options.lr, 0.05); // the optimizer's default learning rate
  assert.equal(r.options.json, true);
  const bad: [string[], RegExp][] = [
    [["--precision", "fp4"], new RegExp(`valid values: ${presetNames.join(", ")}`)],
    [["--device", "tpu"], new RegExp(`valid values: ${DEVICES.join(", ")}`)],
    [["--optimizer", "lion"], new RegExp(`valid values: ${OPTIMIZERS.join(", ")}`)],
    [["--epochs", "0"], /--epochs: expected an integer ≥ 1/],
    [["--hidden", "512,x"], /--hidden: expected positive integers/],
    [["--lr", "0"], /--lr: expected a positive number/],
    [["--train", "9000"], /at most 10000/],
    [["--bogus"], /Unknown option '--bogus'[\s\S]*valid flags: .*--precision/],
  ];
  for (const [args, message] of bad) {
    const e = parseDemoArgs(args, PRECISIONS);
    assert.ok("error" in e, args.join(" "));
    assert.match(e.error, message);
  }
});

Deno.test("compare flags: a subset of the canonical presets, and an output path", () => {
  const all = parseCompareArgs([], CANONICAL_PRESETS);
  assert.ok("options" in all);
  assert.deepEqual(all.options.presets, [...CANONICAL_PRESETS]);
  assert.equal(all.options.out, "out/compare.svg");
  assert.ok(CANONICAL_PRESETS.includes("32-true") && !CANONICAL_PRESETS.includes("O1"));
  const two = parseCompareArgs(["--presets", "32-true,bf16-true"], CANONICAL_PRESETS);
  assert.ok("options" in two);
  assert.deepEqual(two.options.presets, ["32-true", "bf16-true"]);
  const bad = parseCompareArgs(["--presets", "32-true,O1"], CANONICAL_PRESETS);
  assert.ok("error" in bad);
  assert.match(bad.error, /--presets: unknown value "O1"; valid values: 64-true/);
});

Deno.test("shuffled batches: each sample once per epoch, a fixed order per seed, freed after", () => {
  const before = memory();
  const train = toDevice(data.train);
  const order0 = epochOrder(key(1), 0, 640);
  assert.deepEqual(order0, epochOrder(key(1), 0, 640));
  assert.notDeepEqual(order0, epochOrder(key(1), 1, 640));
  assert.deepEqual([...order0].sort((a, b) => a - b), Array.from({ length: 640 }, (_, i) => i));
  const live = memory().tensors;
  let n = 0;
  let rows = 0;
  for (const b of shuffled(train, { batch: 100, key: key(1), epoch: 0 })) {
    assert.equal(b.x.shape[1], 784);
    assert.equal(b.y.dtype, "i32");
    rows += b.y.shape[0];
    n++;
    assert.ok(memory().tensors <= live + 2); // only the current batch is alive
  }
  assert.equal(n, 7); // 6 full batches and one of 40
  assert.equal(rows, 640);
  for (const _ of shuffled(train, { batch: 100, key: key(1), epoch: 0 })) break;
  for (const _ of inOrder(train, 64)) break;
  for (const _ of inOrder(train, 640)) break; // one batch: the whole split, which stays alive
  assert.equal(train.x.disposed, false);
  assert.equal(memory().tensors, live); // an early break frees the batch too
  dispose(train);
  assert.equal(memory().bytes, before.bytes);
});

Deno.test("shuffled batches hold the labels of their images", async () => {
  const train = toDevice(data.train);
  const order = epochOrder(key(2), 3, 640);
  let at = 0;
  for (const b of shuffled(train, { batch: 128, key: key(2), epoch: 3 })) {
    const y = await b.y.data();
    const x = await b.x.data();
    for (let i = 0; i < y.length; i++, at++) {
      assert.equal(y[i], data.train.labels[order[at]]);
      assert.equal(x[i * 784 + 400], data.train.images[order[at] * 784 + 400]);
    }
  }
  dispose(train);
});

Deno.test("shiftImages moves each image by its own shift and fills with zeros", async () => {
  // shiftIndices: pixel (r, c) of image i comes from (r − dy, c − dx), else the zero slot.
  const idx = shiftIndices(new Int32Array([1, 0]), new Int32Array([0, -1]));
  assert.equal(idx[0], 2 * 784); // image 0, (0, 0): source column −1 → zero
  assert.equal(idx[1], 0); // image 0, (0, 1) ← (0, 0)
  assert.equal(idx[784 + 0], 784 + 28); // image 1, (0, 0) ← (1, 0)
  assert.equal(idx[784 + 27 * 28], 2 * 784); // image 1, last row ← row 28: zero
  const train = toDevice(data.train);
  assert.equal(shiftImages(train.x, key(0), 0), train.x);
  const before = memory().tensors;
  const moved = shiftImages(train.x, key(4), 2);
  assert.equal(memory().tensors, before + 1);
  const [a, b] = [await train.x.data(), await moved.data()];
  let changed = 0;
  for (let i = 0; i < 640; i++) {
    // Each moved image is a whole-pixel shift by at most 2 of the original (same ink or less).
    let inkA = 0, inkB = 0;
    for (let p = 0; p < 784; p++) [inkA, inkB] = [inkA + a[i * 784 + p], inkB + b[i * 784 + p]];
    assert.ok(inkB <= inkA + 1e-3);
    if (inkB !== inkA || b.subarray(i * 784, (i + 1) * 784).some((v, p) => v !== a[i * 784 + p])) {
      changed++;
    }
  }
  assert.ok(changed > 600, `${changed} of 640 images moved`); // 1 in 25 draws (0, 0)
  dispose([moved, train]);
});

Deno.test("lineChart draws one polyline per series, escapes names, skips bad points", () => {
  const svg = lineChart([
    { name: "a<b>", points: [[0, 1], [1, 0.5], [2, NaN]] },
    { name: "c", points: [[0, 2], [2, 0.1], [3, -1]] },
  ], { title: "t & u", logY: true });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal(svg.match(/<polyline /g)?.length, 2);
  assert.ok(svg.includes("a&lt;b&gt;") && svg.includes("t &amp; u"));
  assert.ok(!svg.includes("NaN"));
  assert.ok(svg.trimEnd().endsWith("</svg>"));
});

async function demo(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      "--allow-write=/tmp",
      "examples/mnist.ts",
      ...args,
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

Deno.test("demo: a bad flag exits with code 2 and names the valid values", async () => {
  const r = await demo("--precision", "fp4");
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--precision: unknown value "fp4"; valid values: 64-true, 32-true/);
  const h = await demo("--help");
  assert.equal(h.code, 0);
  assert.match(h.stdout, /--precision NAME/);
});

Deno.test("demo --json prints one result object on its last line", async () => {
  const r = await demo(
    ...["--epochs", "1", "--hidden", "16", "--train", "640", "--test", "200", "--json"],
    ...["--precision", "bf16-mixed", "--optimizer", "adamw8bit"],
  );
  assert.equal(r.code, 0, r.stderr);
  const last = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  for (
    const k of [
      "precision",
      "device",
      "optimizer",
      "epochs",
      "steps",
      "testAccuracy",
      "finalLoss",
      "msPerStep",
      "paramBytes",
      "optimizerStateBytes",
      "bytesPerParam",
      "skippedSteps",
    ]
  ) assert.ok(k in last, k);
  assert.equal(last.precision, "bf16-mixed");
  assert.equal(last.device, "cpu");
  assert.equal(last.steps, 10); // 640 digits in batches of 64
  assert.equal(last.paramBytes, (784 * 16 + 16 + 16 * 10 + 10) * 4);
  assert.match(r.stderr, /epoch 1\/1 {2}loss \d\.\d{4} {2}test acc \d+\.\d\d%/);
});

Deno.test("compare: trains each preset, prints the table and writes the SVG", async () => {
  const out = await Deno.makeTempFile({ dir: "/tmp", suffix: ".svg" });
  const code = await compareMain([
    ...["--presets", "32-true,16-mixed", "--epochs", "1", "--hidden", "16"],
    ...["--train", "640", "--test", "200", "--log-every", "5", "--out", out, "--json"],
  ]);
  assert.equal(code, 0);
  const svg = await Deno.readTextFile(out);
  assert.equal(svg.match(/<polyline /g)?.length, 2);
  assert.ok(svg.includes(">16-mixed</text>"));
  await Deno.remove(out);
  assert.equal(await compareMain(["--presets", "nope"]), 2);
});

Deno.test("resume: 1 epoch + save + resume to 2 epochs equals 2 epochs straight, bit for bit", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp" });
  const cfg = { ...TINY, precision: "16-mixed", schedule: "constant" as const };
  const straight = await trainMnist({ ...cfg, epochs: 2, save: `${dir}/a.safetensors` }, { data });
  const first = await trainMnist({ ...cfg, epochs: 1, save: `${dir}/b1.safetensors` }, { data });
  const resumed = await trainMnist(
    { ...cfg, epochs: 2, resume: `${dir}/b1.safetensors`, save: `${dir}/b2.safetensors` },
    { data },
  );
  assert.equal(first.steps, 20);
  assert.equal(resumed.steps, 40);
  assert.equal(resumed.epochs.length, 1);
  assert.equal(resumed.epochs[0].epoch, 2);
  assert.deepEqual(resumed.history, straight.history.slice(first.history.length));
  assert.equal(resumed.testAccuracy, straight.testAccuracy);
  // The saved states (params, Adam moments, loss scale) are byte-identical files.
  assert.deepEqual(
    await Deno.readFile(`${dir}/b2.safetensors`),
    await Deno.readFile(`${dir}/a.safetensors`),
  );
  await assert.rejects(
    trainMnist({ ...cfg, epochs: 1, resume: `${dir}/b2.safetensors` }, { data }),
    /nothing to do: the resumed state is at step 40/,
  );
  await Deno.remove(dir, { recursive: true });
});
