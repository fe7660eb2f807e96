/**
 * The WebAssembly matmul (lib/backend/cpu/wasm) against an f64 oracle: every output within the
 * f32 accumulation bound |c − S| ≤ k·u·Σ|a||b| (u = 2^−24), narrow outputs rounded once from
 * the accumulator (ties resolved from the exact sum), all transposes, batch broadcasting,
 * f16/bf16 operands, edge sizes around the 6×8 tile and the 48/512/1024 blocking; plain SIMD
 * (NBIT_WASM_FMA=0) equal to sequential f32 mul+add bit for bit; 1 thread ≡ 2 threads; the
 * TypeScript fallback (NBIT_WASM=0); flat memory; a script that uses the pool exits.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { Arg, Handle, MatmulGeometry } from "../lib/backend/backend.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import {
  decode,
  type DType,
  encode,
  f16BitsToNumber,
  roundTo,
  type Storage,
} from "../lib/dtype.ts";
import { closeCpuThreads, setCpuThreads, wasmMatmulInfo } from "../lib/backend/cpu/wasm/matmul.ts";
import * as nb from "../mod.ts";
import { rng as mulberry32 } from "./rng.ts";

type F = "f32" | "f16" | "bf16";

/** A suite run with NBIT_WASM=0 tests the fallback: tests of WebAssembly-only behavior skip. */
const WASM = Deno.env.get("NBIT_WASM") !== "0";
const wasmTest = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name, ignore: !WASM, fn });

interface Case {
  m: number;
  k: number;
  n: number;
  transA: boolean;
  transB: boolean;
  aBatch: number[];
  bBatch: number[];
  batchShape: number[];
  at: F;
  bt: F;
  ot: F;
}

function strides(own: readonly number[], matrix: number): number[] {
  const s = new Array(own.length).fill(0);
  let acc = matrix;
  for (let d = own.length - 1; d >= 0; d--) {
    s[d] = own[d] === 1 ? 0 : acc;
    acc *= own[d];
  }
  return s;
}

function geometry(c: Case): MatmulGeometry {
  return {
    batch: c.batchShape.reduce((x, y) => x * y, 1),
    m: c.m,
    k: c.k,
    n: c.n,
    batchShape: c.batchShape,
    aBatchStride: strides(c.aBatch, c.m * c.k),
    bBatchStride: strides(c.bBatch, c.k * c.n),
    transA: c.transA,
    transB: c.transB,
  };
}

const arg = (h: Handle, dtype: DType, size: number): Arg => ({ h, dtype, size });

/** Operands of `c` from a generator, rounded to their dtypes. */
function operands(c: Case, rand: () => number) {
  const len = (own: number[], mat: number) => own.reduce((x, y) => x * y, 1) * mat;
  const a = encode(c.at, Array.from({ length: len(c.aBatch, c.m * c.k) }, rand));
  const b = encode(c.bt, Array.from({ length: len(c.bBatch, c.k * c.n) }, rand));
  return { a, b };
}

/** Exact sum S and Σ|a||b| per output, in f64 (products of f32 values are exact in f64). */
function oracle(c: Case, a: ArrayLike<number>, b: ArrayLike<number>) {
  const g = geometry(c);
  const sum: number[] = [], abs: number[] = [];
  const off = (bt: number, st: readonly number[]) => {
    let o = 0;
    for (let d = g.batchShape.length - 1; d >= 0; d--) {
      o += (bt % g.batchShape[d]) * st[d];
      bt = Math.floor(bt / g.batchShape[d]);
    }
    return o;
  };
  for (let bt = 0; bt < g.batch; bt++) {
    const ao = off(bt, g.aBatchStride), bo = off(bt, g.bBatchStride);
    for (let i = 0; i < c.m; i++) {
      for (let j = 0; j < c.n; j++) {
        let s = 0, t = 0;
        for (let p = 0; p < c.k; p++) {
          const x = a[ao + (c.transA ? p * c.m + i : i * c.k + p)];
          const y = b[bo + (c.transB ? j * c.k + p : p * c.n + j)];
          s += x * y;
          t += Math.abs(x * y);
        }
        sum.push(s), abs.push(t);
      }
    }
  }
  return { sum, abs };
}

/** Assert every output lies in [round(S − γ), round(S + γ)], γ the f32 accumulation bound. */
function checkBound(c: Case, out: Storage, a: Storage, b: Storage): void {
  const { sum, abs } = oracle(c, decode(c.at, a), decode(c.bt, b));
  const got = decode(c.ot, out);
  const u = 2 ** -24;
  const gamma = (c.k * u) / (1 - c.k * u);
  assert.equal(got.length, sum.length);
  for (let x = 0; x < sum.length; x++) {
    const err = gamma * abs[x] + c.k * 2 ** -149;
    const lo = roundTo(c.ot, sum[x] - err), hi = roundTo(c.ot, sum[x] + err);
    if (!(got[x] >= lo && got[x] <= hi)) {
      assert.fail(
        `output ${x}: ${got[x]} not in [${lo}, ${hi}] (S = ${sum[x]}) ${JSON.stringify(c)}`,
      );
    }
  }
}

/** `a @ b` through the CPU backend (operands uploaded to the heap, everything freed). */
async function run(c: Case, a: Storage, b: Storage): Promise<Storage> {
  const ha = cpu.upload(c.at, a), hb = cpu.upload(c.bt, b);
  const g = geometry(c);
  const h = cpu.matmul(arg(ha, c.at, a.length), arg(hb, c.bt, b.length), g, c.ot);
  const out = await cpu.read(arg(h, c.ot, g.batch * c.m * c.n));
  cpu.free(h, c.ot, g.batch * c.m * c.n),
    cpu.free(ha, c.at, a.length),
    cpu.free(hb, c.bt, b.length);
  return out;
}

const dtype = fc.constantFrom<F>("f32", "f16", "bf16");
const caseArb = fc.record({
  m: fc.integer({ min: 1, max: 20 }),
  k: fc.integer({ min: 1, max: 40 }),
  n: fc.integer({ min: 1, max: 20 }),
  transA: fc.boolean(),
  transB: fc.boolean(),
  batchShape: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
  aOnes: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  bOnes: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  at: dtype,
  bt: dtype,
  ot: dtype,
  seed: fc.integer(),
}).map((r): Case & { seed: number } => ({
  ...r,
  aBatch: r.batchShape.map((d, i) => (r.aOnes[i] ? 1 : d)),
  bBatch: r.batchShape.map((d, i) => (r.bOnes[i] ? 1 : d)),
}));

wasmTest("wasm matmul: runs on this machine (SIMD detected, not disabled)", () => {
  const info = wasmMatmulInfo();
  assert.ok(info, "the WebAssembly path must be active for these tests to mean anything");
});

Deno.test("property: wasm matmul is within the f32 accumulation bound, every layout and dtype", async () => {
  await fc.assert(
    fc.asyncProperty(caseArb, async (c) => {
      const r = mulberry32(c.seed);
      const { a, b } = operands(c, () => (r() - 0.5) * 8);
      checkBound(c, await run(c, a, b), a, b);
    }),
    { numRuns: 300 },
  );
});

Deno.test("wasm matmul: edge sizes around the tile and the blocking, all transposes", async () => {
  const sizes = [1, 5, 7, 13, 48, 49, 511, 513];
  const r = mulberry32(7);
  let count = 0;
  for (const m of sizes) {
    for (const k of sizes) {
      for (const n of sizes) {
        if (m * k * n > 3e6 || (m * k * n > 2e5 && (m + k + n) % 3 !== 0)) continue;
        const t = count++;
        const c: Case = {
          m,
          k,
          n,
          transA: (t & 1) === 1,
          transB: (t & 2) === 2,
          aBatch: [],
          bBatch: [],
          batchShape: [],
          at: (["f32", "f16", "bf16"] as const)[t % 3],
          bt: (["f32", "bf16", "f16"] as const)[(t >> 1) % 3],
          ot: (["f32", "f32", "f16", "bf16"] as const)[t % 4],
        };
        const { a, b } = operands(c, () => r() * 2 - 1);
        checkBound(c, await run(c, a, b), a, b);
      }
    }
  }
  assert.ok(count > 100, `${count} cases`);
  // Wider than one NC = 1024 column block and deeper than two KC = 512 blocks.
  for (const [m, k, n] of [[3, 1100, 1030], [50, 1025, 9]]) {
    for (const transB of [false, true]) {
      const c: Case = {
        m,
        k,
        n,
        transA: transB,
        transB,
        aBatch: [],
        bBatch: [],
        batchShape: [],
        at: "f32",
        bt: "f32",
        ot: "f32",
      };
      const { a, b } = operands(c, () => r() - 0.5);
      checkBound(c, await run(c, a, b), a, b);
    }
  }
});

Deno.test("wasm matmul: NaN and ±Inf propagate as in the exact sum", async () => {
  const c: Case = {
    m: 7,
    k: 9,
    n: 10,
    transA: false,
    transB: true,
    aBatch: [],
    bBatch: [],
    batchShape: [],
    at: "f32",
    bt: "f16",
    ot: "f32",
  };
  const r = mulberry32(3);
  const { a, b } = operands(c, () => r() - 0.5);
  a[4] = Infinity, a[20] = NaN, a[30] = -Infinity;
  const out = await run(c, a, b) as Float32Array;
  const { sum } = oracle(c, a, decode("f16", b));
  for (let x = 0; x < sum.length; x++) {
    if (Number.isFinite(sum[x])) continue;
    assert.ok(Object.is(out[x], sum[x]), `output ${x}: ${out[x]} vs ${sum[x]}`);
  }
});

const row3 = (at: F, ot: F): Case => ({
  m: 1,
  k: 3,
  n: 1,
  transA: false,
  transB: false,
  aBatch: [],
  bBatch: [],
  batchShape: [],
  at,
  bt: at,
  ot,
});

Deno.test("wasm matmul: f16/bf16 outputs round once ([[154, 0.0625, 2^-20]] @ ones is 154.125)", async () => {
  const a = nb.tensor([[154, 0.0625, 2 ** -20]], { dtype: "f16" });
  const b = nb.ones([3, 1], { dtype: "f16" });
  const out = nb.matmul(a, b);
  assert.equal(out.dtype, "f16");
  assert.deepEqual(await out.toArray(), [[154.125]]);
  out.dispose(), a.dispose(), b.dispose();
  // Nine outputs: ties in SIMD-scanned groups of 4 and in the tail.
  const wide = { ...row3("f16", "f16"), n: 9 };
  const nine = await run(
    wide,
    encode("f16", [154, 0.0625, 2 ** -20]),
    encode("f16", new Array(27).fill(1)),
  );
  assert.deepEqual(Array.from(decode("f16", nine)), new Array(9).fill(154.125));
  const c = row3("f16", "f16");
  const got = await run(c, encode("f16", [154, 0.0625, 2 ** -20]), encode("f16", [1, 1, 1]));
  assert.equal(decode("f16", got)[0], 154.125);
  // bf16: 256 + 1 + 2^-20 accumulates to 257 in f32, a bf16 tie; the exact sum rounds up.
  const bf = await run(
    row3("f32", "bf16"),
    encode("f32", [256, 1, 2 ** -20]),
    encode("f32", [1, 1, 1]),
  );
  assert.equal(decode("bf16", bf)[0], 258);
  // A sum exactly on the tie stays a tie: ties to even.
  const tie = await run(row3("f32", "bf16"), encode("f32", [256, 1, 0]), encode("f32", [1, 1, 1]));
  assert.equal(decode("bf16", tie)[0], 256);
});

/** Wait (up to 20 s) until the pool's workers have started. */
async function threadsReady(n: number): Promise<void> {
  for (let i = 0; i < 400 && (wasmMatmulInfo()?.readyThreads ?? 0) < n; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(wasmMatmulInfo()?.readyThreads, n, `${n} threads did not start`);
}

const big = (m: number, k: number, n: number, o: Partial<Case> = {}): Case => ({
  m,
  k,
  n,
  transA: false,
  transB: false,
  aBatch: [],
  bBatch: [],
  batchShape: [],
  at: "f32",
  bt: "f32",
  ot: "f32",
  ...o,
});

wasmTest(
  "wasm matmul: 1 thread ≡ 2 threads bit for bit (split by batches, rows, columns)",
  async () => {
    const cases = [
      big(96, 300, 40), // rows split (m ≥ n)
      big(20, 600, 200, { transA: true, ot: "bf16" }), // columns split
      big(61, 530, 67, { transB: true, at: "f16", bt: "bf16", ot: "f16" }),
      big(30, 300, 50, { batchShape: [4], aBatch: [4], bBatch: [1] }), // batches split
      big(4, 1000, 301, { bt: "bf16" }), // skinny: B streamed, columns split
      big(2, 2000, 301, { bt: "bf16" }), // skinny, 2 blocks at a time, odd blocks per part
      big(4, 1000, 301, { at: "bf16", bt: "bf16", ot: "bf16" }), // skinny, rounded per thread
      big(2, 3000, 203), // the same with f32 weights
      big(300, 64, 301, { ot: "f16" }), // rounding to f16 split too (≥ 2^15 outputs)
      big(301, 64, 300, { at: "bf16", bt: "bf16", ot: "bf16" }),
    ];
    const r = mulberry32(11);
    const data = cases.map((c) => operands(c, () => r() * 2 - 1));
    try {
      setCpuThreads(1);
      const one = [];
      for (let i = 0; i < cases.length; i++) one.push(await run(cases[i], data[i].a, data[i].b));
      setCpuThreads(2);
      await threadsReady(2);
      const before = wasmMatmulInfo()!.splits;
      for (let i = 0; i < cases.length; i++) {
        const two = await run(cases[i], data[i].a, data[i].b);
        assert.deepEqual(two, one[i], JSON.stringify(cases[i]));
        checkBound(cases[i], two, data[i].a, data[i].b);
      }
      assert.equal(wasmMatmulInfo()!.splits - before, cases.length, "every product was split");
    } finally {
      closeCpuThreads();
    }
  },
);

/** Run `f` with environment variables set, then restore them and the pool. */
async function withEnv(vars: Record<string, string>, f: () => Promise<void>): Promise<void> {
  const old = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  closeCpuThreads();
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  try {
    await f();
  } finally {
    for (const [k, v] of Object.entries(old)) {
      v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    }
    closeCpuThreads();
  }
}

wasmTest(
  "wasm matmul: plain SIMD (NBIT_WASM_FMA=0) equals sequential f32 mul+add bit for bit",
  async () => {
    await withEnv({ NBIT_WASM_FMA: "0" }, async () => {
      assert.equal(wasmMatmulInfo()?.fma, false);
      const r = mulberry32(5);
      for (
        const c of [
          big(13, 1100, 17, { transB: true }),
          big(7, 49, 513, { at: "f16", transA: true }),
          big(3, 600, 37, { bt: "bf16" }), // skinny: 8-row chunks, a 5-column tail
          big(1, 300, 16, { bt: "f16", at: "bf16", transA: true }), // skinny, A in registers
          big(2, 4200, 9, { bt: "bf16" }), // skinny, A too deep for the reused A buffer
          big(2, 300, 45, { bt: "bf16" }), // skinny, 2 blocks at a time, then 1, then a tail
          big(2, 300, 40), // the same with f32 weights (5 blocks, no tail)
          big(4, 300, 45, { bt: "bf16" }), // skinny, 16-row chunks (300 = 18·16 + 12)
        ]
      ) {
        const { a, b } = operands(c, () => r() * 2 - 1);
        const got = await run(c, a, b) as Float32Array;
        const A = decode(c.at, a), B = decode(c.bt, b);
        for (let i = 0; i < c.m; i++) {
          for (let j = 0; j < c.n; j++) {
            let acc = 0;
            for (let p = 0; p < c.k; p++) {
              const x = A[c.transA ? p * c.m + i : i * c.k + p];
              const y = B[c.transB ? j * c.k + p : p * c.n + j];
              acc = Math.fround(acc + Math.fround(x * y));
            }
            if (!Object.is(got[i * c.n + j], acc)) {
              assert.fail(`(${i}, ${j}): ${got[i * c.n + j]} vs ${acc}`);
            }
          }
        }
      }
    });
  },
);

Deno.test("wasm matmul: NBIT_WASM=0 runs the TypeScript kernel (f64 accumulation, rounded once)", async () => {
  await withEnv({ NBIT_WASM: "0" }, async () => {
    assert.equal(wasmMatmulInfo(), undefined);
    const a = nb.tensor([[154, 0.0625, 2 ** -20]], { dtype: "f16" });
    const b = nb.ones([3, 1], { dtype: "f16" });
    const out = nb.matmul(a, b);
    assert.deepEqual(await out.toArray(), [[154.125]]);
    out.dispose(), a.dispose(), b.dispose();
    const r = mulberry32(9);
    for (
      const c of [
        big(9, 33, 11, { transA: true, ot: "bf16", bt: "f16" }),
        big(5, 7, 13, { transB: true }),
      ]
    ) {
      const { a, b } = operands(c, () => r() * 2 - 1);
      const got = decode(c.ot, await run(c, a, b));
      const { sum } = oracle(c, decode(c.at, a), decode(c.bt, b));
      // The f64 sum in ascending p, rounded once: exactly the oracle's sum, rounded.
      assert.deepEqual(Array.from(got), sum.map((x) => roundTo(c.ot, x)));
    }
  });
});

Deno.test("wasm matmul: memory stays flat over repeated products", async () => {
  const { heapStats } = await import("../lib/backend/cpu/heap.ts");
  const a = nb.tensor(Array.from({ length: 64 * 96 }, (_, i) => (i % 7) - 3), { shape: [64, 96] });
  const b = nb.tensor(Array.from({ length: 96 * 80 }, (_, i) => (i % 5) - 2), { shape: [96, 80] });
  const step = () =>
    nb.tidy(() =>
      nb.matmul(nb.astype(nb.matmul(a, b), "bf16"), nb.ones([80, 8], { dtype: "bf16" }))
    );
  step().dispose();
  const live = nb.memory(nb.cpu).bytes,
    heap = heapStats().liveBytes,
    size = heapStats().memoryBytes;
  for (let i = 0; i < 200; i++) step().dispose();
  assert.equal(nb.memory(nb.cpu).bytes, live);
  assert.equal(heapStats().liveBytes, heap);
  assert.equal(heapStats().memoryBytes, size);
  a.dispose(), b.dispose();
});

wasmTest("wasm matmul: a script that runs a threaded matmul exits by itself", async () => {
  const mod = new URL("../mod.ts", import.meta.url).href;
  const pool = new URL("../lib/backend/cpu/wasm/matmul.ts", import.meta.url).href;
  const code = `import * as nb from "${mod}";
import { setCpuThreads, wasmMatmulInfo } from "${pool}";
setCpuThreads(2);
nb.matmul(nb.ones([8, 8]), nb.ones([8, 8]));
while (wasmMatmulInfo().readyThreads < 2) await new Promise((r) => setTimeout(r, 10));
const out = nb.matmul(nb.ones([128, 256]), nb.ones([256, 128]));
console.log(wasmMatmulInfo().splits, (await out.data())[0]);`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill(), 20_000);
  const res = await child.output();
  clearTimeout(timer);
  const text = new TextDecoder().decode(res.stdout).trim();
  assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
  assert.equal(text, "1 256");
});

wasmTest("wasm matmul: threaded products after the heap grew write only their output", async () => {
  // Workers see another thread's memory.grow late (V8's grow interrupt): a pool made before
  // the growth read the job's table as undefined and wrote at the heap's low addresses.
  const mod = new URL("../mod.ts", import.meta.url).href;
  const pool = new URL("../lib/backend/cpu/wasm/matmul.ts", import.meta.url).href;
  const code = `import * as nb from "${mod}";
import { setCpuThreads, wasmMatmulInfo } from "${pool}";
setCpuThreads(2);
const guard = nb.random.uniform(nb.random.key(5), [64, 784]);
const before = (await guard.data()).slice();
nb.matmul(nb.ones([8, 8]), nb.ones([8, 8])).dispose();
while (wasmMatmulInfo().readyThreads < 2) await new Promise((r) => setTimeout(r, 10));
const grow = nb.zeros([4 << 20]); // the heap grows several times over
const x = nb.astype(nb.random.uniform(nb.random.key(0), [64, 784]), "bf16");
const w0 = nb.astype(nb.zeros([784, 256]), "bf16");
// The gradient of Σ x·W is xᵀ·1: a product that reads x transposed and splits its 784 rows.
const dW = () => nb.grad((w) => nb.sum(nb.astype(nb.matmul(x, w), "f32")))(w0);
dW().dispose(); // the first product after the growth makes a new pool
for (let i = 0; i < 200 && wasmMatmulInfo().readyThreads < 2; i++) {
  await new Promise((r) => setTimeout(r, 10));
}
const t = dW();
const after = await guard.data();
const changed = before.filter((v, i) => !Object.is(v, after[i])).length;
const col = await nb.sum(nb.astype(x, "f32"), 0).data();
const got = await nb.astype(t, "f32").data();
let bad = 0;
for (let i = 0; i < 784; i++) if (Math.abs(got[i * 256] - col[i]) > 0.01 * Math.abs(col[i]) + 1e-6) bad++;
const current = wasmMatmulInfo().poolBytes === nb.memory(nb.cpu).heap.memoryBytes;
console.log(changed, bad, wasmMatmulInfo().splits > 0, current, grow.size);`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill(), 60_000);
  const res = await child.output();
  clearTimeout(timer);
  assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
  // Nothing outside the output changed, the product is right, it was split across threads, and
  // the workers that ran it received the memory at its current size.
  assert.equal(new TextDecoder().decode(res.stdout).trim(), `0 0 true true ${4 << 20}`);
});

wasmTest(
  "wasm matmul: skinny products (m ≤ 4, B streamed) equal the packed path bit for bit",
  async () => {
    const r = mulberry32(21);
    for (const bt of ["f32", "bf16", "f16"] as const) {
      for (const m of [1, 2, 3, 4]) {
        const k = 700, n = 45;
        const thin = big(m, k, n, { bt });
        const wide = big(7, k, n, { bt }); // 7 rows: the packed 6×8 kernel
        const { a, b } = operands(wide, () => r() * 2 - 1);
        const all = await run(wide, a, b);
        const few = await run(thin, a.slice(0, m * k), b);
        assert.deepEqual(few, all.slice(0, m * n), `${bt} m = ${m}`);
        checkBound(thin, few, a.slice(0, m * k), b);
      }
    }
  },
);

Deno.test("wasm matmul: f32 → f16/bf16 output rounding matches lib/dtype.ts bit for bit", async () => {
  // a @ [[1]] = a exactly (but −0 · 1 + 0 = +0), so the narrow output must be the rounding of
  // each f32 output.
  const special = [
    0,
    -0,
    65504,
    65519.99,
    65520,
    -65520,
    2 ** -14,
    2 ** -14 - 2 ** -25,
    2 ** -24,
    2 ** -25,
    2 ** -25 + 2 ** -40,
    3 * 2 ** -26,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    1 + 2 ** -8,
    3.4028234663852886e38,
    1e-40,
    Infinity,
    -Infinity,
    NaN,
  ];
  const r = mulberry32(13);
  const bits = new Uint32Array(4099);
  for (let i = 0; i < bits.length; i++) bits[i] = (r() * 2 ** 32) >>> 0;
  const a = new Float32Array(bits.buffer);
  a.set(special);
  for (const ot of ["f16", "bf16"] as const) {
    const c = big(a.length, 1, 1, { ot });
    const got = await run(c, a, new Float32Array([1])) as Uint16Array;
    const acc = await run(big(a.length, 1, 1), a, new Float32Array([1]));
    const want = encode(ot, acc) as Uint16Array;
    const back = decode(ot, got), ref = decode(ot, want);
    for (let i = 0; i < a.length; i++) {
      if (Number.isNaN(ref[i])) assert.ok(Number.isNaN(back[i]), `${ot} ${a[i]}`);
      else assert.equal(got[i], want[i], `${ot} of ${a[i]} (bits ${bits[i].toString(16)})`);
    }
  }
});

wasmTest(
  "wasm matmul: every f16 bit pattern widens exactly (as A; as B skinny, packed, transposed)",
  async () => {
    // [1] @ b = 1·b + 0 = b exactly (−0 → +0), for each of the 65536 f16 values of b.
    const bits = Uint16Array.from({ length: 65536 }, (_, h) => h);
    const want = Array.from(bits, (h) => f16BitsToNumber(h) + 0);
    const ones = (m: number) => encode("f16", new Array(m).fill(1));
    for (const [m, transB] of [[1, false], [4, false], [7, false], [7, true]] as const) {
      const c = big(m, 1, 65536, { at: "f16", bt: "f16", transB });
      const out = await run(c, ones(m), bits);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < 65536; j++) {
          const got = out[i * 65536 + j], w = want[j];
          if (!(Object.is(got, w) || (w !== w && got !== got))) {
            assert.fail(
              `m = ${m}, transB ${transB}: f16 bits ${j.toString(16)} → ${got}, want ${w}`,
            );
          }
        }
      }
    }
    // As A (packed in panels of 6 contiguous rows): a @ [[1]] = a.
    for (const transA of [false, true]) {
      const out = await run(big(65536, 1, 1, { at: "f16", bt: "f16", transA }), bits, ones(1));
      for (let i = 0; i < 65536; i++) {
        const got = out[i], w = want[i];
        if (!(Object.is(got, w) || (w !== w && got !== got))) {
          assert.fail(`A, transA ${transA}: f16 bits ${i.toString(16)} → ${got}, want ${w}`);
        }
      }
    }
  },
);
