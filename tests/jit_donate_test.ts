/**
 * jit donation and random steps on the CPU: a donated state gives the same bits as eager
 * execution, the donated tensors are retired with an error naming donation, the program frees
 * them during the call (flat memory and heap over 1,000 steps), a donated input
 * returned unchanged or passed twice stays correct, `fit` donates the states it replaces, and a
 * dropout step (random draws from a per-step key) is jitted bitwise equal to eager.
 */
import nodeAssert from "node:assert/strict";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import * as nb from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { heapStats } from "../lib/backend/cpu/heap.ts";
import { loadMnist } from "../examples/data/mnist.ts";

const { jit, trainStep, optim, nn, random, tensor } = nb;
const assert = (ok: boolean, msg?: string) => nodeAssert.ok(ok, msg);
const assertEquals = (a: unknown, b: unknown, msg?: string) =>
  nodeAssert.deepStrictEqual(a, b, msg);

const data = loadMnist({ train: 128, test: 0, seed: 0 });
type Batch = { x: Tensor; y: Tensor; key: nb.random.Key };
const batches: Batch[] = Array.from({ length: 4 }, (_, i) => ({
  x: tensor(data.train.images.subarray(i * 32 * 784, (i + 1) * 32 * 784), { shape: [32, 784] }),
  y: tensor(data.train.labels.subarray(i * 32, (i + 1) * 32), { dtype: "i32" }),
  key: random.key(100 + i),
}));
/** A dropout MLP: 784-32-10, dropout 0.25 on the hidden layer, keyed by the batch. */
const dropoutLoss = (p: nb.nn.MlpParams, b: Batch) => {
  const [l0, l1] = p.layers;
  const h = nn.dropout(b.key, nb.relu(nn.linear(l0, b.x)), 0.25);
  return nn.crossEntropy(nn.linear(l1, h), b.y);
};
const plainLoss = (p: nb.nn.MlpParams, b: Batch) => nn.crossEntropy(nn.mlp(p, b.x), b.y);
/** A different key per step (the key is data: no retrace). */
const batchAt = (i: number): Batch => ({ ...batches[i % 4], key: random.foldIn(random.key(7), i) });

/** Run eager and jitted steps side by side and compare bitwise; `jitted` may donate. */
async function compare(
  step: nb.Step<Batch>,
  js: nb.JittedStep<Batch>,
  steps: number,
  what: string,
): Promise<void> {
  const params = nn.mlpInit(random.key(1), [784, 32, 10]);
  let se = step.init(params);
  let sj = js.init(nn.mlpInit(random.key(1), [784, 32, 10]));
  for (let i = 0; i < steps; i++) {
    const b = batchAt(i);
    const [ne, me] = step(se, b);
    const [nj, mj] = js(sj, b);
    assertSameBits(await bitsOf([ne, me]), await bitsOf([nj, mj]), `${what} step ${i}`);
    if (i > 0) nb.disposeReplaced(se, ne);
    nb.disposeReplaced(sj, nj); // no-op for donated tensors (already retired)
    nb.dispose([me, mj]);
    se = ne;
    sj = nj;
  }
  assertEquals(js.traces, 1, `${what}: one trace`);
  js.clear();
  nb.dispose([se, sj, params]);
}

Deno.test("jit ≡ eager bitwise: a dropout MLP step with a new key each step (CPU)", async () => {
  const step = trainStep({ loss: dropoutLoss, optimizer: optim.adam({ lr: 3e-3 }) });
  await compare(step, jit(step), 8, "dropout");
});

Deno.test("jit donation: a donated state gives eager's bits; the old state is retired", async () => {
  const step = trainStep({ loss: dropoutLoss, optimizer: optim.adam({ lr: 3e-3 }) });
  await compare(step, jit(step, { donate: [0] }), 8, "donated dropout");

  const js = jit(step, { donate: [0] });
  const s0 = js.init(nn.mlpInit(random.key(1), [784, 32, 10]));
  const w = (s0.params as nb.nn.MlpParams).layers[0].w;
  const [s1, m1] = js(s0, batchAt(0));
  assert(w.disposed, "a donated tensor is retired");
  await nodeAssert.rejects(() => w.data(), /donated to a jitted call/);
  nodeAssert.throws(() => nb.add(w, 1), /donated to a jitted call/);
  // A call without donation leaves its state alone.
  const plain = jit(step);
  const [s2, m2] = plain(s1, batchAt(1));
  assert(!(s1.params as nb.nn.MlpParams).layers[0].w.disposed, "not donated: still live");
  js.clear();
  plain.clear();
  nb.dispose([s1, m1, s2, m2]);
});

Deno.test("jit donation: memory() and the CPU heap flat over 1,000 donated steps", () => {
  const step = jit(trainStep({ loss: dropoutLoss, optimizer: optim.adam() }), { donate: [0] });
  let s = step.init(nn.mlpInit(random.key(3), [784, 16, 10]));
  const run = (n: number, from: number) => {
    for (let i = 0; i < n; i++) {
      const [next, m] = step(s, batchAt(from + i));
      nb.dispose(m);
      s = next;
    }
  };
  run(10, 0);
  const before = nb.memory(cpu);
  const heap = heapStats().liveBytes;
  run(1000, 10);
  const after = nb.memory(cpu);
  assertEquals([after.tensors, after.bytes], [before.tensors, before.bytes]);
  assertEquals(heapStats().liveBytes, heap, "the program frees every donated buffer");
  assertEquals(step.traces, 1);
  step.clear();
  nb.dispose(s);
});

Deno.test("jit donation: the program frees each donated buffer during the call (CPU)", () => {
  const step = jit(trainStep({ loss: plainLoss, optimizer: optim.adam() }), { donate: [0] });
  let s = step.init(nn.mlpInit(random.key(4), [784, 32, 10]));
  const [s1, m1] = step(s, batchAt(0)); // traced and compiled
  nb.dispose(m1);
  s = s1;
  const donated = new Set(nb.tree.leaves(s).map((t) => t.handle));
  const freed = new Set<unknown>();
  const orig = cpu.free;
  cpu.free = (h, dtype, size) => {
    freed.add(h);
    return orig.call(cpu, h, dtype, size);
  };
  let next: nb.TrainState, m: nb.Metrics;
  try {
    [next, m] = step(s, batchAt(1));
  } finally {
    cpu.free = orig;
  }
  assertEquals(donated.size, nb.tree.leaves(s).length);
  for (const h of donated) assert(freed.has(h), "every donated buffer is freed by the program");
  step.clear();
  nb.dispose([next, m]);
});

Deno.test("jit donation: a donated input returned unchanged comes back as a new tensor", async () => {
  const f = jit((s: { a: Tensor; b: Tensor }) => ({ a: nb.add(s.a, 1), b: s.b }), {
    donate: [0],
  });
  const before = nb.memory().tensors;
  const s0 = { a: tensor([1, 2]), b: tensor([5, 6]) };
  const s1 = f(s0);
  assert(s0.a.disposed && s0.b.disposed, "both donated tensors are retired");
  assert(s1.b !== s0.b, "the unchanged output is a new tensor");
  assertEquals(Array.from(await s1.a.data()), [2, 3]);
  assertEquals(Array.from(await s1.b.data()), [5, 6]);
  await nodeAssert.rejects(() => s0.b.data(), /donated/);
  const s2 = f(s1);
  assertEquals(Array.from(await s2.a.data()), [3, 4]);
  assertEquals(Array.from(await s2.b.data()), [5, 6]);
  nb.dispose(s2);
  f.clear();
  assertEquals(nb.memory().tensors, before, "nothing leaked");
});

Deno.test("jit donation: a tensor passed twice, or sharing its buffer, keeps its values", async () => {
  const g = jit((x: Tensor, y: Tensor) => nb.mul(nb.add(x, y), 2), { donate: [0] });
  const before = nb.memory();
  const ones = [tensor([1, 1, 1, 1]), tensor([1, 1, 1])];
  const x = tensor([1, 2, 3]);
  const out = g(x, x); // donated and also passed as the second argument
  assertEquals(Array.from(await out.data()), [4, 8, 12]);
  assert(x.disposed, "the donated tensor is retired");
  await nodeAssert.rejects(() => x.data(), /donated/);
  // Read early as the first argument and late as the second: freeing the donated buffer after
  // the first argument's last reader would let the heap hand it to `b` before `y` is read.
  const chain = (x: Tensor, y: Tensor) => {
    const a = nb.matmul(x, x);
    return nb.matmul(nb.matmul(a, a), y);
  };
  const h = jit(chain, { donate: [0] });
  const m = tensor([[1, 2], [3, 4]]);
  const eager = nb.tidy(() => chain(m, m));
  const expected = await eager.data();
  const got = h(m, m);
  assertEquals(Array.from(await got.data()), Array.from(expected));
  // A donated tensor whose buffer a reshape shares: the view stays valid.
  const z = tensor([1, 2, 3, 4]);
  const view = nb.reshape(z, [2, 2]);
  const out2 = g(z, ones[0]);
  assertEquals(Array.from(await out2.data()), [4, 6, 8, 10]);
  assert(z.disposed, "retired");
  assertEquals(Array.from(await view.data()), [1, 2, 3, 4], "the view's buffer is untouched");
  // A sole holder on the next call: its buffer is taken.
  const w = tensor([0, 1, 2]);
  const out3 = g(w, ones[1]);
  assertEquals(Array.from(await out3.data()), [2, 4, 6]);
  nb.dispose([out, out2, out3, view, ones, got, eager]);
  g.clear();
  h.clear();
  const after = nb.memory();
  assertEquals([after.tensors, after.bytes], [before.tensors, before.bytes], "nothing leaked");
});

Deno.test("fit donates the states it replaces: same bits as eager fit, lower peak", async () => {
  const make = () => trainStep({ loss: dropoutLoss, optimizer: optim.adam({ lr: 3e-3 }) });
  const list = Array.from({ length: 6 }, (_, i) => batchAt(i));
  const params = nn.mlpInit(random.key(5), [784, 32, 10]);
  const stateBytes = 3 * 4 * (784 * 32 + 32 + 32 * 10 + 10);
  const runFit = async (jitOn: boolean) => {
    const step = make();
    const state = step.init(params);
    nb.resetPeak(cpu);
    const base = nb.memory(cpu).bytes;
    const { state: out } = await nb.fit(step, state, list, { logEvery: 3, jit: jitOn });
    const peak = nb.memory(cpu).peakBytes - base; // the trace's tensors live on jit(cpu)
    assert(nb.tree.leaves(state).every((t) => !t.disposed), "the caller's state stays live");
    return { out, state, peak };
  };
  const eager = await runFit(false);
  const jitted = await runFit(true);
  assertSameBits(await bitsOf(eager.out), await bitsOf(jitted.out), "fit eager vs jit");
  // Live during a jitted step: the caller's state, the current state (donated: no longer
  // counted once the program takes it), the new state and small metrics. Without donation the
  // replaced state would still be counted when the new one arrives: 2 states beyond the caller's.
  assert(
    jitted.peak < 1.5 * stateBytes,
    `fit's peak beyond the caller's state: ${jitted.peak} bytes (one state is ${stateBytes})`,
  );
  for (const r of [eager, jitted]) {
    nb.disposeReplaced(r.out, undefined, r.state);
    nb.dispose(r.state);
  }
  nb.dispose(params);
});
