/**
 * The WebAssembly SIMD path of fused f32/bf16/f16/f8 kernels (the CPU backend's `fused` over heap
 * buffers) gives the same bits as the generated TypeScript loop (the eager kernels' arithmetic),
 * special values included: NaN, ±0, ±Inf, subnormals, bf16 ties, and every length mod 4, with
 * inputs contiguous, broadcast scalars, broadcast rows (bias: strides [0, 1]) and row scalars
 * (strides [1, 0]), bool conditions included. A NaN is compared as NaN, whatever its sign and
 * payload bits (which IEEE 754 leaves unspecified).
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { FusedKernel, FusedOp, FusedOperand } from "../lib/backend/fused.ts";
import { runFused } from "../lib/backend/cpu/fused.ts";
import { type InputLayout, wasmFusedKernel } from "../lib/backend/cpu/wasm/fused.ts";
import { wasmFusedInfo } from "../lib/backend/cpu/wasm/fused_run.ts";
import { wasmEnabled } from "../lib/backend/cpu/wasm/features.ts";
import { heapMemory } from "../lib/backend/cpu/heap.ts";
import { closeCpuThreads, setCpuThreads, wasmMatmulInfo } from "../lib/backend/cpu/wasm/matmul.ts";
import { cpu, reference } from "../lib/backend/cpu/cpu.ts";
import { decode, type DType, encode } from "../lib/dtype.ts";

const SPECIAL = [0, -0, 1, -1, 0.5, -2.5, Infinity, -Infinity, NaN, 1e-45, -1e-45, 1e-40, 3e38];
const UN = ["neg", "abs", "sqrt", "square", "relu"] as const;
const BIN = ["add", "sub", "mul", "div", "maximum", "minimum"] as const;
type W = "f32" | "bf16" | "f16" | "f8e4m3" | "f8e5m2";

const CMP = ["equal", "notEqual", "less", "lessEqual", "greater", "greaterEqual"] as const;

interface Spec {
  inputs: W[];
  /** Layouts of inputs 0, 1 (wide) and 2 (bool). */
  layouts: InputLayout[];
  /** Leading elements before each view's element 0 (its offset). */
  pads: number[];
  rows: number;
  cols: number;
  ops: {
    kind: number;
    un: boolean;
    cast: boolean;
    /** 0: arithmetic, 1: a comparison or isfinite, 2: a where on the last bool value. */
    bool: number;
    a: number;
    b: number;
    imm: boolean;
    d: W;
  }[];
  values: number[];
  n: number;
}

const w = fc.constantFrom<W>("f32", "bf16", "f16", "f8e4m3", "f8e5m2");
const specArb: fc.Arbitrary<Spec> = fc.record({
  inputs: fc.array(w, { minLength: 2, maxLength: 2 }),
  layouts: fc.array(fc.constantFrom<InputLayout>("c", "c", "p", "r", "s"), {
    minLength: 3,
    maxLength: 3,
  }),
  pads: fc.array(fc.nat(3), { minLength: 3, maxLength: 3 }),
  rows: fc.integer({ min: 1, max: 6 }),
  cols: fc.integer({ min: 1, max: 13 }),
  ops: fc.array(
    fc.record({
      kind: fc.nat(5),
      un: fc.boolean(),
      cast: fc.boolean(),
      bool: fc.nat(2),
      a: fc.nat(9),
      b: fc.nat(9),
      imm: fc.boolean(),
      d: w,
    }),
    { minLength: 1, maxLength: 8 },
  ),
  values: fc.array(fc.oneof(fc.constantFrom(...SPECIAL), fc.float()), {
    minLength: 8,
    maxLength: 8,
  }),
  n: fc.integer({ min: 1, max: 37 }),
});

/** The iteration shape: any length when every input is contiguous or scalar, else rows × 4k. */
function shapeOf(spec: Spec): [number, number] {
  const broadcast = spec.layouts.some((l) => l === "p" || l === "r");
  return broadcast ? [spec.rows, 4 * Math.ceil(spec.cols / 4)] : [1, spec.n];
}

function kernelOf(spec: Spec): FusedKernel {
  const ops: FusedOp[] = [];
  const wide: number[] = []; // ops with f32/bf16 values
  let lastBool: number | undefined;
  const pick = (i: number): FusedOperand =>
    i % (wide.length + 2) < 2
      ? { kind: "input", index: i % 2 }
      : { kind: "op", index: wide[(i % (wide.length + 2)) - 2] };
  for (const o of spec.ops) {
    if (o.bool === 1) {
      if (o.un) ops.push({ op: "unary", kind: "isfinite", x: pick(o.a), dtype: "bool" });
      else ops.push({ op: "binary", kind: CMP[o.kind], a: pick(o.a), b: pick(o.b), dtype: "bool" });
      lastBool = ops.length - 1;
      continue;
    }
    if (o.bool === 2) {
      const c: FusedOperand = lastBool === undefined || o.imm
        ? { kind: "input", index: 2 }
        : { kind: "op", index: lastBool };
      ops.push({ op: "where", c, a: pick(o.a), b: pick(o.b), dtype: o.d });
    } else if (o.cast) {
      const opts = o.imm ? { opts: { saturate: true } } : {}; // f8 casts clip, others ignore it
      ops.push({ op: "cast", x: pick(o.a), dtype: o.d, ...opts });
    } else if (o.un) ops.push({ op: "unary", kind: UN[o.kind % 5], x: pick(o.a), dtype: o.d });
    else {
      const b: FusedOperand = o.imm ? { kind: "imm", index: 0 } : pick(o.b);
      ops.push({ op: "binary", kind: BIN[o.kind % 6], a: pick(o.a), b, dtype: o.d });
    }
    wide.push(ops.length - 1);
  }
  const [rows, cols] = shapeOf(spec);
  return {
    shape: [rows, cols],
    size: rows * cols,
    inputs: [...spec.inputs, "bool"],
    immediates: [{ value: Math.fround(spec.values[0]), dtype: "f32" }],
    ops,
    // Every other value op, and the last one (bool values stay in registers).
    outputs: [
      ...wide.filter((_i, j) => j === wide.length - 1 || j % 2 === 0),
      ...(lastBool === undefined ? [] : [lastBool]),
    ],
  };
}

/** Elements of the buffer behind a view in `layout` over rows × cols. */
function storedLength(layout: InputLayout, rows: number, cols: number): number {
  return layout === "c" ? rows * cols : layout === "p" ? cols : layout === "r" ? rows : 1;
}

/** Element strides of a view in `layout` over rows × cols. */
function stridesOf(layout: InputLayout, cols: number): number[] {
  return layout === "c" ? [cols, 1] : layout === "p" ? [0, 1] : layout === "r" ? [1, 0] : [0, 0];
}

/** A heap buffer of `dtype` holding `pad` zeros then `values` (rounded), viewed in `layout`. */
function heapView(
  dtype: DType,
  values: number[],
  layout: InputLayout,
  rows: number,
  cols: number,
  pad: number,
) {
  const all = [...new Array(pad).fill(0), ...values];
  const h = cpu.upload(dtype, encode(dtype, all));
  const view = { h, dtype, size: all.length, shape: [rows, cols] };
  return { ...view, strides: stridesOf(layout, cols), offset: pad };
}

/** The view's elements in C order (what the TypeScript fallback materializes). */
function expand(layout: InputLayout, values: number[], rows: number, cols: number): number[] {
  return Array.from({ length: rows * cols }, (_, e) =>
    values[
      layout === "c" ? e : layout === "p" ? e % cols : layout === "r" ? Math.floor(e / cols) : 0
    ]);
}

/** Bits, with every NaN as one pattern (IEEE 754 leaves a NaN's sign and payload open). */
export function canonicalBits(d: DType, s: ArrayLike<number>): number[] {
  return d === "f32"
    ? Array.from(
      new Uint32Array(Float32Array.from(s as Float32Array).buffer),
      (u) => (u & 0x7fffffff) > 0x7f800000 ? 0x7fc00000 : u,
    )
    : d === "f16"
    ? Array.from(s, (u) => ((u & 0x7fff) > 0x7c00 ? 0x7e00 : u))
    : d === "bf16"
    ? Array.from(s, (u) => ((u & 0x7fff) > 0x7f80 ? 0x7fc0 : u))
    : d === "f8e4m3"
    ? Array.from(s, (u) => ((u & 0x7f) === 0x7f ? 0x7f : u))
    : d === "f8e5m2"
    ? Array.from(s, (u) => ((u & 0x7f) > 0x7c ? 0x7e : u))
    : Array.from(s);
}

const SIMD = wasmEnabled() && heapMemory().buffer instanceof SharedArrayBuffer;

Deno.test({
  name:
    "wasm fused: SIMD ≡ generated loop, bitwise, over random f32/bf16/f16/f8/bool graphs with " +
    "scalar, contiguous, broadcast-row and row-scalar inputs (property)",
  ignore: !SIMD,
  async fn() {
    await fc.assert(
      fc.asyncProperty(specArb, async (spec) => {
        const k = kernelOf(spec);
        if (k.outputs.length === 0) return;
        const [rows, cols] = k.shape;
        const n = k.size;
        assert.ok(wasmFusedKernel(k, spec.layouts), "the SIMD path takes this kernel");
        const vals = (j: number) =>
          Array.from(
            { length: storedLength(spec.layouts[j], rows, cols) },
            (_, i) =>
              j === 2
                ? (i * 7 + spec.pads[0]) % 3 === 0 ? 1 : 0
                : spec.values[(i * (2 * j + 1) + j) % 8],
          );
        const views = k.inputs.map((d, j) =>
          heapView(d, vals(j), spec.layouts[j], rows, cols, spec.pads[j])
        );
        const calls = wasmFusedInfo().calls;
        const simd = cpu.fused!(k, views);
        assert.equal(wasmFusedInfo().calls, calls + 1, "cpu.fused ran the SIMD kernel");
        // The loop, on widened copies off the heap, then stored as the backend stores.
        const loop = runFused(
          k,
          views.map((v, j) => {
            const x = Array.from(decode(v.dtype, encode(v.dtype, vals(j))));
            return spec.layouts[j] === "s"
              ? x[0]
              : Float32Array.from(expand(spec.layouts[j], x, rows, cols));
          }),
        );
        for (let j = 0; j < k.outputs.length; j++) {
          const d = k.ops[k.outputs[j]].dtype;
          const got = await cpu.read({ h: simd[j], dtype: d, size: n });
          const want = encode(d, loop[j]);
          // x86 returns either operand's NaN when both are NaN (the compiler may swap them).
          assert.deepEqual(canonicalBits(d, got), canonicalBits(d, want), `output ${j} (${d})`);
          cpu.free(simd[j], d, n);
        }
        views.forEach((v) => cpu.free(v.h, v.dtype, v.size));
      }),
      { numRuns: 400 },
    );
  },
});

Deno.test("wasm fused: kernels with other ops or dtypes stay on the loop", () => {
  const k: FusedKernel = {
    shape: [4],
    size: 4,
    inputs: ["f32"],
    immediates: [],
    ops: [{ op: "unary", kind: "exp", x: { kind: "input", index: 0 }, dtype: "f32" }],
    outputs: [0],
  };
  assert.equal(wasmFusedKernel(k, ["c"]), undefined);
  const neg: FusedKernel = {
    ...k,
    ops: [{ op: "unary", kind: "neg", x: { kind: "input", index: 0 }, dtype: "f32" }],
  };
  assert.ok(!wasmEnabled() || wasmFusedKernel(neg, ["c"]));
  assert.equal(wasmFusedKernel({ ...neg, inputs: ["i32"] }, ["c"]), undefined);
});

/** One random eager elementwise call. */
interface EagerSpec {
  op: "cast" | "unary" | "binary" | "where" | "copy";
  kind: number;
  dtypes: W[];
  out: W;
  layouts: InputLayout[];
  pads: number[];
  rows: number;
  cols: number;
  values: number[];
}

const eagerArb: fc.Arbitrary<EagerSpec> = fc.record({
  op: fc.constantFrom("cast", "unary", "binary", "where", "copy"),
  kind: fc.nat(11),
  dtypes: fc.array(w, { minLength: 2, maxLength: 2 }),
  out: w,
  layouts: fc.array(fc.constantFrom<InputLayout>("c", "c", "p", "r", "s"), {
    minLength: 3,
    maxLength: 3,
  }),
  pads: fc.array(fc.nat(3), { minLength: 3, maxLength: 3 }),
  rows: fc.integer({ min: 16, max: 40 }),
  cols: fc.integer({ min: 4, max: 12 }).map((c) => 4 * c),
  values: fc.array(fc.oneof(fc.constantFrom(...SPECIAL), fc.float()), {
    minLength: 8,
    maxLength: 8,
  }),
});

const UN_ALL = [...UN, "isfinite"] as const;
const BIN_ALL = [...BIN, ...CMP] as const;

Deno.test({
  name: "wasm fused: eager cast/unary/binary/where/copy on the SIMD path ≡ the TypeScript " +
    "kernels, bitwise, with broadcast views (property)",
  ignore: !SIMD,
  async fn() {
    await fc.assert(
      fc.asyncProperty(eagerArb, async (s) => {
        const { rows, cols } = s;
        const n = rows * cols;
        const vals = (j: number, d: DType) =>
          Array.from(
            { length: storedLength(s.layouts[j], rows, cols) },
            (_, i) =>
              d === "bool" ? (i * 5 + j) % 3 === 0 ? 1 : 0 : s.values[(i * (2 * j + 1) + j) % 8],
          );
        const view = (j: number, d: DType) =>
          heapView(d, vals(j, d), s.layouts[j], rows, cols, s.pads[j]);
        const contiguous = (d: DType) => {
          const h = cpu.upload(d, encode(d, expand("c", vals(0, d), rows, cols)));
          return { h, dtype: d, size: n };
        };
        const [da, db] = s.dtypes;
        let run: (b: typeof cpu | typeof reference) => unknown;
        let inputs: { h: unknown; dtype: DType; size: number }[];
        let out: DType = s.out;
        if (s.op === "cast") {
          const x = contiguous(da);
          inputs = [x];
          if (da === s.out) out = s.out === "f32" ? "bf16" : "f32";
          run = (b) => b.cast(x, out);
        } else if (s.op === "unary") {
          const kind = UN_ALL[s.kind % UN_ALL.length];
          const x = contiguous(da);
          inputs = [x];
          if (kind === "isfinite") out = "bool";
          run = (b) => b.unary(kind, x, out);
        } else if (s.op === "binary") {
          const kind = BIN_ALL[s.kind % BIN_ALL.length];
          const a = view(0, da), b = view(1, db);
          inputs = [a, b];
          if ((CMP as readonly string[]).includes(kind)) out = "bool";
          run = (be) => be.binary(kind, a, b, out);
        } else if (s.op === "where") {
          const c = view(2, "bool"), a = view(0, da), b = view(1, db);
          inputs = [c, a, b];
          run = (be) => be.where(c, a, b, out);
        } else {
          const x = view(0, da);
          inputs = [x];
          if (da === s.out) out = s.out === "f16" ? "bf16" : "f16";
          run = (b) => b.copy(x, out);
        }
        const calls = wasmFusedInfo().calls;
        const got = run(cpu);
        assert.equal(wasmFusedInfo().calls, calls + 1, `cpu.${s.op} ran the SIMD kernel`);
        const want = run(reference);
        // Raw storage bits (f32 as u32): one NaN source gives one NaN, so NaNs match exactly;
        // a binary op on two NaNs (f8e4m3 turns −Inf into a negative NaN) may return either.
        const bits = async (h: unknown) => {
          const a = await cpu.read({ h, dtype: out, size: n });
          if (s.op === "binary") return canonicalBits(out, a);
          return Array.from(out === "f32" ? new Uint32Array(a.slice().buffer) : a);
        };
        assert.deepEqual(await bits(got), await bits(want), `${s.op} → ${out}`);
        cpu.free(got as never, out, n);
        cpu.free(want as never, out, n);
        inputs.forEach((v) => cpu.free(v.h as never, v.dtype, v.size));
      }),
      { numRuns: 300 },
    );
  },
});

Deno.test("wasm fused: a same-dtype copy of broadcast views moves raw bits (NaN payloads kept)", async () => {
  for (const layout of ["p", "r", "s", "c"] as const) {
    for (const d of ["bf16", "f16", "f32", "bool"] as const) {
      const rows = 5, cols = 12;
      const len = storedLength(layout, rows, cols);
      // Raw storage with NaN payloads no arithmetic would keep.
      const raw = d === "f32"
        ? new Float32Array(
          Uint32Array.from({ length: len + 1 }, (_, i) => 0xffc00001 + i * 977).buffer,
        )
        : d === "bool"
        ? Uint8Array.from({ length: len + 1 }, (_, i) => i % 2)
        : Uint16Array.from({ length: len + 1 }, (_, i) => 0x7f81 + i * 3);
      const h = cpu.upload(d, raw);
      const x = { h, dtype: d, size: len + 1, shape: [rows, cols] };
      const v = { ...x, strides: stridesOf(layout, cols), offset: 1 };
      const out = cpu.copy(v, d);
      const got = await cpu.read({ h: out, dtype: d, size: rows * cols });
      const bitsOf = (a: ArrayLike<number>) =>
        Array.from(d === "f32" ? new Uint32Array((a as Float32Array).slice().buffer) : a);
      const want = expand(layout, bitsOf(raw).slice(1), rows, cols);
      assert.deepEqual(bitsOf(got), want, `${layout} ${d}`);
      cpu.free(out, d, rows * cols);
      cpu.free(h, d, len + 1);
    }
  }
});

Deno.test({
  name: "wasm fused: 1 thread ≡ 2 threads bit for bit (long kernels split by vector blocks)",
  ignore: !SIMD,
  async fn() {
    // Two outputs, broadcast rows and row scalars, f16/bf16 rounding, a bool condition.
    const spec: Spec = {
      inputs: ["f32", "bf16"],
      layouts: ["c", "p", "r"],
      pads: [1, 2, 3],
      rows: 0,
      cols: 0,
      ops: [
        { kind: 0, un: false, cast: false, bool: 0, a: 0, b: 1, imm: false, d: "f16" },
        { kind: 2, un: false, cast: false, bool: 0, a: 2, b: 0, imm: true, d: "bf16" },
        { kind: 1, un: false, cast: false, bool: 1, a: 3, b: 1, imm: false, d: "f32" },
        { kind: 4, un: false, cast: false, bool: 2, a: 2, b: 3, imm: false, d: "f32" },
      ],
      values: [1.5, -0, NaN, 3e38, 1e-40, -2.5, Infinity, 0.1],
      n: 0,
    };
    const rows = 300, cols = 1000; // 300K elements, a split of 75K vectors
    const k = {
      ...kernelOf({ ...spec, rows: 1, cols: 4 }),
      shape: [rows, cols],
      size: rows * cols,
    };
    const views = k.inputs.map((d, j) =>
      heapView(
        d,
        Array.from(
          { length: storedLength(spec.layouts[j], rows, cols) },
          (_, i) => d === "bool" ? i % 3 === 0 ? 1 : 0 : spec.values[i % 8] * (1 + i / 7),
        ),
        spec.layouts[j],
        rows,
        cols,
        spec.pads[j],
      )
    );
    const run = async () => {
      // Reused heap blocks hold a value no output has, so an element left unwritten shows.
      const dts = k.outputs.map((o) => k.ops[o].dtype);
      const junk = dts.map((d) => cpu.fill(d, k.size, d === "bool" ? 1 : 7));
      junk.reverse().forEach((h, j) => cpu.free(h, dts[dts.length - 1 - j], k.size));
      const hs = cpu.fused!(k, views);
      const out = await Promise.all(
        hs.map((h, j) => cpu.read({ h, dtype: k.ops[k.outputs[j]].dtype, size: k.size })),
      );
      hs.forEach((h, j) => cpu.free(h, k.ops[k.outputs[j]].dtype, k.size));
      return out.map((o) => Array.from(o instanceof Float32Array ? new Uint32Array(o.buffer) : o));
    };
    try {
      setCpuThreads(1);
      const s0 = wasmFusedInfo().splits;
      const one = await run();
      assert.equal(wasmFusedInfo().splits, s0, "one thread: no split");
      setCpuThreads(2);
      // The pool starts with the matmul state (wasmMatmulInfo starts it, as a matmul would).
      for (let i = 0; i < 400 && (wasmMatmulInfo()?.readyThreads ?? 0) < 2; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(wasmMatmulInfo()?.readyThreads, 2, "2 threads did not start");
      const s1 = wasmFusedInfo().splits;
      const two = await run();
      assert.equal(wasmFusedInfo().splits, s1 + 1, "two threads: the kernel was split");
      assert.equal(one.length, 3);
      one.forEach((o, j) =>
        assert.ok(o.length === k.size && o.some((x) => x !== 0), `output ${j}`)
      );
      assert.deepEqual(two, one);
    } finally {
      closeCpuThreads();
      views.forEach((v) => cpu.free(v.h, v.dtype, v.size));
    }
  },
});
