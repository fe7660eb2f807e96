/**
 * Training on WebGPU end to end, on real MNIST digits with a small MLP (784-64-10, batch 64):
 *
 * - a run of `fit` reads nothing back from the GPU during its steps (32-true, "16-mixed", and
 *   loss scaling that overflows and skips steps by selection); only its end-of-run flush reads;
 * - live GPU tensors, buffers and bytes (`memory(gpu)`) stay flat over 500 steps;
 * - WebGPU reaches the CPU run's test accuracy within 0.3 points from the same init, batches and
 *   optimizer;
 * - every precision preset trains on WebGPU with the params' dtypes it promises; "64-true" and
 *   f64 tensors fail with an error that names the cpu backend.
 *
 * Without an adapter every test is ignored with the reason printed (a failure with
 * `NBIT_REQUIRE_WEBGPU=1`). Run on both software adapters, e.g.
 * `XDG_RUNTIME_DIR=/tmp DENO_WEBGPU_BACKEND=vulkan` (lavapipe) and `DENO_WEBGPU_BACKEND=gl`
 * (llvmpipe, no shader-f16).
 */
import assert from "node:assert/strict";
import type { Backend } from "../lib/backend/backend.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { readbackCount } from "../lib/backend/webgpu/webgpu.ts";
import type { DType } from "../lib/dtype.ts";
import { astype } from "../lib/ops/elementwise.ts";
import { key, split } from "../lib/random.ts";
import { dispose, memory, tensor, zeros } from "../lib/tensor.ts";
import { leaves, map } from "../lib/tree.ts";
import { disposeReplaced, fit, pipe, type Step, type TrainState, trainStep } from "../lib/train.ts";
import type { MlpParams } from "../lib/nn/mod.ts";
import { adam } from "../lib/optim/mod.ts";
import { autocast } from "../plugins/autocast.ts";
import { gradScale } from "../plugins/grad_scale.ts";
import { loadMnist } from "../examples/data/mnist.ts";
import { type Batch, type DeviceSplit, shuffled, toDevice } from "../examples/lib/batches.ts";
import { initParams, mnistLoss, mnistStep, testMetrics } from "../examples/lib/train_mnist.ts";
import { gtest } from "./webgpu_setup.ts";

const SEED = 0;
const HIDDEN = [64];
const BATCH = 64;
const data = loadMnist({ seed: SEED, train: 8000, test: 2000 });
/** The batch-order key of the examples' runs at this seed (`trainMnist` splits the seed in 3). */
const [, orderKey] = split(key(SEED), 3);

/** A copy of `tree` on `device`, bit for bit (e.g. CPU-initialized params moved to the GPU). */
async function copyTo<T>(tree: T, device: Backend): Promise<T> {
  const arrays = await Promise.all(leaves(tree).map((t) => t.data()));
  let i = 0;
  return map((t) => tensor(arrays[i++], { shape: t.shape, dtype: t.dtype, device }), tree);
}

/** A fresh train state of the 784-64-10 MLP under `step`, its params initialized on `device`. */
function freshState(step: Step<Batch>, device: Backend): TrainState {
  const params = initParams({ seed: SEED, hidden: HIDDEN, device });
  const state = step.init(params);
  disposeReplaced(params, state); // the f32 draw, when the preset cast it
  return state;
}

/**
 * `batches`, with the GPU readback count sampled as each batch is handed out and once more when
 * the source is exhausted: `fit` asks for the next batch only after running the step on the
 * previous one, and the end comes after the last step and before `fit`'s final flush.
 */
function* sampled(
  batches: Iterable<Batch>,
  onBatch: (i: number) => void,
  onEnd: () => void,
): Generator<Batch> {
  let i = 0;
  for (const b of batches) {
    onBatch(i++);
    yield b;
  }
  onEnd();
}

/** `n` shuffled batches of 64 (epoch after epoch of the 8000 digits as needed). */
function* steps(train: DeviceSplit, n: number): Generator<Batch> {
  let done = 0;
  for (let epoch = 0; done < n; epoch++) {
    for (const b of shuffled(train, { batch: BATCH, key: orderKey, epoch })) {
      if (done++ === n) return;
      yield b;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 1. No readback during the steps of fit

const overflowing = () =>
  pipe(
    trainStep<MlpParams, Batch>({ loss: mnistLoss, optimizer: adam({ lr: 3e-3 }) }),
    autocast("f16"),
    gradScale({ initScale: 2 ** 30 }),
  );

const readbackCases: {
  name: string;
  make: () => Step<Batch>;
  /** Under gradScale: whether steps are expected to be skipped. */
  skips?: boolean;
}[] = [
  // The loss sum only.
  { name: "32-true", make: () => stepFor("32-true", 100) },
  // The loss sum, the skipped sum, and the last step's `scale` and `skipped`.
  { name: "16-mixed", make: () => stepFor("16-mixed", 100), skips: false },
  // autocast f16 + gradScale starting at 2^30: f16 gradients overflow to Inf, so the first steps
  // are skipped (selected on the device) and the scale backs off until steps go through.
  {
    name: "autocast f16 + gradScale({ initScale: 2^30 })",
    make: overflowing,
    skips: true,
  },
];

function stepFor(preset: string, totalSteps: number): Step<Batch> {
  return mnistStep(
    { precision: preset, optimizer: "adam", lr: 3e-3, schedule: "cosine" },
    totalSteps,
  );
}

for (const c of readbackCases) {
  gtest(`fit reads nothing back during 100 steps (${c.name})`, async (gpu) => {
    const train = toDevice(data.train, { device: gpu });
    const step = c.make();
    const state = freshState(step, gpu);
    const atBatch: number[] = [];
    let afterSteps = NaN;
    const before = readbackCount();
    const out = await fit(
      step,
      state,
      sampled(steps(train, 100), () => atBatch.push(readbackCount()), () => {
        afterSteps = readbackCount();
      }),
      { logEvery: 1000 },
    );
    const after = readbackCount();
    try {
      assert.equal(out.state.step, 100);
      assert.equal(atBatch.length, 100);
      // Nothing between fit's start and the end of its 100th step…
      assert.equal(atBatch[0], before);
      assert.deepEqual(atBatch, atBatch.map(() => before));
      assert.equal(afterSteps, before, "no readback during the steps");
      // …then the one flush at the end of fit (logEvery is beyond the run): one history entry.
      assert.equal(after - afterSteps, 1); // every logged value in one readback
      assert.equal(out.history.length, 1);
      const [entry] = out.history;
      assert.equal(entry.step, 100);
      assert.ok(Number.isFinite(entry.loss) && entry.loss < 2, `mean loss ${entry.loss}`);
      if (c.skips) {
        // 2^30 backs off by halves to below ~2^15 before steps go through: many skips, not all.
        assert.ok(
          entry.metrics.skipped >= 5 && entry.metrics.skipped < 50,
          `${entry.metrics.skipped}`,
        );
        assert.ok(entry.metrics.scale < 2 ** 30);
      } else if (c.skips === false) {
        assert.equal(entry.metrics.skipped, 0);
        assert.equal(entry.metrics.scale, 2 ** 16);
      }
    } finally {
      dispose([state, out.state, train]);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// 2. No leak over 500 steps

for (const preset of ["32-true", "16-mixed"]) {
  gtest(`memory(gpu) stays flat over 500 MNIST steps (${preset})`, async (gpu) => {
    const N = 500;
    const LOG = 100;
    const start = memory(gpu);
    const train = toDevice(data.train, { device: gpu });
    const step = stepFor(preset, N + 1);
    const state = freshState(step, gpu);
    const seen: { tensors: number; buffers: number; bytes: number; created: number }[] = [];
    // Sampled as each batch is handed out: after the previous step ran, its state was replaced
    // and freed, and the next batch was made. Sample k is "after step k" (sample 0: before
    // step 1); step N + 1 runs so that sample N sees the same batch bookkeeping as the others.
    const sample = () => {
      const m = memory(gpu);
      const created = gpu.poolStats().created;
      seen.push({ tensors: m.tensors, buffers: m.buffers, bytes: m.bytes, created });
    };
    const out = await fit(step, state, sampled(steps(train, N + 1), sample, () => {}), {
      logEvery: LOG,
    });
    try {
      assert.equal(out.state.step, N + 1);
      assert.equal(seen.length, N + 1);
      assert.equal(out.history.length, 6, "readbacks after steps 100, 200, … 500 and at the end");
      // fit's metric accumulators are freed by each readback (every LOG steps) and made again
      // by the next step, so after step k the live memory is exactly that after step 1, or
      // after step LOG when k is a multiple of LOG.
      const show = (k: number) => JSON.stringify(seen[k]);
      for (let k = 1; k <= N; k++) {
        const ref = seen[k % LOG === 0 ? LOG : 1];
        const s = seen[k];
        assert.ok(
          s.tensors === ref.tensors && s.buffers === ref.buffers && s.bytes === ref.bytes,
          `live memory after step ${k % LOG === 0 ? LOG : 1}: ${
            JSON.stringify(ref)
          }; after step ${k}: ${show(k)}`,
        );
      }
      assert.ok(seen[LOG].bytes <= seen[1].bytes);
      // The pool reuses buffers: once the first step and the first readback (its staging
      // buffer) have run, no new GPUBuffer is created.
      assert.equal(
        seen[N].created,
        seen[LOG].created,
        `GPUBuffers created: ${show(LOG)} → ${show(N)}`,
      );
    } finally {
      dispose([state, out.state, train]);
    }
    // And everything is freed in the end.
    const end = memory(gpu);
    assert.equal(end.tensors, start.tensors);
    assert.equal(end.bytes, start.bytes);
  });
}

// ---------------------------------------------------------------------------------------------
// 3. MNIST: WebGPU matches the CPU's test accuracy

gtest("MNIST 784-64-10: WebGPU test accuracy within 0.3 points of the CPU's", async (gpu) => {
  const EPOCHS = 2;
  const perEpoch = Math.ceil(data.train.count / BATCH);
  const cpuParams = initParams({ seed: SEED, hidden: HIDDEN, device: cpu });
  const gpuParams = await copyTo(cpuParams, gpu);
  const run = async (device: Backend, params: MlpParams) => {
    const step = stepFor("32-true", EPOCHS * perEpoch);
    const train = toDevice(data.train, { device });
    const test = toDevice(data.test, { device });
    const { state, history } = await fit(
      step,
      step.init(params),
      (epoch) => shuffled(train, { batch: BATCH, key: orderKey, epoch }),
      { epochs: EPOCHS, logEvery: perEpoch },
    );
    const t = await testMetrics(step, state, test);
    dispose([state, train, test]);
    return { ...t, losses: history.map((h) => h.loss) };
  };
  const onCpu = await run(cpu, cpuParams);
  const onGpu = await run(gpu, gpuParams);
  dispose([cpuParams, gpuParams]);
  const pts = (x: number) => (100 * x).toFixed(2);
  const msg = `cpu ${pts(onCpu.accuracy)}%, webgpu ${pts(onGpu.accuracy)}%`;
  assert.ok(onCpu.accuracy > 0.9, msg);
  assert.ok(Math.abs(onGpu.accuracy - onCpu.accuracy) <= 0.003, msg);
  // The epochs' mean training losses agree closely too.
  assert.equal(onGpu.losses.length, EPOCHS);
  onGpu.losses.forEach((l, i) =>
    assert.ok(
      Math.abs(l - onCpu.losses[i]) <= 0.01 * onCpu.losses[i],
      `epoch ${i}: ${l} vs ${onCpu.losses[i]}`,
    )
  );
  assert.ok(
    Math.abs(onGpu.loss - onCpu.loss) <= 0.02 * onCpu.loss,
    `test loss ${onGpu.loss} vs ${onCpu.loss}`,
  );
});

// ---------------------------------------------------------------------------------------------
// 4. Every preset trains on WebGPU; f64 is a clear error

const PRESET_DTYPES: [string, DType][] = [
  ["32-true", "f32"],
  ["16-mixed", "f32"],
  ["bf16-mixed", "f32"],
  ["16-true", "f16"],
  ["bf16-true", "bf16"],
];

for (const [preset, paramDtype] of PRESET_DTYPES) {
  gtest(
    `preset ${preset}: 20 steps on one batch lower its loss; params in ${paramDtype}`,
    async (gpu) => {
      // The first 64 training digits, as one batch that every step sees.
      const x = tensor(data.train.images.subarray(0, BATCH * 784), {
        shape: [BATCH, 784],
        device: gpu,
      });
      const y = tensor(data.train.labels.subarray(0, BATCH), { dtype: "i32", device: gpu });
      const step = stepFor(preset, 20);
      const state = freshState(step, gpu);
      try {
        assert.deepEqual(
          leaves(state.params).map((t) => t.dtype),
          leaves(state.params).map(() => paramDtype),
        );
        const out = await fit(step, state, Array.from({ length: 20 }, () => ({ x, y })), {
          logEvery: 1,
        });
        const losses = out.history.map((h) => h.loss);
        // The trained params keep the preset's dtype, on the GPU.
        const trained = leaves(out.state.params);
        const placed = trained.map((t) => `${t.dtype} on ${t.device.name}`);
        dispose(out.state);
        assert.deepEqual(placed, trained.map(() => `${paramDtype} on ${gpu.name}`));
        assert.equal(losses.length, 20);
        assert.ok(losses.every(Number.isFinite), `${losses}`);
        assert.ok(losses[19] < 0.5 * losses[0], `loss ${losses[0]} → ${losses[19]}`);
        assert.ok(out.history.every((h) => (h.metrics.skipped ?? 0) === 0));
      } finally {
        dispose([state, x, y]);
      }
    },
  );
}

gtest("preset 64-true: a clear error naming the cpu backend", (gpu) => {
  const step = stepFor("64-true", 10);
  const before = memory(gpu).tensors;
  const params = initParams({ seed: SEED, hidden: HIDDEN, device: gpu });
  assert.throws(() => step.init(params), (e: Error) => {
    assert.match(e.message, /f64/);
    assert.match(e.message, /cpu backend/);
    return true;
  });
  dispose(params);
  assert.equal(memory(gpu).tensors, before, "a failed init leaves nothing behind");
});

gtest("f64 tensors on WebGPU: a clear error naming the cpu backend", (gpu) => {
  const check = (e: Error) => {
    assert.match(e.message, /f64/);
    assert.match(e.message, /WebGPU/);
    assert.match(e.message, /cpu backend/);
    return true;
  };
  assert.throws(() => tensor([1], { dtype: "f64", device: gpu }), check);
  assert.throws(() => zeros([2], { dtype: "f64", device: gpu }), check);
  const x = tensor([1, 2], { device: gpu });
  assert.throws(() => astype(x, "f64"), check);
  x.dispose();
});
