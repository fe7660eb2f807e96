/**
 * Issue 13, item 1: a safetensors file held in a Node `Buffer`, in any other `Uint8Array`
 * subclass, or in a view with a non-zero `byteOffset` decodes to the same tensors as a plain copy
 * of its bytes (the decoder once read `raw.buffer` from offset 0 and gave `[1.47e-38, 0, 0, 0]`
 * for `[1, 2, 3, 4]`).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { readFile } from "node:fs/promises";
import fc from "./fc.ts";
import { byteSize, type DType, dtypes, storageFor } from "../lib/dtype.ts";
import { dispose, memory, type Tensor, tensor } from "../lib/tensor.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  type SafetensorsEntry,
  safetensorsErrorCode,
} from "../lib/safetensors.ts";
import { encodeTree, load, save } from "../lib/checkpoint.ts";

const bytesOf = (s: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) =>
  new Uint8Array(s.buffer, s.byteOffset, s.byteLength);

/** A subclass that lies in `slice`/`subarray` (as `Buffer.slice` returns a view, not a copy). */
class Lying extends Uint8Array {
  override slice(): never {
    throw new Error("the decoder must not call subclass methods");
  }
  override subarray(): never {
    throw new Error("the decoder must not call subclass methods");
  }
}

/** `bytes` placed `pad` bytes into a larger buffer filled with 0xAB, as a view. */
function offsetView(bytes: Uint8Array, pad: number): Uint8Array {
  const big = new Uint8Array(pad + bytes.length + 7).fill(0xab);
  big.set(bytes, pad);
  return new Uint8Array(big.buffer, pad, bytes.length);
}

/** Every way of holding the same bytes that a user can pass in. */
function holders(bytes: Uint8Array, pad: number): [string, Uint8Array][] {
  const prefixed = Buffer.alloc(pad + bytes.length, 0xcd);
  prefixed.set(bytes, pad);
  const lying = new Lying(pad + bytes.length + 3).fill(0xef);
  lying.set(bytes, pad);
  return [
    ["a plain copy", bytes.slice()],
    ["Buffer.from (pooled, non-zero byteOffset for small files)", Buffer.from(bytes)],
    [`Buffer.slice(${pad}) of a larger Buffer (a view)`, prefixed.slice(pad)],
    [`Buffer.subarray(${pad})`, prefixed.subarray(pad)],
    [`a Uint8Array view at byteOffset ${pad}`, offsetView(bytes, pad)],
    [`a Uint8Array subclass view at byteOffset ${pad}`, new Lying(lying.buffer, pad, bytes.length)],
  ];
}

Deno.test("safetensors: the issue's case, [1, 2, 3, 4] from a Buffer slice, decodes as [1, 2, 3, 4]", () => {
  const file = encodeSafetensors([
    { name: "w", dtype: "f32", shape: [4], data: new Float32Array([1, 2, 3, 4]) },
  ]);
  const buf = Buffer.concat([Buffer.from("junk before the file"), Buffer.from(file)]).slice(20);
  assert.ok(buf.byteOffset > 0);
  const [e] = decodeSafetensors(buf).entries;
  assert.deepEqual([...e.data], [1, 2, 3, 4]);
});

Deno.test("safetensors: every dtype decodes the same bits from every kind of view (property)", () => {
  const entryArb = (d: DType, name: string) =>
    fc.array(fc.nat(5), { maxLength: 3 }).chain((shape) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return fc.uint8Array({ minLength: n * byteSize(d), maxLength: n * byteSize(d) }).map(
        (raw): SafetensorsEntry => {
          const data = storageFor(d, n);
          bytesOf(data).set(raw);
          return { name, dtype: d, shape, data };
        },
      );
    });
  const fileArb = fc.tuple(
    ...dtypes.map((d) => fc.option(entryArb(d, `t.${d}`), { nil: undefined })),
  ).map((es) => es.filter((e): e is SafetensorsEntry => e !== undefined));
  fc.assert(
    fc.property(fileArb, fc.integer({ min: 1, max: 17 }), (entries, pad) => {
      const file = encodeSafetensors(entries, { pad: String(pad) });
      for (const [how, bytes] of holders(file, pad)) {
        const back = decodeSafetensors(bytes);
        assert.deepEqual(back.metadata, { pad: String(pad) }, how);
        assert.equal(back.entries.length, entries.length, how);
        for (const e of entries) {
          const got = back.entries.find((x) => x.name === e.name)!;
          assert.equal(got.data.constructor, e.data.constructor, `${how}: ${e.name}`);
          assert.deepEqual(got.shape, e.shape, `${how}: ${e.name}`);
          assert.deepEqual(bytesOf(got.data), bytesOf(e.data), `${how}: ${e.name}`);
          // a fresh storage: never a view into the caller's bytes
          assert.notEqual(got.data.buffer, bytes.buffer, `${how}: ${e.name}`);
        }
      }
    }),
    { numRuns: 60 },
  );
});

Deno.test("safetensors: errors from an offset view report the view's own length", () => {
  const file = encodeSafetensors([
    { name: "w", dtype: "f32", shape: [2], data: new Float32Array([1, 2]) },
  ]);
  const truncated = offsetView(file.subarray(0, file.length - 3), 5);
  assert.throws(
    () => decodeSafetensors(truncated),
    (e) => safetensorsErrorCode(e) === "truncated" && /need 8 data bytes but 5 follow/.test(`${e}`),
  );
});

Deno.test("safetensors: input that is not a Uint8Array is a clear error", () => {
  const file = encodeSafetensors([]);
  for (const bad of [file.buffer, new DataView(file.buffer), [...file], "file", undefined]) {
    assert.throws(
      () => decodeSafetensors(bad as never),
      (e) =>
        safetensorsErrorCode(e) === "not-bytes" &&
        /decodeSafetensors needs a Uint8Array, got .*new Uint8Array\(buffer\)/.test(`${e}`),
      String(bad),
    );
  }
});

Deno.test("load: a checkpoint read with node:fs (a Buffer) gives the saved values, no leak", async () => {
  const path = await Deno.makeTempFile({ dir: "/tmp", suffix: ".safetensors" });
  const before = memory().tensors;
  try {
    const tree = {
      w: tensor([1, 2, 3, 4]),
      h: tensor([0.5, -2, 65504], { dtype: "f16" }),
      b: tensor([-1.25, 3], { dtype: "bf16" }),
      i: tensor([7, -9, 2 ** 31 - 1], { dtype: "i32" }),
      d: tensor([Math.PI], { dtype: "f64" }),
    };
    await save(path, tree);
    const buf = await readFile(path);
    assert.ok(buf instanceof Buffer);
    const viaBuffer = await load(buf) as Record<string, Tensor>;
    const viaDeno = await load(await Deno.readFile(path)) as Record<string, Tensor>;
    const viaView = await load(offsetView(await encodeTree(tree), 3)) as Record<string, Tensor>;
    for (const k of Object.keys(tree) as (keyof typeof tree)[]) {
      const want = await tree[k].toArray();
      assert.deepEqual(await viaBuffer[k].toArray(), want, k);
      assert.deepEqual(await viaDeno[k].toArray(), want, k);
      assert.deepEqual(await viaView[k].toArray(), want, k);
    }
    dispose([tree, viaBuffer, viaDeno, viaView]);
    assert.equal(memory().tensors, before);
  } finally {
    await Deno.remove(path);
  }
});
