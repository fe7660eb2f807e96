/**
 * The f32 bias correction `1 − bᵗ` runs the same ops on WebGPU as on the CPU (integer index
 * arithmetic, gathers, and f32 +, −, ×, which WGSL requires correctly rounded), so both give
 * the same bits; checked over t = 1…2^16, the split boundaries and large t. f32 Adam steps on
 * the GPU then match the CPU's to f32 rounding.
 */
import assert from "node:assert/strict";
import { gtest } from "./webgpu_setup.ts";
import { dispose, memory, type Tensor, tensor, tidy } from "../lib/tensor.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { oneMinusPow } from "../lib/optim/bias_correction.ts";
import { adam } from "../lib/optim/mod.ts";
import type { Backend } from "../lib/backend/backend.ts";

async function on(dev: Backend, b: number, ts: Float32Array): Promise<Float32Array> {
  const r = tidy(() => oneMinusPow(b, tensor(ts, { device: dev })));
  const out = Float32Array.from(await r.data());
  r.dispose();
  return out;
}

gtest("oneMinusPow: WebGPU ≡ CPU bitwise for t = 1…2^16 and large t, several betas", async (g) => {
  const before = memory(g).tensors;
  const ts = Float32Array.from([
    ...Array.from({ length: 1 << 16 }, (_, i) => i + 1),
    1e5,
    123457,
    1e6,
    4194305,
    1e7,
    2 ** 24,
  ]);
  for (const b of [0.9, 0.999, 0.99, 0.9999, 0.99999, 0.5]) {
    const [c, w] = [await on(cpu, b, ts), await on(g, b, ts)];
    for (let i = 0; i < ts.length; i++) {
      if (!Object.is(c[i], w[i])) assert.fail(`b = ${b}, t = ${ts[i]}: cpu ${c[i]}, gpu ${w[i]}`);
    }
  }
  assert.equal(memory(g).tensors, before);
});

gtest(
  "f32 adam: 5 steps on WebGPU match the CPU to f32 rounding (bias correction included)",
  async (g) => {
    const run = async (dev: Backend) => {
      const opt = adam({ lr: 0.05, weightDecay: 0.1 });
      let p: Tensor = tensor([0.5, -1, 0.25, 2], { device: dev });
      let s = opt.init(p);
      for (let i = 0; i < 5; i++) {
        const grad = tensor([0.1 * i - 0.2, 0.3, -0.05 * i, 0.7], { device: dev });
        const [p2, s2] = opt.update(grad, s, p);
        dispose([grad, p, s]);
        [p, s] = [p2, s2];
      }
      const out = Array.from(await p.data());
      dispose([p, s]);
      return out;
    };
    // sqrt and div may be a few ulps off on a GPU (WGSL allows it): compare to 1e-6, not bits.
    const [gp, cp] = [await run(g), await run(cpu)];
    gp.forEach((v, i) =>
      assert.ok(Math.abs(v - cp[i]) <= 1e-6 * Math.abs(cp[i]), `${v} vs ${cp[i]}`)
    );
  },
);
