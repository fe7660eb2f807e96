/**
 * jit on WebGPU: fused kernels and recorded programs give the same bits as eager kernels on the
 * same device (random elementwise graphs, reductions of elementwise chains, matmuls with
 * epilogues, packed outputs, 20 train steps under every preset and three optimizers), a replay makes no bind group, buffer or writeBuffer and submits once
 * (counted by wrapping the WebGPU objects), eager work keeps its order around replays, and
 * memory stays flat over 1,000 jitted steps.
 */
import nodeAssert from "node:assert/strict";
import fc from "./fc.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import { graphFn, inputsOf, specArb, SPECIAL } from "./elementwise_graphs.ts";
import {
  broadcast,
  chainArb,
  chainCase,
  chainSize,
  computes,
  inlinable,
} from "./broadcast_chains.ts";
import * as nb from "../mod.ts";
import type { Tensor } from "../mod.ts";
import type { Handle, View } from "../lib/backend/backend.ts";
import type { FusedKernel } from "../lib/backend/fused.ts";
import { FMA_PROBE } from "../lib/backend/webgpu/fused.ts";
import type { GPURecording } from "../lib/backend/webgpu/record.ts";
import { webgpu, type WebGPUBackend } from "../lib/backend/webgpu/webgpu.ts";
import { loadMnist } from "../examples/data/mnist.ts";
import { gtest } from "./webgpu_setup.ts";

const { jit, precision, trainStep, optim, nn, random, tensor } = nb;
const assert = (ok: boolean, msg?: string) => nodeAssert.ok(ok, msg);
const assertEquals = (a: unknown, b: unknown, msg?: string) =>
  nodeAssert.deepStrictEqual(a, b, msg);

/** A copy of a CPU tree on `g` (bit for bit). */
async function toGpu<T>(x: T, g: WebGPUBackend): Promise<T> {
  if (x instanceof nb.Tensor) {
    return tensor(await x.data(), { shape: x.shape, dtype: x.dtype, device: g }) as T;
  }
  if (Array.isArray(x)) return await Promise.all(x.map((v) => toGpu(v, g))) as T;
  if (x && typeof x === "object") {
    const es = await Promise.all(Object.entries(x).map(async ([k, v]) => [k, await toGpu(v, g)]));
    return Object.fromEntries(es) as T;
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// Counting WebGPU calls by wrapping the objects themselves

interface Counts {
  createBuffer: number;
  createBindGroup: number;
  createComputePipeline: number;
  writeBuffer: number;
  submit: number;
  dispatch: number;
}

/** Wrap `g`'s device, queue and the compute pass prototype; returns live counters. */
function countCalls(g: WebGPUBackend): { counts: Counts; restore: () => void } {
  const counts: Counts = {
    createBuffer: 0,
    createBindGroup: 0,
    createComputePipeline: 0,
    writeBuffer: 0,
    submit: 0,
    dispatch: 0,
  };
  const undo: (() => void)[] = [];
  const wrap = <O extends object>(o: O, name: keyof O & string, key: keyof Counts) => {
    const own = Object.prototype.hasOwnProperty.call(o, name);
    const orig = o[name] as unknown as (...a: unknown[]) => unknown;
    (o as Record<string, unknown>)[name] = function (this: unknown, ...a: unknown[]) {
      counts[key]++;
      return orig.apply(this, a);
    };
    undo.push(() => {
      if (own) (o as Record<string, unknown>)[name] = orig;
      else delete (o as Record<string, unknown>)[name];
    });
  };
  wrap(g.device, "createBuffer", "createBuffer");
  wrap(g.device, "createBindGroup", "createBindGroup");
  wrap(g.device, "createComputePipeline", "createComputePipeline");
  wrap(g.device.queue, "writeBuffer", "writeBuffer");
  wrap(g.device.queue, "submit", "submit");
  wrap(GPUComputePassEncoder.prototype, "dispatchWorkgroups", "dispatch");
  return { counts, restore: () => undo.reverse().forEach((f) => f()) };
}

// ---------------------------------------------------------------------------------------------
// Random elementwise graphs (public ops, jit vs eager)

/** Run `runs` random graphs jitted and eager on `g`; returns how many ran a fused kernel. */
async function randomGraphs(g: WebGPUBackend, runs: number): Promise<number> {
  let fusedRuns = 0;
  await fc.assert(
    fc.asyncProperty(specArb, async (spec) => {
      const xs = inputsOf(spec, g);
      const fn = graphFn(spec);
      let eager: Tensor[];
      try {
        eager = nb.tidy(() => fn(...xs));
      } catch {
        nb.dispose(xs);
        return; // an invalid combination (e.g. a shape clash) is not a jit question
      }
      const f = jit(fn);
      const first = f(...xs); // recorded
      const again = f(...xs); // replayed
      const e = await bitsOf(eager);
      assertSameBits(e, await bitsOf(first), "random graph (first call)");
      assertSameBits(e, await bitsOf(again), "random graph (replay)");
      if ((f.lastStats?.fused ?? 0) > 0) fusedRuns++;
      f.clear();
      nb.dispose([eager, first, again, xs]);
    }),
    { numRuns: runs },
  );
  return fusedRuns;
}

gtest("jit ≡ eager bitwise: random elementwise graphs with broadcasts (property)", async (g) => {
  const before = nb.memory(g);
  const fused = await randomGraphs(g, 60);
  assert(fused >= 30, `only ${fused} of 60 graphs ran a fused kernel`);
  assertEquals(nb.memory(g).tensors, before.tensors);
});

// ---------------------------------------------------------------------------------------------
// Random graphs with reductions: elementwise prologues fused into the reduce (jit vs eager)

const chains: ((x: Tensor, y: Tensor) => Tensor)[] = [
  (x, y) => nb.mul(x, y),
  (x, y) => nb.exp(nb.sub(x, y)),
  (x) => nb.abs(x),
  (x) => nb.isFinite(nb.mul(nb.astype(x, "f32"), 0.5)),
  (x, y) => nb.where(nb.less(x, y), nb.astype(x, "f32"), y),
  (x, y) => nb.astype(nb.add(nb.astype(x, "f32"), y), "i32"),
];
const reducers: ((t: Tensor, axis: number | undefined) => Tensor)[] = [
  (t, a) => nb.sum(t, a),
  (t, a) => nb.max(t, a),
  (t, a) => nb.min(t, a),
  (t, a) => nb.argmax(t, a ?? -1),
  (t, a) => nb.all(t, a),
  (t, a) => nb.any(t, a),
  (t, a) => nb.mean(t, a),
];

gtest("jit ≡ eager bitwise: reductions of elementwise chains (property)", async (g) => {
  const before = nb.memory(g);
  let fusedReduces = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        shape: fc.oneof(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 3 }),
          fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 65, max: 300 })),
        ),
        d: fc.constantFrom("f32", "f16", "bf16"),
        chain: fc.integer({ min: 0, max: chains.length - 1 }),
        red: fc.integer({ min: 0, max: reducers.length - 1 }),
        axis: fc.option(fc.integer({ min: -1, max: 0 }), { nil: undefined }),
        keep: fc.boolean(),
        second: fc.integer({ min: 0, max: reducers.length - 1 }),
        seed: fc.nat(1000),
      }),
      async (c) => {
        const size = c.shape.reduce((a, b) => a * b, 1);
        const val = (i: number, s: number) => {
          const k = (i * 31 + s * 17 + c.seed) % 97;
          return k === 5 ? SPECIAL[(i + s) % SPECIAL.length] : (k - 48) / 8;
        };
        const x = tensor(Array.from({ length: size }, (_, i) => val(i, 1)), {
          shape: c.shape,
          dtype: c.d as "f32",
          device: g,
        });
        const y = tensor(Array.from({ length: size }, (_, i) => val(i, 2)), {
          shape: c.shape,
          device: g,
        });
        const fn = (x: Tensor, y: Tensor) => {
          const t = chains[c.chain](x, y);
          const u = chains[(c.chain + 1) % chains.length](x, y);
          const out = [reducers[c.red](t, c.axis), reducers[c.second](u, undefined)];
          return c.keep ? [...out, t] : out;
        };
        let eager: Tensor[];
        try {
          eager = nb.tidy(() => fn(x, y));
        } catch {
          nb.dispose([x, y]);
          return; // e.g. argmax of a bool: not a jit question
        }
        const f = jit(fn);
        const first = f(x, y);
        const again = f(x, y);
        const e = await bitsOf(eager);
        const what = JSON.stringify(c);
        assertSameBits(e, await bitsOf(first), `${what} (first call)`);
        assertSameBits(e, await bitsOf(again), `${what} (replay)`);
        if (f.lastStats!.schedule.some((l) => /^fused .* → (sum|max|min|arg|all|any)/.test(l))) {
          fusedReduces++;
        }
        f.clear();
        nb.dispose([eager, first, again, x, y]);
      },
    ),
    { numRuns: 50 },
  );
  assert(fusedReduces >= 25, `only ${fusedReduces} of 50 graphs fused a reduce`);
  assertEquals(nb.memory(g).tensors, before.tensors);
});

// ---------------------------------------------------------------------------------------------
// Random graphs with matmuls: elementwise epilogues fused into the matmul's store (jit vs eager)

const epilogues: ((z: Tensor, bias: Tensor, d: string) => Tensor)[] = [
  (z, b, d) => nb.relu(nb.add(z, nb.astype(b, d as "f32"))),
  (z, b) => nb.astype(nb.add(nb.astype(z, "f32"), b), "bf16"),
  (z) => nb.where(nb.greater(z, 0), z, nb.neg(z)),
  (z, b, d) => nb.tanh(nb.mul(z, nb.astype(b, d as "f32"))),
];

gtest("jit ≡ eager bitwise: matmuls with elementwise epilogues (property)", async (g) => {
  const runs = g.features.shaderF16 ? 20 : 6;
  const before = nb.memory(g);
  let fusedEpilogues = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        m: fc.integer({ min: 1, max: 40 }),
        k: fc.integer({ min: 1, max: 20 }),
        n: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constantFrom(4, 16, 32)),
        d: fc.constantFrom("f32", "f16", "bf16"),
        ep: fc.integer({ min: 0, max: epilogues.length - 1 }),
        ep2: fc.integer({ min: 0, max: epilogues.length - 1 }),
        keep: fc.boolean(),
        transposed: fc.boolean(),
        chain: fc.boolean(),
        seed: fc.nat(1000),
      }),
      async (c) => {
        const val = (i: number, s: number) => {
          const k = (i * 29 + s * 13 + c.seed) % 83;
          return k === 7 ? SPECIAL[(i + s) % SPECIAL.length] : (k - 41) / 16;
        };
        const mk = (shape: number[], s: number, dtype: string) =>
          tensor(Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => val(i, s)), {
            shape,
            dtype: dtype as "f32",
            device: g,
          });
        const x = mk([c.m, c.k], 1, c.d);
        const w = mk([c.k, c.n], 2, c.d);
        const w2 = mk([c.n, c.n], 3, c.d);
        const bias = mk([c.n], 4, "f32");
        const fn = (x: Tensor, w: Tensor, w2: Tensor, bias: Tensor) => {
          const z = nb.matmul(x, w);
          const h = nb.astype(epilogues[c.ep](z, bias, c.d), c.d as "f32");
          const out = [h];
          if (c.chain) out.push(epilogues[c.ep2](nb.matmul(h, w2), bias, c.d));
          if (c.keep) out.push(z);
          if (c.transposed) out.push(nb.add(nb.transpose(z), 1));
          return out;
        };
        const eager = nb.tidy(() => fn(x, w, w2, bias));
        const f = jit(fn);
        const first = f(x, w, w2, bias);
        const again = f(x, w, w2, bias);
        const e = await bitsOf(eager);
        const what = JSON.stringify(c);
        assertSameBits(e, await bitsOf(first), `${what} (first call)`);
        assertSameBits(e, await bitsOf(again), `${what} (replay)`);
        if (f.lastStats!.schedule.some((l) => l.startsWith("matmul") && l.includes("fused"))) {
          fusedEpilogues++;
        }
        f.clear();
        nb.dispose([eager, first, again, x, w, w2, bias]);
      },
    ),
    // Without shader-f16 (wgpu's GL backend) new matmul pipelines compile ever more slowly in one
    // process, so GL runs fewer graphs.
    { numRuns: runs },
  );
  assert(
    fusedEpilogues >= Math.ceil(runs * 0.5),
    `only ${fusedEpilogues} of ${runs} graphs fused an epilogue`,
  );
  assertEquals(nb.memory(g).tensors, before.tensors);
});

gtest(
  "jit ≡ eager bitwise: broadcast unary/cast chains recomputed in epilogues (property)",
  async (g) => {
    const before = nb.memory(g);
    let inlined = 0;
    await fc.assert(
      fc.asyncProperty(chainArb, async (c) => {
        const { fn, inputs } = chainCase(c, g);
        const eager = nb.tidy(() => fn(...inputs));
        const f = jit(fn);
        const first = f(...inputs);
        const again = f(...inputs);
        const what = JSON.stringify(c);
        const e = await bitsOf(eager);
        assertSameBits(e, await bitsOf(first), `${what} (first call)`);
        assertSameBits(e, await bitsOf(again), `${what} (replay)`);
        const sched = f.lastStats!.schedule;
        // The chain is computed on its own iteration space exactly when it may not be inlined.
        if (broadcast(c)) {
          assertEquals(
            sched.some((l) => computes(l, chainSize(c))),
            !inlinable(c),
            `${what}: ${sched}`,
          );
        }
        if (inlinable(c)) inlined++;
        f.clear();
        nb.dispose([eager, first, again, inputs]);
      }),
      { numRuns: 30 },
    );
    assert(inlined >= 6, `only ${inlined} of 30 chains were inlinable`);
    assertEquals(nb.memory(g).tensors, before.tensors);
  },
);

// ---------------------------------------------------------------------------------------------
// Fused kernels called directly: several packed outputs, odd sizes, strided and scalar views

function view(h: Handle, dtype: View["dtype"], shape: number[], strides: number[], offset = 0) {
  const size = shape.reduce((a, b) => a * b, 1);
  return { h, dtype, size, shape, strides, offset };
}

gtest(
  "fused: one kernel writes f32, f16, bf16, f8, u8, bool and i32 outputs like eager",
  async (g) => {
    for (const n of [1, 3, 5, 8, 1027]) {
      const xs = Array.from({ length: n }, (_, i) => SPECIAL[i % SPECIAL.length] * (i % 3 - 1));
      const x = g.upload("f32", new Float32Array(xs));
      const yv = g.upload("f16", new Uint16Array([0x2e66, 0xc200])); // f16 [0.1, -3]
      // x: contiguous; y: element 1 of a 2-element f16 buffer broadcast over n (stride 0)
      const xv = view(x, "f32", [n], [1]);
      const yb = view(yv, "f16", [n], [0], 1);
      const k: FusedKernel = {
        shape: [n],
        size: n,
        inputs: ["f32", "f16"],
        immediates: [{ value: 0.5, dtype: "f32" }, { value: 3, dtype: "i32" }],
        ops: [
          {
            op: "binary",
            kind: "mul",
            a: { kind: "input", index: 0 },
            b: { kind: "imm", index: 0 },
            dtype: "f32",
          },
          {
            op: "binary",
            kind: "add",
            a: { kind: "op", index: 0 },
            b: { kind: "input", index: 1 },
            dtype: "f16",
          },
          { op: "cast", x: { kind: "op", index: 1 }, dtype: "bf16" },
          { op: "cast", x: { kind: "op", index: 0 }, dtype: "f8e4m3", opts: { saturate: true } },
          { op: "cast", x: { kind: "op", index: 1 }, dtype: "u8" },
          {
            op: "binary",
            kind: "greater",
            a: { kind: "op", index: 0 },
            b: { kind: "op", index: 3 },
            dtype: "bool",
          },
          { op: "cast", x: { kind: "op", index: 0 }, dtype: "i32" },
          {
            op: "binary",
            kind: "add",
            a: { kind: "op", index: 6 },
            b: { kind: "imm", index: 1 },
            dtype: "i32",
          },
          {
            op: "where",
            c: { kind: "op", index: 5 },
            a: { kind: "op", index: 2 },
            b: { kind: "op", index: 3 },
            dtype: "f8e5m2",
          },
        ],
        outputs: [0, 1, 2, 3, 4, 5, 7, 8],
      };
      const outs = g.fused!(k, [xv, yb]);
      // Eager: the same kernels one by one on the same device.
      const a = (h: Handle, dtype: View["dtype"]) => ({ h, dtype, size: n });
      const flatV = (h: Handle, dtype: View["dtype"]) => view(h, dtype, [n], [1]);
      const half = g.fill("f32", 1, 0.5);
      const three = g.fill("i32", 1, 3);
      const e0 = g.binary("mul", xv, view(half, "f32", [n], [0]), "f32");
      const e1 = g.binary("add", flatV(e0, "f32"), yb, "f16");
      const e2 = g.cast(a(e1, "f16"), "bf16");
      const e3 = g.cast(a(e0, "f32"), "f8e4m3", { saturate: true });
      const e4 = g.cast(a(e1, "f16"), "u8");
      const e5 = g.binary("greater", flatV(e0, "f32"), flatV(e3, "f8e4m3"), "bool");
      const e6 = g.cast(a(e0, "f32"), "i32");
      const e7 = g.binary("add", flatV(e6, "i32"), view(three, "i32", [n], [0]), "i32");
      const e8 = g.where(flatV(e5, "bool"), flatV(e2, "bf16"), flatV(e3, "f8e4m3"), "f8e5m2");
      const eager = [[e0, "f32"], [e1, "f16"], [e2, "bf16"], [e3, "f8e4m3"], [e4, "u8"], [
        e5,
        "bool",
      ], [
        e7,
        "i32",
      ], [e8, "f8e5m2"]] as const;
      for (let j = 0; j < eager.length; j++) {
        const [h, d] = eager[j];
        const want = await g.read(a(h, d));
        const got = await g.read(a(outs[j], d));
        assertEquals(Array.from(got), Array.from(want), `n=${n} output ${j} (${d})`);
      }
      for (const h of [x, yv, half, three, e0, e1, e2, e3, e4, e5, e6, e7, e8, ...outs]) {
        g.free(
          h,
          "f32",
          0,
        );
      }
    }
  },
);

gtest("fused: strided and transposed input views index like eager copies", async (g) => {
  const data = new Float32Array(Array.from({ length: 24 }, (_, i) => i * 0.25 - 2));
  const x = g.upload("f32", data);
  // x as [4, 6] read transposed as a [6, 4] view, and a [2, 3] slice at offset 7 broadcast.
  const t = view(x, "f32", [6, 4], [1, 6]);
  const s = view(x, "f32", [6, 4], [0, 1], 7);
  const k: FusedKernel = {
    shape: [24],
    size: 24,
    inputs: ["f32", "f32"],
    immediates: [],
    ops: [
      {
        op: "binary",
        kind: "sub",
        a: { kind: "input", index: 0 },
        b: { kind: "input", index: 1 },
        dtype: "bf16",
      },
    ],
    outputs: [0],
  };
  const [out] = g.fused!(k, [t, s]);
  const want = g.binary("sub", t, s, "bf16");
  assertEquals(
    Array.from(await g.read({ h: out, dtype: "bf16", size: 24 })),
    Array.from(await g.read({ h: want, dtype: "bf16", size: 24 })),
  );
  for (const h of [x, out, want]) g.free(h, "f32", 0);
});

// ---------------------------------------------------------------------------------------------
// FMA contraction

gtest("fused: the FMA probe — the device's flag; opaque results give the unfused 0", async (g) => {
  const vals = [1 + 2 ** -12, 1 + 2 ** -12, -(1 + 2 ** -11)];
  const probe = async (b: WebGPUBackend) => {
    const ins = vals.map((v) => view(b.upload("f32", new Float32Array([v])), "f32", [1], [1]));
    const [o] = b.fused!(FMA_PROBE, ins);
    const r = (await b.read({ h: o, dtype: "f32", size: 1 }))[0];
    for (const h of [o, ...ins.map((v) => v.h)]) b.free(h, "f32", 1);
    return r;
  };
  // Without opacity: 0 unfused, 2^-24 contracted; the device's flag says which it saw.
  const raw = await webgpu({ opaqueFusion: false });
  const plain = await probe(raw);
  assert(plain === 0 || plain === 2 ** -24, `probe gave ${plain}`);
  assertEquals(raw.features.fmaContraction, plain !== 0);
  raw.device.destroy();
  // The default device keeps results opaque: the unfused result, on any device.
  assertEquals(await probe(g), 0);
  // The eager kernels (one dispatch per op) give 0 too.
  const ins = vals.map((v) => view(g.upload("f32", new Float32Array([v])), "f32", [1], [1]));
  const p = g.binary("mul", ins[0], ins[1], "f32");
  const s = g.binary("add", view(p, "f32", [1], [1]), ins[2], "f32");
  assertEquals((await g.read({ h: s, dtype: "f32", size: 1 }))[0], 0);
  for (const h of [p, s, ...ins.map((v) => v.h)]) g.free(h, "f32", 1);
});

gtest(
  "jit ≡ eager: maximum(x, f32(x < x)) at x = -0 (a cross-op fold on GL)",
  async (g) => {
    // Found by the property above on DENO_WEBGPU_BACKEND=gl before every fused result was kept
    // opaque: there the eager kernel gives -0 at x = -0 and the fused one, whose compiler saw
    // that x < x is false, gave +0.
    const fn = (x: Tensor) => nb.maximum(x, nb.astype(nb.less(x, x), "f32"));
    const x = tensor([0, -0, 1, -1, NaN, -Infinity], { device: g });
    const f = jit(fn);
    const e = fn(x);
    const j = f(x);
    assertSameBits(await bitsOf(e), await bitsOf(j), "maximum(x, x < x)");
    assertEquals(f.lastStats?.fused, 1);
    f.clear();
    nb.dispose([x, e, j]);
  },
);

// ---------------------------------------------------------------------------------------------
// Record and replay

gtest(
  "record: the memory plan reuses freed buffers; replay recomputes from new inputs",
  async (g) => {
    const n = 1000;
    const x = g.upload("f32", new Float32Array(n).fill(1));
    // A chain of 10 kernels, each intermediate freed after its reader: 2 buffers cycle.
    const body = (ins: readonly Handle[]) => {
      let h = ins[0];
      for (let i = 0; i < 10; i++) {
        const next = g.unary(i % 2 ? "sqrt" : "exp", { h, dtype: "f32", size: n }, "f32");
        if (h !== ins[0]) g.free(h, "f32", n);
        h = next;
      }
      return [h];
    };
    const r = g.record!([{ h: x, dtype: "f32", size: n }], body);
    const rec = r.recording as GPURecording;
    assertEquals(rec.info.dispatches, 10);
    assertEquals(rec.info.passes, 1);
    assert(rec.info.buffers <= 3, `${rec.info.buffers} buffers for a chain of 10 kernels`);
    // Eager reference for input 1 and for input 0.5.
    const eager = (v: number) => {
      const h = g.upload("f32", new Float32Array(n).fill(v));
      const [o] = body([h]);
      g.free(h, "f32", n);
      return o;
    };
    const e1 = eager(1);
    assertEquals(
      Array.from(await g.read({ h: r.outputs[0], dtype: "f32", size: n })),
      Array.from(await g.read({ h: e1, dtype: "f32", size: n })),
    );
    const y = g.upload("f32", new Float32Array(n).fill(0.5));
    const [out] = rec.replay([{ h: y, dtype: "f32", size: n }]);
    const e2 = eager(0.5);
    assertEquals(
      Array.from(await g.read({ h: out, dtype: "f32", size: n })),
      Array.from(await g.read({ h: e2, dtype: "f32", size: n })),
    );
    nodeAssert.throws(
      () => rec.replay([{ h: y, dtype: "f16", size: n }]),
      /recorded as f32\[1000\]/,
    );
    rec.dispose();
    for (const h of [x, y, out, e1, e2, r.outputs[0]]) g.free(h, "f32", n);
  },
);

gtest(
  "record: eager work keeps its order around replays, and reads see replay results",
  async (g) => {
    const f = jit((x: Tensor) => nb.relu(nb.sub(nb.mul(x, 3), 1)));
    const x0 = tensor([1, 2, 3, 4], { device: g });
    nb.dispose(f(x0)); // record
    // No read between: eager before, a replay on its output, eager after, a replay on that.
    const a = nb.mul(x0, 2); // [2, 4, 6, 8]
    const b = f(a); // [5, 11, 17, 23]
    const c = nb.add(b, 1); // [6, 12, 18, 24]
    const d = f(c); // [17, 35, 53, 71]
    const e = nb.neg(d);
    assertEquals(Array.from(await e.data()), [-17, -35, -53, -71]);
    assertEquals(Array.from(await b.data()), [5, 11, 17, 23]);
    assertEquals(f.traces, 1);
    f.clear();
    nb.dispose([x0, a, b, c, d, e]);
  },
);

// ---------------------------------------------------------------------------------------------
// Train steps on the GPU

const data = loadMnist({ train: 128, test: 0, seed: 0 });
type Batch = { x: Tensor; y: Tensor };
const loss = (p: nb.nn.MlpParams, b: Batch) => nn.crossEntropy(nn.mlp(p, b.x), b.y);
function gpuBatches(g: WebGPUBackend): Batch[] {
  return Array.from({ length: 4 }, (_, i) => ({
    x: tensor(data.train.images.subarray(i * 32 * 784, (i + 1) * 32 * 784), {
      shape: [32, 784],
      device: g,
    }),
    y: tensor(data.train.labels.subarray(i * 32, (i + 1) * 32), { dtype: "i32", device: g }),
  }));
}

const optimizers = {
  adam: () => optim.adam({ lr: 3e-3 }),
  adamw8bit: () => optim.adamw8bit({ lr: 3e-3 }),
  sgd: () => optim.sgd({ lr: 0.05, momentum: 0.9 }),
};

for (const preset of ["32-true", "16-mixed", "bf16-mixed", "fp8-mixed"] as const) {
  for (const [name, make] of Object.entries(optimizers)) {
    gtest(`jit ≡ eager bitwise: 20 MNIST steps on the GPU, ${preset}, ${name}`, async (g) => {
      const batches = gpuBatches(g);
      const cpuParams = nn.mlpInit(random.key(1), [784, 32, 10]);
      const params = await toGpu(cpuParams, g);
      const step = precision(preset)(trainStep({ loss, optimizer: make() }));
      const js = jit(step);
      let se = step.init(params);
      let sj = js.init(params);
      for (let i = 0; i < 20; i++) {
        const b = batches[i % batches.length];
        const [ne, me] = step(se, b);
        const [nj, mj] = js(sj, b);
        assertSameBits(
          await bitsOf([ne, me]),
          await bitsOf([nj, mj]),
          `${preset}/${name} step ${i}`,
        );
        if (i > 0) {
          nb.disposeReplaced(se, ne);
          nb.disposeReplaced(sj, nj);
        }
        nb.dispose([me, mj]);
        se = ne;
        sj = nj;
      }
      assertEquals(js.traces, 1);
      assert((js.lastStats?.fused ?? 0) > 0, "the step ran fused kernels");
      js.clear();
      nb.dispose([se, sj, params, cpuParams, batches]);
    });
  }
}

gtest(
  "jit replay: one submit, no bind group, buffer or writeBuffer per step (wrapped WebGPU)",
  async (g) => {
    const batches = gpuBatches(g);
    const cpuParams = nn.mlpInit(random.key(2), [784, 32, 10]);
    const params = await toGpu(cpuParams, g);
    for (const preset of ["32-true", "16-mixed"] as const) {
      const step = jit(precision(preset)(trainStep({ loss, optimizer: optim.adam() })));
      let s = step.init(params);
      const one = (b: Batch) => {
        const [next, m] = step(s, b);
        if (s.step > 0) nb.disposeReplaced(s, next);
        nb.dispose(m);
        s = next;
      };
      for (let i = 0; i < 3; i++) one(batches[i % 4]); // record + warm the pool
      await g.sync();
      const { counts, restore } = countCalls(g);
      try {
        for (let i = 0; i < 5; i++) one(batches[i % 4]);
        await g.sync();
      } finally {
        restore();
      }
      const per = (k: keyof Counts) => counts[k] / 5;
      assertEquals(per("submit"), 1, `${preset}: submits per step`);
      assertEquals(per("createBindGroup"), 0, `${preset}: bind groups per step`);
      assertEquals(per("writeBuffer"), 0, `${preset}: writeBuffer per step`);
      assertEquals(per("createBuffer"), 0, `${preset}: createBuffer per step`);
      assertEquals(per("createComputePipeline"), 0, `${preset}: pipelines per step`);
      assertEquals(per("dispatch"), step.lastStats!.kernels, `${preset}: dispatches per step`);
      step.clear();
      nb.dispose(s);
    }
    // The eager step, counted the same way, makes a bind group and a writeBuffer per dispatch.
    const eager = trainStep({ loss, optimizer: optim.adam() });
    let s = eager.init(params);
    const [s1, m1] = eager(s, batches[0]);
    nb.dispose(m1);
    await g.sync();
    const { counts, restore } = countCalls(g);
    try {
      const [s2, m2] = eager(s1, batches[1]);
      nb.dispose([m2]);
      nb.disposeReplaced(s1, s2);
      s = s2;
      await g.sync();
    } finally {
      restore();
    }
    assert(
      counts.createBindGroup >= counts.dispatch && counts.dispatch > 20,
      JSON.stringify(counts),
    );
    nb.dispose([s, s1, params, cpuParams, batches]);
  },
);

gtest("jit: memory() and the GPU buffer count flat over 1,000 jitted steps", async (g) => {
  const batches = gpuBatches(g);
  const cpuParams = nn.mlpInit(random.key(3), [784, 16, 10]);
  const params = await toGpu(cpuParams, g);
  const step = jit(precision("16-mixed")(trainStep({ loss, optimizer: optim.adam() })));
  let s = step.init(params);
  const runSteps = (n: number) => {
    for (let i = 0; i < n; i++) {
      const [next, m] = step(s, batches[i % 4]);
      if (s.step > 0) nb.disposeReplaced(s, next);
      nb.dispose(m);
      s = next;
    }
  };
  runSteps(10);
  await g.sync();
  const before = nb.memory(g);
  const created = g.poolStats().created;
  for (let k = 0; k < 10; k++) {
    runSteps(100);
    await g.sync();
  }
  const after = nb.memory(g);
  assertEquals([after.tensors, after.bytes], [before.tensors, before.bytes]);
  assertEquals(g.poolStats().created, created, "no new GPU buffers after the first steps");
  assertEquals(step.traces, 1);
  step.clear();
  nb.dispose([s, params, cpuParams, batches]);
});
