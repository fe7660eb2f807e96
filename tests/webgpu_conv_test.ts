/**
 * conv2d, conv1d, maxPool2d, avgPool2d and pad on WebGPU equal the CPU backend: forward and
 * gradients in f32 within the matmul accumulation bound (k·ε·Σ|terms|; the backends may
 * accumulate in different orders and precisions), pooling and pad forward bitwise (no
 * accumulation in max or pad), and jit ≡ eager bitwise on the GPU.
 */
import assert from "node:assert/strict";
import * as nb from "../mod.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import { gtest } from "./webgpu_setup.ts";

async function to(t: nb.Tensor, device: nb.Backend): Promise<nb.Tensor> {
  return nb.tensor(await t.data(), { dtype: t.dtype, shape: t.shape, device });
}

interface P {
  w1: nb.Tensor;
  b1: nb.Tensor;
  w2: nb.Tensor;
}

const model = (x: nb.Tensor) => (q: P) => {
  let h = nb.relu(nb.conv2d(x, q.w1, { bias: q.b1, padding: "same", dilation: [1, 2] }));
  h = nb.maxPool2d(h, 3, { stride: 2, padding: 1 });
  h = nb.conv2d(h, q.w2, { stride: [2, 1], padding: 1, groups: 2 });
  return nb.mean(nb.square(nb.avgPool2d(nb.pad(h, [1, 0, 0, 1]), 2)));
};

/** Every |a − b| ≤ bound · (1 + |b|): an f32 accumulation bound for these small sums. */
function within(a: ArrayLike<number>, b: ArrayLike<number>, bound: number, what: string) {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    if (!(Math.abs(a[i] - b[i]) <= bound * (1 + Math.abs(b[i])))) {
      throw new Error(`${what}: element ${i}: webgpu ${a[i]} vs cpu ${b[i]}`);
    }
  }
}

gtest("conv2d/pools/pad: forward and gradients equal the CPU's (f32)", async (gpu) => {
  const cpuP: P = {
    w1: nb.random.normal(nb.random.key(1), [8, 3, 3, 3]),
    b1: nb.random.normal(nb.random.key(2), [8]),
    w2: nb.random.normal(nb.random.key(3), [4, 4, 3, 3]),
  };
  const cx = nb.random.normal(nb.random.key(4), [2, 3, 13, 12]);
  const gP: P = {
    w1: await to(cpuP.w1, gpu),
    b1: await to(cpuP.b1, gpu),
    w2: await to(cpuP.w2, gpu),
  };
  const gx = await to(cx, gpu);
  const [cl, cg] = nb.valueAndGrad(model(cx))(cpuP);
  const [gl, gg] = nb.valueAndGrad(model(gx))(gP);
  // k ≤ 4·3·3 = 36 terms per output, 2 convolutions deep: 36·2⁻²⁴·(a few) ≈ 1e-5.
  const eps = 2 ** -24 * 36 * 8;
  within(await gl.data(), await cl.data(), eps, "loss");
  for (const k of ["w1", "b1", "w2"] as const) {
    within(await gg[k].data(), await cg[k].data(), eps * 16, `grad ${k}`);
  }
  // No accumulation: max pooling and pad are bitwise equal across backends.
  const mp = (t: nb.Tensor) => nb.maxPool2d(nb.pad(t, [2, -1, 0, 1], { value: -0.5 }), [3, 2]);
  assert.deepEqual(Array.from(await mp(gx).data()), Array.from(await mp(cx).data()));
  const c1 = (t: nb.Tensor, w: nb.Tensor) =>
    nb.conv1d(nb.reshape(t, [2, 3, 156]), w, { stride: 3, padding: 2 });
  const w1d = nb.random.normal(nb.random.key(5), [5, 3, 4]);
  within(await c1(gx, await to(w1d, gpu)).data(), await c1(cx, w1d).data(), eps, "conv1d");
});

gtest("conv2d/pools: jit ≡ eager bitwise on WebGPU", async (gpu) => {
  const p: P = {
    w1: await to(nb.random.normal(nb.random.key(6), [8, 3, 3, 3]), gpu),
    b1: await to(nb.random.normal(nb.random.key(7), [8]), gpu),
    w2: await to(nb.random.normal(nb.random.key(8), [4, 4, 3, 3]), gpu),
  };
  const x = await to(nb.random.normal(nb.random.key(9), [2, 3, 13, 12]), gpu);
  const f = (q: P, xx: nb.Tensor) => nb.valueAndGrad(model(xx))(q);
  const eager = await bitsOf(f(p, x));
  const jitted = nb.jit(f);
  assertSameBits(eager, await bitsOf(jitted(p, x)), "webgpu conv jit");
  assertSameBits(eager, await bitsOf(jitted(p, x)), "webgpu conv jit (replay)");
});
