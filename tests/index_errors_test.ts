/**
 * Out-of-range indices and labels are errors on the CPU, naming the op and the index; masked
 * labels go through crossEntropy's `ignoreIndex` (torch's semantics) (issue 13, item 5).
 */
import assert from "node:assert/strict";
import { memory, type Tensor, tensor } from "../lib/tensor.ts";
import { oneHot, scatterAdd, take } from "../lib/ops/index.ts";
import { crossEntropy } from "../lib/nn/losses.ts";
import { valueAndGrad } from "../lib/autodiff.ts";
import fc from "./fc.ts";

const i32 = (v: number[]) => tensor(v, { dtype: "i32" });

function throwsWith(fn: () => unknown, parts: string[]) {
  assert.throws(
    fn,
    (e: Error) => parts.every((p) => e.message.includes(p)) || assert.fail(e.message),
  );
}

Deno.test("take, scatterAdd and oneHot name the op and the offending index", () => {
  const before = memory().tensors;
  const x = tensor([1, 2, 3]);
  const bad = i32([0, 3]);
  throwsWith(() => take(x, bad), ["take", "index 3", "size 3"]);
  throwsWith(() => scatterAdd(x, bad, tensor([1, 1])), ["scatterAdd", "index 3", "size 3"]);
  throwsWith(() => oneHot(i32([1, 4]), 3), ["oneHot", "label 4", "depth 3"]);
  // take wraps negatives once, oneHot does not (torch: "Class values must be non-negative").
  assert.equal(take(x, i32([-1])).shape[0], 1);
  throwsWith(() => oneHot(i32([-1]), 3), ["oneHot", "label -1", "depth 3"]);
  for (const t of [x, bad]) t.dispose();
  assert.ok(memory().tensors >= before);
});

Deno.test("crossEntropy: an out-of-range label throws; ignoreIndex masks rows as torch", async () => {
  const logits = tensor([[2, 0, -1], [0.5, 0.5, 3], [1, 2, 3]]);
  throwsWith(() => crossEntropy(logits, i32([0, 3, 1])), ["oneHot", "label 3", "depth 3"]);
  throwsWith(() => crossEntropy(logits, i32([0, -100, 1])), ["oneHot", "label -100"]);
  // f64 oracle: mean over the kept rows of -log softmax[label].
  const rows = [[2, 0, -1], [0.5, 0.5, 3], [1, 2, 3]];
  const nll = (r: number[], y: number) => Math.log(r.reduce((a, v) => a + Math.exp(v), 0)) - r[y];
  const got = await crossEntropy(logits, i32([0, -100, 1]), { ignoreIndex: -100 }).item();
  const want = (nll(rows[0], 0) + nll(rows[2], 1)) / 2;
  assert.ok(Math.abs(got - want) < 1e-6, `${got} vs ${want}`);
  const allIgnored = await crossEntropy(logits, i32([-1, -1, -1]), { ignoreIndex: -1 }).item();
  assert.ok(Number.isNaN(allIgnored), "all rows ignored gives NaN, as torch");
  throwsWith(() => crossEntropy(logits, i32([0, 1, 2]), { ignoreIndex: 0.5 }), ["ignoreIndex"]);
});

Deno.test("crossEntropy with ignoreIndex: ignored rows get zero gradient, kept rows 1/kept", async () => {
  const f = (p: { z: Tensor }) => crossEntropy(p.z, i32([1, 7, 0]), { ignoreIndex: 7 });
  const [, g] = valueAndGrad(f)({ z: tensor([[0, 0], [5, -5], [1, 1]]) });
  const gz = Array.from(await g.z.data());
  assert.deepEqual(gz.slice(2, 4), [0, 0], "the ignored row");
  assert.ok(Math.abs(gz[0] - 0.25) < 1e-7 && Math.abs(gz[1] + 0.25) < 1e-7, `${gz}`);
});

Deno.test("property: crossEntropy with ignoreIndex equals the f64 mean over the kept rows", async () => {
  const logit = fc.float({ min: -4, max: 4, noNaN: true, noDefaultInfinity: true });
  const row = fc.tuple(logit, logit, fc.integer({ min: -1, max: 1 }));
  await fc.assert(fc.asyncProperty(fc.array(row, { minLength: 1, maxLength: 6 }), async (rows) => {
    const kept = rows.filter(([, , l]) => l !== -1);
    fc.pre(kept.length > 0);
    const z = tensor(rows.map(([a, b]) => [a, b]));
    const y = i32(rows.map(([, , l]) => l));
    const out = crossEntropy(z, y, { ignoreIndex: -1 });
    const got = await out.item();
    for (const t of [z, y, out]) t.dispose();
    const nll = ([a, b, l]: [number, number, number]) => {
      const m = Math.max(a, b);
      return m + Math.log(Math.exp(a - m) + Math.exp(b - m)) - (l === 0 ? a : b);
    };
    const want = kept.reduce((s, r) => s + nll(r), 0) / kept.length;
    assert.ok(Math.abs(got - want) <= 1e-5 * Math.max(1, Math.abs(want)), `${got} vs ${want}`);
  }));
});
