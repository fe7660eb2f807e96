/**
 * WebGPU out-of-range indices (issue 13, item 5): kernels record the op and the offending index
 * in a device-side flag; the next readback (which already happens) throws, with no extra
 * mapAsync. The device agrees with the CPU on the error and recovers after reporting it.
 */
import assert from "node:assert/strict";
import { gpu, gtest } from "./webgpu_setup.ts";
import { readbackCount } from "../lib/backend/webgpu/runtime.ts";
import { type Tensor, tensor } from "../lib/tensor.ts";
import { oneHot, scatterAdd, take } from "../lib/ops/index.ts";
import { crossEntropy } from "../lib/nn/losses.ts";
import { add } from "../lib/ops/elementwise.ts";

void gpu;

async function rejectsWith(p: Promise<unknown>, parts: string[]) {
  await assert.rejects(
    p,
    (e: Error) => parts.every((s) => e.message.includes(s)) || assert.fail(e.message),
  );
}

gtest("take with an out-of-range index throws at the next read, one readback", async (g) => {
  const x = tensor([1, 2, 3], { device: g });
  const idx = tensor([0, 5, 1], { dtype: "i32", device: g });
  const y = take(x, idx); // enqueues only
  const z = add(y, 1);
  const before = readbackCount();
  await rejectsWith(z.data(), ["take", "index 5", "size 3"]);
  assert.equal(readbackCount() - before, 1, "the flag rides on the read that was happening");
  // Reported once: the device works again.
  assert.deepEqual(Array.from(await take(x, tensor([2, -1], { dtype: "i32", device: g })).data()), [
    3,
    3,
  ]);
});

gtest("scatterAdd (direct and listed paths) reports the dropped index", async (g) => {
  const base = tensor([0, 0, 0], { device: g });
  const upd = tensor([1, 2], { device: g });
  await rejectsWith(scatterAdd(base, tensor([1, -4], { dtype: "i32", device: g }), upd).data(), [
    "scatterAdd",
    "index -4",
    "size 3",
  ]);
  // Above 2^20 (indices × size) the kernel first counts indices per row: it reports too.
  const n = 2048;
  const big = tensor(new Float32Array(n), { device: g });
  const ids = Int32Array.from({ length: 1024 }, (_, i) => i);
  ids[700] = n + 7;
  const u = tensor(new Float32Array(1024).fill(1), { device: g });
  await rejectsWith(scatterAdd(big, tensor(ids, { dtype: "i32", device: g }), u).data(), [
    "scatterAdd",
    `index ${n + 7}`,
  ]);
});

gtest("oneHot and crossEntropy: bad labels throw as on the CPU; ignoreIndex agrees", async (g) => {
  await rejectsWith(oneHot(tensor([0, 3], { dtype: "i32", device: g }), 3).data(), [
    "oneHot",
    "label 3",
    "depth 3",
  ]);
  await rejectsWith(oneHot(tensor([-1], { dtype: "i32", device: g }), 3).data(), [
    "oneHot",
    "label -1",
  ]);
  const rows = [[2, 0, -1], [0.5, 0.5, 3], [1, 2, 3]];
  const labels = [0, -100, 1];
  const on = (d: typeof g | undefined) => {
    const z = tensor(rows, d ? { device: d } : {});
    const y = tensor(labels, { dtype: "i32", ...(d ? { device: d } : {}) });
    return crossEntropy(z, y, { ignoreIndex: -100 });
  };
  const [a, b]: Tensor[] = [on(g), on(undefined)];
  assert.ok(Math.abs((await a.item()) - (await b.item())) < 1e-6);
  await rejectsWith(
    crossEntropy(tensor(rows, { device: g }), tensor([0, 9, 1], { dtype: "i32", device: g }))
      .item(),
    ["oneHot", "label 9"],
  );
  // The first failing op wins; later reads are clean.
  assert.equal(
    await crossEntropy(tensor(rows, { device: g }), tensor([0, 2, 1], { dtype: "i32", device: g }))
      .item() > 0,
    true,
  );
});
