/**
 * `fit`'s ownership rule (issue 13, item 11): a metric that is also plugin state survives as long
 * as the state (docs/plugins.md's `countSkipped` example runs under `fit`), tensors created while
 * pulling batches are freed, prepared batches stay the caller's, and memory is flat across epochs.
 */
import assert from "node:assert/strict";
import { full, keep, memory, type Tensor, tensor } from "../lib/tensor.ts";
import { leaves } from "../lib/tree.ts";
import { mul, square, sub } from "../lib/ops/elementwise.ts";
import { sum } from "../lib/ops/reduce.ts";
import { take } from "../lib/ops/index.ts";
import { disposeReplaced, evaluate, fit, pipe, trainStep, type Transformer } from "../lib/train.ts";
import { sgd } from "../lib/optim/mod.ts";
import { gradScale } from "../plugins/grad_scale.ts";

type P = { w: Tensor };
type B = { t: Tensor };
const loss = (p: P, b: B) => sum(square(sub(p.w, b.t)));

/** The `custom-plugin-example` block of docs/plugins.md, imported as a module. */
async function docPlugins(): Promise<
  { clipGrads: (n: number) => Transformer; countSkipped: Transformer }
> {
  const md = await Deno.readTextFile(new URL("../docs/plugins.md", import.meta.url));
  const after = md.split("<!-- custom-plugin-example -->")[1];
  const open = after.indexOf("```ts") + 5;
  const code = after.slice(open, after.indexOf("```", open));
  const dir = await Deno.makeTempDir();
  const lib = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
  await Deno.writeTextFile(
    `${dir}/mod.ts`,
    [
      `export * from ${lib("../lib/ops/mod.ts")};`,
      `export * from ${lib("../lib/tensor.ts")};`,
      `export * as tree from ${lib("../lib/tree.ts")};`,
      `export * from ${lib("../plugins/plugin.ts")};`,
    ].join("\n"),
  );
  await Deno.mkdir(`${dir}/docs`);
  await Deno.writeTextFile(`${dir}/docs/example.ts`, code);
  try {
    return await import(`file://${dir}/docs/example.ts`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const logEvery of [1, 2, 5]) {
  Deno.test(`docs/plugins.md countSkipped under fit (logEvery ${logEvery}): counts, no crash, no leak`, async () => {
    const { clipGrads, countSkipped } = await docPlugins();
    const step = pipe(
      trainStep({ loss, optimizer: sgd({ lr: 0.5 }) }),
      clipGrads(1),
      gradScale({ initScale: 1024 }),
      countSkipped,
    );
    const before = memory().tensors;
    const params = { w: tensor([3, -4]) };
    const state = step.init(params);
    // Prepared batches (the caller's): two clean steps, then a NaN one, per epoch.
    const batches = [{ t: full([2], 0) }, { t: full([2], 1) }, { t: full([2], NaN) }];
    const totals: number[] = [];
    const { state: out, history } = await fit(step, state, batches, {
      epochs: 3,
      logEvery,
      onLog: (e) => totals.push(e.metrics.skippedTotal),
    });
    const total = (out.plugins.countSkipped as { total: Tensor }).total;
    assert.equal(await total.item(), 3, "one skipped step per epoch");
    assert.equal(history.length, Math.ceil(9 / logEvery));
    // skippedTotal is logged from the last step of each window: steps 3, 6, 9 are the NaN ones.
    const expected = history.map((h) => Math.floor(h.step / 3));
    assert.deepEqual(totals, expected);
    for (const b of batches) {
      assert.equal(b.t.disposed, false, "prepared batches stay the caller's");
    }
    assert.equal(state.opt !== undefined && leaves(state).every((t) => !t.disposed), true);
    disposeReplaced(out, undefined, state);
    for (const t of new Set([...leaves(state), ...leaves(batches)])) t.dispose();
    params.w.dispose();
    assert.equal(memory().tensors, before, "nothing left behind");
  });
}

Deno.test("fit frees the batches an epoch function creates: memory flat across epochs", async () => {
  const step = trainStep({ loss, optimizer: sgd({ lr: 0.1, momentum: 0.9 }) });
  const run = async (epochs: number) => {
    const before = memory().tensors;
    const state = step.init({ w: tensor([1, 2, 3, 4]) });
    const data = tensor(Array.from({ length: 32 }, (_, i) => Math.sin(i)), { shape: [8, 4] });
    let perms = 0;
    // A generator per epoch: a permutation made per epoch (not in any batch), and batches made
    // lazily from a dataset that existed before fit (the caller's).
    const epochFn = function* (epoch: number) {
      const perm = tensor(Array.from({ length: 8 }, (_, i) => (i * 3 + epoch) % 8), {
        dtype: "i32",
      });
      perms++;
      for (let i = 0; i < 8; i++) {
        yield { t: mul(take(data, take(perm, tensor([i], { dtype: "i32" })), 0), 1) };
      }
    };
    const { state: out } = await fit(step, state, epochFn, { epochs, logEvery: 3 });
    const live = memory().tensors - before;
    assert.equal(data.disposed, false, "the dataset made before fit is the caller's");
    const held = new Set([...leaves(out), ...leaves(state), data]).size;
    disposeReplaced(out, undefined, state);
    for (const t of new Set([...leaves(state), data])) t.dispose();
    assert.equal(memory().tensors, before);
    assert.equal(perms, epochs);
    return live - held;
  };
  assert.equal(await run(1), 0, "after 1 epoch only the states and the dataset are live");
  assert.equal(await run(4), 0, "after 4 epochs too");
});

Deno.test("fit: a tensor the epoch function keep()s stays the caller's", async () => {
  const step = trainStep({ loss, optimizer: sgd({ lr: 0.1 }) });
  const state = step.init({ w: tensor([1, 2]) });
  let cache: Tensor | undefined;
  const epochFn = (_: number) => {
    cache ??= keep(tensor([0.5, 0.5])); // lazily made once, reused by every epoch
    return [{ t: cache }, { t: cache }];
  };
  const { state: out, history } = await fit(step, state, epochFn, { epochs: 3, logEvery: 2 });
  assert.equal(history.length, 3);
  assert.equal(cache!.disposed, false);
  disposeReplaced(out, undefined, state);
  for (const t of [...leaves(state), cache!]) t.dispose();
});

Deno.test("evaluate frees the batches its iterator creates, not prepared ones", async () => {
  const before = memory().tensors;
  const prepared = tensor([1, 2]);
  function* gen() {
    for (let i = 0; i < 5; i++) yield { x: tensor([i, i]), y: prepared };
  }
  const { sum: s } = await evaluate((b) => ({ total: sum(mul(b.x, b.y)) }), gen());
  assert.equal(s.total, 3 * (0 + 1 + 2 + 3 + 4));
  assert.equal(prepared.disposed, false);
  prepared.dispose();
  assert.equal(memory().tensors, before);
});
