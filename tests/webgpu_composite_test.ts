/**
 * The composite ops, losses, random.categorical and the new optimizers on WebGPU: each run on
 * the GPU equals the CPU run (bitwise for ops made only of exact arithmetic and movement:
 * tril/triu, split/chunk, clip, cumsum, logical ops; within a few f32 ulps where log, exp or
 * sigmoid take part), gradients included, and jit ≡ eager bitwise on the GPU.
 */
import assert from "node:assert/strict";
import * as nb from "../mod.ts";
import type { Backend, Tensor } from "../mod.ts";
import { gtest } from "./webgpu_setup.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";

/** One function of (x, t, y) → a tree of tensors, run on a device. */
type Case = (x: Tensor, t: Tensor, y: Tensor) => Tensor[];

const EXACT: [string, Case][] = [
  ["tril/triu", (x) => [nb.tril(x), nb.triu(x, 1), nb.tril(x, -2)]],
  ["split/chunk", (x) => [...nb.split(x, [1, 3, 2], -1), ...nb.chunk(x, 3, 0)]],
  ["clip", (x, t) => [nb.clip(x, -0.5, 0.5), nb.clip(x, t, undefined), nb.clip(x, undefined, 0)]],
  ["cumsum", (x) => [nb.cumsum(x), nb.cumsum(x, 0)]],
  ["logical", (x, t) => [nb.logicalAnd(nb.greater(x, 0), t), nb.logicalOr(nb.less(x, -1), t)]],
  ["grad tril·cumsum·clip·split", (x) => {
    const f = (v: Tensor) =>
      nb.sum(
        nb.mul(nb.cumsum(nb.tril(nb.clip(v, -1, 1))), nb.concat(nb.split(v, 3, -1).reverse(), -1)),
      );
    return [nb.grad(f)(x)];
  }],
];

const CLOSE: [string, Case][] = [
  ["softplus/silu", (x) => [nb.softplus(nb.mul(x, 30)), nb.silu(x)]],
  ["variance/std", (x) => [nb.variance(x, { axis: -1 }), nb.std(x, { correction: 0 })]],
  ["losses", (x, t, y) => [
    nb.nn.binaryCrossEntropyWithLogits(x, nb.astype(t, "f32")),
    nb.nn.nllLoss(nb.logSoftmax(x), y, { ignoreIndex: 1 }),
    nb.nn.crossEntropy(x, y, { labelSmoothing: 0.1 }),
  ]],
  ["grads of softplus, silu, std and the losses", (x, t, y) => {
    const f = (v: Tensor) =>
      nb.add(
        nb.add(nb.sum(nb.softplus(v)), nb.sum(nb.silu(v))),
        nb.add(nb.std(v), nb.nn.crossEntropy(v, y, { labelSmoothing: 0.2, ignoreIndex: 1 })),
      );
    return [
      nb.grad(f)(x),
      nb.grad((v: Tensor) => nb.nn.binaryCrossEntropyWithLogits(v, nb.astype(t, "f32")))(x),
    ];
  }],
];

/** Inputs drawn on the CPU (normal samples differ in the last ulps across backends), copied. */
async function inputs(device: Backend) {
  const to = async (t: Tensor) => {
    if (device === nb.cpu) return t;
    const c = nb.tensor(await t.data(), { dtype: t.dtype, shape: t.shape, device });
    t.dispose();
    return c;
  };
  const x = await to(nb.random.normal(nb.random.key(21), [6, 6]));
  const t = await to(nb.random.bernoulli(nb.random.key(22), 0.5, [6, 6]));
  const y = await to(nb.tensor([0, 1, 5, 2, 1, 3], { dtype: "i32" }));
  return { x, t, y };
}

async function runOn(device: Backend, c: Case): Promise<number[][]> {
  const { x, t, y } = await inputs(device);
  const out = nb.tidy(() => c(x, t, y));
  const bits = await Promise.all(out.map(async (o) => Array.from(await o.data())));
  nb.dispose([x, t, y, ...out]);
  return bits;
}

for (const [name, c] of EXACT) {
  gtest(`${name}: bitwise equal to the CPU`, async (g) => {
    const before = nb.memory().tensors;
    const [a, b] = [await runOn(nb.cpu, c), await runOn(g, c)];
    assertSameBits(a, b, name);
    assert.equal(nb.memory().tensors, before);
  });
}

for (const [name, c] of CLOSE) {
  gtest(`${name}: equal to the CPU within 8 f32 ulps`, async (g) => {
    const before = nb.memory().tensors;
    const [a, b] = [await runOn(nb.cpu, c), await runOn(g, c)];
    a.forEach((row, i) =>
      row.forEach((v, j) => {
        const tol = 8 * 2 ** -23 * Math.max(Math.abs(v), 1e-3);
        assert.ok(Math.abs(v - b[i][j]) <= tol, `${name} [${i}][${j}]: cpu ${v} gpu ${b[i][j]}`);
      })
    );
    assert.equal(nb.memory().tensors, before);
  });
}

gtest("random.categorical on the GPU: reproducible, the CPU's draws, jit ≡ eager", async (g) => {
  const before = nb.memory().tensors;
  const host = [[0, Math.log(2), Math.log(5), -Infinity], [3, 3, 3, 3]];
  const lc = nb.tensor(host);
  const lg = nb.tensor(host, { device: g });
  const k = nb.random.key(8);
  const a = nb.random.categorical(k, lc, { shape: [512, 2] });
  const b = nb.random.categorical(k, lg, { shape: [512, 2] });
  const b2 = nb.random.categorical(k, lg, { shape: [512, 2] });
  const jc = nb.jit((key: nb.random.Key, l: Tensor) =>
    nb.random.categorical(key, l, { shape: [512, 2] })
  );
  const j = jc(k, lg);
  assert.equal(b.device, g);
  assert.deepEqual(await b.bits(), await b2.bits());
  assert.deepEqual(await j.bits(), await b.bits());
  // Gumbel noise goes through log on both: a draw may differ only at a near-tie.
  const [ca, cb] = [await a.data(), await b.data()];
  const differ = ca.filter((v, i) => v !== cb[i]).length;
  assert.ok(differ <= 2, `${differ} of 1024 draws differ between CPU and GPU`);
  assert.ok(!Array.from(cb).some((v, i) => i % 2 === 0 && v === 3), "-Infinity drawn");
  jc.clear();
  nb.dispose([lc, lg, a, b, b2, j]);
  assert.equal(nb.memory().tensors, before);
});

gtest(
  "rmsprop and lion (masked) on the GPU: jit ≡ eager bitwise, and the CPU's params within 1e-5",
  async (g) => {
    const before = nb.memory().tensors;
    for (
      const optimizer of [
        nb.optim.rmsprop({ lr: 1e-2, momentum: 0.9, centered: true }),
        nb.optim.lion({ lr: 1e-3, weightDecay: 0.1, mask: nb.optim.decayMatrices }),
      ]
    ) {
      const results: number[][][] = [];
      for (const device of [nb.cpu, g] as Backend[]) {
        const copy = (t: Tensor) =>
          device === nb.cpu
            ? t
            : t.data().then((d) => nb.tensor(d, { dtype: t.dtype, shape: t.shape, device }));
        const host = nb.nn.mlpInit(nb.random.key(3), [4, 8, 3]);
        const hostX = nb.random.normal(nb.random.key(4), [16, 4]);
        const params = {
          layers: await Promise.all(
            host.layers.map(async (l) => ({ w: await copy(l.w), b: await copy(l.b!) })),
          ),
        } as nb.nn.MlpParams;
        const x = await copy(hostX);
        if (device !== nb.cpu) nb.dispose([host, hostX] as never);
        const y = nb.tensor(Int32Array.from({ length: 16 }, (_, i) => i % 3), {
          dtype: "i32",
          device,
        });
        const batch = { x, y };
        const eager = nb.trainStep({
          loss: (p: nb.nn.MlpParams, b: typeof batch) => nb.nn.crossEntropy(nb.nn.mlp(p, b.x), b.y),
          optimizer,
        });
        const jitted = nb.jit(eager);
        const all: unknown[] = [params, batch];
        let s = eager.init(params), sj = jitted.init(params);
        all.push(s, sj);
        for (let i = 0; i < 3; i++) {
          const [n1, m1] = eager(s, batch);
          const [n2, m2] = jitted(sj, batch);
          all.push(n1, m1, n2, m2);
          [s, sj] = [n1, n2];
        }
        assertSameBits(await bitsOf(s), await bitsOf(sj), `jit on ${device.name}`);
        results.push(
          await Promise.all(nb.tree.leaves(s.params).map(async (t) => Array.from(await t.data()))),
        );
        jitted.clear();
        nb.dispose([...new Set(nb.tree.leaves(all))]);
      }
      results[0].forEach((row, i) =>
        row.forEach((v, j) => assert.ok(Math.abs(v - results[1][i][j]) <= 1e-5, `param ${i}[${j}]`))
      );
    }
    assert.equal(nb.memory().tensors, before);
  },
);
