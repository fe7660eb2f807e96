/**
 * The vec4 form of WebGPU fused kernels (4 elements per invocation, vec4 loads and stores)
 * against the scalar form, the reference: random fused kernels over f32 and i32 inputs and
 * outputs (with f16, bf16, bool and i32 intermediates, casts, compares, where, immediates,
 * special values), contiguous inputs at word offsets that do and do not allow vec4, scalar
 * (broadcast) inputs, sizes with and without a multiple of 4. Every output word must be equal,
 * and the test checks that the vec4 pipeline was the one that ran where it applies. Kernels
 * with a reduce (and so matmul epilogues' reductions) keep the scalar form.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { DType } from "../lib/dtype.ts";
import type { View } from "../lib/backend/backend.ts";
import {
  type FusedKernel,
  fusedKey,
  type FusedOp,
  type FusedOperand,
} from "../lib/backend/fused.ts";
import { runFused } from "../lib/backend/webgpu/fused.ts";
import { output, storageBytes } from "../lib/backend/webgpu/elementwise.ts";
import { makeCtx, readBuffer, writeBytes } from "../lib/backend/webgpu/runtime.ts";
import { fusedVec4 } from "../lib/backend/webgpu/wgsl/fused.ts";
import { gtest } from "./webgpu_setup.ts";
import { SPECIAL } from "./elementwise_graphs.ts";

type IO = "f32" | "i32";

interface Case {
  n: number;
  inputs: { dtype: IO; scalar: boolean; offset: number }[];
  steps: { kind: number; a: number; b: number; c: number; pick: number; imm: number }[];
  values: number[];
  outs: number[];
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  n: fc.constantFrom(4, 8, 12, 64, 260, 1028, 4100, 6, 13, 1027),
  inputs: fc.array(
    fc.record({
      dtype: fc.constantFrom<IO>("f32", "f32", "i32"),
      scalar: fc.boolean(),
      offset: fc.constantFrom(0, 0, 4, 8, 1, 2),
    }),
    { minLength: 1, maxLength: 4 },
  ),
  steps: fc.array(
    fc.record({
      kind: fc.nat(5),
      a: fc.nat(30),
      b: fc.nat(30),
      c: fc.nat(30),
      pick: fc.nat(30),
      imm: fc.constantFrom(0, 1, -2, 0.5, 3, 1e-3, 65504, -Infinity),
    }),
    { minLength: 1, maxLength: 10 },
  ),
  values: fc.array(fc.oneof(fc.constantFrom(...SPECIAL), fc.float(), fc.integer()), {
    minLength: 16,
    maxLength: 16,
  }),
  outs: fc.array(fc.nat(30), { minLength: 1, maxLength: 3 }),
});

const F_UN = ["neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "square"] as const;
const F_BIN = ["add", "sub", "mul", "div", "maximum", "minimum"] as const;
const I_BIN = ["add", "sub", "mul", "maximum", "minimum"] as const;
const CMP = ["less", "equal", "greater"] as const;
const CASTS: DType[] = ["f32", "i32", "f16", "bf16", "bool"];

/** A valid fused kernel from a case: operands of matching dtypes, outputs of 32-bit ops. */
function kernelOf(c: Case): FusedKernel {
  const ops: FusedOp[] = [];
  const immediates: { value: number; dtype: DType }[] = [];
  const vals: { o: FusedOperand; d: DType }[] = c.inputs.map((x, i) => ({
    o: { kind: "input", index: i },
    d: x.dtype,
  }));
  const push = (op: FusedOp) => {
    ops.push(op);
    vals.push({ o: { kind: "op", index: ops.length - 1 }, d: op.dtype });
  };
  const of = (d: DType, i: number) => {
    const xs = vals.filter((v) => v.d === d);
    return xs.length ? xs[i % xs.length] : undefined;
  };
  for (const s of c.steps) {
    const x = vals[s.a % vals.length];
    if (s.kind === 0 && x.d === "f32") {
      push({ op: "unary", kind: F_UN[s.pick % F_UN.length], x: x.o, dtype: "f32" });
    } else if (s.kind === 1 && (x.d === "f32" || x.d === "i32")) {
      let y = of(x.d, s.b);
      if (s.imm !== 0 && s.c % 2 === 0) {
        const value = x.d === "i32" ? Math.trunc(s.imm) | 0 : Math.fround(s.imm);
        immediates.push({ value, dtype: x.d });
        y = { o: { kind: "imm", index: immediates.length - 1 }, d: x.d };
      }
      const kinds = x.d === "f32" ? F_BIN : I_BIN;
      push({ op: "binary", kind: kinds[s.pick % kinds.length], a: x.o, b: y!.o, dtype: x.d });
    } else if (s.kind === 2 && (x.d === "f32" || x.d === "i32")) {
      const y = of(x.d, s.b)!;
      push({ op: "binary", kind: CMP[s.pick % CMP.length], a: x.o, b: y.o, dtype: "bool" });
    } else if (s.kind === 3) {
      push({ op: "cast", x: x.o, dtype: CASTS[s.pick % CASTS.length] });
    } else if (s.kind === 4) {
      const cond = of("bool", s.c);
      const y = of(x.d, s.b)!;
      if (cond) push({ op: "where", c: cond.o, a: x.o, b: y.o, dtype: x.d });
    }
  }
  if (ops.length === 0) push({ op: "cast", x: vals[0].o, dtype: "f32" });
  // Outputs: ops of 32-bit dtypes (a cast to f32 of the last op when none is).
  const wide = ops.map((o, i) => [o, i] as const).filter(([o]) =>
    o.dtype === "f32" || o.dtype === "i32"
  );
  if (wide.length === 0) {
    push({ op: "cast", x: { kind: "op", index: ops.length - 1 }, dtype: "f32" });
  }
  const cands = ops.map((o, i) => [o, i] as const).filter(([o]) =>
    o.dtype === "f32" || o.dtype === "i32"
  );
  const outputs = [...new Set(c.outs.map((i) => cands[i % cands.length][1]))];
  return {
    shape: [c.n],
    size: c.n,
    inputs: c.inputs.map((x) => x.dtype),
    immediates,
    ops,
    outputs,
  };
}

gtest("fused vec4 form: bitwise equal to the scalar form, taken where it applies", async (g) => {
  const ctx = makeCtx(g.device, `${g.name} (vec4 test)`, g.features.shaderF16);
  const inUse = ctx.pool.stats.inUse;
  let vec4Runs = 0;
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(caseArb, fc.boolean(), async (c, opaque) => {
      const k = kernelOf(c);
      const views: View[] = c.inputs.map((x, j) => {
        const len = x.scalar ? x.offset + 1 : x.offset + c.n;
        const data = x.dtype === "f32"
          ? new Float32Array(len).map((_, i) => c.values[(i * 7 + j) % 16])
          : new Int32Array(len).map((_, i) => Math.trunc(c.values[(i * 5 + j) % 16]) | 0);
        const h = output(ctx, x.dtype, len);
        writeBytes(ctx, h, new Uint8Array(data.buffer));
        return {
          h,
          dtype: x.dtype,
          size: len,
          shape: [c.n],
          strides: [x.scalar ? 0 : 1],
          offset: x.offset,
        };
      });
      const fast = runFused(ctx, k, views, opaque, true);
      const ref = runFused(ctx, k, views, opaque, false);
      const ins = c.inputs.map((x) => ({ mode: x.scalar ? "scalar" : "contig", rank: 0 } as const));
      const eligible = fusedVec4(k, ins, c.inputs.map((x) => x.offset));
      runs++;
      if (eligible) {
        vec4Runs++;
        const modes = c.inputs.map((x) => x.scalar ? "s" : "c").join(",");
        const key = `fused:${fusedKey(k)}:${modes}:o${opaque ? 1 : 0}:v4`;
        assert.ok(ctx.pipelines.has(key), `the vec4 pipeline ${key} did not run`);
      }
      for (let j = 0; j < k.outputs.length; j++) {
        const bytes = storageBytes(k.ops[k.outputs[j]].dtype, c.n);
        const a = new Uint32Array((await readBuffer(ctx, fast[j], bytes)).buffer);
        const b = new Uint32Array((await readBuffer(ctx, ref[j], bytes)).buffer);
        assert.deepEqual(a, b, `output ${j} of ${JSON.stringify(k)}`);
      }
      for (const h of [...fast, ...ref, ...views.map((v) => v.h as GPUBuffer)]) {
        ctx.pool.release(h);
      }
    }),
    { numRuns: 60, endOnFailure: true },
  );
  assert.ok(vec4Runs >= runs / 5, `only ${vec4Runs} of ${runs} cases took the vec4 form`);
  assert.equal(ctx.pool.stats.inUse, inUse, "buffers leaked");
});

Deno.test("fusedVec4: plain contiguous f32 kernels qualify; a reduce, a packed dtype, n % 4 do not", () => {
  const k: FusedKernel = {
    shape: [8],
    size: 8,
    inputs: ["f32"],
    immediates: [],
    ops: [{ op: "unary", kind: "neg", x: { kind: "input", index: 0 }, dtype: "f32" }],
    outputs: [0],
  };
  const c = [{ mode: "contig", rank: 0 } as const];
  assert.equal(fusedVec4(k, c, [0]), true);
  assert.equal(fusedVec4(k, c, [2]), false);
  assert.equal(fusedVec4({ ...k, shape: [6], size: 6 }, c, [0]), false);
  assert.equal(fusedVec4({ ...k, inputs: ["f16"] }, c, [0]), false);
  assert.equal(
    fusedVec4(
      { ...k, reduce: { op: "sum", x: 0, outer: 1, reduce: 8, inner: 1, dtype: "f32" } },
      c,
      [0],
    ),
    false,
  );
});
