/**
 * jit on WebGPU for steps that draw random numbers and for donated states: a dropout step is
 * recorded and replayed with one submit (its keys are data: one small writeBuffer per step),
 * bitwise equal to eager; a donated state is written into the buffers it gives up, with no copy
 * in or out, bitwise equal too; memory and the GPU buffer count stay flat over 1,000 such steps.
 * WebGPU calls are counted by wrapping the WebGPU objects themselves.
 */
import nodeAssert from "node:assert/strict";
import { gtest } from "./webgpu_setup.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import * as nb from "../mod.ts";
import type { Tensor } from "../mod.ts";
import type { WebGPUBackend } from "../lib/backend/webgpu/webgpu.ts";
import { loadMnist } from "../examples/data/mnist.ts";

const { jit, trainStep, optim, nn, random, tensor } = nb;
const assert = (ok: boolean, msg?: string) => nodeAssert.ok(ok, msg);
const assertEquals = (a: unknown, b: unknown, msg?: string) =>
  nodeAssert.deepStrictEqual(a, b, msg);

async function toGpu<T>(x: T, g: WebGPUBackend): Promise<T> {
  if (x instanceof nb.Tensor) {
    return tensor(await x.data(), { shape: x.shape, dtype: x.dtype, device: g }) as T;
  }
  if (Array.isArray(x)) return await Promise.all(x.map((v) => toGpu(v, g))) as T;
  if (x && typeof x === "object") {
    const es = await Promise.all(Object.entries(x).map(async ([k, v]) => [k, await toGpu(v, g)]));
    return Object.fromEntries(es) as T;
  }
  return x;
}

const COUNTED = [
  "createBuffer",
  "createBindGroup",
  "writeBuffer",
  "submit",
  "dispatch",
  "copy",
] as const;
type Counts = Record<(typeof COUNTED)[number], number>;

/** Wrap `g`'s device, queue and the encoder prototypes; returns live counters. */
function countCalls(g: WebGPUBackend): { counts: Counts; restore: () => void } {
  const counts = Object.fromEntries(COUNTED.map((k) => [k, 0])) as Counts;
  const undo: (() => void)[] = [];
  const wrap = <O extends object>(o: O, name: string, key: keyof Counts) => {
    const rec = o as Record<string, unknown>;
    const own = Object.prototype.hasOwnProperty.call(o, name);
    const orig = rec[name] as (...a: unknown[]) => unknown;
    rec[name] = function (this: unknown, ...a: unknown[]) {
      counts[key]++;
      return orig.apply(this, a);
    };
    undo.push(() => (own ? (rec[name] = orig) : delete rec[name]));
  };
  wrap(g.device, "createBuffer", "createBuffer");
  wrap(g.device, "createBindGroup", "createBindGroup");
  wrap(g.device.queue, "writeBuffer", "writeBuffer");
  wrap(g.device.queue, "submit", "submit");
  wrap(GPUComputePassEncoder.prototype, "dispatchWorkgroups", "dispatch");
  wrap(GPUCommandEncoder.prototype, "copyBufferToBuffer", "copy");
  return { counts, restore: () => undo.reverse().forEach((f) => f()) };
}

const data = loadMnist({ train: 128, test: 0, seed: 0 });
type Batch = { x: Tensor; y: Tensor; key: nb.random.Key };
function gpuBatches(g: WebGPUBackend): Omit<Batch, "key">[] {
  return Array.from({ length: 4 }, (_, i) => ({
    x: tensor(data.train.images.subarray(i * 32 * 784, (i + 1) * 32 * 784), {
      shape: [32, 784],
      device: g,
    }),
    y: tensor(data.train.labels.subarray(i * 32, (i + 1) * 32), { dtype: "i32", device: g }),
  }));
}
/** A dropout MLP (dropout 0.25 on the hidden layer), keyed by the batch. */
const loss = (p: nb.nn.MlpParams, b: Batch) => {
  const [l0, l1] = p.layers;
  const h = nn.dropout(b.key, nb.relu(nn.linear(l0, b.x)), 0.25);
  return nn.crossEntropy(nn.linear(l1, h), b.y);
};
const keyAt = (i: number) => random.foldIn(random.key(11), i);

for (const donate of [false, true]) {
  gtest(
    `jit ≡ eager bitwise: a dropout step on the GPU, recorded${donate ? ", state donated" : ""}`,
    async (g) => {
      const batches = gpuBatches(g);
      const cpuParams = nn.mlpInit(random.key(1), [784, 32, 10]);
      const step = trainStep({ loss, optimizer: optim.adam({ lr: 3e-3 }) });
      const js = jit(step, { donate: donate ? [0] : [] });
      let se = step.init(await toGpu(cpuParams, g));
      let sj = js.init(await toGpu(cpuParams, g));
      for (let i = 0; i < 8; i++) {
        const b = { ...batches[i % 4], key: keyAt(i) };
        const [ne, me] = step(se, b);
        const [nj, mj] = js(sj, b);
        assertSameBits(await bitsOf([ne, me]), await bitsOf([nj, mj]), `step ${i}`);
        nb.disposeReplaced(se, ne);
        nb.disposeReplaced(sj, nj);
        nb.dispose([me, mj]);
        se = ne;
        sj = nj;
      }
      assertEquals(js.traces, 1);
      js.clear();
      nb.dispose([se, sj, cpuParams, batches]);
    },
  );
}

gtest(
  "jit replay of a dropout step: one submit, no bind group or buffer, one writeBuffer (keys)",
  async (g) => {
    const batches = gpuBatches(g);
    const cpuParams = nn.mlpInit(random.key(2), [784, 32, 10]);
    const per: Record<string, Counts> = {};
    for (const donate of [false, true]) {
      const step = jit(trainStep({ loss, optimizer: optim.adam() }), {
        donate: donate ? [0] : [],
      });
      let s = step.init(await toGpu(cpuParams, g));
      let i = 0;
      const one = () => {
        const [next, m] = step(s, { ...batches[i % 4], key: keyAt(i++) });
        nb.disposeReplaced(s, next);
        nb.dispose(m);
        s = next;
      };
      for (let k = 0; k < 4; k++) one(); // record, then both donated buffer sets
      await g.sync();
      const { counts, restore } = countCalls(g);
      try {
        for (let k = 0; k < 6; k++) one();
        await g.sync();
      } finally {
        restore();
      }
      const name = donate ? "donated" : "copied";
      per[name] = Object.fromEntries(COUNTED.map((k) => [k, counts[k] / 6])) as Counts;
      const c = per[name];
      assertEquals(c.submit, 1, `${name}: submits per step`);
      assertEquals(c.createBindGroup, 0, `${name}: bind groups per step`);
      assertEquals(c.createBuffer, 0, `${name}: createBuffer per step`);
      assertEquals(c.writeBuffer, 1, `${name}: writeBuffer per step (the step's key)`);
      assertEquals(c.dispatch, step.lastStats!.kernels, `${name}: dispatches per step`);
      const stateLeaves = nb.tree.leaves(s).length;
      // Copies: every input in and every output out, except a donated state (none).
      const batchIn = 2, metricsOut = 1;
      assertEquals(
        c.copy,
        donate ? batchIn + metricsOut : batchIn + metricsOut + 2 * stateLeaves,
        `${name}: copies per step (${stateLeaves} state tensors)`,
      );
      step.clear();
      nb.dispose(s);
    }
    console.log("per replay:", JSON.stringify(per));
    nb.dispose([cpuParams, batches]);
  },
);

gtest(
  "jit: memory() and the GPU buffer count flat over 1,000 donated dropout steps",
  async (g) => {
    const batches = gpuBatches(g);
    const cpuParams = nn.mlpInit(random.key(3), [784, 16, 10]);
    const step = jit(trainStep({ loss, optimizer: optim.adam() }), { donate: [0] });
    let s = step.init(await toGpu(cpuParams, g));
    let i = 0;
    const run = (n: number) => {
      for (let k = 0; k < n; k++) {
        const [next, m] = step(s, { ...batches[i % 4], key: keyAt(i++) });
        nb.dispose(m);
        s = next;
      }
    };
    run(10);
    await g.sync();
    const before = nb.memory(g);
    const created = g.poolStats().created;
    for (let k = 0; k < 10; k++) {
      run(100);
      await g.sync();
    }
    const after = nb.memory(g);
    assertEquals([after.tensors, after.bytes], [before.tensors, before.bytes]);
    assertEquals(g.poolStats().created, created, "no new GPU buffers after the first steps");
    const w = await nb.tree.leaves(s.params)[0].data();
    assert(w.every(Number.isFinite), "the trained weights are finite");
    step.clear();
    nb.dispose([s, cpuParams, batches]);
  },
);

gtest("jit donation on the GPU: an input returned unchanged, and one passed twice", async (g) => {
  const f = jit((s: { a: Tensor; b: Tensor }) => ({ a: nb.add(s.a, 1), b: s.b }), {
    donate: [0],
  });
  const before = nb.memory(g).tensors;
  let s = { a: tensor([1, 2], { device: g }), b: tensor([5, 6], { device: g }) };
  for (let i = 0; i < 4; i++) {
    const prev = s;
    s = f(s);
    assert(prev.a.disposed && prev.b.disposed, "donated tensors are retired");
  }
  assertEquals(Array.from(await s.a.data()), [5, 6]);
  assertEquals(Array.from(await s.b.data()), [5, 6]);
  const h = jit((x: Tensor, y: Tensor) => nb.mul(nb.add(x, y), 2), { donate: [0] });
  for (let i = 0; i < 3; i++) {
    const x = tensor([1, 2, 3], { device: g });
    const out = h(x, x);
    assertEquals(Array.from(await out.data()), [4, 8, 12]);
    await nodeAssert.rejects(() => x.data(), /donated to a jitted call/);
    out.dispose();
  }
  nb.dispose(s);
  f.clear();
  h.clear();
  assertEquals(nb.memory(g).tensors, before, "nothing leaked");
});
