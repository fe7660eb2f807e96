/**
 * The WebAssembly SIMD path of fused f32 kernels gives the same bits as the generated
 * TypeScript loop (the eager kernels' arithmetic), special values included: NaN, ±0, ±Inf,
 * subnormals, ties. Inputs on the heap take the SIMD path; the same inputs copied off the heap
 * take the loop.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { FusedKernel, FusedOp, FusedOperand } from "../lib/backend/fused.ts";
import { runFused } from "../lib/backend/cpu/fused.ts";
import { wasmFusedKernel } from "../lib/backend/cpu/wasm/fused.ts";
import { wasmEnabled } from "../lib/backend/cpu/wasm/features.ts";
import { alloc, heapMemory, release } from "../lib/backend/cpu/heap.ts";

const SPECIAL = [0, -0, 1, -1, 0.5, -2.5, Infinity, -Infinity, NaN, 1e-45, -1e-45, 1e-40, 3e38];
const UN = ["neg", "abs", "sqrt", "square", "relu"] as const;
const BIN = ["add", "sub", "mul", "div", "maximum", "minimum"] as const;

interface Spec {
  ops: { un: boolean; kind: string; a: number; b: number; imm: boolean }[];
  values: number[];
  n: number;
}

const specArb: fc.Arbitrary<Spec> = fc.record({
  ops: fc.array(
    fc.record({
      un: fc.boolean(),
      kind: fc.nat(5),
      a: fc.nat(9),
      b: fc.nat(9),
      imm: fc.boolean(),
    }).map((o) => ({ ...o, kind: o.un ? UN[o.kind % 5] : BIN[o.kind % 6] })),
    { minLength: 1, maxLength: 8 },
  ),
  values: fc.array(fc.oneof(fc.constantFrom(...SPECIAL), fc.float({ noDefaultInfinity: false })), {
    minLength: 8,
    maxLength: 8,
  }),
  n: fc.integer({ min: 1, max: 37 }),
});

function kernelOf(spec: Spec): FusedKernel {
  const ops: FusedOp[] = [];
  const pick = (i: number): FusedOperand =>
    i % (ops.length + 2) < 2
      ? { kind: "input", index: i % 2 }
      : { kind: "op", index: (i % (ops.length + 2)) - 2 };
  for (const o of spec.ops) {
    if (o.un) {
      ops.push({ op: "unary", kind: o.kind as (typeof UN)[number], x: pick(o.a), dtype: "f32" });
    } else {
      const b: FusedOperand = o.imm ? { kind: "imm", index: 0 } : pick(o.b);
      ops.push({
        op: "binary",
        kind: o.kind as (typeof BIN)[number],
        a: pick(o.a),
        b,
        dtype: "f32",
      });
    }
  }
  return {
    shape: [spec.n],
    size: spec.n,
    inputs: ["f32", "f32"],
    immediates: [{ value: Math.fround(spec.values[0]), dtype: "f32" }],
    ops,
    outputs: ops.map((_, i) => i).filter((i) => i === ops.length - 1 || i % 2 === 0),
  };
}

Deno.test({
  name: "wasm fused: SIMD ≡ generated loop, bitwise, over random f32 graphs (property)",
  ignore: !wasmEnabled() || !(heapMemory().buffer instanceof SharedArrayBuffer),
  fn() {
    fc.assert(
      fc.property(specArb, (spec) => {
        const k = kernelOf(spec);
        assert.ok(wasmFusedKernel(k, [false, false]), "the SIMD path takes this kernel");
        const bytes = spec.n * 4;
        const ptrs = [alloc(bytes), alloc(bytes), ...k.outputs.map(() => alloc(bytes))];
        const view = (p: number) => new Float32Array(heapMemory().buffer, p, spec.n);
        const [x, y] = [view(ptrs[0]), view(ptrs[1])];
        for (let i = 0; i < spec.n; i++) {
          x[i] = spec.values[i % 8];
          y[i] = spec.values[(i * 3 + 1) % 8];
        }
        const onHeap = runFused(k, [x, y], ptrs.slice(2).map(view));
        const offHeap = runFused(k, [x.slice(), y.slice()]);
        onHeap.forEach((o, j) => {
          const a = new Uint32Array(o.buffer, o.byteOffset, spec.n);
          const b = new Uint32Array(offHeap[j].buffer, offHeap[j].byteOffset, spec.n);
          assert.deepEqual(Array.from(a), Array.from(b), `output ${j}`);
        });
        ptrs.forEach((p) => release(p, bytes));
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
  assert.equal(wasmFusedKernel({ ...k, inputs: ["f16"] }, [false]), undefined);
});
