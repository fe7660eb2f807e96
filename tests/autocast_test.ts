import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { DType } from "../lib/dtype.ts";
import { full, type Tensor, tensor, tidy } from "../lib/tensor.ts";
import { intercept } from "../lib/op.ts";
import * as random from "../lib/random.ts";
import { leaves } from "../lib/tree.ts";
import {
  add,
  astype,
  concat,
  exp,
  gelu,
  isFinite,
  log,
  logSoftmax,
  logsumexp,
  matmul,
  max,
  mean,
  mul,
  pow,
  relu,
  rsqrt,
  scatterAdd,
  sigmoid,
  softmax,
  sqrt,
  stack,
  sum,
  tanh,
  where,
} from "../lib/ops/mod.ts";
import { pipe, trainStep } from "../lib/train.ts";
import {
  crossEntropy,
  layerNorm,
  layerNormInit,
  linear,
  mlp,
  mlpInit,
  mse,
} from "../lib/nn/mod.ts";
import { sgd } from "../lib/optim/mod.ts";
import { autocast, classifyOp, type OpClass, withAutocast } from "../plugins/autocast.ts";

const x32 = () => random.normal(random.key(0), [4, 3]);
const w32 = () => random.normal(random.key(1), [3, 5]);
const idx = () => tensor([0, 2, 0], { dtype: "i32" });
const f16 = (shape: number[]) => astype(random.normal(random.key(2), shape), "f16");

/** Each op class with the dtype it gives for f32 inputs under autocast("f16") (the docs table). */
const table: [string, () => Tensor, DType][] = [
  ["matmul", () => matmul(x32(), w32()), "f16"],
  ["linear", () => linear({ w: w32(), b: full([5], 0) }, x32()), "f16"],
  ["exp", () => exp(astype(x32(), "f16")), "f32"],
  ["log", () => log(astype(x32(), "f16")), "f32"],
  ["pow", () => pow(astype(x32(), "f16"), 2), "f32"],
  ["rsqrt", () => rsqrt(astype(x32(), "f16")), "f32"],
  ["softmax", () => softmax(astype(x32(), "f16")), "f32"],
  ["logSoftmax", () => logSoftmax(astype(x32(), "f16")), "f32"],
  ["logsumexp", () => logsumexp(astype(x32(), "f16"), -1), "f32"],
  ["sum", () => sum(astype(x32(), "f16")), "f32"],
  [
    "crossEntropy",
    () => crossEntropy(matmul(x32(), w32()), tensor([0, 1, 2, 3], { dtype: "i32" })),
    "f32",
  ],
  ["mse", () => mse(astype(x32(), "f16"), astype(x32(), "f16")), "f32"],
  ["layerNorm", () => layerNorm(layerNormInit(3), astype(x32(), "f16")), "f32"],
  ["scatterAdd", () => scatterAdd(full([3, 3], 0, { dtype: "f16" }), idx(), f16([3, 3])), "f32"],
  ["mean", () => mean(astype(x32(), "f16")), "f16"],
  ["max", () => max(astype(x32(), "f16")), "f16"],
  ["tanh", () => tanh(astype(x32(), "f16")), "f16"],
  ["sigmoid", () => sigmoid(astype(x32(), "f16")), "f16"],
  ["sqrt", () => sqrt(astype(x32(), "f16")), "f16"],
  ["gelu", () => gelu(astype(x32(), "f16")), "f16"],
  ["relu", () => relu(astype(x32(), "f16")), "f16"],
  ["add f16+f16", () => add(astype(x32(), "f16"), astype(x32(), "f16")), "f16"],
  ["add f16+f32", () => add(astype(x32(), "f16"), x32()), "f32"],
  ["mul f16·f32", () => mul(astype(x32(), "f16"), x32()), "f32"],
  ["where", () => where(isFinite(x32()), astype(x32(), "f16"), x32()), "f32"],
  ["concat", () => concat([astype(x32(), "f16"), x32()]), "f32"],
  ["stack", () => stack([astype(x32(), "f16"), astype(x32(), "f16")]), "f16"],
  ["matmul f64", () => matmul(astype(x32(), "f64"), astype(w32(), "f64")), "f64"],
  ["exp f64", () => exp(astype(x32(), "f64")), "f64"],
  ["sum i32", () => sum(idx()), "i32"],
];

Deno.test("autocast: every op class gives the documented dtype", () => {
  for (const [name, make, want] of table) {
    const got = tidy(() => withAutocast("f16", make).dtype);
    assert.equal(got, want, name);
  }
  // bf16: the lower class follows the compute dtype, the f32 class stays f32.
  assert.equal(tidy(() => withAutocast("bf16", () => matmul(x32(), w32())).dtype), "bf16");
  assert.equal(tidy(() => withAutocast("bf16", () => softmax(astype(x32(), "bf16"))).dtype), "f32");
});

Deno.test("autocast: outside a region nothing is cast", () => {
  assert.equal(tidy(() => matmul(x32(), w32()).dtype), "f32");
  assert.equal(tidy(() => exp(astype(x32(), "f16")).dtype), "f16");
});

Deno.test("autocast: a matmul computes in f16, crossEntropy in f32", async () => {
  const x = x32();
  const w = w32();
  const inside = withAutocast("f16", () => matmul(x, w));
  const byHand = matmul(astype(x, "f16"), astype(w, "f16"));
  assert.deepEqual(await inside.bits(), await byHand.bits());
  assert.notDeepEqual(await astype(inside, "f32").data(), await matmul(x, w).data());

  const labels = tensor([0, 1, 2, 3], { dtype: "i32" });
  const logits = astype(random.normal(random.key(3), [4, 5]), "f16");
  const ce = withAutocast("f16", () => crossEntropy(logits, labels));
  assert.equal(ce.dtype, "f32");
  assert.equal(await ce.item(), await crossEntropy(astype(logits, "f32"), labels).item());
});

Deno.test("autocast: nested regions, the innermost decides; false turns it off", () => {
  const x = x32();
  const w = w32();
  const seen = withAutocast("f16", () => {
    const a = matmul(x, w).dtype;
    const [b, c] = withAutocast("bf16", () => [
      matmul(x, w).dtype,
      withAutocast(false, () => matmul(x, w).dtype),
    ]);
    const d = withAutocast(false, () => [matmul(x, w).dtype, exp(astype(x, "f16")).dtype]);
    const e = matmul(x, w).dtype; // back in the outer region
    return [a, b, c, ...d, e];
  });
  assert.deepEqual(seen, ["f16", "bf16", "f32", "f32", "f16", "f16"]);
  assert.equal(withAutocast(false, () => matmul(x, w).dtype), "f32");
});

Deno.test("autocast: a region that throws leaves no autocast behind", () => {
  assert.throws(() =>
    withAutocast("f16", () => {
      throw new Error("boom");
    }), /boom/);
  assert.equal(tidy(() => matmul(x32(), w32()).dtype), "f32");
  assert.throws(() => withAutocast("f16", () => Promise.resolve(1)), /returned a Promise/);
});

Deno.test("autocast: a weight is cast once per region, even across tidy scopes", () => {
  const x = x32();
  const w = random.normal(random.key(4), [3, 3]);
  const copies = new Set<Tensor>();
  // An outer interceptor sees the inputs after autocast has cast them.
  const spy = (
    call: { op: { name: string } },
    xs: readonly Tensor[],
    next: (xs: readonly Tensor[]) => Tensor,
  ) => {
    if (call.op.name === "matmul") copies.add(xs[1]);
    return next(xs);
  };
  intercept(spy, () =>
    withAutocast("f16", () => {
      let h = matmul(x, w);
      h = matmul(h, w);
      h = tidy(() => matmul(h, w)); // a tidy scope inside the region
      return matmul(h, w);
    }));
  assert.equal(copies.size, 1);
  const [copy] = copies;
  assert.equal(copy.dtype, "f16");
  // The next region makes a fresh copy (the cache is per region).
  intercept(spy, () => withAutocast("f16", () => matmul(x, w)));
  assert.equal(copies.size, 2);
});

Deno.test("autocast: a cached copy disposed by an inner tidy is cast again", async () => {
  const x = x32();
  const w = random.normal(random.key(5), [3, 3]);
  const y = withAutocast("f16", () => {
    // pow is in the f32 class; called on a f16 input, its cast lives in pow's own temporaries.
    const wh = astype(w, "f16");
    tidy(() => pow(wh, 2));
    return pow(wh, 2);
  });
  assert.equal(y.dtype, "f32");
  assert.equal(await y.data().then((d) => d.length), 9);
  assert.equal(withAutocast("f16", () => matmul(x, w)).dtype, "f16");
});

Deno.test("autocast(): a param is cast once per step, grads come back f32", async () => {
  const params = mlpInit(random.key(6), [3, 8, 8, 4]);
  const loss = (p: typeof params, b: { x: Tensor; y: Tensor }) =>
    crossEntropy(mlp({ layers: [p.layers[0], p.layers[1], p.layers[1], p.layers[2]] }, b.x), b.y);
  const step = pipe(trainStep({ loss, optimizer: sgd({ lr: 0.1 }) }), autocast("f16"));
  const state = step.init(params);
  const batch = { x: x32(), y: tensor([0, 1, 2, 3], { dtype: "i32" }) };
  const weightCopies = new Map<Tensor, number>();
  const [next, m] = intercept((call, xs, nxt) => {
    if (call.op.name === "linear") {
      weightCopies.set(xs[1], (weightCopies.get(xs[1]) ?? 0) + 1);
      assert.ok(xs.every((t) => t.dtype === "f16"));
    }
    return nxt(xs);
  }, () => step(state, batch));
  assert.deepEqual([...weightCopies.values()], [1, 2, 1]); // layer 1's weight: 2 uses, 1 copy
  assert.equal(m.loss.dtype, "f32");
  for (const t of leaves(next.params)) assert.equal(t.dtype, "f32");
  assert.ok(Number.isFinite(await m.loss.item()));
});

Deno.test("autocast(): invalid specs are clear errors", () => {
  assert.throws(() => autocast("f64"), /float narrower than f64/);
  assert.throws(() => autocast("i32"), /float narrower than f64/);
  assert.throws(() => withAutocast({} as never, () => 0), /expected a compute dtype/);
});

Deno.test("autocast: a custom policy can reclassify ops", () => {
  const tanhToF32 = {
    dtype: "bf16" as const,
    classify: (op: { name: string; tags: readonly string[] }): OpClass =>
      op.name === "tanh" ? "f32" : classifyOp(op as Parameters<typeof classifyOp>[0]),
  };
  const [a, b] = withAutocast(tanhToF32, () => {
    const h = matmul(x32(), w32());
    return [h.dtype, tanh(h).dtype];
  });
  assert.deepEqual([a, b], ["bf16", "f32"]);
});

Deno.test("autocast: only floating, non-f64 inputs are ever cast (property)", () => {
  const dtypes: DType[] = ["f64", "f32", "f16", "bf16"];
  fc.assert(
    fc.property(
      fc.constantFrom(...dtypes),
      fc.constantFrom(...dtypes),
      fc.constantFrom<"f16" | "bf16">("f16", "bf16"),
      (da, db, compute) =>
        tidy(() => {
          const a = astype(x32(), da);
          const b = astype(w32(), db);
          const wide = da === "f64" || db === "f64";
          const mm = withAutocast(compute, () => matmul(a, b));
          assert.equal(mm.dtype, wide ? "f64" : compute);
          const e = withAutocast(compute, () => exp(a));
          assert.equal(e.dtype, da === "f64" ? "f64" : "f32");
          const s = withAutocast(compute, () => add(a, a));
          assert.equal(s.dtype, da);
        }),
    ),
  );
});
