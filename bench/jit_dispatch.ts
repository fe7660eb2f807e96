/**
 * WebGPU calls per train step, eager vs jit, on the demo MLP (784-512-512-10, batch 128, Adam):
 * dispatches, submits, bind groups, writeBuffers, buffers and pipelines created, and compute
 * passes, counted by wrapping the WebGPU objects themselves (GPUDevice, GPUQueue,
 * GPUCommandEncoder, GPUComputePassEncoder), not by trusting counters inside nbit. Each row is
 * the mean over `STEPS` steps after `WARM` warm-up steps (the first jitted call traces and
 * records). Prints a markdown table.
 *
 * Run: `DENO_WEBGPU_BACKEND=vulkan XDG_RUNTIME_DIR=/tmp deno run -A bench/jit_dispatch.ts`
 * (`--schedule` also prints each jitted program's kernels, one line each)
 *
 * @module
 */
import * as nb from "../mod.ts";
import type { Tensor } from "../mod.ts";
import type { MlpParams } from "../lib/nn/mod.ts";
import { webgpu, type WebGPUBackend } from "../lib/backend/webgpu/webgpu.ts";

const { jit, precision, trainStep, optim, nn, random, tensor } = nb;
const WARM = 3;
const STEPS = 5;

interface Counts {
  dispatch: number;
  submit: number;
  bindGroup: number;
  writeBuffer: number;
  createBuffer: number;
  pipeline: number;
  pass: number;
}

const counts: Counts = {
  dispatch: 0,
  submit: 0,
  bindGroup: 0,
  writeBuffer: 0,
  createBuffer: 0,
  pipeline: 0,
  pass: 0,
};

/** Wrap a method of `o` (an object or a prototype) so that each call bumps `counts[key]`. */
function count<O extends object>(o: O, name: string, key: keyof Counts): void {
  const rec = o as Record<string, unknown>;
  const orig = rec[name] as (...a: unknown[]) => unknown;
  rec[name] = function (this: unknown, ...a: unknown[]) {
    counts[key]++;
    return orig.apply(this, a);
  };
}

const gpu: WebGPUBackend = await webgpu();
count(gpu.device, "createBindGroup", "bindGroup");
count(gpu.device, "createBuffer", "createBuffer");
count(gpu.device, "createComputePipeline", "pipeline");
count(gpu.device.queue, "writeBuffer", "writeBuffer");
count(gpu.device.queue, "submit", "submit");
count(GPUCommandEncoder.prototype, "beginComputePass", "pass");
count(GPUComputePassEncoder.prototype, "dispatchWorkgroups", "dispatch");

const [kx, kp] = random.split(random.key(0), 2);
const x = random.normal(kx, [128, 784], { device: gpu });
const y = tensor(Int32Array.from({ length: 128 }, (_, i) => i % 10), {
  dtype: "i32",
  device: gpu,
});
const cpuParams = nn.mlpInit(kp, [784, 512, 512, 10]);
/** A bit-for-bit copy of a CPU tree on the GPU. */
async function toGpu(v: unknown): Promise<unknown> {
  if (v instanceof nb.Tensor) {
    return tensor(await v.data(), { shape: v.shape, dtype: v.dtype, device: gpu });
  }
  if (Array.isArray(v)) return await Promise.all(v.map(toGpu));
  if (v && typeof v === "object") {
    return Object.fromEntries(
      await Promise.all(Object.entries(v).map(async ([k, e]) => [k, await toGpu(e)])),
    );
  }
  return v;
}
const params = await toGpu(cpuParams) as MlpParams;
const loss = (p: MlpParams, b: { x: Tensor; y: Tensor }) => nn.crossEntropy(nn.mlp(p, b.x), b.y);

const configs: [string, nb.PresetName, () => nb.Optimizer][] = [
  ["32-true", "32-true", () => optim.adam({ lr: 1e-3 })],
  ["16-mixed", "16-mixed", () => optim.adam({ lr: 1e-3 })],
  ["bf16-mixed", "bf16-mixed", () => optim.adam({ lr: 1e-3 })],
  ["fp8-mixed", "fp8-mixed", () => optim.adam({ lr: 1e-3 })],
  ["32-true + adam8bit", "32-true", () => optim.adam8bit({ lr: 1e-3 })],
];

async function measure(step: nb.Step<{ x: Tensor; y: Tensor }>): Promise<Counts> {
  let s = step.init(params);
  const one = () => {
    const [next, m] = step(s, { x, y });
    if (s.step > 0) nb.disposeReplaced(s, next);
    nb.dispose(m);
    s = next;
  };
  for (let i = 0; i < WARM; i++) one();
  await gpu.sync();
  const start = { ...counts };
  for (let i = 0; i < STEPS; i++) one();
  await gpu.sync();
  const per = Object.fromEntries(
    Object.keys(counts).map((k) => {
      const key = k as keyof Counts;
      return [key, (counts[key] - start[key]) / STEPS];
    }),
  ) as unknown as Counts;
  nb.dispose(s);
  return per;
}

const cols: (keyof Counts)[] = [
  "dispatch",
  "submit",
  "bindGroup",
  "writeBuffer",
  "createBuffer",
  "pipeline",
  "pass",
];
const rows: string[] = [];
for (const [name, preset, opt] of configs) {
  const eager = precision(preset)(trainStep({ loss, optimizer: opt() }));
  const jitted = jit(precision(preset)(trainStep({ loss, optimizer: opt() })));
  const e = await measure(eager);
  const j = await measure(jitted);
  const st = jitted.lastStats!;
  if (Deno.args.includes("--schedule")) {
    console.log(`${name}: ${st.kernels} kernels\n  ${st.schedule.join("\n  ")}`);
  }
  rows.push(
    `| ${name} | ${cols.map((c) => `${e[c]} → **${j[c]}**`).join(" | ")} | ` +
      `${st.kernels} (${st.fused} fused) |`,
  );
  jitted.clear();
}

console.log(
  `WebGPU calls per Adam step, MLP 784-512-512-10, batch 128, on ${gpu.name}; ` +
    `eager → **jit**, mean of ${STEPS} steps after ${WARM} warm-up steps, counted by wrapping ` +
    "GPUDevice/GPUQueue/GPUCommandEncoder/GPUComputePassEncoder methods.\n",
);
console.log(
  "| config | dispatches | submits | bind groups | writeBuffer | createBuffer | pipelines | " +
    "compute passes | jit kernels |",
);
console.log("|---|---|---|---|---|---|---|---|---|");
for (const r of rows) console.log(r);
