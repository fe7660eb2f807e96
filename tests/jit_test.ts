/**
 * jit on the CPU: jitted programs give the same bits as eager execution (train steps under every
 * preset and optimizer, gradScale skips, fp8's amax history, random elementwise graphs), the
 * cache retraces only on a new signature, memory stays flat, and untraceable functions fail at
 * trace time with their message.
 */
import nodeAssert from "node:assert/strict";
import fc from "./fc.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import { graphFn, inputsOf, specArb } from "./elementwise_graphs.ts";
import { chainArb, chainCase, chainSize, computes, inlinable } from "./broadcast_chains.ts";
import * as nb from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { loadMnist } from "../examples/data/mnist.ts";

const { jit, precision, trainStep, optim, nn, random, tensor, pipe, gradScale } = nb;

const assert = (ok: boolean, msg?: string) => nodeAssert.ok(ok, msg);
const assertEquals = (a: unknown, b: unknown, msg?: string) =>
  nodeAssert.deepStrictEqual(a, b, msg);
function assertThrows(fn: () => unknown, type: new (...a: never[]) => Error, text: string): void {
  nodeAssert.throws(fn, (e: unknown) => {
    nodeAssert.ok(e instanceof type, `expected a ${type.name}, got ${e}`);
    nodeAssert.ok((e as Error).message.includes(text), `"${(e as Error).message}" lacks "${text}"`);
    return true;
  });
}

// The small MNIST MLP: 784-32-10 on 4 batches of 32 real digits.
const data = loadMnist({ train: 128, test: 0, seed: 0 });
const batches = Array.from({ length: 4 }, (_, i) => ({
  x: tensor(data.train.images.subarray(i * 32 * 784, (i + 1) * 32 * 784), { shape: [32, 784] }),
  y: tensor(data.train.labels.subarray(i * 32, (i + 1) * 32), { dtype: "i32" }),
}));
type Batch = (typeof batches)[number];
const loss = (p: nb.nn.MlpParams, b: Batch) => nn.crossEntropy(nn.mlp(p, b.x), b.y);

/** Run `steps` eager and jitted steps side by side; compare state and metrics bitwise. */
async function compareSteps(step: nb.Step<Batch>, steps: number, what: string): Promise<void> {
  const params = nn.mlpInit(random.key(1), [784, 32, 10]);
  const js = jit(step);
  let se = step.init(params);
  let sj = js.init(params);
  for (let i = 0; i < steps; i++) {
    const b = batches[i % batches.length];
    const [ne, me] = step(se, b);
    const [nj, mj] = js(sj, b);
    assertSameBits(await bitsOf([ne, me]), await bitsOf([nj, mj]), `${what} step ${i}`);
    assertEquals(nj.step, ne.step);
    if (i > 0) {
      nb.disposeReplaced(se, ne);
      nb.disposeReplaced(sj, nj);
    }
    nb.dispose([me, mj]);
    se = ne;
    sj = nj;
  }
  assertEquals(js.traces, 1, `${what}: one trace for one signature`);
  js.clear();
  nb.dispose([se, sj, params]);
}

const optimizers = {
  adam: () => optim.adam({ lr: 3e-3 }),
  adamw8bit: () => optim.adamw8bit({ lr: 3e-3 }),
  sgd: () => optim.sgd({ lr: 0.05, momentum: 0.9 }),
};

for (const preset of nb.presetNames) {
  for (const [name, make] of Object.entries(optimizers)) {
    Deno.test(`jit ≡ eager bitwise: 20 MNIST steps, ${preset}, ${name}`, async () => {
      const step = precision(preset)(trainStep({ loss, optimizer: make() }));
      await compareSteps(step, 20, `${preset}/${name}`);
    });
  }
}

Deno.test("jit ≡ eager bitwise: gradScale runs that skip steps (f16 overflow)", async () => {
  // An initial scale of 2^24 overflows f16 gradients: the first steps skip and back off; growth
  // every 3 clean steps overflows again.
  const step = pipe(
    trainStep({ loss, optimizer: optim.adam({ lr: 3e-3 }) }),
    nb.castParams("f16"),
    nb.autocast("f16"),
    gradScale({ initScale: 2 ** 24, growthInterval: 3 }),
  );
  await compareSteps(step, 20, "gradScale skips");
  // The run really skipped: count with the eager step.
  const params = nn.mlpInit(random.key(1), [784, 32, 10]);
  let s = step.init(params);
  let skipped = 0;
  for (let i = 0; i < 20; i++) {
    const [n, m] = step(s, batches[i % 4]);
    skipped += await m.skipped.item();
    s = n;
  }
  assert(skipped > 0 && skipped < 20, `skipped ${skipped} of 20`);
});

Deno.test("jit ≡ eager bitwise: fp8-mixed's amax history and scales over 20 steps", async () => {
  const step = precision("fp8-mixed")(trainStep({ loss, optimizer: optim.adam({ lr: 3e-3 }) }));
  await compareSteps(step, 20, "fp8 history");
  const params = nn.mlpInit(random.key(1), [784, 32, 10]);
  const js = jit(step);
  let s = js.init(params);
  for (let i = 0; i < 3; i++) [s] = js(s, batches[i]);
  const fp8 = s.plugins.fp8 as { amaxHistory: Tensor };
  const hist = await fp8.amaxHistory.data();
  assert(hist.some((v) => v > 0), "the jitted step records amaxes in the state");
});

// ---------------------------------------------------------------------------------------------
// Random elementwise graphs

Deno.test("jit ≡ eager bitwise: random elementwise graphs with broadcasts (property)", async () => {
  await fc.assert(
    fc.asyncProperty(specArb, async (spec) => {
      const xs = inputsOf(spec);
      const fn = graphFn(spec);
      let eager: Tensor[];
      try {
        eager = nb.tidy(() => fn(...xs));
      } catch {
        nb.dispose(xs);
        return; // an invalid combination (e.g. a shape clash) is not a jit question
      }
      const f = jit(fn);
      const jitted = f(...xs);
      assertSameBits(await bitsOf(eager), await bitsOf(jitted), "random graph");
      assert((f.lastStats?.kernels ?? 0) <= (f.lastStats?.nodes ?? 0));
      f.clear();
      nb.dispose([eager, jitted, xs]);
    }),
    { numRuns: 150 },
  );
});

Deno.test("jit ≡ eager bitwise: broadcast unary/cast chains recomputed in their readers (property)", async () => {
  const before = nb.memory(nb.cpu);
  let inlined = 0;
  await fc.assert(
    fc.asyncProperty(chainArb, async (c) => {
      const { fn, inputs } = chainCase(c);
      const eager = nb.tidy(() => fn(...inputs));
      const f = jit(fn);
      const first = f(...inputs);
      const again = f(...inputs);
      const what = JSON.stringify(c);
      const e = await bitsOf(eager);
      assertSameBits(e, await bitsOf(first), `${what} (first call)`);
      assertSameBits(e, await bitsOf(again), `${what} (replay)`);
      const sched = f.lastStats!.schedule;
      // The chain is computed on its own iteration space exactly when it may not be inlined.
      assertEquals(
        sched.some((l) => computes(l, chainSize(c))),
        !inlinable(c),
        `${what}: ${sched}`,
      );
      if (inlinable(c)) inlined++;
      f.clear();
      nb.dispose([eager, first, again, inputs]);
    }),
    { numRuns: 60 },
  );
  assert(inlined >= 10, `only ${inlined} of 60 chains were inlinable`);
  assertEquals(nb.memory(nb.cpu).tensors, before.tensors);
});

Deno.test("jit fuses an elementwise chain into one kernel with scalars as immediates", async () => {
  const f = jit((x: Tensor, y: Tensor) => nb.relu(nb.add(nb.mul(x, 2), nb.sub(y, 0.5))));
  const out = f(tensor([1, -2, 3]), tensor([0.5, 0.5, 0.5]));
  assertEquals(Array.from(await out.data()), [2, 0, 6]);
  assertEquals(f.lastStats?.kernels, 1);
  assertEquals(f.lastStats?.fused, 1);
  f.clear();
});

// ---------------------------------------------------------------------------------------------
// Cache, keys, memory

Deno.test("jit retraces on a new shape or dtype and hits the cache otherwise", () => {
  const f = jit((x: Tensor) => nb.mul(x, 3));
  f(tensor([1, 2]));
  f(tensor([3, 4]));
  assertEquals([f.traces, f.cacheSize], [1, 1]);
  f(tensor([1, 2, 3]));
  assertEquals([f.traces, f.cacheSize], [2, 2]);
  f(tensor([1, 2], { dtype: "f16" }));
  assertEquals([f.traces, f.cacheSize], [3, 3]);
  f(tensor([5, 6], { dtype: "f16" }));
  assertEquals([f.traces, f.cacheSize], [3, 3]);
  f.clear();
});

Deno.test("jit: a non-tensor leaf is static (part of the signature)", async () => {
  const f = jit((x: Tensor, o: { k: number }) => nb.mul(x, o.k));
  assertEquals(Array.from(await f(tensor([1]), { k: 2 }).data()), [2]);
  assertEquals(Array.from(await f(tensor([1]), { k: 5 }).data()), [5]);
  assertEquals(f.traces, 2);
  f.clear();
});

Deno.test("jit: random keys are inputs (a new key does not retrace), equal to eager", async () => {
  const fn = (x: Tensor, k: nb.random.Key) => nn.dropout(k, x, 0.5);
  const f = jit(fn);
  const x = nb.ones([64]);
  for (let i = 0; i < 3; i++) {
    const k = random.foldIn(random.key(7), i);
    assertSameBits(await bitsOf(fn(x, k)), await bitsOf(f(x, k)), `dropout key ${i}`);
  }
  assertEquals(f.traces, 1);
  f.clear();
});

Deno.test("jit: memory() flat over 1,000 jitted train steps", () => {
  const params = nn.mlpInit(random.key(2), [784, 16, 10]);
  const step = jit(precision("16-mixed")(trainStep({ loss, optimizer: optim.adam() })));
  let s = step.init(params);
  const runSteps = (n: number) => {
    for (let i = 0; i < n; i++) {
      const [next, m] = step(s, batches[i % 4]);
      if (s.step > 0) nb.disposeReplaced(s, next);
      nb.dispose(m);
      s = next;
    }
  };
  runSteps(10);
  const before = nb.memory(nb.cpu);
  runSteps(1000);
  const after = nb.memory(nb.cpu);
  assertEquals(after.tensors, before.tensors);
  assertEquals(after.bytes, before.bytes);
  assertEquals(step.traces, 1);
  step.clear();
  nb.dispose([s, params]);
});

Deno.test("jit(step) is a Step: same init and parts, composes with pipe and fit", async () => {
  const base = trainStep({ loss, optimizer: optim.sgd({ lr: 0.1 }) });
  const js = jit(base);
  assertEquals(js.parts, base.parts);
  assert(jit(js) === js, "jitting a jitted step returns it");
  const params = nn.mlpInit(random.key(3), [784, 16, 10]);
  const eager = await nb.fit(base, base.init(params), batches, { jit: false, epochs: 2 });
  const jitted = await nb.fit(base, base.init(params), batches, { epochs: 2 });
  assertSameBits(await bitsOf(eager.state), await bitsOf(jitted.state), "fit jit vs eager");
  assertEquals(jitted.history.at(-1)?.loss, eager.history.at(-1)?.loss);
  const acc = (p: nb.nn.MlpParams) => (b: Batch) => ({
    correct: nb.sum(nb.astype(nb.equal(nb.argmax(nn.mlp(p, b.x), -1), b.y), "f32")),
  });
  const e1 = await nb.evaluate(acc(eager.state.params as nb.nn.MlpParams), batches, { jit: false });
  const e2 = await nb.evaluate(acc(eager.state.params as nb.nn.MlpParams), batches);
  assertEquals(e2.sum, e1.sum);
  nb.dispose([eager.state, jitted.state, params]);
});

// ---------------------------------------------------------------------------------------------
// Untraceable functions

Deno.test("jit errors: reading values inside", () => {
  const f = jit((x: Tensor) => {
    x.data().catch(() => {}); // the read is refused; the trace reports it
    return x;
  });
  assertThrows(() => f(tensor([1])), Error, "values cannot be read inside a jitted function");
  const g = jit(async (x: Tensor) => nb.mul(x, (await x.item()) > 0 ? 1 : -1));
  assertThrows(() => g(tensor([1])), Error, "returned a Promise");
});

Deno.test("jit errors: a data-dependent JS branch on a tensor", () => {
  const f = jit((x: Tensor) => ((x as unknown as number) > 0 ? x : nb.neg(x)));
  assertThrows(() => f(tensor([1])), TypeError, "branch with where(cond, a, b)");
});

Deno.test("jit errors: a captured tensor, and one created without { device }", () => {
  const w = tensor([2]);
  const f = jit((x: Tensor) => nb.mul(x, w));
  assertThrows(() => f(tensor([1])), Error, "pass it as an argument");
  const g = jit((x: Tensor) => nb.add(x, nb.ones([1])));
  assertThrows(() => g(tensor([1])), Error, "create it on the argument's device");
  const h = jit((_x: Tensor) => w);
  assertThrows(() => h(tensor([1])), Error, "does not come from the function's arguments");
  w.dispose();
});

Deno.test("jit errors: side effects on closure state (a traced tensor kept for later)", () => {
  let saved: Tensor | undefined;
  const f = jit((x: Tensor) => {
    const y = saved ? nb.add(x, saved) : nb.mul(x, 2);
    saved = y;
    return y;
  });
  f(tensor([1]));
  assertThrows(() => f(tensor([1, 2])), Error, "closure state");
});

Deno.test("jit errors: a random key made inside, and state.step read inside a step", () => {
  const f = jit((x: Tensor) => nn.dropout(random.key(0), x, 0.5));
  assertThrows(() => f(nb.ones([4])), Error, "derive keys outside");
  const reads = nb.definePlugin("readsStep", {
    update: (state, grads, next) => {
      if (state.step > 5) throw new Error("unreachable");
      return next(state, grads);
    },
  });
  const step = jit(pipe(trainStep({ loss, optimizer: optim.sgd({ lr: 0.1 }) }), reads));
  const params = nn.mlpInit(random.key(4), [784, 8, 10]);
  assertThrows(() => step(step.init(params), batches[0]), Error, "state.step is a host-side");
  nb.dispose(params);
});
