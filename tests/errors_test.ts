/**
 * Bad input throws an Error that names the problem and the fix: shape mismatches name the op
 * and both shapes, unknown dtypes list the valid ones, mixed devices name both, and misuse of
 * `grad` or of disposed tensors says what to do.
 */
import assert from "node:assert/strict";
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
  reshape,
  scatterAdd,
  slice,
  stack,
  sum,
  take,
  type Tensor,
  tensor,
  transpose,
  valueAndGrad,
  where,
  zeros,
} from "../mod.ts";

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
