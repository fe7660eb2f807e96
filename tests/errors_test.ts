/**
 * Bad input throws an Error that names the problem and the fix: shape mismatches name the op
 * and both shapes, unknown dtypes list the valid ones, mixed devices name both, and misuse of
 * `grad` or of disposed tensors says what to do.
 */
import assert from "node:assert/strict";
import * as nb from "../mod.ts";
import {
  add,
  argmax,
  astype,
  type Backend,
  concat,
  cpu,
  type DType,
  dtypes,
  full,
  grad,
  matmul,
  memory,
  mul,
  nn,
  reshape,
  scatterAdd,
  slice,
  stack,
  sub,
  sum,
  take,
  type Tensor,
  tensor,
  tidy,
  transpose,
  valueAndGrad,
  where,
  zeros,
} from "../mod.ts";

const { crossEntropy, linear, mse } = nn;

/** Assert `fn` throws an Error whose message contains every one of `parts`. */
function throwsWith(fn: () => unknown, parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof Error, `expected an Error, got ${e}`);
    for (const p of parts) {
      assert.ok(e.message.includes(p), `message "${e.message}" should mention "${p}"`);
    }
    return true;
  });
}

/** Run `body` with fresh tensors and check nothing is left alive afterwards. */
function withTensors(make: () => Tensor[], body: (ts: Tensor[]) => void): void {
  const before = memory().tensors;
  const ts = make();
  try {
    body(ts);
  } finally {
    for (const t of ts) t.dispose();
  }
  assert.equal(memory().tensors, before, "a failed op must not leave tensors behind");
}

Deno.test("add: a shape mismatch names the op and both shapes", () => {
  withTensors(() => [zeros([2, 3]), zeros([4])], ([a, b]) => {
    throwsWith(() => add(a, b), ["add", "[2,3]", "[4]"]);
    throwsWith(() => mul(b, a), ["mul", "[4]", "[2,3]"]);
  });
});

Deno.test("matmul: inner and batch mismatches name the op and both shapes", () => {
  const make =
    () => [zeros([2, 3]), zeros([4, 5]), zeros([2, 3, 4]), zeros([3, 4, 5]), full([], 1)];
  withTensors(make, ([a, b, c, d, s]) => {
    throwsWith(() => matmul(a, b), ["matmul", "[2,3]", "[4,5]"]);
    throwsWith(() => matmul(c, d), ["matmul", "[2,3,4]", "[3,4,5]"]);
    throwsWith(() => matmul(s, a), ["matmul", "1-D"]);
  });
});

Deno.test("concat and stack: mismatched shapes name both", () => {
  withTensors(() => [zeros([2, 3]), zeros([2, 4]), zeros([3])], ([a, b, c]) => {
    throwsWith(() => concat([a, b], 0), ["concat", "[2,3]", "[2,4]"]);
    throwsWith(() => concat([a, c], 0), ["concat", "[2,3]", "[3]"]);
    throwsWith(() => stack([a, b]), ["stack", "[2,3]", "[2,4]"]);
    throwsWith(() => concat([]), ["concat", "at least one"]);
  });
  withTensors(() => [full([], 1), full([], 2)], ([a, b]) => {
    throwsWith(() => concat([a, b]), ["concat", "0-d", "stack"]);
  });
});

Deno.test("reshape, transpose, slice, take, scatterAdd: bad shapes or axes are named", () => {
  withTensors(() => [zeros([2, 3]), tensor([0, 1], { dtype: "i32" }), zeros([3, 3])], (
    [x, idx, upd],
  ) => {
    throwsWith(() => reshape(x, [4, 2]), ["reshape", "[2,3]", "[4,2]"]);
    throwsWith(() => reshape(x, [-1, 4]), ["reshape", "[2,3]", "[-1,4]"]);
    throwsWith(() => transpose(x, [0, 0]), ["transpose", "[0,0]", "permutation"]);
    throwsWith(() => sum(x, 2), ["sum", "axis 2", "out of range"]);
    throwsWith(() => slice(x, [1, 1], [2, 2]), ["slice", "out of bounds", "[2,3]"]);
    throwsWith(() => take(x, x), ["take", "indices must be i32 or u8", "astype"]);
    throwsWith(() => scatterAdd(x, idx, upd), ["scatterAdd", "[3,3]", "[2,3]"]);
  });
  withTensors(() => [zeros([3]), tensor([3], { dtype: "i32" })], ([x, idx]) => {
    throwsWith(() => take(x, idx), ["take", "index 3", "out of range", "size 3"]);
  });
});

Deno.test("an unknown dtype lists the valid ones", () => {
  const all = dtypes.join(", ");
  throwsWith(() => tensor([1], { dtype: "f17" as DType }), ['"f17"', all]);
  throwsWith(() => zeros([2], { dtype: "float32" as DType }), ['"float32"', all]);
  withTensors(() => [zeros([2])], ([x]) => {
    throwsWith(() => astype(x, "half" as DType), ['"half"', all]);
  });
});

Deno.test("mixing devices names both devices and the op", () => {
  const other: Backend = { ...cpu, name: "cpu:1" };
  const make = () => [
    tensor([[1, 2]]),
    tensor([[3], [4]], { device: other }),
    zeros([1, 2], { device: other }),
  ];
  withTensors(make, ([a, b, c]) => {
    assert.equal(b.device.name, "cpu:1");
    throwsWith(() => add(a, b), ["add", "cpu", "cpu:1", "different devices"]);
    throwsWith(() => matmul(a, b), ["matmul", "cpu", "cpu:1"]);
    throwsWith(() => concat([a, c]), ["concat", "cpu", "cpu:1"]);
  });
  assert.equal(memory(other).tensors, 0);
});

Deno.test("where: a non-bool condition says to compare first", () => {
  withTensors(() => [tensor([1, 0]), tensor([1, 2])], ([c, x]) => {
    throwsWith(() => where(c, x, 0), ["where", "bool", "f32", "greater"]);
  });
});

Deno.test("grad through argmax cast back to float names argmax", () => {
  withTensors(() => [tensor([1, 3, 2])], ([x]) => {
    throwsWith(
      () => grad((p: Tensor) => sum(astype(argmax(p), "f32")))(x),
      ["grad", '"argmax"', "not differentiable", "stopGradient"],
    );
  });
});

Deno.test("grad of a non-scalar says to reduce first; non-tensor results are named", () => {
  withTensors(() => [tensor([1, 2])], ([x]) => {
    throwsWith(() => grad((p: Tensor) => mul(p, 2))(x), ["grad", "scalar", "[2]", "mean"]);
    throwsWith(
      () => valueAndGrad((p: Tensor) => [mul(p, 2), 1] as [Tensor, number], { hasAux: true })(x),
      ["grad", "scalar", "reduce"],
    );
    throwsWith(() => grad((() => 3) as unknown as (p: Tensor) => Tensor)(x), ["grad", "number"]);
    throwsWith(() => grad((p: Tensor) => sum(astype(p, "i32")))(x), ["grad", "floating", "i32"]);
  });
});

Deno.test("using a disposed tensor says it was disposed and how to keep it", async () => {
  const t = tensor([1, 2], { dtype: "f16" });
  t.dispose();
  t.dispose(); // idempotent
  throwsWith(() => add(t, 1), ["disposed", "f16", "[2]", "keep(t)"]);
  await assert.rejects(() => t.data(), /was disposed/);
  assert.equal(t.disposed, true);
  assert.equal(t.toString(), "Tensor(f16[2] on disposed)");
});

Deno.test("tensor(): ragged arrays and wrong sizes are explained", () => {
  throwsWith(() => tensor([[1, 2], [3]]), ["ragged"]);
  throwsWith(() => tensor([1, 2, 3], { shape: [2, 2] }), ["[2,2]", "4", "3"]);
  withTensors(() => [tensor([1, 2])], ([x]) => {
    assert.rejects(() => x.item(), /one element/);
  });
});

// ---------------------------------------------------------------------------------------------
// Issue 13, items 4 and 7: scalars that do not fit, and garbage in

Deno.test("a JS scalar that an integer dtype cannot hold is an error, never wrapped", async () => {
  const make = () => [
    tensor([1, 200], { dtype: "u8" }),
    tensor(1, { dtype: "i32" }),
    tensor([true, false]),
  ];
  withTensors(make, ([u, i, c]) => {
    throwsWith(() => add(u, 300), ["add", "300", "u8", "0…255"]);
    throwsWith(() => add(u, -1), ["add", "-1", "u8"]);
    throwsWith(() => mul(i, 3e9), ["mul", "3000000000", "i32"]);
    throwsWith(() => add(-(2 ** 31) - 1, i), ["add", "argument 1", "i32"]);
    throwsWith(() => where(c, u, 256), ["where", "argument 3", "256", "u8"]);
    throwsWith(() => where(c, 300, u), ["where", "argument 2", "300", "u8"]);
  });
  // In range is fine; a non-integer scalar promotes an integer tensor to f32, as in JAX.
  const ok = [
    add(tensor([1, 0], { dtype: "u8" }), 255),
    add(tensor(0, { dtype: "i32" }), 2 ** 31 - 1),
    add(tensor(1, { dtype: "i32" }), 2.5),
  ];
  assert.deepEqual(await ok[0].toArray(), [0, 255]); // 1 + 255 = 256 wraps in the tensor op
  assert.equal(await ok[1].item(), 2 ** 31 - 1);
  assert.equal(ok[2].dtype, "f32");
  assert.equal(await ok[2].item(), 3.5);
  ok.forEach((t) => t.dispose());
});

Deno.test("garbage in: non-tensor arguments name the op, the argument and what was given", () => {
  withTensors(() => [tensor([[1, 2]]), tensor([1, 2])], ([m, v]) => {
    throwsWith(() => matmul(undefined as unknown as Tensor, m), [
      "matmul",
      "argument 1",
      "Tensor",
      "undefined",
    ]);
    throwsWith(() => matmul(m, [[1], [2]] as unknown as Tensor), [
      "matmul",
      "argument 2",
      "plain array",
      "tensor([...])",
    ]);
    throwsWith(() => add(v, "1" as unknown as number), ["add", "argument 2", 'string "1"']);
    throwsWith(() => sub(undefined as unknown as number, v), ["sub", "argument 1", "undefined"]);
    throwsWith(() => sum(null as unknown as Tensor), ["sum", "argument 1", "null"]);
    throwsWith(() => astype([1] as unknown as Tensor, "f16"), ["astype", "plain array"]);
    throwsWith(() => where(true as unknown as Tensor, v, 0), ["where", "condition", "boolean"]);
  });
});

Deno.test("tensor(): undefined, strings and objects are errors naming the element", () => {
  const before = memory().tensors;
  throwsWith(() => tensor(undefined as unknown as number), ["tensor", "values", "undefined"]);
  throwsWith(() => tensor([1, "a"] as unknown as number[]), ["tensor", "element [1]", '"a"']);
  throwsWith(() => tensor([[1, 2], [3, undefined]] as unknown as number[][]), [
    "element [1,1]",
    "undefined",
  ]);
  throwsWith(() => tensor({} as unknown as number), ["tensor", "an object"]);
  assert.equal(memory().tensors, before);
});

Deno.test("a batch missing a key names the op and argument that got undefined", () => {
  withTensors(() => [tensor([[1, 2]]), tensor([[0.5], [1]]), tensor([3])], ([x, w, y]) => {
    const batch = { x } as { x: Tensor; y: Tensor }; // `y` forgotten
    throwsWith(() => tidy(() => mse(linear({ w }, batch.x), batch.y)), [
      "mse",
      "argument 2 (target)",
    ]);
    const noX = { y } as { x: Tensor; y: Tensor };
    throwsWith(() => linear({ w }, noX.x), ["linear", "argument 2 (x)", "undefined"]);
    throwsWith(() => crossEntropy(x, noX.x), ["crossEntropy", "argument 2 (labels)", "undefined"]);
  });
});

Deno.test("grad with respect to an integer leaf is an error, not zeros", () => {
  withTensors(() => [tensor([1, 2]), tensor([1, 2], { dtype: "i32" })], ([f, i]) => {
    const loss = (p: { w: Tensor; n: Tensor }) => sum(mul(p.w, astype(p.n, "f32")));
    throwsWith(() => grad(loss)({ w: f, n: i }), ["grad", "leaf 1", "i32[2]", "float"]);
    throwsWith(() => valueAndGrad((t: Tensor) => sum(astype(t, "f32")))(i), ["grad", "i32"]);
  });
});

Deno.test("shape, index and activation ops name the op and argument for a non-tensor", () => {
  const t = nb.ones([2]);
  const cases: [string, () => unknown, RegExp][] = [
    ["reshape", () => nb.reshape(undefined as never, [1]), /reshape: argument 1 must be a Tensor/],
    ["transpose", () => nb.transpose([1, 2] as never), /transpose: argument 1 .* plain array/],
    ["slice", () => nb.slice(null as never, [0]), /slice: argument 1 must be a Tensor, got null/],
    ["squeeze", () => nb.squeeze("x" as never), /squeeze: argument 1 .* the string "x"/],
    ["expandDims", () => nb.expandDims(3 as never, 0), /expandDims: argument 1 .* the number 3/],
    ["broadcastTo", () => nb.broadcastTo(undefined as never, [2]), /broadcastTo: argument 1/],
    ["concat", () => nb.concat([t, undefined as never]), /concat: tensor 1 of argument 1/],
    ["stack", () => nb.stack(t as never), /stack: argument 1 must be an array of tensors/],
    ["take", () => nb.take(t, undefined as never), /take: argument 2 must be a Tensor/],
    ["scatterAdd", () => nb.scatterAdd(t, t, [1] as never), /scatterAdd: argument 3/],
    ["oneHot", () => nb.oneHot(undefined as never, 3), /oneHot: argument 1 must be a Tensor/],
    ["softmax", () => nb.softmax(undefined as never), /softmax: argument 1 must be a Tensor/],
    ["logSoftmax", () => nb.logSoftmax({} as never), /logSoftmax: argument 1 must be a Tensor/],
  ];
  for (const [name, f, re] of cases) assert.throws(f, re, name);
  t.dispose();
});
