/**
 * The WebAssembly SIMD path of fused f32/bf16 kernels (the CPU backend's `fused` over heap
 * buffers) gives the same bits as the generated TypeScript loop (the eager kernels' arithmetic),
 * special values included: NaN, ±0, ±Inf, subnormals, bf16 ties, and every length mod 4. A NaN
 * is compared as NaN, whatever its sign and payload bits (which IEEE 754 leaves unspecified).
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { FusedKernel, FusedOp, FusedOperand } from "../lib/backend/fused.ts";
import { runFused } from "../lib/backend/cpu/fused.ts";
import { wasmFusedKernel } from "../lib/backend/cpu/wasm/fused.ts";
import { wasmEnabled } from "../lib/backend/cpu/wasm/features.ts";
import { heapMemory } from "../lib/backend/cpu/heap.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { decode, type DType, encode } from "../lib/dtype.ts";

const SPECIAL = [0, -0, 1, -1, 0.5, -2.5, Infinity, -Infinity, NaN, 1e-45, -1e-45, 1e-40, 3e38];
const UN = ["neg", "abs", "sqrt", "square", "relu"] as const;
const BIN = ["add", "sub", "mul", "div", "maximum", "minimum"] as const;
type W = "f32" | "bf16" | "f16";

const CMP = ["equal", "notEqual", "less", "lessEqual", "greater", "greaterEqual"] as const;

interface Spec {
  inputs: W[];
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

const w = fc.constantFrom<W>("f32", "bf16", "f16");
const specArb: fc.Arbitrary<Spec> = fc.record({
  inputs: fc.array(w, { minLength: 2, maxLength: 2 }),
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
    if (o.bool === 2 && lastBool !== undefined) {
      const c: FusedOperand = { kind: "op", index: lastBool };
      ops.push({ op: "where", c, a: pick(o.a), b: pick(o.b), dtype: o.d });
    } else if (o.cast) ops.push({ op: "cast", x: pick(o.a), dtype: o.d });
    else if (o.un) ops.push({ op: "unary", kind: UN[o.kind % 5], x: pick(o.a), dtype: o.d });
    else {
      const b: FusedOperand = o.imm ? { kind: "imm", index: 0 } : pick(o.b);
      ops.push({ op: "binary", kind: BIN[o.kind % 6], a: pick(o.a), b, dtype: o.d });
    }
    wide.push(ops.length - 1);
  }
  return {
    shape: [spec.n],
    size: spec.n,
    inputs: spec.inputs,
    immediates: [{ value: Math.fround(spec.values[0]), dtype: "f32" }],
    ops,
    // Every other value op, and the last one (bool values stay in registers).
    outputs: [
      ...wide.filter((_i, j) => j === wide.length - 1 || j % 2 === 0),
      ...(lastBool === undefined ? [] : [lastBool]),
    ],
  };
}

/** A heap buffer of `dtype` holding `values` (rounded), as a contiguous view. */
function heapView(dtype: DType, values: number[]) {
  const h = cpu.upload(dtype, encode(dtype, values));
  return { h, dtype, size: values.length, shape: [values.length], strides: [1], offset: 0 };
}

Deno.test({
  name: "wasm fused: SIMD ≡ generated loop, bitwise, over random f32/bf16/f16 graphs (property)",
  ignore: !wasmEnabled() || !(heapMemory().buffer instanceof SharedArrayBuffer),
  async fn() {
    await fc.assert(
      fc.asyncProperty(specArb, async (spec) => {
        const k = kernelOf(spec);
        if (k.outputs.length === 0) return;
        assert.ok(wasmFusedKernel(k, [false, false]), "the SIMD path takes this kernel");
        const vals = (j: number) =>
          Array.from({ length: spec.n }, (_, i) => spec.values[(i * (2 * j + 1) + j) % 8]);
        const views = spec.inputs.map((d, j) => heapView(d, vals(j)));
        const simd = cpu.fused!(k, views);
        // The loop, on widened copies off the heap, then stored as the backend stores.
        const loop = runFused(k, views.map((v, j) => decode(v.dtype, encode(v.dtype, vals(j)))));
        for (let j = 0; j < k.outputs.length; j++) {
          const d = k.ops[k.outputs[j]].dtype;
          const got = await cpu.read({ h: simd[j], dtype: d, size: spec.n });
          const want = encode(d, loop[j]);
          // Bits, with every NaN as one pattern: IEEE 754 leaves a NaN's sign and payload open,
          // and x86 returns either operand's NaN when both are NaN (the compiler may swap them).
          const bits = (s: ArrayLike<number>) =>
            d === "f32"
              ? Array.from(
                new Uint32Array((s as Float32Array).slice().buffer),
                (u) => (u & 0x7fffffff) > 0x7f800000 ? 0x7fc00000 : u,
              )
              : d === "f16"
              ? Array.from(s, (u) => ((u & 0x7fff) > 0x7c00 ? 0x7e00 : u))
              : Array.from(s, (u) => ((u & 0x7fff) > 0x7f80 ? 0x7fc0 : u));
          assert.deepEqual(bits(got), bits(want), `output ${j} (${d})`);
          cpu.free(simd[j], d, spec.n);
        }
        views.forEach((v) => cpu.free(v.h, v.dtype, v.size));
      }),
      { numRuns: 300 },
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
  assert.equal(wasmFusedKernel(k, [false]), undefined);
  const neg: FusedKernel = {
    ...k,
    ops: [{ op: "unary", kind: "neg", x: { kind: "input", index: 0 }, dtype: "f32" }],
  };
  assert.ok(!wasmEnabled() || wasmFusedKernel(neg, [false]));
  assert.equal(wasmFusedKernel({ ...neg, inputs: ["f8e4m3"] }, [false]), undefined);
});
