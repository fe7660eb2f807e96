import assert from "node:assert/strict";
import fc from "./fc.ts";
import { byteSize, type DType, dtypes, type Storage, storageFor } from "../lib/dtype.ts";
import type { Backend } from "../lib/backend/backend.ts";
import { dispose, fromStorage, memory, Tensor, tensor, zeros } from "../lib/tensor.ts";
import { leaves, map } from "../lib/tree.ts";
import { disposeReplaced, type Step, type TrainState, trainStep } from "../lib/train.ts";
import type { Optimizer } from "../lib/optim/types.ts";
import { adamw } from "../lib/optim/adam.ts";
import { adamw8bit } from "../lib/optim/optim8bit.ts";
import { sgd } from "../lib/optim/sgd.ts";
import { precision } from "../plugins/presets.ts";
import { add, mul, sub, tanh } from "../lib/ops/elementwise.ts";
import { matmul } from "../lib/ops/matmul.ts";
import { mean } from "../lib/ops/reduce.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  MAX_HEADER_BYTES,
  type SafetensorsEntry,
  safetensorsErrorCode,
} from "../lib/safetensors.ts";
import {
  encodeState,
  encodeTree,
  load,
  loadState,
  save,
  saveState,
  STATE_KEY,
  TREE_KEY,
} from "../lib/checkpoint.ts";
import { checkpointErrorCode, MAX_TREE_DEPTH } from "../lib/tree_codec.ts";

// ---------------------------------------------------------------------------------------------
// helpers

const ascii = (s: string) => new TextEncoder().encode(s);
const cat = (...parts: (Uint8Array | number[])[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};
const u64 = (n: number) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
};
/** A file from a header string and data bytes (header used as is, no padding). */
const file = (header: string, data: number[] = []) =>
  cat(u64(ascii(header).length), ascii(header), data);

const bytesOf = (s: Storage) => new Uint8Array(s.buffer, s.byteOffset, s.byteLength);

/** A comparable picture of a tree: tensors become {dtype, shape, bytes}; other leaves stay. */
async function snapshot(x: unknown): Promise<unknown> {
  if (x instanceof Tensor) {
    return { dtype: x.dtype, shape: [...x.shape], bytes: Array.from(bytesOf(await x.bits())) };
  }
  if (Array.isArray(x)) return Promise.all(x.map(snapshot));
  if (x !== null && typeof x === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(x)) {
      Object.defineProperty(out, k, { value: await snapshot(v), enumerable: true });
    }
    return out;
  }
  return x;
}

/** Raw storage of `dtype` filled from random bytes (every bit pattern, NaN payloads included). */
function randomStorage(dtype: DType, n: number, seed: number): Storage {
  const s = storageFor(dtype, n);
  const b = bytesOf(s);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < b.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  if (dtype === "bool") { for (let i = 0; i < n; i++) s[i] &= 1; }
  return s;
}

function expectCode(e: unknown, code: string, pattern?: RegExp): true {
  const got = safetensorsErrorCode(e) ?? checkpointErrorCode(e);
  assert.equal(got, code, `expected code ${code}, got ${got}: ${(e as Error)?.message}`);
  assert.match((e as Error).message, /^(safetensors|checkpoint): /);
  if (pattern) assert.match((e as Error).message, pattern);
  return true;
}

const liveTensors = () => memory().tensors;

// ---------------------------------------------------------------------------------------------
// byte format

Deno.test("safetensors: every dtype round trips bit for bit (all 16- and 8-bit patterns)", () => {
  const entries: SafetensorsEntry[] = dtypes.map((d, i) => {
    let n = 1000;
    if (d === "f16" || d === "bf16") n = 65536;
    if (d === "f8e4m3" || d === "f8e5m2" || d === "u8") n = 256;
    const data = storageFor(d, n);
    if (n === 65536 || n === 256) { for (let k = 0; k < n; k++) data[k] = k; }
    else data.set(randomStorage(d, n, 7 + i) as never);
    return { name: `t.${d}`, dtype: d, shape: [n], data };
  });
  entries.push({ name: "scalar", dtype: "f64", shape: [], data: new Float64Array([-0]) });
  entries.push({ name: "empty", dtype: "f32", shape: [3, 0], data: new Float32Array(0) });
  const back = decodeSafetensors(encodeSafetensors(entries));
  assert.equal(back.entries.length, entries.length);
  assert.equal(back.metadata, null);
  for (const e of entries) {
    const got = back.entries.find((x) => x.name === e.name)!;
    assert.equal(got.dtype, e.dtype);
    assert.deepEqual(got.shape, e.shape);
    assert.equal(got.data.constructor, e.data.constructor);
    assert.deepEqual(bytesOf(got.data), bytesOf(e.data), e.name);
  }
});

Deno.test("save/load on the CPU: tensors of every dtype come back bit for bit", async () => {
  const tree: Record<string, Tensor> = {};
  for (const [i, d] of dtypes.entries()) {
    tree[d] = fromStorage(randomStorage(d, 512, 90 + i), d, [8, 64]);
  }
  // NaNs with payloads and signs, infinities, −0, subnormals: raw bits, not values.
  tree.f32nan = fromStorage(
    new Float32Array(new Uint32Array([0x7f800001, 0xffc00123, 0x7f800000, 0x80000000, 1]).buffer),
    "f32",
    [5],
  );
  tree.f64nan = fromStorage(
    new Float64Array(new BigUint64Array([0x7ff0000000000001n, 0xfff8000000000abcn, 1n]).buffer),
    "f64",
    [3],
  );
  tree.f16nan = fromStorage(new Uint16Array([0x7c01, 0xfe00, 0x8000, 0x0001]), "f16", [4]);
  tree.bf16nan = fromStorage(new Uint16Array([0x7f81, 0xffc1, 0x8000, 0x0001]), "bf16", [2, 2]);
  const back = await load(await encodeTree(tree)) as Record<string, Tensor>;
  for (const t of Object.values(back)) assert.equal(t.device.kind, "cpu");
  assert.deepEqual(await snapshot(back), await snapshot(tree));
  dispose([tree, back]);
});

Deno.test("safetensors: a hand-written file (any order, unpadded header) loads", async () => {
  // deno-fmt-ignore
  const bytes = cat(
    [77, 1, 0, 0, 0, 0, 0, 0], // header length 333, little-endian u64
    ascii(
      `{"layers.1.b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},` +
        `"layers.0.b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},` +
        `"step":{"dtype":"I32","shape":[],"data_offsets":[0,4]},` +
        `"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[12,15]},` +
        `"q":{"dtype":"F8_E4M3","shape":[1,1],"data_offsets":[15,16]},` +
        `"__metadata__":{"format":"pt"}}`,
    ),
    [7, 0, 0, 0], // step: i32 7
    [0x80, 0x3f, 0x00, 0xc0], // layers.0.b: bf16 0x3F80 (1), 0xC000 (-2)
    [0x00, 0x38, 0xff, 0x7b], // layers.1.b: f16 0x3800 (0.5), 0x7BFF (65504)
    [1, 0, 1], // mask: bool
    [0x7e], // q: f8e4m3 0x7E (448)
  );
  assert.equal(bytes.length, 8 + 333 + 16);
  const { entries, metadata } = decodeSafetensors(bytes);
  assert.deepEqual(metadata, { format: "pt" });
  assert.deepEqual(entries.map((e) => e.name), ["step", "layers.0.b", "layers.1.b", "mask", "q"]);

  const before = liveTensors();
  const tree = await load(bytes) as {
    layers: { b: Tensor }[];
    mask: Tensor;
    q: Tensor;
    step: Tensor;
  };
  assert.deepEqual(Object.keys(tree), ["layers", "mask", "q", "step"]);
  assert.ok(Array.isArray(tree.layers));
  assert.equal(tree.layers[0].b.dtype, "bf16");
  assert.deepEqual(Array.from(await tree.layers[0].b.data()), [1, -2]);
  assert.equal(tree.layers[1].b.dtype, "f16");
  assert.deepEqual(Array.from(await tree.layers[1].b.data()), [0.5, 65504]);
  assert.deepEqual(await tree.mask.toArray(), [true, false, true]);
  assert.deepEqual(tree.q.shape, [1, 1]);
  assert.deepEqual(await tree.q.toArray(), [[448]]);
  assert.deepEqual(tree.step.shape, []);
  assert.equal(tree.step.dtype, "i32");
  assert.equal(await tree.step.item(), 7);
  dispose(tree);
  assert.equal(liveTensors(), before);
});

Deno.test("safetensors: output order is dtype size (largest first), then name", () => {
  const one = (name: string, dtype: DType): SafetensorsEntry => ({
    name,
    dtype,
    shape: [1],
    data: storageFor(dtype, 1),
  });
  const entries = [
    one("b", "bool"),
    one("u", "u8"),
    one("e5", "f8e5m2"),
    one("e4", "f8e4m3"),
    one("g", "f16"),
    one("h", "bf16"),
    one("i", "i32"),
    one("a", "f32"),
    one("z", "f64"),
  ];
  const header = `{"z":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},` +
    `"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},` +
    `"i":{"dtype":"I32","shape":[1],"data_offsets":[12,16]},` +
    `"h":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]},` +
    `"g":{"dtype":"F16","shape":[1],"data_offsets":[18,20]},` +
    `"e4":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[20,21]},` +
    `"e5":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[21,22]},` +
    `"u":{"dtype":"U8","shape":[1],"data_offsets":[22,23]},` +
    `"b":{"dtype":"BOOL","shape":[1],"data_offsets":[23,24]}}`;
  const expected = cat([248, 1, 0, 0, 0, 0, 0, 0], ascii(header), new Array(24).fill(0));
  assert.deepEqual(encodeSafetensors(entries), expected);
  assert.deepEqual(encodeSafetensors([...entries].reverse()), expected);
  // Names sort by UTF-8 bytes, as Rust does: U+FF61 (EF BD A1) < U+10000 (F0 90 80 80).
  const names = encodeSafetensors([one("\u{10000}", "u8"), one("\uff61", "u8")]);
  const decoded = decodeSafetensors(names).entries.map((e) => e.name);
  assert.deepEqual(decoded, ["\uff61", "\u{10000}"]);
});

Deno.test("safetensors: byte-identical to Python for the format's own examples", () => {
  // One F32 tensor "attn.0" of shape [1, 2, 3] holding 0..5, no metadata: a 64-byte header.
  // deno-fmt-ignore
  const expected = cat(
    [64, 0, 0, 0, 0, 0, 0, 0],
    ascii(`{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`),
    [0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64],
  );
  const data = new Float32Array([0, 1, 2, 3, 4, 5]);
  assert.deepEqual(
    encodeSafetensors([{ name: "attn.0", dtype: "f32", shape: [1, 2, 3], data }]),
    expected,
  );
  // No tensors: "{}" padded with 6 spaces; with metadata {"framework": "pt"}: 5 spaces.
  assert.deepEqual(encodeSafetensors([]), cat([8, 0, 0, 0, 0, 0, 0, 0], ascii("{}      ")));
  assert.deepEqual(
    encodeSafetensors([], { framework: "pt" }),
    cat([40, 0, 0, 0, 0, 0, 0, 0], ascii(`{"__metadata__":{"framework":"pt"}}     `)),
  );
  // Several metadata keys are written sorted (Python's order varies: a hash map).
  assert.deepEqual(
    encodeSafetensors([], { b: "2", a: "1" }),
    cat([40, 0, 0, 0, 0, 0, 0, 0], ascii(`{"__metadata__":{"a":"1","b":"2"}}      `)),
  );
});

Deno.test("save: a small tree is written to exactly the expected bytes", async () => {
  const tree = {
    w: tensor([[1, 2]], { dtype: "f32" }),
    b: tensor([0.5], { dtype: "bf16" }),
    lr: 0.25,
  };
  const header = String.raw`{"__metadata__":{"nbit.tree":"{\"version\":1,\"tree\":{\"object\":` +
    String
      .raw`[[\"w\",{\"tensor\":\"w\"}],[\"b\",{\"tensor\":\"b\"}],[\"lr\",{\"value\":0.25}]]}}"},` +
    `"w":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},` +
    `"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}}`;
  assert.equal(ascii(header).length, 262);
  // deno-fmt-ignore
  const expected = cat(
    [8, 1, 0, 0, 0, 0, 0, 0], // 264 = 262 + 2 spaces of padding
    ascii(header),
    [0x20, 0x20],
    [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40], // w: f32 1, 2
    [0x00, 0x3f], // b: bf16 0x3F00 (0.5)
  );
  assert.deepEqual(await encodeTree(tree), expected);

  const chunks: Uint8Array[] = [];
  // A writer that takes at most 7 bytes per call: save continues short writes.
  await save({ write: (c) => (chunks.push(c.slice(0, 7)), Math.min(7, c.length)) }, tree);
  assert.deepEqual(cat(...chunks), expected);

  const path = await Deno.makeTempFile({ dir: "/tmp", suffix: ".safetensors" });
  try {
    await save(path, tree);
    assert.deepEqual(await Deno.readFile(path), expected);
    const dir = path.slice(0, path.lastIndexOf("/"));
    const base = path.slice(path.lastIndexOf("/") + 1);
    for await (const e of Deno.readDir(dir)) assert.ok(!e.name.startsWith(`${base}.tmp-`));
    const back = await load(path) as typeof tree;
    assert.deepEqual(await snapshot(back), await snapshot(tree));
    dispose(back);
  } finally {
    await Deno.remove(path);
  }
  dispose(tree);
});

// ---------------------------------------------------------------------------------------------
// trees

Deno.test("load(save(tree)) keeps structure, order, odd keys and non-tensor leaves", async () => {
  const before = liveTensors();
  const t = (v: number[], dtype: DType = "f32") => tensor(v, { dtype });
  const tree = {
    z: t([1]),
    "a.b": t([2]),
    a: { c: t([3], "f16") },
    "0": { "1": t([4]) },
    __proto__x: 1,
    empty: { o: {}, a: [] as unknown[] },
    list: [t([5], "i32"), 3, "s", null, undefined, true, [t([6], "u8")]],
    nums: [NaN, Infinity, -Infinity, -0, 1e-300, 2 ** 53],
  };
  Object.defineProperty(tree, "__proto__", {
    value: { w: t([7], "bool") },
    enumerable: true,
    configurable: true,
  });
  const back = await load(await encodeTree(tree));
  assert.deepEqual(Object.keys(back as object), Object.keys(tree));
  assert.deepEqual(await snapshot(back), await snapshot(tree));
  assert.ok(Object.is((back as typeof tree).nums[3], -0));
  assert.equal(Object.getPrototypeOf(back), Object.prototype);
  dispose([tree, back]);
  assert.equal(liveTensors(), before);

  const scalar = tensor(2.5, { dtype: "f64" });
  const sBack = await load(await encodeTree(scalar)) as Tensor;
  assert.equal(await sBack.item(), 2.5);
  assert.deepEqual(await load(await encodeTree({})), {});
  dispose([scalar, sBack]);
});

Deno.test("load: files without a skeleton rebuild objects and arrays from names", async () => {
  const entry = (name: string, v: number): SafetensorsEntry => ({
    name,
    dtype: "f32",
    shape: [],
    data: new Float32Array([v]),
  });
  const bytes = encodeSafetensors([
    entry("layers.10.w", 10),
    entry("layers.2.w", 2),
    entry("m.0", 0),
    entry("m.2", 2),
    ...Array.from({ length: 11 }, (_, i) => i === 2 || i === 10 ? [] : [entry(`layers.${i}.w`, i)])
      .flat(),
  ]);
  const tree = await load(bytes) as { layers: { w: Tensor }[]; m: Record<string, Tensor> };
  assert.ok(Array.isArray(tree.layers));
  assert.equal(tree.layers.length, 11);
  for (let i = 0; i < 11; i++) assert.equal(await tree.layers[i].w.item(), i);
  assert.ok(!Array.isArray(tree.m), "keys 0, 2 are not contiguous: an object");
  assert.deepEqual(Object.keys(tree.m), ["0", "2"]);
  dispose(tree);

  const before = liveTensors();
  await assert.rejects(
    () => load(encodeSafetensors([entry("a", 1), entry("a.b", 2)])),
    (e) => expectCode(e, "name-conflict", /"a" and "a\.b" conflict/),
  );
  await assert.rejects(
    () => load(encodeSafetensors([entry("", 1), entry("b", 2)])),
    (e) => expectCode(e, "name-conflict"),
  );
  assert.equal(liveTensors(), before);
});

Deno.test("save: unsupported trees fail with clear errors", async () => {
  const w = zeros([1]);
  const cyc: Record<string, unknown> = { w };
  cyc.self = cyc;
  await assert.rejects(
    () => encodeTree({ w, when: new Date(0) }),
    (e) => expectCode(e, "unsupported-leaf", /cannot store an object of type Date at "when"/),
  );
  await assert.rejects(
    () => encodeTree({ f: () => 1 }),
    (e) => expectCode(e, "unsupported-leaf", /a function at "f"/),
  );
  await assert.rejects(() => encodeTree({ n: 1n }), (e) => expectCode(e, "unsupported-leaf"));
  await assert.rejects(() => encodeTree(cyc), (e) => expectCode(e, "cyclic-tree", /"self"/));
  await assert.rejects(
    () => encodeTree({ "a.b": w, a: { b: w } }),
    (e) => expectCode(e, "name-collision", /"a\.b"/),
  );
  await assert.rejects(
    () => encodeTree({ w }, { "nbit.x": "1" }),
    (e) => expectCode(e, "reserved-metadata"),
  );
  let deep: unknown = w;
  for (let i = 0; i <= MAX_TREE_DEPTH; i++) deep = [deep];
  await assert.rejects(() => encodeTree(deep), (e) => expectCode(e, "tree-too-deep"));
  // Repeated tensors (sharing) are fine: stored twice, loaded as two tensors.
  const back = await load(await encodeTree({ a: w, b: w })) as { a: Tensor; b: Tensor };
  assert.notEqual(back.a, back.b);
  dispose([w, back]);
});

// ---------------------------------------------------------------------------------------------
// bad files: each documented error

Deno.test("decode: every documented error, with its message", () => {
  const good = `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`;
  const data = [0, 0, 128, 63, 0, 0, 0, 64];
  const cases: [Uint8Array, string, RegExp][] = [
    [new Uint8Array(5), "too-small", /5 bytes is too small/],
    [
      cat(u64(MAX_HEADER_BYTES + 1), ascii("{}")),
      "header-too-large",
      /above the limit of 100000000/,
    ],
    [cat([0, 0, 0, 0, 0, 0, 0, 255]), "header-too-large", /above the limit/],
    [cat(u64(100), ascii("{}")), "header-beyond-file", /header length 100 reaches past/],
    [cat(u64(2), [0xff, 0xfe]), "header-not-utf8", /not valid UTF-8/],
    [file(`{"w":`), "header-not-json", /not valid JSON/],
    [file(`\ufeff{}`), "header-not-json", /not valid JSON/],
    [file(`[1,2]`), "header-not-object", /must be a JSON object/],
    [file(`{"__metadata__":{"a":1}}`), "bad-metadata", /value of "a" must be a string/],
    [file(`{"__metadata__":[]}`), "bad-metadata", /must be an object of strings/],
    [file(`{"w":3}`), "bad-entry", /tensor "w" must be an object/],
    [file(`{"w":{"dtype":"F32","shape":[1]}}`), "bad-entry", /needs "dtype", "shape"/],
    [
      file(`{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, data),
      "unknown-dtype",
      /unknown dtype "I64"; valid dtypes: F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I32, U8, BOOL/,
    ],
    [file(`{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, data), "bad-shape", /-2/],
    [file(`{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}`, data), "bad-shape", /1\.5/],
    [
      file(`{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, data),
      "bad-shape",
      /too large/,
    ],
    [file(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, data), "bad-offsets", /8,0/],
    [file(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}`, data), "bad-offsets", /\[0\]/],
    [
      file(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, data),
      "size-mismatch",
      /F32\[3\] needs 12 bytes but data_offsets \[0, 8\] hold 8/,
    ],
    [
      file(
        `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},` +
          `"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}`,
        data,
      ),
      "offsets-not-contiguous",
      /"b" begins at 2 but the previous tensor ends at 4/,
    ],
    [
      file(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data),
      "offsets-not-contiguous",
      /begins at 4 but the previous tensor ends at 0/,
    ],
    [file(good, data.slice(0, 5)), "truncated", /need 8 data bytes but 5 follow the header/],
    [file(good, [...data, 9]), "trailing-bytes", /1 bytes follow the last tensor/],
  ];
  for (const [bytes, code, pattern] of cases) {
    assert.throws(() => decodeSafetensors(bytes), (e) => expectCode(e, code, pattern));
  }
  assert.equal(decodeSafetensors(file(good, data)).entries.length, 1);
});

Deno.test("encode: invalid entries fail with clear errors", () => {
  const f = new Float32Array(2);
  const e = (over: Partial<SafetensorsEntry>) =>
    ({ name: "w", dtype: "f32", shape: [2], data: f, ...over }) as SafetensorsEntry;
  assert.throws(() => encodeSafetensors([e({}), e({})]), (x) => expectCode(x, "duplicate-name"));
  assert.throws(
    () => encodeSafetensors([e({ name: "__metadata__" })]),
    (x) => expectCode(x, "invalid-name"),
  );
  assert.throws(
    () => encodeSafetensors([e({ name: "\ud800" })]),
    (x) => expectCode(x, "invalid-name"),
  );
  assert.throws(
    () => encodeSafetensors([e({ shape: [3] })]),
    (x) =>
      expectCode(
        x,
        "storage-mismatch",
        /needs a Float32Array of 3 elements, got Float32Array of 2/,
      ),
  );
  assert.throws(
    () => encodeSafetensors([e({ dtype: "f16" })]),
    (x) => expectCode(x, "storage-mismatch", /Uint16Array/),
  );
  assert.throws(() => encodeSafetensors([e({ shape: [-2] })]), (x) => expectCode(x, "bad-shape"));
  assert.throws(
    () => encodeSafetensors([], { a: 1 as unknown as string }),
    (x) => expectCode(x, "bad-metadata"),
  );
});

Deno.test("load: skeleton problems are reported", async () => {
  const w = { name: "w", dtype: "f32" as const, shape: [1], data: new Float32Array([1]) };
  const withTree = (tree: string, entries = [w]) =>
    encodeSafetensors(entries, { [TREE_KEY]: `{"version":1,"tree":${tree}}` });
  const before = liveTensors();
  const cases: [Uint8Array, string, RegExp][] = [
    [encodeSafetensors([w], { [TREE_KEY]: "{" }), "bad-skeleton", /not valid JSON/],
    [encodeSafetensors([w], { [TREE_KEY]: `{"version":2,"tree":1}` }), "bad-skeleton", /version 2/],
    [withTree(`{"object":[["w",{"tensor":"v"}]]}`), "skeleton-mismatch", /no tensor "v"/],
    [withTree(`{"array":[{"tensor":"w"},{"tensor":"w"}]}`), "skeleton-mismatch", /used twice/],
    [withTree(`{"object":[]}`), "skeleton-mismatch", /tensor "w" the skeleton lacks/],
    [withTree(`{"array":[{"tensor":"w"},{"map":1}]}`), "bad-skeleton", /"1".*unknown node kind/],
    [withTree(`{"array":[{"tensor":"w"},{"value":{}}]}`), "bad-skeleton", /not a string/],
    [withTree(`{"array":[{"tensor":"w"},{"number":"1"}]}`), "bad-skeleton", /unknown number/],
    [
      withTree(`{"object":[["a",{"tensor":"w"}],["a",{"value":1}]]}`),
      "bad-skeleton",
      /repeats key "a"/,
    ],
    [
      withTree(
        `${'{"array":['.repeat(MAX_TREE_DEPTH + 1)}{"tensor":"w"}${
          "]}".repeat(MAX_TREE_DEPTH + 1)
        }`,
      ),
      "tree-too-deep",
      /deeper than 1000/,
    ],
  ];
  for (const [bytes, code, pattern] of cases) {
    await assert.rejects(() => load(bytes), (e) => expectCode(e, code, pattern));
  }
  assert.equal(liveTensors(), before, "tensors made before a failure are freed");
});

// ---------------------------------------------------------------------------------------------
// fuzzing

/** Byte flips, truncations, header-length edits and header text edits of a valid file. */
const corruption = (size: number, headerEnd: number) =>
  fc.oneof(
    fc.record({
      kind: fc.constant("flip" as const),
      at: fc.nat(size - 1),
      xor: fc.integer({ min: 1, max: 255 }),
    }),
    fc.record({
      kind: fc.constant("header-byte" as const),
      at: fc.integer({ min: 8, max: headerEnd - 1 }),
      byte: fc.constantFrom(...ascii(`0123456789-.,:"{}[] eE\\x`)),
    }),
    fc.record({ kind: fc.constant("truncate" as const), at: fc.nat(size - 1) }),
    fc.record({ kind: fc.constant("extend" as const), n: fc.integer({ min: 1, max: 9 }) }),
    fc.record({
      kind: fc.constant("length" as const),
      n: fc.oneof(fc.nat(headerEnd + 16), fc.maxSafeNat(), fc.integer({ min: 0, max: 2 ** 32 })),
    }),
  );

type Corruption = {
  kind: "flip" | "header-byte" | "truncate" | "extend" | "length";
  at?: number;
  xor?: number;
  byte?: number;
  n?: number;
};

function corrupt(bytes: Uint8Array, c: Corruption): Uint8Array {
  const b = bytes.slice();
  switch (c.kind) {
    case "flip":
      b[c.at!] ^= c.xor!;
      return b;
    case "header-byte":
      b[c.at!] = c.byte!;
      return b;
    case "truncate":
      return b.slice(0, c.at);
    case "extend":
      return cat(b, new Array(c.n!).fill(0));
    case "length":
      new DataView(b.buffer).setBigUint64(0, BigInt(c.n!), true);
      return b;
  }
}

async function loadsOrThrowsDocumented(f: () => Promise<unknown>, size: number): Promise<void> {
  let out: unknown;
  try {
    out = await f();
  } catch (e) {
    const code = safetensorsErrorCode(e) ?? checkpointErrorCode(e);
    assert.ok(code !== undefined, `undocumented error: ${(e as Error)?.stack ?? e}`);
    assert.match((e as Error).message, /^(safetensors|checkpoint): /);
    return;
  }
  const bytes = leaves(out).reduce((n, t) => n + t.size * byteSize(t.dtype), 0);
  assert.ok(bytes <= size, "tensors cannot hold more bytes than the file");
  dispose(out);
}

Deno.test("fuzz: corrupted files load or throw a documented error", async () => {
  const tree = {
    params: { layers: [{ w: tensor([[1, 2], [3, 4]]), b: tensor([0.5, -1], { dtype: "f16" }) }] },
    codes: fromStorage(new Uint8Array([1, 2, 250]), "u8", [3]),
    absmax: tensor([3], { dtype: "f32" }),
    fp8: fromStorage(new Uint8Array([0x7e, 0x7f]), "f8e4m3", [2]),
    mask: tensor([true, false]),
    n: 2000,
    name: "adam",
  };
  const plain = encodeSafetensors([
    { name: "a", dtype: "f64", shape: [2], data: new Float64Array([1, NaN]) },
    { name: "b.0", dtype: "bf16", shape: [1], data: new Uint16Array([0x3f80]) },
  ]);
  const step = sgdStep();
  const fresh = step.init(tree.params);
  const withPlugins: TrainState = {
    ...fresh,
    step: 3,
    plugins: {
      gradScale: {
        scale: tensor(65536),
        tracker: zeros([], { dtype: "i32" }),
        dynamic: true,
        growthFactor: 2,
        backoffFactor: 0.5,
        growthInterval: 2000,
        minScale: 0,
      },
    },
  };
  const files: [Uint8Array, (b: Uint8Array) => Promise<unknown>][] = [
    [await encodeTree(tree), (b) => load(b)],
    [plain, (b) => load(b)],
    [await encodeState(withPlugins), (b) => loadState(b)],
    [await encodeState({ ...fresh, step: 5 }), (b) => loadState(b, step)],
  ];
  const before = liveTensors();
  for (const [i, [bytes, read]] of files.entries()) {
    dispose(await read(bytes)); // the intact file loads
    const headerEnd = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
    await fc.assert(
      fc.asyncProperty(corruption(bytes.length, headerEnd), async (c) => {
        const bad = corrupt(bytes, c as Corruption);
        await loadsOrThrowsDocumented(() => read(bad), bad.length);
      }),
      { numRuns: 500, seed: 1234 + i },
    );
  }
  assert.equal(liveTensors(), before, "no tensor leaks from failed or successful loads");
  dispose([tree, withPlugins]);
});

// ---------------------------------------------------------------------------------------------
// train state

Deno.test("saveState/loadState: params, 8-bit optimizer state and plugin state round trip", async () => {
  const params = {
    layers: [
      {
        w: fromStorage(randomStorage("f32", 6, 1), "f32", [2, 3]),
        b: zeros([3], { dtype: "bf16" }),
      },
      { w: fromStorage(randomStorage("f16", 3, 2), "f16", [3, 1]) },
    ],
    embed: fromStorage(randomStorage("f8e5m2", 4, 3), "f8e5m2", [4]),
  };
  const opt = {
    count: tensor(41, { dtype: "i32" }),
    mu: { codes: fromStorage(randomStorage("u8", 9, 4), "u8", [9]), absmax: tensor([0.25, 1e-30]) },
    nu: { codes: fromStorage(randomStorage("u8", 9, 5), "u8", [9]), absmax: tensor([NaN, 3]) },
  };
  const plugins = {
    gradScale: {
      scale: tensor(256),
      tracker: tensor(7, { dtype: "i32" }),
      growthFactor: 2,
      backoffFactor: 0.5,
      growthInterval: 2000,
      minScale: 0,
      dynamic: true,
      enabled: true,
    },
    fp8: {
      amaxHistory: fromStorage(randomStorage("f32", 6, 6), "f32", [2, 1, 3]),
      scale: fromStorage(randomStorage("f32", 3, 8), "f32", [1, 3]),
      format: "hybrid",
      margin: 0,
      amaxComputeAlgo: "max",
    },
  };
  const state: TrainState = { params, opt, step: 1234, plugins };
  const path = await Deno.makeTempFile({ dir: "/tmp", suffix: ".safetensors" });
  try {
    await saveState(path, state, { preset: "16-mixed", metadata: { run: "test" } });
    const meta = decodeSafetensors(await Deno.readFile(path)).metadata!;
    assert.equal(meta.run, "test");
    const record = JSON.parse(meta[STATE_KEY]);
    assert.equal(record.version, 1);
    assert.equal(record.step, 1234);
    assert.equal(record.preset, "16-mixed");
    const names = decodeSafetensors(await Deno.readFile(path)).entries.map((e) => e.name).sort();
    assert.ok(names.includes("opt.mu.codes") && names.includes("plugins.gradScale.scale"));
    assert.ok(names.includes("params.layers.0.w"));

    const back = await loadState(path);
    assert.equal(back.step, 1234);
    assert.deepEqual(await snapshot(back), await snapshot(state));
    assert.deepEqual(await snapshot(back.plugins), await snapshot(plugins));
    dispose(back);

    // load() of a state file gives its tree.
    const tree = await load(path) as Record<string, unknown>;
    assert.deepEqual(Object.keys(tree), ["params", "opt", "plugins"]);
    dispose(tree);
  } finally {
    await Deno.remove(path);
  }
  await assert.rejects(
    async () => loadState(await encodeTree({ w: zeros([1]) })),
    (e) => expectCode(e, "not-a-state", /no "nbit.state" metadata/),
  );
  dispose(state);
});

// ---------------------------------------------------------------------------------------------
// resume

/** Plain SGD with momentum, implementing the Optimizer interface, with a `count` tensor. */
function sgdMomentum(lr: number, beta: number): Optimizer {
  return {
    init: <P>(params: P) => ({
      count: zeros([], { dtype: "i32" }),
      mu: map((t) => zeros(t.shape, { dtype: t.dtype }), params),
    }),
    update: <P>(grads: P, state: unknown, params: P): [P, unknown] => {
      const s = state as { count: Tensor; mu: P };
      const mu = map((m, g) => add(mul(m, beta), g), s.mu, grads);
      const next = map((p, m) => sub(p, mul(m, lr)), params, mu);
      return [next, { count: add(s.count, 1), mu }];
    },
  };
}

interface Batch {
  x: Tensor;
  y: Tensor;
}
type Mlp = { layers: { w: Tensor; b: Tensor }[] };

const mlpLoss = (p: Mlp, b: Batch): Tensor => {
  let h = b.x;
  p.layers.forEach((l, i) => {
    h = add(matmul(h, l.w), l.b);
    if (i < p.layers.length - 1) h = tanh(h);
  });
  return mean(mul(sub(h, b.y), sub(h, b.y)));
};

function sgdStep(): Step<Batch> {
  return trainStep<Mlp, Batch>({ loss: mlpLoss, optimizer: sgdMomentum(0.05, 0.9) }) as Step<Batch>;
}

const wave = (n: number, k: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 0.7 + k));

function mlpParams(): Mlp {
  return {
    layers: [
      { w: tensor(wave(12, 1), { shape: [3, 4] }), b: tensor(wave(4, 2)) },
      { w: tensor(wave(4, 3), { shape: [4, 1] }), b: tensor([0.1]) },
    ],
  };
}

function batches(n: number): Batch[] {
  return Array.from({ length: n }, (_, i) => ({
    x: tensor(wave(15, 10 + i), { shape: [5, 3] }),
    y: tensor(wave(5, 20 + i), { shape: [5, 1] }),
  }));
}

function run(step: Step<Batch>, state: TrainState, bs: Batch[]): TrainState {
  let current = state;
  for (const b of bs) {
    const [next, metrics] = step(current, b);
    dispose(metrics);
    disposeReplaced(current, next);
    current = next;
  }
  return current;
}

/** `step.init(makeParams())`, freeing the made params that the state does not keep (casts). */
function initFrom(step: Step<Batch>, makeParams: () => unknown): TrainState {
  const params = makeParams();
  const state = step.init(params);
  disposeReplaced(params, state);
  return state;
}

/**
 * Train 2n steps straight, and n steps + saveState + loadState (with a fresh step, as a new
 * process would) + n steps; the two final states must be bit-identical. Swap `makeStep` to test
 * other optimizers and precision plugins.
 */
async function resumeMatches(
  makeStep: () => Step<Batch>,
  makeParams: () => unknown,
  n: number,
): Promise<void> {
  const bs = batches(2 * n);
  const straightStep = makeStep();
  const straight = run(straightStep, initFrom(straightStep, makeParams), bs);

  const first = makeStep();
  const half = run(first, initFrom(first, makeParams), bs.slice(0, n));
  const path = await Deno.makeTempFile({ dir: "/tmp", suffix: ".safetensors" });
  let resumed: TrainState;
  try {
    await saveState(path, half);
    dispose(half);
    const second = makeStep();
    resumed = run(second, await loadState(path, second), bs.slice(n));
  } finally {
    await Deno.remove(path);
  }
  assert.equal(resumed.step, 2 * n);
  assert.equal(straight.step, 2 * n);
  assert.deepEqual(await snapshot(resumed), await snapshot(straight));
  dispose([straight, resumed, bs]);
}

Deno.test("resume: N steps + save + load + N steps equals 2N steps, bit for bit", async () => {
  const before = liveTensors();
  await resumeMatches(sgdStep, mlpParams, 4);
  assert.equal(liveTensors(), before);
});

/** An MLP wide enough (4500 > 4096 elements) for the 8-bit optimizers to quantize its state. */
function wideParams(): Mlp {
  return {
    layers: [
      { w: tensor(wave(3 * 4500, 1), { shape: [3, 4500] }), b: tensor(wave(4500, 2)) },
      { w: tensor(wave(4500, 3), { shape: [4500, 1] }), b: tensor([0.1]) },
    ],
  };
}

Deno.test("resume: precision presets and real optimizers resume bit for bit", async () => {
  const setups: [string, () => Optimizer, () => unknown][] = [
    ["16-mixed", () => adamw8bit({ lr: 1e-2 }), wideParams],
    ["bf16-mixed", () => adamw({ lr: 1e-2 }), mlpParams],
    ["16-true", () => adamw8bit({ lr: 1e-2 }), wideParams],
    ["32-true", () => sgd({ lr: 0.05, momentum: 0.9 }), mlpParams],
  ];
  const before = liveTensors();
  for (const [preset, optimizer, params] of setups) {
    const makeStep = () =>
      precision(preset)(trainStep<Mlp, Batch>({ loss: mlpLoss, optimizer: optimizer() }));
    await resumeMatches(makeStep as () => Step<Batch>, params, 3);
  }
  // The 8-bit state really is u8 codes + f32 absmax, and gradScale's state is in the file.
  const step = precision("16-mixed")(
    trainStep<Mlp, Batch>({ loss: mlpLoss, optimizer: adamw8bit() }),
  );
  const state = initFrom(step as Step<Batch>, wideParams);
  const names = decodeSafetensors(await encodeState(state)).entries.map((e) =>
    `${e.name}:${e.dtype}`
  );
  for (
    const n of [
      "opt.mu.layers.0.w.codes:u8",
      "opt.mu.layers.0.w.absmax:f32",
      "plugins.gradScale.scale:f32",
    ]
  ) {
    assert.ok(names.includes(n), `${n} in ${names}`);
  }
  dispose(state);
  assert.equal(liveTensors(), before);
});

Deno.test("loadState: a checkpoint of another setup fails with state-mismatch", async () => {
  const step = sgdStep();
  const state = step.init(mlpParams());
  const bytes = await encodeState(state);
  const plainSgd = trainStep<Mlp, Batch>({
    loss: mlpLoss,
    optimizer: {
      init: () => ({}),
      update: <P>(g: P, s: unknown, p: P): [P, unknown] => [map((x, d) => sub(x, d), p, g), s],
    },
  });
  const before = liveTensors();
  await assert.rejects(() => loadState(bytes, plainSgd), (e) =>
    expectCode(
      e,
      "state-mismatch",
      /at "opt": the file has an object with keys \[count,mu\], step.init makes an object with keys \[\]/,
    ));
  // An optimizer that keeps f32 momentum for f16 params, against a file with f16 momentum.
  const f32Params = mlpParams();
  const f16State = step.init(map((t) => zeros(t.shape, { dtype: "f16" }), f32Params));
  dispose(f32Params);
  const f16Bytes = await encodeState(f16State);
  const base = sgdMomentum(0.05, 0.9);
  const f32Momentum = trainStep<Mlp, Batch>({
    loss: mlpLoss,
    optimizer: {
      init: <P>(p: P) => ({
        count: zeros([], { dtype: "i32" }),
        mu: map((t) => zeros(t.shape, { dtype: "f32" }), p),
      }),
      update: base.update,
    },
  });
  const before2 = liveTensors();
  await assert.rejects(() => loadState(f16Bytes, f32Momentum), (e) =>
    expectCode(
      e,
      "state-mismatch",
      /at "opt\.mu\.layers\.0\.w": the file has f16\[3,4\], step.init makes f32\[3,4\]/,
    ));
  assert.equal(liveTensors(), before2);
  dispose(f16State);
  assert.equal(liveTensors(), before);
  const ok = await loadState(bytes, step);
  dispose([ok, state]);
});

// ---------------------------------------------------------------------------------------------
// WebGPU (only where the backend exists and an adapter is available)

async function tryWebgpu(): Promise<Backend | string> {
  // mod.ts's webgpu() when it is exported, else the backend module itself (if it exists yet).
  const places = ["../mod.ts", "../lib/backend/webgpu/webgpu.ts"];
  let make: (() => Promise<Backend>) | undefined;
  for (const place of places) {
    try {
      const mod = await import(new URL(place, import.meta.url).href);
      if (typeof mod.webgpu === "function") {
        make = mod.webgpu;
        break;
      }
    } catch {
      // not there yet
    }
  }
  if (!make) return "no webgpu() in mod.ts or lib/backend/webgpu/webgpu.ts";
  try {
    return await make();
  } catch (e) {
    return `webgpu() failed: ${(e as Error).message}`;
  }
}

const gpu = await tryWebgpu();
if (typeof gpu === "string") {
  console.log(`checkpoint_test: skipping the WebGPU round trip (${gpu})`);
}

Deno.test({
  name: "WebGPU: every GPU dtype round trips bit for bit through save/load",
  // Ignored without an adapter, unless NBIT_REQUIRE_WEBGPU=1 (CI), where it fails instead.
  ignore: typeof gpu === "string" && Deno.env.get("NBIT_REQUIRE_WEBGPU") !== "1",
  fn: async () => {
    if (typeof gpu === "string") throw new Error(`NBIT_REQUIRE_WEBGPU=1 but ${gpu}`);
    const device = gpu as Backend;
    const tree: Record<string, Tensor> = {};
    for (const [i, d] of dtypes.entries()) {
      if (device.unsupported(d)) continue;
      tree[d] = fromStorage(randomStorage(d, 300, 50 + i), d, [3, 100], device);
    }
    const back = await load(await encodeTree(tree), { device }) as Record<string, Tensor>;
    for (const [d, t] of Object.entries(back)) assert.equal(t.device, device, d);
    assert.deepEqual(await snapshot(back), await snapshot(tree));
    dispose([tree, back]);
  },
});
