/**
 * The WebGPU backend end to end through the ops: a gradient through a small MLP equals the
 * CPU's, ops only enqueue (mapAsync only on explicit reads), pooled memory stays flat over a
 * long tidy loop, and a lost device gives a clear error instead of a hang.
 * (Kernel-by-kernel equivalence with the CPU is in webgpu_test.ts.)
 */
import assert from "node:assert/strict";
import type { Backend } from "../lib/backend/backend.ts";
import { cpu as cpuDevice } from "../lib/backend/cpu/cpu.ts";
import { readbackCount, webgpu } from "../lib/backend/webgpu/webgpu.ts";
import { valueAndGrad } from "../lib/autodiff.ts";
import { memory, type Tensor, tensor, tidy } from "../lib/tensor.ts";
import {
  add,
  astype,
  concat,
  exp,
  logSoftmax,
  matmul,
  mean,
  mul,
  oneHot,
  relu,
  slice,
  sum,
  tanh,
  transpose,
} from "../lib/ops/mod.ts";
import * as random from "../lib/random.ts";
import { gtest } from "./webgpu_setup.ts";

/** Copy a tensor to another device (through the host). */
async function to(t: Tensor, device: Backend): Promise<Tensor> {
  return tensor(await t.data(), { dtype: t.dtype, shape: t.shape, device });
}

interface Params {
  w1: Tensor;
  b1: Tensor;
  w2: Tensor;
}

function mlpLoss(p: Params, x: Tensor, y: Tensor): Tensor {
  const h = tanh(add(matmul(x, p.w1), p.b1));
  const z = matmul(relu(h), p.w2);
  return mul(mean(sum(mul(logSoftmax(z), y), -1)), -1);
}

gtest("grad of a small MLP on webgpu equals the cpu within 1e-5", async (g) => {
  const [k1, k2, k3, k4] = random.split(random.key(7), 4);
  const cpuP: Params = {
    w1: mul(random.normal(k1, [6, 16]), 0.4),
    b1: mul(random.normal(k2, [16]), 0.1),
    w2: mul(random.normal(k3, [16, 5]), 0.3),
  };
  const x = random.normal(k4, [8, 6]);
  const y = oneHot(tensor([0, 1, 2, 3, 4, 0, 1, 2], { dtype: "i32" }), 5);
  const gpuP: Params = {
    w1: await to(cpuP.w1, g),
    b1: await to(cpuP.b1, g),
    w2: await to(cpuP.w2, g),
  };
  const f = valueAndGrad(mlpLoss);
  const [lc, gc] = f(cpuP, x, y);
  const [lg, gg] = f(gpuP, await to(x, g), await to(y, g));
  assert.equal(lg.device, g);
  assert.ok(Math.abs((await lc.item()) - (await lg.item())) <= 1e-5);
  for (const name of ["w1", "b1", "w2"] as const) {
    const a = await gc[name].data();
    const b = await gg[name].data();
    for (let i = 0; i < a.length; i++) {
      assert.ok(
        Math.abs(a[i] - b[i]) <= 1e-5 + 1e-4 * Math.abs(a[i]),
        `${name}[${i}]: ${a[i]} vs ${b[i]}`,
      );
    }
  }
});

gtest("ops only enqueue: no mapAsync across 100 ops, exactly one per explicit read", async (g) => {
  const x = random.uniform(random.key(1), [64, 64], { device: g });
  await x.data(); // compile and warm up
  const before = readbackCount();
  let y = x;
  for (let i = 0; i < 100; i++) {
    const next = i % 4 === 0
      ? matmul(y, x)
      : i % 4 === 1
      ? tanh(y)
      : i % 4 === 2
      ? add(transpose(y), exp(mul(y, -1)))
      : mul(astype(astype(y, "bf16"), "f32"), 0.5);
    if (y !== x) y.dispose();
    y = next;
  }
  const s = sum(y);
  assert.equal(readbackCount(), before, "enqueuing ops must not read back");
  await s.item();
  assert.equal(readbackCount(), before + 1, "one read, one mapAsync");
  await y.data();
  assert.equal(readbackCount(), before + 2);
});

gtest("pooled memory stays flat over 500 iterations of a tidy loop", async (g) => {
  const w = random.normal(random.key(2), [32, 32], { device: g, dtype: "f16" });
  const b = random.normal(random.key(3), [32], { device: g });
  let state = random.normal(random.key(4), [8, 32], { device: g });
  const step = () =>
    tidy(() => {
      const h = tanh(add(astype(matmul(astype(state, "f16"), w), "f32"), b));
      const joined = concat([slice(h, [0, 0], [8, 16]), slice(h, [0, 16], [8, 16])], 1);
      return mul(add(joined, state), 0.5);
    });
  const advance = () => {
    const next = step();
    state.dispose();
    state = next;
  };
  for (let i = 0; i < 20; i++) advance();
  await state.data();
  const mem0 = memory(g);
  const pool0 = g.poolStats();
  for (let i = 0; i < 500; i++) advance();
  await state.data();
  const mem1 = memory(g);
  const pool1 = g.poolStats();
  assert.equal(mem1.buffers, mem0.buffers, "live buffers");
  assert.equal(mem1.bytes, mem0.bytes, "live bytes");
  assert.equal(mem1.tensors, mem0.tensors, "live tensors");
  assert.equal(pool1.created, pool0.created, "no new GPUBuffers after warm-up: the pool reuses");
  assert.equal(pool1.inUse, pool0.inUse, "GPU buffers in use");
});

gtest("a lost device gives a clear error on the next use, not a hang", async () => {
  const d = await webgpu();
  const t = tensor([1, 2, 3], { device: d });
  const u = add(t, 1);
  d.device.destroy();
  await d.device.lost;
  assert.throws(() => add(u, 1), /was lost/);
  await assert.rejects(() => u.data(), /was lost/);
});

gtest(
  "2-D dispatch: a device capped at 16 workgroups per dimension gives the same results",
  async () => {
    const small = await webgpu({ maxWorkgroupsPerDimension: 16 });
    const check = async (f: (d: Backend) => Tensor, tol = 0) => {
      const want = await f(cpuDevice).data();
      const got = await f(small).data();
      assert.equal(got.length, want.length);
      for (let i = 0; i < want.length; i++) {
        assert.ok(
          Math.abs(want[i] - got[i]) <= tol * Math.max(1, Math.abs(want[i])),
          `[${i}]: ${want[i]} vs ${got[i]}`,
        );
      }
    };
    const k = random.key(11);
    // 40000 f32 elements = 157 workgroups of 256: a 10×16 grid.
    await check((d) => add(random.uniform(k, [40000], { device: d }), 1));
    await check((d) => astype(random.uniform(k, [40000], { device: d, dtype: "f16" }), "f32"));
    // 200 long rows: the workgroup-tree reduction with 200 workgroups.
    await check((d) => sum(random.bernoulli(k, 0.5, [200, 300], { device: d }), 1));
    // 20 batches > 16: the batch loop on the z axis.
    await check((d) =>
      matmul(
        random.uniform(k, [20, 8, 8], { device: d }),
        random.uniform(k, [20, 8, 8], { device: d }),
      ), 1e-6);
    small.device.destroy();
  },
);

gtest("matmul: both register blocks (4×4 and 8×8) agree with the cpu on odd shapes", async () => {
  const shapes: [number, number, number, number][] = [[1, 1, 1, 1], [3, 67, 5, 129], [
    2,
    130,
    33,
    9,
  ]];
  for (const matmulBlock of [4, 8] as const) {
    const dev = await webgpu({ matmulBlock });
    for (const [batch, m, k, n] of shapes) {
      for (const dtype of ["f32", "f16"] as const) {
        const a = random.normal(random.key(m), [batch, m, k], { dtype });
        const b = random.normal(random.key(n), [k, n], { dtype });
        const want = await matmul(a, b).data();
        const ga = tensor(await a.data(), { dtype, shape: a.shape, device: dev });
        const gb = tensor(await b.data(), { dtype, shape: b.shape, device: dev });
        const got = await matmul(ga, gb).data();
        for (let i = 0; i < want.length; i++) {
          const tol = (dtype === "f16" ? 2 ** -10 : 2 ** -20) * (k + 2) * 4 + 1e-6;
          assert.ok(
            Math.abs(got[i] - want[i]) <= tol * Math.max(1, Math.abs(want[i])),
            `block ${matmulBlock} ${dtype} [${batch},${m},${k}]x[${k},${n}] at ${i}: ` +
              `${got[i]} vs ${want[i]}`,
          );
        }
      }
    }
    dev.device.destroy();
  }
});
