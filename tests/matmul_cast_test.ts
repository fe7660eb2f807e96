/**
 * Casts folded into the CPU matmul (`MatmulGeometry.aCast` / `bCast`): an f32 operand rounded to
 * f16/bf16 while it is packed gives bitwise the result of casting it first and multiplying the
 * narrow tensor, on the WebAssembly path (all its packers: vector and scalar, skinny streaming,
 * tie resolution) and on the TypeScript kernel (also run directly, and as the backend's path
 * under NBIT_WASM=0), for both operands, all transposes and batch broadcasting, with the special
 * values of rounding (NaN, ±Inf, ±0, overflow, subnormals, ties).
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import type { Arg, Handle, MatmulGeometry } from "../lib/backend/backend.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { matmulKernel } from "../lib/backend/cpu/matmul.ts";
import { wasmMatmulInfo } from "../lib/backend/cpu/wasm/matmul.ts";
import { type DType, encode, roundTo, type Storage } from "../lib/dtype.ts";
import { rng as mulberry32 } from "./rng.ts";
import * as nb from "../mod.ts";

type N = "f16" | "bf16";
type F = "f32" | N;

/** Values where rounding to f16/bf16 is delicate, mixed with ordinary ones. */
const SPECIAL = [
  NaN,
  -NaN,
  Infinity,
  -Infinity,
  0,
  -0,
  65504,
  65519.99,
  65520, // f16: rounds to Inf
  -70000,
  2 ** -24, // f16's smallest subnormal
  2 ** -25, // tie → 0
  3 * 2 ** -25, // tie → 2^-23
  -(2 ** -15), // f16 subnormal
  1 + 2 ** -11, // f16 tie → 1
  1 + 3 * 2 ** -11, // f16 tie → up
  1 + 2 ** -8, // bf16 tie → 1
  1 + 3 * 2 ** -8, // bf16 tie → up
  1e-40, // f32 subnormal
  -1e-45,
  3.4e38, // bf16: rounds to Inf
];

interface Case {
  m: number;
  k: number;
  n: number;
  transA: boolean;
  transB: boolean;
  batchShape: number[];
  aOne: boolean[];
  bOne: boolean[];
  aCast?: N;
  bCast?: N;
  /** Operand dtypes of the uncast side. */
  at: F;
  bt: F;
  ot: F;
  special: number;
  seed: number;
}

function strides(shape: readonly number[], one: readonly boolean[], matrix: number): number[] {
  const s = new Array(shape.length).fill(0);
  let acc = matrix;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = one[d] ? 0 : acc;
    acc *= one[d] ? 1 : shape[d];
  }
  return s;
}

const elems = (shape: readonly number[], one: readonly boolean[], matrix: number) =>
  shape.reduce((p, d, i) => p * (one[i] ? 1 : d), matrix);

function geometry(c: Case): MatmulGeometry {
  return {
    batch: c.batchShape.reduce((x, y) => x * y, 1),
    m: c.m,
    k: c.k,
    n: c.n,
    batchShape: c.batchShape,
    aBatchStride: strides(c.batchShape, c.aOne, c.m * c.k),
    bBatchStride: strides(c.batchShape, c.bOne, c.k * c.n),
    transA: c.transA,
    transB: c.transB,
  };
}

const narrow = fc.constantFrom<N | undefined>(undefined, "f16", "bf16");
const float = fc.constantFrom<F>("f32", "f16", "bf16");
const caseArb = fc.record({
  m: fc.integer({ min: 1, max: 20 }),
  k: fc.integer({ min: 1, max: 40 }),
  n: fc.integer({ min: 1, max: 20 }),
  transA: fc.boolean(),
  transB: fc.boolean(),
  batchShape: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
  aOne: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  bOne: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  aCast: narrow,
  bCast: narrow,
  at: float,
  bt: float,
  ot: float,
  special: fc.constantFrom(0, 0.05, 0.3),
  seed: fc.integer(),
}).filter((c) => c.aCast !== undefined || c.bCast !== undefined)
  .map((c): Case => ({
    ...c,
    at: c.aCast ? "f32" : c.at,
    bt: c.bCast ? "f32" : c.bt,
  }));

/** Operand values: uniform in ±4 with a share of {@link SPECIAL} values. */
function values(count: number, special: number, r: () => number): number[] {
  return Array.from({ length: count }, () => {
    if (r() < special) return SPECIAL[Math.floor(r() * SPECIAL.length)];
    return (r() - 0.5) * 8;
  });
}

const arg = (h: Handle, dtype: DType, size: number): Arg => ({ h, dtype, size });

/** Bits of a storage array, so NaNs and ±0 compare exactly. */
function bits(s: Storage): number[] {
  if (s instanceof Float32Array) {
    return Array.from(new Uint32Array(s.buffer, s.byteOffset, s.length));
  }
  if (s instanceof Float64Array) return Array.from(s, (x) => (Object.is(x, -0) ? -1 : x));
  return Array.from(s as ArrayLike<number>);
}

/** The backend's product with the casts folded in, and after casting the operands first. */
async function folded(c: Case): Promise<{ got: number[]; want: number[] }> {
  const r = mulberry32(c.seed);
  const g = geometry(c);
  const na = elems(c.batchShape, c.aOne, c.m * c.k), nbn = elems(c.batchShape, c.bOne, c.k * c.n);
  const ha = cpu.upload(c.at, encode(c.at, values(na, c.special, r)));
  const hb = cpu.upload(c.bt, encode(c.bt, values(nbn, c.special, r)));
  const a = arg(ha, c.at, na), b = arg(hb, c.bt, nbn);
  const size = g.batch * c.m * c.n;
  const hf = cpu.matmul(a, b, { ...g, aCast: c.aCast, bCast: c.bCast }, c.ot);
  const ca = c.aCast ? cpu.cast(a, c.aCast) : ha, cb = c.bCast ? cpu.cast(b, c.bCast) : hb;
  const hr = cpu.matmul(arg(ca, c.aCast ?? c.at, na), arg(cb, c.bCast ?? c.bt, nbn), g, c.ot);
  const got = bits(await cpu.read(arg(hf, c.ot, size)));
  const want = bits(await cpu.read(arg(hr, c.ot, size)));
  cpu.free(hf, c.ot, size), cpu.free(hr, c.ot, size);
  if (c.aCast) cpu.free(ca, c.aCast, na);
  if (c.bCast) cpu.free(cb, c.bCast, nbn);
  cpu.free(ha, c.at, na), cpu.free(hb, c.bt, nbn);
  return { got, want };
}

Deno.test("property: matmul with aCast/bCast ≡ cast then matmul, bit for bit (backend path)", async () => {
  wasmMatmulInfo(); // the kernel's packing buffers live as long as its pool
  const before = nb.memory(nb.cpu).heap!.liveBytes;
  await fc.assert(
    fc.asyncProperty(caseArb, async (c) => {
      const { got, want } = await folded(c);
      assert.deepEqual(got, want, JSON.stringify(c));
    }),
    { numRuns: 400 },
  );
  assert.equal(nb.memory(nb.cpu).heap!.liveBytes, before, "no heap block leaked");
});

Deno.test("property: the TypeScript kernel with aCast/bCast ≡ rounding the operands first", () => {
  fc.assert(
    fc.property(caseArb, (c) => {
      const r = mulberry32(c.seed);
      const g = geometry(c);
      const na = elems(c.batchShape, c.aOne, c.m * c.k);
      const nbn = elems(c.batchShape, c.bOne, c.k * c.n);
      const a = new Float32Array(values(na, c.special, r));
      const b = new Float32Array(values(nbn, c.special, r));
      const round = (x: Float32Array, d?: N) => d ? x.map((v) => roundTo(d, v)) : x;
      const size = g.batch * c.m * c.n;
      const got = new Float64Array(size), want = new Float64Array(size);
      matmulKernel(a, b, { ...g, aCast: c.aCast, bCast: c.bCast }, got);
      matmulKernel(round(a, c.aCast), round(b, c.bCast), g, want);
      assert.deepEqual(bits(got), bits(want), JSON.stringify(c));
    }),
    { numRuns: 300 },
  );
});

Deno.test("matmul with a folded cast: large products (blocked packing, skinny rows, ties)", async () => {
  const base = {
    transA: false,
    transB: false,
    batchShape: [] as number[],
    aOne: [] as boolean[],
    bOne: [] as boolean[],
    at: "f32" as const,
    bt: "f32" as const,
    special: 0.01,
    seed: 7,
  };
  const cases: Case[] = [
    { ...base, m: 61, k: 530, n: 1030, aCast: "f16", ot: "f16" },
    { ...base, m: 50, k: 600, n: 70, transA: true, transB: true, bCast: "bf16", ot: "f32" },
    { ...base, m: 3, k: 300, n: 1001, bCast: "f16", bt: "f32", ot: "bf16" },
    { ...base, m: 1, k: 64, n: 4096, bCast: "bf16", ot: "f32" },
    { ...base, m: 128, k: 784, n: 100, transA: true, aCast: "bf16", bCast: "f16", ot: "f32" },
  ];
  for (const c of cases) {
    const { got, want } = await folded(c);
    assert.deepEqual(got, want, JSON.stringify(c));
  }
});

Deno.test("matmul: a folded cast of a non-f32 operand or to a non-16-bit dtype is a clear error", () => {
  const h = cpu.upload("f16", encode("f16", [1, 2]));
  const g: MatmulGeometry = {
    batch: 1,
    m: 1,
    k: 2,
    n: 1,
    batchShape: [],
    aBatchStride: [],
    bBatchStride: [],
    transA: false,
    transB: false,
    aCast: "bf16",
  };
  try {
    assert.throws(() => cpu.matmul(arg(h, "f16", 2), arg(h, "f16", 2), g, "f32"), /aCast/);
  } finally {
    cpu.free(h, "f16", 2);
  }
});

Deno.test("matmul with a folded cast rounds like lib/dtype.ts: 2^17 f32 bit patterns, A and B", async () => {
  // [1] @ round(b) = round(b) exactly (−0 → +0): each output is the operand's rounded value.
  const r = mulberry32(3);
  const n = 1 << 17;
  const u = Uint32Array.from({ length: n }, (_, i) => {
    if (i < 4096) return (i & 1 ? 0x80000000 : 0) | ((0x33000000 + (i >> 1) * 0x3000) >>> 0);
    return (r() * 2 ** 32) >>> 0; // every exponent, NaNs and Infs included
  });
  u.set([0x477fefff, 0x477ff000, 0x477ff001, 0x38800000, 0x387fffff, 0x33000000, 0x33000001]);
  const x = new Float32Array(u.buffer);
  const one = cpu.upload("f32", new Float32Array(8).fill(1));
  const hx = cpu.upload("f32", x);
  try {
    for (const d of ["f16", "bf16"] as const) {
      const want = Array.from(x, (v) => roundTo(d, v) + 0);
      const layouts = [
        { m: 1, n, transA: false, transB: false, asA: false }, // skinny, B streamed
        { m: 7, n, transA: false, transB: false, asA: false }, // packed rows of B
        { m: 7, n, transA: false, transB: true, asA: false }, // B transposed
        { m: n, n: 1, transA: false, transB: false, asA: true }, // A, 4×4 transposes
        { m: n, n: 1, transA: true, transB: false, asA: true }, // A transposed: contiguous
      ];
      for (const l of layouts) {
        const g: MatmulGeometry = {
          batch: 1,
          m: l.m,
          k: 1,
          n: l.n,
          batchShape: [],
          aBatchStride: [],
          bBatchStride: [],
          transA: l.transA,
          transB: l.transB,
          ...(l.asA ? { aCast: d } : { bCast: d }),
        };
        const a = l.asA ? arg(hx, "f32", n) : arg(one, "f32", l.m);
        const b = l.asA ? arg(one, "f32", 1) : arg(hx, "f32", n);
        const h = cpu.matmul(a, b, g, "f32");
        const got = await cpu.read(arg(h, "f32", l.m * l.n)) as Float32Array;
        cpu.free(h, "f32", l.m * l.n);
        for (let i = 0; i < got.length; i++) {
          const w = want[i % n];
          if (!(Object.is(got[i], w) || (w !== w && got[i] !== got[i]))) {
            assert.fail(
              `${d} ${JSON.stringify(l)}: ${x[i % n]} (bits ${u[i % n].toString(16)}) → ${
                got[i]
              }, want ${w}`,
            );
          }
        }
      }
    }
  } finally {
    cpu.free(one, "f32", 8), cpu.free(hx, "f32", n);
  }
});
