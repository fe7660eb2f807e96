/**
 * Memory ownership: `backward` frees each cotangent after its last use (the peak of a deep chain
 * is the forward's plus a few cotangents, not twice the forward), and `memory()` with no argument
 * reports every device.
 */
import assert from "node:assert/strict";
import {
  add,
  type Backend,
  cpu,
  grad,
  memory,
  mul,
  resetPeak,
  sum,
  tanh,
  type Tensor,
  tensor,
  tidy,
  valueAndGrad,
  vjp,
  zeros,
} from "../mod.ts";

const N = 20_000;
const DEPTH = 40;

/** A deep chain of tanh: every step keeps one forward value the VJP needs. */
const chain = (x: Tensor) => {
  let y = x;
  for (let i = 0; i < DEPTH; i++) y = tanh(mul(y, 1.5));
  return sum(y);
};

const input = () => tensor(Float32Array.from({ length: N }, (_, i) => Math.sin(i) * 2));

Deno.test("backward: the peak of a deep chain is the forward's plus a few cotangents", () => {
  const base = memory().bytes;
  const x = input();
  resetPeak();
  tidy(() => chain(x)).dispose();
  const forward = memory().peakBytes - base - N * 4;
  resetPeak();
  const g = grad(chain)(x);
  const backward = memory().peakBytes - base - N * 4;
  const vector = N * 4;
  // Before the fix every cotangent (and each VJP's temporaries) lived until grad returned:
  // about 3 vectors per level on top of the forward, here ~120 vectors more.
  assert.ok(
    backward <= forward + 8 * vector,
    `grad peak ${backward} B vs forward ${forward} B (${
      (backward - forward) / vector
    } vectors more)`,
  );
  assert.ok(forward >= DEPTH * vector, `the forward holds its ${DEPTH} levels (${forward} B)`);
  g.dispose();
  x.dispose();
  assert.equal(memory().bytes, base);
});

Deno.test("backward: gradients through fan-out and shared cotangents are exact", async () => {
  // y_{k+1} = y_k · 2 + y_k: add's VJP hands the same cotangent to both inputs, and the
  // partial sums of y_k's cotangent are freed as they are replaced. d/dx = 3^DEPTH per element.
  const depth = 12;
  const f = (p: { x: Tensor; w: Tensor }) => {
    let y = p.x;
    for (let i = 0; i < depth; i++) y = add(mul(y, 2), y);
    return sum(mul(y, p.w));
  };
  const before = memory().tensors;
  const p = { x: tensor([1, -2, 0.5]), w: tensor([1, 0.25, -4]) };
  const [loss, g] = valueAndGrad(f)(p);
  assert.deepEqual(Array.from(await g.x.data()), [1, 0.25, -4].map((w) => w * 3 ** depth));
  assert.deepEqual(Array.from(await g.w.data()), [1, -2, 0.5].map((x) => x * 3 ** depth));
  assert.equal(await loss.item(), (1 - 0.5 - 2) * 3 ** depth);
  for (const t of [loss, g.x, g.w, p.x, p.w]) t.dispose();
  assert.equal(memory().tensors, before, "nothing left behind");
});

Deno.test("backward: a gradient that is the seed or a parameter's own cotangent survives", async () => {
  const before = memory().tensors;
  // grad of sum(x) passes the seed's broadcast; grad of x·1 w.r.t. x is the identity path.
  const x = tensor([1, 2, 3]);
  const g1 = grad((t: Tensor) => sum(t))(x);
  const g2 = grad((t: Tensor) => sum(add(t, t)))(x);
  assert.deepEqual(Array.from(await g1.data()), [1, 1, 1]);
  assert.deepEqual(Array.from(await g2.data()), [2, 2, 2]);
  // vjp: the caller's cotangent is never freed by the pullback.
  const ct = tensor([1, 1, 1]);
  const out = tidy(() => {
    const [, pull] = vjp((t: Tensor) => mul(t, 1), x);
    return pull(ct);
  });
  assert.equal(ct.disposed, false);
  assert.deepEqual(Array.from(await out.data()), [1, 1, 1]);
  for (const t of [x, g1, g2, ct, out]) t.dispose();
  assert.equal(memory().tensors, before);
});

Deno.test("memory() with no argument reports every device; memory(device) one device", () => {
  const other: Backend = { ...cpu, name: "cpu:mem" };
  const all0 = memory();
  const a = zeros([4]); // cpu, 16 bytes
  const b = zeros([8], { device: other, dtype: "f16" }); // other, 16 bytes
  const all = memory();
  assert.equal(all.device, "all");
  assert.equal(all.tensors - all0.tensors, 2, "both devices' tensors are counted");
  assert.equal(all.bytes - all0.bytes, 32);
  assert.equal(all.devices["cpu:mem"].tensors, 1);
  assert.equal(all.devices["cpu:mem"].bytes, 16);
  assert.equal(all.devices["cpu:mem"].byDtype.f16?.bytes, 16);
  assert.equal(memory(other).tensors, 1);
  assert.equal(memory(cpu).tensors, all.devices.cpu.tensors);
  assert.ok(all.peakBytes >= all.bytes);
  a.dispose();
  b.dispose();
  assert.equal(memory().tensors, all0.tensors);
  assert.equal(memory(other).bytes, 0);
});

Deno.test("resetPeak() with no argument resets every device and the total", () => {
  const other: Backend = { ...cpu, name: "cpu:peak" };
  const t = zeros([1000], { device: other });
  t.dispose();
  assert.ok(memory(other).peakBytes >= 4000);
  resetPeak();
  assert.equal(memory(other).peakBytes, 0);
  assert.equal(memory().peakBytes, memory().bytes);
});
