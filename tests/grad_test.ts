/**
 * Gradients of every differentiable op against central finite differences in f64 (loss =
 * sum(op(x) · W) with fixed random weights W), plus the contract of `grad`/`valueAndGrad`:
 * gradient dtypes, tree shapes, `hasAux`, unused parameters and memory.
 */
import assert from "node:assert/strict";
import {
  abs,
  add,
  astype,
  broadcastTo,
  concat,
  div,
  type DType,
  exp,
  expandDims,
  gelu,
  grad,
  log,
  logSoftmax,
  logsumexp,
  matmul,
  matmulT,
  max,
  maximum,
  mean,
  memory,
  min,
  minimum,
  mul,
  neg,
  pow,
  relu,
  reshape,
  rsqrt,
  scatterAdd,
  sigmoid,
  slice,
  softmax,
  sqrt,
  square,
  squeeze,
  stack,
  stopGradient,
  sub,
  sum,
  take,
  tanh,
  type Tensor,
  tensor,
  tidy,
  transpose,
  valueAndGrad,
  vjp,
  where,
  zeros,
} from "../mod.ts";
import { type Backend, cpu, greater } from "../mod.ts";
import { rng } from "./rng.ts";

// ---------------------------------------------------------------------------------------------
// Finite-difference harness

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** How to fill one input: its shape and a value generator (default uniform in [−2, 2]). */
interface Input {
  readonly shape: number[];
  readonly gen?: (r: () => number, i: number) => number;
}

const positive = (r: () => number) => 0.5 + 2 * r();
/** Distinct values spaced ≥ 0.1 apart (so max/min/relu/abs have no ties or kinks nearby). */
const distinct = (r: () => number, i: number) => (i % 2 ? 1 : -1) * (0.3 + 0.1 * i) + 0.01 * r();

let seedCounter = 1;

/**
 * Check ∂/∂x of `sum(f(xs) · W)` against central differences for every input, in f64.
 * Relative error: ‖g − fd‖∞ / max(‖fd‖∞, 1e-3) < 1e-6.
 */
async function checkGrad(name: string, f: (xs: Tensor[]) => Tensor, inputs: Input[]) {
  const r = rng(seedCounter++ * 7919);
  const values = inputs.map((inp) =>
    Float64Array.from(
      { length: size(inp.shape) },
      (_, i) => (inp.gen ?? ((r) => 4 * r() - 2))(r, i),
    )
  );
  const make = (vals: Float64Array[]) =>
    vals.map((v, i) => tensor(v, { dtype: "f64", shape: inputs[i].shape }));
  // Random weights with the output's shape.
  const probe = tidy(() => f(make(values)));
  const outShape = [...probe.shape];
  assert.equal(probe.dtype, "f64", `${name}: output dtype`);
  probe.dispose();
  const w = tensor(Float64Array.from({ length: size(outShape) }, () => 2 * r() - 1), {
    dtype: "f64",
    shape: outShape,
  });
  const loss = (xs: Tensor[]) => sum(mul(f(xs), w));
  const evalLoss = async (vals: Float64Array[]) => {
    const l = tidy(() => loss(make(vals)));
    const v = await l.item();
    l.dispose();
    return v;
  };

  const before = memory().tensors;
  const params = make(values);
  const grads = grad(loss)(params);
  assert.equal(grads.length, inputs.length, `${name}: one gradient per input`);
  const analytic = await Promise.all(grads.map((g) => g.data()));
  grads.forEach((g, i) => {
    assert.deepEqual(g.shape, inputs[i].shape, `${name}: gradient ${i} shape`);
    assert.equal(g.dtype, "f64");
  });
  for (const t of [...params, ...grads]) t.dispose();
  assert.equal(memory().tensors, before, `${name}: grad leaves nothing behind`);

  const h = 1e-6;
  for (let k = 0; k < inputs.length; k++) {
    const fd = new Float64Array(values[k].length);
    for (let j = 0; j < fd.length; j++) {
      const plus = values.map((v) => v.slice());
      const minus = values.map((v) => v.slice());
      plus[k][j] += h;
      minus[k][j] -= h;
      fd[j] = ((await evalLoss(plus)) - (await evalLoss(minus))) / (2 * h);
    }
    let err = 0;
    let scale = 1e-3;
    for (let j = 0; j < fd.length; j++) {
      err = Math.max(err, Math.abs(analytic[k][j] - fd[j]));
      scale = Math.max(scale, Math.abs(fd[j]));
    }
    assert.ok(
      err / scale < 1e-6,
      `${name}: input ${k} gradient off by ${err / scale} (relative)\n  analytic ${
        Array.from(analytic[k])
      }\n  numeric  ${Array.from(fd)}`,
    );
  }
  w.dispose();
}

/** Declare one finite-difference test. */
function gradTest(name: string, f: (xs: Tensor[]) => Tensor, inputs: Input[]) {
  Deno.test(`grad of ${name} matches central finite differences (f64)`, () =>
    checkGrad(name, f, inputs));
}

const i32 = (v: number[], shape?: number[]) => tensor(v, { dtype: "i32", shape });

// ---------------------------------------------------------------------------------------------
// Unary ops

gradTest("neg", ([x]) => neg(x), [{ shape: [2, 3] }]);
gradTest("abs", ([x]) => abs(x), [{ shape: [2, 3], gen: distinct }]);
gradTest("exp", ([x]) => exp(x), [{ shape: [2, 3] }]);
gradTest("log", ([x]) => log(x), [{ shape: [2, 3], gen: positive }]);
gradTest("sqrt", ([x]) => sqrt(x), [{ shape: [2, 3], gen: positive }]);
gradTest("rsqrt", ([x]) => rsqrt(x), [{ shape: [2, 3], gen: positive }]);
gradTest("square", ([x]) => square(x), [{ shape: [2, 3] }]);
gradTest("tanh", ([x]) => tanh(x), [{ shape: [2, 3] }]);
gradTest("sigmoid", ([x]) => sigmoid(x), [{ shape: [2, 3], gen: (r) => 12 * r() - 6 }]);
gradTest("relu", ([x]) => relu(x), [{ shape: [2, 3], gen: distinct }]);
gradTest("gelu", ([x]) => gelu(x), [{ shape: [2, 4], gen: (r) => 8 * r() - 4 }]);
gradTest("astype f64→f64 (no-op)", ([x]) => astype(x, "f64"), [{ shape: [3] }]);

// ---------------------------------------------------------------------------------------------
// Binary ops, with broadcasting (gradients summed back to each input's shape)

const BROADCASTS: [string, number[], number[]][] = [
  ["same shape", [2, 3], [2, 3]],
  ["[2,3] with [3]", [2, 3], [3]],
  ["[2,1] with [1,3]", [2, 1], [1, 3]],
  ["0-d with [2,3]", [], [2, 3]],
  ["[4,1,2] with [3,1]", [4, 1, 2], [3, 1]],
];

for (const [label, as, bs] of BROADCASTS) {
  gradTest(`add ${label}`, ([a, b]) => add(a, b), [{ shape: as }, { shape: bs }]);
  gradTest(`sub ${label}`, ([a, b]) => sub(a, b), [{ shape: as }, { shape: bs }]);
  gradTest(`mul ${label}`, ([a, b]) => mul(a, b), [{ shape: as }, { shape: bs }]);
  gradTest(`div ${label}`, ([a, b]) => div(a, b), [{ shape: as }, { shape: bs, gen: positive }]);
}

gradTest("pow (base and exponent)", ([a, b]) => pow(a, b), [
  { shape: [2, 3], gen: positive },
  { shape: [3], gen: (r) => 3 * r() - 1.5 },
]);
gradTest("pow with a JS exponent", ([a]) => pow(a, 3), [{ shape: [4] }]);
gradTest("pow with a JS base", ([b]) => pow(2, b), [{ shape: [4] }]);
gradTest("maximum (no ties)", ([a, b]) => maximum(a, b), [
  { shape: [2, 3], gen: distinct },
  { shape: [3], gen: (r, i) => 0.05 + 0.4 * i - 0.5 + 0.01 * r() },
]);
gradTest("minimum (no ties)", ([a, b]) => minimum(a, b), [
  { shape: [2, 3], gen: distinct },
  { shape: [2, 1], gen: (r, i) => 0.02 + 0.3 * i + 0.01 * r() },
]);
gradTest("weak JS scalars", ([a]) => sub(div(mul(add(a, 1), 3), 2), 0.5), [{ shape: [3] }]);
gradTest("an input used twice accumulates", ([a]) => add(mul(a, a), exp(a)), [{ shape: [3] }]);

// where: both branches (and a broadcast branch)
const cond = () => tensor([true, false, true, false, false, true], { shape: [2, 3] });
gradTest("where (both branches)", ([a, b]) => {
  const c = cond();
  return where(c, a, b);
}, [{ shape: [2, 3] }, { shape: [2, 3] }]);
gradTest("where (broadcast branches)", ([a, b]) => where(cond(), a, b), [
  { shape: [3] },
  { shape: [2, 1] },
]);
gradTest("where with a scalar branch", ([a]) => where(greater(a, 0), a, 0.5), [{
  shape: [6],
  gen: distinct,
}]);

// ---------------------------------------------------------------------------------------------
// Reductions

gradTest("sum (all)", ([x]) => sum(x), [{ shape: [2, 3] }]);
gradTest("sum axis 1", ([x]) => sum(x, 1), [{ shape: [2, 3] }]);
gradTest("sum axes [0,2] keepdims", ([x]) => sum(x, [0, 2], true), [{ shape: [2, 3, 2] }]);
gradTest("mean (all)", ([x]) => mean(x), [{ shape: [2, 3] }]);
gradTest("mean axis 0 keepdims", ([x]) => mean(x, 0, true), [{ shape: [3, 2] }]);
gradTest("mean axes [0,2]", ([x]) => mean(x, [0, 2]), [{ shape: [2, 3, 2] }]);
gradTest("max (all)", ([x]) => max(x), [{ shape: [2, 3], gen: distinct }]);
gradTest("max axis 1", ([x]) => max(x, 1), [{ shape: [3, 4], gen: distinct }]);
gradTest("max axes [0,2] keepdims", ([x]) => max(x, [0, 2], true), [{
  shape: [2, 3, 2],
  gen: distinct,
}]);
gradTest("min axis 0", ([x]) => min(x, 0), [{ shape: [3, 4], gen: distinct }]);
gradTest("logsumexp (all)", ([x]) => logsumexp(x), [{ shape: [2, 3] }]);
gradTest("logsumexp axis 0 keepdims", ([x]) => logsumexp(x, 0, true), [{ shape: [3, 2] }]);

// ---------------------------------------------------------------------------------------------
// matmul

gradTest("matmul [3,4]@[4,2]", ([a, b]) => matmul(a, b), [{ shape: [3, 4] }, { shape: [4, 2] }]);
gradTest("matmul batched [2,3,4]@[2,4,2]", ([a, b]) => matmul(a, b), [
  { shape: [2, 3, 4] },
  { shape: [2, 4, 2] },
]);
gradTest("matmul batch broadcast [2,1,3,4]@[3,4,2]", ([a, b]) => matmul(a, b), [
  { shape: [2, 1, 3, 4] },
  { shape: [3, 4, 2] },
]);
gradTest("matmul [2,3]@[2,3,2] (batch only on b)", ([a, b]) => matmul(a, b), [
  { shape: [2, 3] },
  { shape: [2, 3, 2] },
]);
gradTest("matmul vector@matrix", ([a, b]) => matmul(a, b), [{ shape: [4] }, { shape: [4, 3] }]);
gradTest("matmul matrix@vector", ([a, b]) => matmul(a, b), [{ shape: [3, 4] }, { shape: [4] }]);
gradTest("matmul vector@vector", ([a, b]) => matmul(a, b), [{ shape: [5] }, { shape: [5] }]);
gradTest("matmulT", ([a, b]) => matmulT(a, b), [{ shape: [2, 3, 4] }, { shape: [5, 4] }]);
gradTest("matmul chain (transposed backward paths)", ([a, b, c]) => matmul(matmul(a, b), c), [
  { shape: [2, 3] },
  { shape: [3, 4] },
  { shape: [4, 2] },
]);

// ---------------------------------------------------------------------------------------------
// Movement and indexing

gradTest("reshape", ([x]) => mul(reshape(x, [3, 2]), reshape(x, [3, 2])), [{ shape: [2, 3] }]);
gradTest("transpose", ([x]) => transpose(x, [2, 0, 1]), [{ shape: [2, 3, 2] }]);
gradTest("expandDims + squeeze", ([x]) => squeeze(exp(expandDims(x, 1))), [{ shape: [2, 3] }]);
gradTest("broadcastTo", ([x]) => broadcastTo(x, [4, 2, 3]), [{ shape: [2, 1] }]);
gradTest("concat axis 1 (three inputs)", ([a, b, c]) => concat([a, b, c], 1), [
  { shape: [2, 1] },
  { shape: [2, 3] },
  { shape: [2, 2] },
]);
gradTest("concat axis 0", ([a, b]) => concat([a, b]), [{ shape: [1, 3] }, { shape: [2, 3] }]);
gradTest("stack axis 1", ([a, b]) => stack([a, b], 1), [{ shape: [2, 3] }, { shape: [2, 3] }]);
gradTest("slice (middle block)", ([x]) => slice(x, [1, 1], [2, 2]), [{ shape: [3, 4] }]);
gradTest("slice (negative begin, to the end)", ([x]) => slice(x, [0, -2]), [{ shape: [3, 4] }]);
gradTest("take axis 0 (repeated indices)", ([x]) => take(x, i32([2, 0, 2, 1])), [{
  shape: [3, 2],
}]);
gradTest("take axis 1 (2-D indices)", ([x]) => take(x, i32([1, -1, 0, 1], [2, 2]), 1), [{
  shape: [2, 3],
}]);
gradTest(
  "scatterAdd (base and updates, repeated indices)",
  ([b, u]) => scatterAdd(b, i32([0, 2, 0]), u),
  [{ shape: [3, 2] }, { shape: [3, 2] }],
);
gradTest("scatterAdd axis 1", ([b, u]) => scatterAdd(b, i32([1, 1]), u, 1), [
  { shape: [2, 3] },
  { shape: [2, 2] },
]);

// ---------------------------------------------------------------------------------------------
// Softmax family

gradTest("softmax last axis", ([x]) => softmax(x), [{ shape: [2, 4] }]);
gradTest("softmax axis 0", ([x]) => softmax(x, 0), [{ shape: [3, 2] }]);
gradTest("logSoftmax", ([x]) => logSoftmax(x), [{ shape: [2, 4] }]);
gradTest("logSoftmax axis 0", ([x]) => logSoftmax(x, 0), [{ shape: [3, 2] }]);
gradTest("a small MLP loss (matmul, gelu, logSoftmax, take)", ([w1, w2]) => {
  const x = tensor([[0.5, -1, 2], [1, 0.25, -0.5]], { dtype: "f64" });
  const h = gelu(matmul(x, w1));
  const lp = logSoftmax(matmul(h, w2));
  return neg(mean(take(reshape(lp, [-1]), i32([1, 3]))));
}, [{ shape: [3, 4] }, { shape: [4, 2] }]);

// ---------------------------------------------------------------------------------------------
// The grad contract

Deno.test("gradients have their parameter's dtype (f16 → f16, bf16 → bf16, f32 → f32)", async () => {
  for (const d of ["f16", "bf16", "f32", "f64"] as DType[]) {
    const p = { w: tensor([1, -2, 3], { dtype: d }), b: tensor([0.5], { dtype: d }) };
    const g = grad((q: typeof p) => sum(square(add(q.w, q.b))))(p);
    assert.equal(g.w.dtype, d);
    assert.equal(g.b.dtype, d);
    assert.deepEqual(Array.from(await g.w.data()), [3, -3, 7]);
    assert.deepEqual(Array.from(await g.b.data()), [7]);
    for (const t of [p.w, p.b, g.w, g.b]) t.dispose();
  }
  // Mixed: an f16 param used with an f32 one keeps f16 for its gradient.
  const h = tensor([2], { dtype: "f16" });
  const f = tensor([3], { dtype: "f32" });
  const [gh, gf] = grad((ps: Tensor[]) => sum(mul(ps[0], ps[1])))([h, f]);
  assert.deepEqual([gh.dtype, gf.dtype], ["f16", "f32"]);
  assert.deepEqual([await gh.item(), await gf.item()], [3, 2]);
  for (const t of [h, f, gh, gf]) t.dispose();
});

Deno.test("tree-shaped params give a gradient tree of the same shape", async () => {
  const params = {
    dense: { w: tensor([[1, 2], [3, 4]]), b: tensor([1, 1]) },
    layers: [tensor([2]), [tensor([3]), tensor([4])]],
    name: "kept",
  };
  const f = (p: typeof params) => {
    const [l0, [l1, l2]] = p.layers as [Tensor, Tensor[]];
    return add(sum(mul(p.dense.w, p.dense.b)), sum(mul(mul(l0, l1), l2)));
  };
  const g = grad(f)(params);
  assert.deepEqual(Object.keys(g), ["dense", "layers", "name"]);
  assert.deepEqual(Object.keys(g.dense), ["w", "b"]);
  assert.equal(g.name, "kept");
  assert.deepEqual(await g.dense.w.toArray(), [[1, 1], [1, 1]]);
  assert.deepEqual(await g.dense.b.toArray(), [4, 6]);
  const [gl0, [gl1, gl2]] = g.layers as [Tensor, Tensor[]];
  assert.deepEqual([await gl0.item(), await gl1.item(), await gl2.item()], [12, 8, 6]);
  for (const t of [params.dense.w, params.dense.b, gl0, gl1, gl2, g.dense.w, g.dense.b]) {
    t.dispose();
  }
  for (const t of params.layers.flat()) t.dispose();
});

Deno.test("hasAux returns [[loss, aux], grads] and aux is not differentiated", async () => {
  const before = memory().tensors;
  const w = tensor([1, 2, 3]);
  const f = (p: Tensor, scale: number) => {
    const y = mul(p, scale);
    return [sum(square(y)), { y, n: 3 }] as [Tensor, { y: Tensor; n: number }];
  };
  const [[loss, aux], g] = valueAndGrad(f, { hasAux: true })(w, 2);
  assert.equal(await loss.item(), 56);
  assert.deepEqual(Array.from(await aux.y.data()), [2, 4, 6]);
  assert.equal(aux.n, 3);
  assert.deepEqual(Array.from(await g.data()), [8, 16, 24]);
  for (const t of [w, loss, aux.y, g]) t.dispose();
  assert.equal(memory().tensors, before);
});

Deno.test("unused params get zero gradients of their shape and dtype", async () => {
  const p = { used: tensor([1, 2]), unused: tensor([[5, 6, 7]], { dtype: "bf16" }) };
  const g = grad((q: typeof p) => sum(q.used))(p);
  assert.deepEqual(g.unused.shape, [1, 3]);
  assert.equal(g.unused.dtype, "bf16");
  assert.deepEqual(Array.from(await g.unused.data()), [0, 0, 0]);
  assert.deepEqual(Array.from(await g.used.data()), [1, 1]);
  // A param reached only through an integer path (a comparison) has a zero gradient too.
  const x = tensor([1, -1]);
  const gx = grad((t: Tensor) => sum(astype(greater(t, 0), "f32")))(x);
  assert.deepEqual(Array.from(await gx.data()), [0, 0]);
  for (const t of [p.used, p.unused, g.used, g.unused, x, gx]) t.dispose();
});

Deno.test("valueAndGrad keeps only the returned tensors alive (no leak)", async () => {
  const w1 = tensor(Float32Array.from({ length: 12 }, (_, i) => i / 10 - 0.5), { shape: [3, 4] });
  const w2 = tensor(Float32Array.from({ length: 8 }, (_, i) => i / 5 - 0.7), { shape: [4, 2] });
  const x = tensor([[1, 2, 3], [-1, 0, 1]]);
  const labels = i32([1, 0]);
  const loss = (p: { w1: Tensor; w2: Tensor }) => {
    const h = relu(matmul(x, p.w1));
    const lp = logSoftmax(matmul(h, p.w2));
    return neg(mean(sum(mul(lp, astype(greater(lp, -1e9), "f32")), 1)));
  };
  const params = { w1, w2 };
  // Warm up once, then measure: live memory after = before + loss + one gradient per param.
  const first = valueAndGrad(loss)(params);
  first[0].dispose();
  first[1].w1.dispose();
  first[1].w2.dispose();
  const before = memory();
  const [l, g] = valueAndGrad(loss)(params);
  const after = memory();
  assert.equal(after.tensors, before.tensors + 3);
  assert.equal(after.bytes, before.bytes + 4 * (1 + 12 + 8));
  assert.ok(Number.isFinite(await l.item()));
  for (const t of [l, g.w1, g.w2]) t.dispose();
  assert.equal(memory().tensors, before.tensors);
  assert.equal(memory().bytes, before.bytes);
  for (const t of [w1, w2, x, labels]) t.dispose();
});

Deno.test("vjp: pulls a cotangent back through a tensor-valued function", async () => {
  const x = tensor([1, 2, 3], { dtype: "f64" });
  const before = memory().tensors;
  const [y, g] = tidy(() => {
    const [y, pull] = vjp((t: Tensor) => mul(square(t), 2), x);
    return [y, pull(tensor([1, 0, -1], { dtype: "f64" }))];
  });
  assert.equal(memory().tensors, before + 2);
  assert.deepEqual(Array.from(await y.data()), [2, 8, 18]);
  assert.deepEqual(Array.from(await g.data()), [4, 0, -12]);
  for (const t of [x, y, g]) t.dispose();
});

Deno.test("stopGradient blocks the gradient of its argument", async () => {
  const x = tensor([1, 2, -3], { dtype: "f64" });
  const g = grad((t: Tensor) => sum(mul(t, stopGradient(square(t)))))(x);
  assert.deepEqual(Array.from(await g.data()), [1, 4, 9]); // x², not 3x²
  for (const t of [x, g]) t.dispose();
});

Deno.test("a param returned as the loss itself has gradient one; zeros-based losses work", async () => {
  const s = tensor(3);
  const g = grad((t: Tensor) => t)(s);
  assert.equal(await g.item(), 1);
  assert.equal(await s.item(), 3, "the parameter is still alive");
  const z = zeros([2]);
  const gz = grad((t: Tensor) => sum(mul(t, 0)))(z);
  assert.deepEqual(Array.from(await gz.data()), [0, 0]);
  for (const t of [s, g, z, gz]) t.dispose();
});

// ---------------------------------------------------------------------------------------------
// maximum/minimum on ties (issue 13, item 6)

Deno.test("maximum/minimum VJP: ties split the gradient evenly, exact values (f64 and f16)", async () => {
  const before = memory().tensors;
  for (const dtype of ["f64", "f32", "f16"] as DType[]) {
    for (const [name, op] of [["maximum", maximum], ["minimum", minimum]] as const) {
      // a > b, a == b, a < b, a tie at -0/+0 (equal), a broadcast b: exact expected cotangents.
      const a = tensor([3, 2, -1, 0], { dtype });
      const b = tensor([1, 2, 5, -0], { dtype });
      const w = tensor([1, 0.75, 4, 8], { dtype });
      const [ga, gb] = grad(([x, y]: Tensor[]) => sum(mul(op(x, y), w)))([a, b]);
      const aWins = name === "maximum" ? [1, 0.375, 0, 4] : [0, 0.375, 4, 4];
      const bWins = name === "maximum" ? [0, 0.375, 4, 4] : [1, 0.375, 0, 4];
      assert.deepEqual(await ga.toArray(), aWins, `${name} ${dtype}: grad of a`);
      assert.deepEqual(await gb.toArray(), bWins, `${name} ${dtype}: grad of b`);
      assert.equal(ga.dtype, dtype);
      for (const t of [a, b, w, ga, gb]) t.dispose();
    }
  }
  assert.equal(memory().tensors, before);
});

Deno.test("maximum VJP: a broadcast scalar tied with several elements sums its halves", async () => {
  const a = tensor([2, 2, 1, 3], { dtype: "f64" });
  const b = tensor(2, { dtype: "f64" });
  const [ga, gb] = grad(([x, y]: Tensor[]) => sum(maximum(x, y)))([a, b]);
  assert.deepEqual(await ga.toArray(), [0.5, 0.5, 0, 1]);
  assert.equal(await gb.item(), 0.5 + 0.5 + 1); // two ties and one win
  for (const t of [a, b, ga, gb]) t.dispose();
});

Deno.test("maximum VJP: NaN from one side sends no gradient to either side (as JAX)", async () => {
  const a = tensor([NaN, 1], { dtype: "f64" });
  const b = tensor([1, 0], { dtype: "f64" });
  const [ga, gb] = grad(([x, y]: Tensor[]) => sum(maximum(x, y)))([a, b]);
  assert.deepEqual(await ga.toArray(), [0, 1]);
  assert.deepEqual(await gb.toArray(), [0, 0]);
  for (const t of [a, b, ga, gb]) t.dispose();
});

Deno.test("maximum/minimum VJP computes only the gradients that are needed", async () => {
  // A CPU device that counts `where` kernels: the VJP selects once per needed cotangent.
  let wheres = 0;
  const counting: Backend = {
    ...cpu,
    name: "cpu-counting-where",
    where: (...args) => (wheres++, cpu.where(...args)),
  };
  for (const op of [maximum, minimum]) {
    const a = tensor([1, 2, 3], { dtype: "f64", device: counting });
    const b = tensor([3, 2, 1], { dtype: "f64", device: counting });
    wheres = 0;
    const gBoth = grad((x: Tensor[]) => sum(op(x[0], x[1])))([a, b]);
    const both = wheres;
    wheres = 0;
    // Only `a` is differentiated: `b` comes in as data, so its cotangent is never built.
    const gA = grad((x: Tensor, y: Tensor) => sum(op(x, y)))(a, b);
    assert.deepEqual(await gA.toArray(), await gBoth[0].toArray());
    assert.equal(wheres, both / 2, `wheres: ${wheres} for a only, ${both} for both`);
    for (const t of [a, b, gA, ...gBoth]) t.dispose();
  }
});
