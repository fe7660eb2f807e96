/**
 * 8-bit Adam against 32-bit Adam on the CPU: update throughput on a 1M-parameter tree, and
 * optimizer-state bytes per parameter (printed once). `adam8bit` runs the one-pass
 * `blockwise8bitUpdate` kernel per tensor; `adam8bit (composed)` the composed ops it is bitwise
 * equal to (`fused: false`).
 *
 * The CPU worker pool starts first (as the first matmul of a training step starts it), so the
 * long fused kernels of both split across threads; `NBIT_THREADS=1` runs them on one.
 *
 * Run: deno bench --allow-read --allow-env bench/optim8bit.bench.ts
 */
import { adam } from "../lib/optim/mod.ts";
import { adam8bit } from "../lib/optim/optim8bit.ts";
import { jit } from "../lib/jit/mod.ts";
import type { Optimizer } from "../lib/optim/types.ts";
import { dispose, memory, type Tensor, tidy } from "../lib/tensor.ts";
import { mul } from "../lib/ops/elementwise.ts";
import { leaves } from "../lib/tree.ts";
import { key, normal, split } from "../lib/random.ts";
import { wasmMatmulInfo } from "../lib/backend/cpu/wasm/matmul.ts";

// Start the worker pool and wait (up to 20 s) until its threads are up.
for (let i = 0; i < 400; i++) {
  const info = wasmMatmulInfo();
  if (!info || info.readyThreads >= info.threads) break;
  await new Promise((r) => setTimeout(r, 50));
}
console.log(`CPU threads ready: ${wasmMatmulInfo()?.readyThreads ?? 1}`);

const [k1, k2, k3, k4] = split(key(0), 4);
const params = { w1: normal(k1, [1024, 512]), w2: normal(k2, [512, 1024]) };
const grads = tidy(() => ({
  w1: mul(normal(k3, [1024, 512]), 0.01),
  w2: mul(normal(k4, [512, 1024]), 0.01),
}));
const n = leaves(params).reduce((a, t) => a + t.size, 0);

/** A state after one update (non-zero moments), and its bytes per parameter. */
function warm(opt: Optimizer): { state: unknown; bytesPerParam: number } {
  const before = memory().bytes;
  const init = opt.init(params);
  const bytesPerParam = (memory().bytes - before) / n;
  const [p, state] = tidy(() => opt.update(grads, init, params));
  dispose([p, init]);
  return { state, bytesPerParam };
}

const optimizers: Record<string, Optimizer> = {
  "adam (f32 state)": adam({ lr: 1e-3, stateDtype: "f32" }) as Optimizer,
  "adam8bit": adam8bit({ lr: 1e-3 }) as Optimizer,
  "adam8bit (composed)": adam8bit({ lr: 1e-3, fused: false }) as Optimizer,
};
const warmed = Object.fromEntries(
  Object.entries(optimizers).map(([name, opt]) => [name, warm(opt)]),
);
console.log(
  `${n} params; optimizer state bytes/param: ` +
    Object.entries(warmed).map(([name, w]) => `${name} ${w.bytesPerParam.toFixed(3)}`).join(", "),
);

for (const [name, opt] of Object.entries(optimizers)) {
  Deno.bench(`${name} update, ${(n / 2 ** 20).toFixed(0)}M params`, { group: "update" }, () => {
    const out: [unknown, unknown] = tidy(() => opt.update(grads, warmed[name].state, params));
    dispose(out as unknown as Tensor[]);
  });
}

// The same updates compiled with jit (what `fit` runs): one fused pass per tensor where it can.
for (const [name, opt] of Object.entries(optimizers)) {
  const update = jit((g: unknown, st: unknown, p: unknown) => opt.update(g, st, p));
  Deno.bench(`${name} update (jit), ${(n / 2 ** 20).toFixed(0)}M params`, {
    group: "update (jit)",
    baseline: name.startsWith("adam ("),
  }, () => {
    dispose(update(grads, warmed[name].state, params) as unknown as Tensor[]);
  });
}
