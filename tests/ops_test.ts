/**
 * Every op in lib/ops against small hand-computed values or naive JS references, in f64, f32
 * and the narrow dtypes (f16/bf16 results must equal the f32 result rounded once, checked with
 * an independent rounding oracle), plus type promotion, NaN rules, and fast-check properties
 * for broadcasting and reductions.
 */
import fc from "./fc.ts";
import assert from "node:assert/strict";
import {
  abs,
  add,
  all,
  allFinite,
  any,
  arange,
  argmax,
  argmin,
  astype,
  broadcastTo,
  concat,
  div,
  type DType,
  dtypes,
  equal,
  exp,
  expandDims,
  gelu,
  greater,
  greaterEqual,
  isFinite,
  less,
  lessEqual,
  log,
  logicalNot,
  logSoftmax,
  logsumexp,
  matmul,
  matmulT,
  max,
  maximum,
  mean,
  memory,
  min,
  minimum,
  mul,
  neg,
  notEqual,
  oneHot,
  pow,
  relu,
  reshape,
  rsqrt,
  scatterAdd,
  sigmoid,
  sign,
  slice,
  softmax,
  sqrt,
  square,
  squeeze,
  stack,
  stopGradient,
  sub,
  sum,
  take,
  tanh,
  type Tensor,
  tensor,
  tidy,
  transpose,
  where,
  zeros,
} from "../mod.ts";
import { rng } from "./rng.ts";

// ---------------------------------------------------------------------------------------------
// Independent rounding oracle (the quantum formula of IEEE 754 roundTiesToEven, applied once)

interface Format {
  readonly mant: number;
  readonly emin: number;
  readonly max: number;
  readonly hasInf: boolean;
}

const FORMATS: Partial<Record<DType, Format>> = {
  f16: { mant: 10, emin: -14, max: 65504, hasInf: true },
  bf16: { mant: 7, emin: -126, max: (2 - 2 ** -7) * 2 ** 127, hasInf: true },
  f8e4m3: { mant: 3, emin: -6, max: 448, hasInf: false },
  f8e5m2: { mant: 2, emin: -14, max: 57344, hasInf: true },
};

function roundHalfEven(n: number): number {
  const f = Math.floor(n);
  const d = n - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Round an f64 once to a narrow float format, ties to even (non-saturating). */
function rne(x: number, f: Format): number {
  if (x !== x) return NaN;
  if (!Number.isFinite(x)) return f.hasInf ? x : NaN;
  if (x === 0) return x;
  const ax = Math.abs(x);
  let e = Math.floor(Math.log2(ax));
  while (2 ** e > ax) e--;
  while (2 ** (e + 1) <= ax) e++;
  e = Math.max(e, f.emin);
  const q = 2 ** (e - f.mant);
  const r = roundHalfEven(ax / q) * q;
  if (r > f.max) return f.hasInf ? Math.sign(x) * Infinity : NaN;
  return r === 0 ? (x < 0 ? -0 : 0) : Math.sign(x) * r;
}

/** bf16 from an f32 value by bit arithmetic (the RNE bit trick of pytorch/pytorch c10/util/BFloat16.h). */
function bf16FromF32Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  if (x !== x) return NaN;
  const bits = Math.floor((u[0] + 0x7FFF + ((u[0] >>> 16) & 1)) / 65536) & 0xFFFF;
  u[0] = bits << 16;
  return f[0];
}

/** The value `x` takes when stored as `d` (one rounding from the f64 `x`). */
function storeAs(d: DType, x: number): number {
  switch (d) {
    case "f64":
      return x;
    case "f32":
      return Math.fround(x);
    case "i32":
      return x !== x ? 0 : Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.trunc(x))) || 0;
    case "u8":
      return x > 0 ? Math.min(255, Math.trunc(x)) : 0;
    case "bool":
      return x !== 0 ? 1 : 0;
    default:
      return rne(x, FORMATS[d]!);
  }
}

/** What an elementwise op must give in dtype `d`: exact in f64, else the f32 result rounded once. */
function opResult(d: DType, exact: number): number {
  return d === "f64" ? exact : storeAs(d, Math.fround(exact));
}

// ---------------------------------------------------------------------------------------------
// Helpers

const same = (a: number, b: number) => a === b || (a !== a && b !== b);

function assertValues(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (!same(got[i], want[i])) {
      assert.fail(`${what}: element ${i} is ${got[i]}, expected ${want[i]}`);
    }
  }
}

function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: (i: number) => number,
  what: string,
): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (same(got[i], want[i])) continue;
    if (!(Math.abs(got[i] - want[i]) <= tol(i))) {
      assert.fail(`${what}: element ${i} is ${got[i]}, expected ${want[i]} ± ${tol(i)}`);
    }
  }
}

interface Out {
  readonly shape: number[];
  readonly dtype: DType;
  readonly data: number[];
}

/** Run `fn` in a tidy scope, read its result, and free everything. */
async function run(fn: () => Tensor): Promise<Out> {
  const t = tidy(fn);
  try {
    return { shape: [...t.shape], dtype: t.dtype, data: Array.from(await t.data()) };
  } finally {
    t.dispose();
  }
}

/** Values of `raw` once stored as `d` (read back from a tensor, so exactly what ops see). */
async function stored(raw: readonly number[], d: DType): Promise<number[]> {
  return (await run(() => tensor(raw, { dtype: d }))).data;
}

const FLOATS: readonly DType[] = ["f64", "f32", "f16", "bf16"];
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

// ---------------------------------------------------------------------------------------------
// The oracle itself

Deno.test("oracle: the quantum-formula rounding agrees with Math.f16round and the bf16 bit trick", () => {
  fc.assert(
    fc.property(fc.float({ noNaN: false }), (x) => {
      assert.ok(same(rne(x, FORMATS.f16!), Math.f16round(x)), `f16 ${x}`);
      assert.ok(same(rne(x, FORMATS.bf16!), bf16FromF32Bits(x)), `bf16 ${x}`);
    }),
    { numRuns: 2000 },
  );
  // Hand-checked rows from numpy test_half.py, pytorch bfloat16_test.cpp and ml_dtypes float8_test.cc.
  assert.equal(rne(65520, FORMATS.f16!), Infinity);
  assert.equal(rne(1 + 2 ** -11 + 2 ** -40, FORMATS.f16!), 1 + 2 ** -10);
  assert.equal(rne(464, FORMATS.f8e4m3!), 448);
  assert.ok(Number.isNaN(rne(464.01, FORMATS.f8e4m3!)));
  assert.equal(rne(61440, FORMATS.f8e5m2!), Infinity);
});

// ---------------------------------------------------------------------------------------------
// Unary ops

const XS = [-3.7, -1.25, -0.5, -0.1, 0, 0.1, 0.3, 0.5, 1, 1.7, 2.25, 5.5, 300];
const POS = [0.01, 0.1, 0.3, 0.5, 1, 1.7, 2.25, 5.5, 100, 1e3];

const UNARY: readonly [string, (x: Tensor) => Tensor, (x: number) => number, number[]][] = [
  ["neg", neg, (x) => -x, XS],
  ["abs", abs, Math.abs, XS],
  ["sign", sign, Math.sign, XS],
  ["exp", exp, Math.exp, XS.slice(0, -1)],
  ["log", log, Math.log, POS],
  ["sqrt", sqrt, Math.sqrt, POS],
  ["rsqrt", rsqrt, (x) => 1 / Math.sqrt(x), POS],
  ["square", square, (x) => x * x, XS],
  ["tanh", tanh, Math.tanh, XS],
  ["relu", relu, (x) => (x > 0 ? x : 0), XS],
];

for (const [name, op, ref, xs] of UNARY) {
  Deno.test(`${name}: f64 exact, f32/f16/bf16 = the f32 result rounded once`, async () => {
    for (const d of FLOATS) {
      const inputs = await stored(xs, d);
      const out = await run(() => op(tensor(xs, { dtype: d })));
      assert.equal(out.dtype, d, `${name} ${d}: dtype`);
      assert.deepEqual(out.shape, [xs.length]);
      assertValues(out.data, inputs.map((x) => opResult(d, ref(x))), `${name} ${d}`);
    }
  });
}

Deno.test("sigmoid matches 1/(1+e^-x) in every float dtype (both branches of the stable form)", async () => {
  const xs = [-30, -5, -1, -0.25, 0, 0.25, 1, 5, 30];
  for (const d of FLOATS) {
    const inputs = await stored(xs, d);
    const out = await run(() => sigmoid(tensor(xs, { dtype: d })));
    assert.equal(out.dtype, d);
    const want = inputs.map((x) => opResult(d, 1 / (1 + Math.exp(-x))));
    // The kernel uses e^x/(1+e^x) for x < 0: allow one ulp of the target dtype.
    const ulp = { f64: 2 ** -52, f32: 2 ** -23, f16: 2 ** -10, bf16: 2 ** -7 }[d as "f64"];
    assertClose(out.data, want, (i) => ulp * Math.abs(want[i]), `sigmoid ${d}`);
  }
  assert.deepEqual((await run(() => sigmoid(tensor([0])))).data, [0.5]);
});

Deno.test("unary special values: NaN, ±Inf, −0 and out-of-domain inputs", async () => {
  const v = [NaN, Infinity, -Infinity, -0, -1];
  assertValues((await run(() => log(tensor(v)))).data, [NaN, Infinity, NaN, -Infinity, NaN], "log");
  assertValues((await run(() => sqrt(tensor(v)))).data, [NaN, Infinity, NaN, -0, NaN], "sqrt");
  assertValues((await run(() => exp(tensor(v)))).data, [
    NaN,
    Infinity,
    0,
    1,
    Math.fround(1 / Math.E),
  ], "exp");
  assertValues((await run(() => relu(tensor(v)))).data, [NaN, Infinity, 0, 0, 0], "relu");
  assertValues((await run(() => tanh(tensor(v)))).data, [
    NaN,
    1,
    -1,
    -0,
    Math.fround(Math.tanh(-1)),
  ], "tanh");
  assertValues((await run(() => sigmoid(tensor(v)))).data, [
    NaN,
    1,
    0,
    0.5,
    Math.fround(1 / (1 + Math.E)),
  ], "sigmoid");
  assertValues((await run(() => rsqrt(tensor([4, 0])))).data, [0.5, Infinity], "rsqrt");
});

Deno.test("unary ops on integers: arithmetic keeps i32, transcendental ops give f32", async () => {
  const i = [-2, 0, 3];
  const n = await run(() => neg(tensor(i, { dtype: "i32" })));
  assert.equal(n.dtype, "i32");
  assert.deepEqual(n.data, [2, 0, -3]);
  const sq = await run(() => square(tensor(i, { dtype: "i32" })));
  assert.deepEqual([sq.dtype, sq.data], ["i32", [4, 0, 9]]);
  const e = await run(() => exp(tensor(i, { dtype: "i32" })));
  assert.equal(e.dtype, "f32");
  assertValues(e.data, i.map((x) => Math.fround(Math.exp(x))), "exp i32");
  const s = await run(() => sqrt(tensor([4, 9], { dtype: "u8" })));
  assert.deepEqual([s.dtype, s.data], ["f32", [2, 3]]);
});

Deno.test("gelu is the tanh approximation, within f32 rounding of an f64 reference", async () => {
  const xs = [-4, -1.5, -0.5, 0, 0.5, 1, 2, 6];
  const ref = (x: number) =>
    0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  const f64 = await run(() => gelu(tensor(xs, { dtype: "f64" })));
  assertClose(f64.data, xs.map(ref), () => 1e-14, "gelu f64");
  for (const d of ["f32", "f16", "bf16"] as const) {
    const eps = { f32: 2 ** -23, f16: 2 ** -10, bf16: 2 ** -7 }[d];
    const inputs = await stored(xs, d);
    const out = await run(() => gelu(tensor(xs, { dtype: d })));
    assert.equal(out.dtype, d);
    // gelu is a composite: each step rounds, so allow a few ulps plus an absolute floor.
    assertClose(
      out.data,
      inputs.map(ref),
      (i) => 8 * eps * (Math.abs(inputs[i]) + 0.01),
      `gelu ${d}`,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// Binary ops

const A = [[-2.5, -1, 0, 0.75, 3, 10.5], [2, 3]] as const;
const B = [[0.5, -4, 2], [3]] as const;

const BINARY: readonly [
  string,
  (a: Tensor, b: Tensor) => Tensor,
  (a: number, b: number) => number,
][] = [
  ["add", add, (a, b) => a + b],
  ["sub", sub, (a, b) => a - b],
  ["mul", mul, (a, b) => a * b],
  ["div", div, (a, b) => a / b],
  ["maximum", maximum, Math.max],
  ["minimum", minimum, Math.min],
];

/** Reference [2,3] op [3] with the [3] operand broadcast over rows. */
function rowBroadcast(a: number[], b: number[], f: (a: number, b: number) => number): number[] {
  return a.map((x, i) => f(x, b[i % 3]));
}

for (const [name, op, ref] of BINARY) {
  Deno.test(`${name}: broadcast [2,3] with [3] in every float dtype`, async () => {
    for (const d of FLOATS) {
      const a = await stored(A[0] as unknown as number[], d);
      const b = await stored(B[0] as unknown as number[], d);
      const out = await run(() =>
        op(
          tensor(A[0] as unknown as number[], { dtype: d, shape: A[1] }),
          tensor(B[0] as unknown as number[], { dtype: d }),
        )
      );
      assert.equal(out.dtype, d, `${name} ${d}`);
      assert.deepEqual(out.shape, [2, 3]);
      assertValues(out.data, rowBroadcast(a, b, (x, y) => opResult(d, ref(x, y))), `${name} ${d}`);
      // Operands swapped: [3] op [2,3].
      const swapped = await run(() =>
        op(
          tensor(B[0] as unknown as number[], { dtype: d }),
          tensor(A[0] as unknown as number[], { dtype: d, shape: A[1] }),
        )
      );
      assertValues(
        swapped.data,
        rowBroadcast(a, b, (x, y) => opResult(d, ref(y, x))),
        `${name} ${d} swapped`,
      );
    }
  });
}

Deno.test("pow: positive bases, integer and fractional exponents, in every float dtype", async () => {
  const base = [0.5, 1, 2, 3, 1.5, 4];
  const expo = [2, -1, 0.5];
  for (const d of FLOATS) {
    const a = await stored(base, d);
    const b = await stored(expo, d);
    const out = await run(() =>
      pow(tensor(base, { dtype: d, shape: [2, 3] }), tensor(expo, { dtype: d }))
    );
    assertValues(out.data, rowBroadcast(a, b, (x, y) => opResult(d, Math.pow(x, y))), `pow ${d}`);
  }
  assert.deepEqual((await run(() => pow(tensor([2, 3]), 3))).data, [8, 27]);
  assert.deepEqual((await run(() => pow(2, tensor([3, -1])))).data, [8, 0.5]);
});

Deno.test("div: division by zero gives ±Inf and NaN; ints divide to f32", async () => {
  assertValues(
    (await run(() => div(tensor([1, -1, 0]), 0))).data,
    [Infinity, -Infinity, NaN],
    "x/0",
  );
  const q = await run(() =>
    div(tensor([1, 7], { dtype: "i32" }), tensor([2, 2], { dtype: "i32" }))
  );
  assert.deepEqual([q.dtype, q.data], ["f32", [0.5, 3.5]]);
});

Deno.test("maximum/minimum propagate NaN from either side (like NumPy and torch)", async () => {
  for (const d of FLOATS) {
    const a = tensor([NaN, 1, NaN, 2], { dtype: d });
    const b = tensor([1, NaN, NaN, -3], { dtype: d });
    const mx = await run(() => maximum(a, b));
    const mn = await run(() => minimum(a, b));
    assertValues(mx.data, [NaN, NaN, NaN, 2], `maximum ${d}`);
    assertValues(mn.data, [NaN, NaN, NaN, -3], `minimum ${d}`);
    a.dispose();
    b.dispose();
  }
  assertValues(
    (await run(() => maximum(tensor([-Infinity, 0]), -1))).data,
    [-1, 0],
    "maximum -Inf",
  );
});

Deno.test("comparisons give bool with broadcasting; NaN compares false except notEqual", async () => {
  const a = [1, 2, 3, NaN];
  const b = [2, 2, 2, 2];
  const cases: [string, (x: Tensor, y: Tensor) => Tensor, (x: number, y: number) => boolean][] = [
    ["equal", equal, (x, y) => x === y],
    ["notEqual", notEqual, (x, y) => x !== y],
    ["less", less, (x, y) => x < y],
    ["lessEqual", lessEqual, (x, y) => x <= y],
    ["greater", greater, (x, y) => x > y],
    ["greaterEqual", greaterEqual, (x, y) => x >= y],
  ];
  for (const [name, op, ref] of cases) {
    for (const d of [...FLOATS, "i32"] as DType[]) {
      const vals = d === "i32" ? a.slice(0, 3) : a;
      const out = await run(() => op(tensor(vals, { dtype: d }), tensor([2], { dtype: d })));
      assert.equal(out.dtype, "bool", name);
      assert.deepEqual(out.data, vals.map((x, i) => (ref(x, b[i]) ? 1 : 0)), `${name} ${d}`);
    }
  }
  // Mixed dtypes promote before comparing: bf16 1.00390625 rounds to 1, f32 keeps it.
  const m = await run(() =>
    equal(tensor([1 + 2 ** -8], { dtype: "f32" }), tensor([1], { dtype: "bf16" }))
  );
  assert.deepEqual(m.data, [0]);
  const nb = await run(() => logicalNot(tensor([true, false])));
  assert.deepEqual([nb.dtype, nb.data], ["bool", [0, 1]]);
});

// ---------------------------------------------------------------------------------------------
// Type promotion

Deno.test("promotion: f16+bf16→f32, f16+f32→f32, f32+f64→f64, float+int→float, int ranks", async () => {
  const cases: [DType, DType, DType][] = [
    ["f16", "bf16", "f32"],
    ["f16", "f32", "f32"],
    ["bf16", "f32", "f32"],
    ["f32", "f64", "f64"],
    ["f16", "f64", "f64"],
    ["i32", "f16", "f16"],
    ["bf16", "i32", "bf16"],
    ["u8", "f32", "f32"],
    ["bool", "f16", "f16"],
    ["u8", "i32", "i32"],
    ["bool", "u8", "u8"],
  ];
  for (const [da, db, want] of cases) {
    const av = da === "bool" ? [1, 0] : [3, 1.5];
    const bv = db === "bool" ? [1, 0] : [0.1, 2];
    const a = await stored(av, da);
    const b = await stored(bv, db);
    const out = await run(() => add(tensor(av, { dtype: da }), tensor(bv, { dtype: db })));
    assert.equal(out.dtype, want, `${da}+${db}`);
    // Each operand is converted exactly (they are representable in the wider type), then
    // added once in `want`.
    assertValues(out.data, a.map((x, i) => opResult(want, x + b[i])), `${da}+${db}`);
    const rev = await run(() => add(tensor(bv, { dtype: db }), tensor(av, { dtype: da })));
    assert.equal(rev.dtype, want, `${db}+${da}`);
  }
  // f16 + bf16 really computes in f32: 2049 is representable in neither but is in f32.
  const wide = await run(() =>
    add(tensor([2048], { dtype: "f16" }), tensor([1], { dtype: "bf16" }))
  );
  assert.deepEqual([wide.dtype, wide.data], ["f32", [2049]]);
});

Deno.test("weak JS scalars keep the tensor's dtype (ints with a fraction give f32)", async () => {
  const cases: [DType, number, DType][] = [
    ["f16", 1.5, "f16"],
    ["bf16", 0.1, "bf16"],
    ["f32", 0.1, "f32"],
    ["f64", 0.1, "f64"],
    ["i32", 2, "i32"],
    ["u8", 1, "u8"],
    ["i32", 0.5, "f32"],
    ["f8e4m3", 2, "f8e4m3"],
  ];
  for (const [d, s, want] of cases) {
    const out = await run(() => add(tensor([1, 2], { dtype: d }), s));
    assert.equal(out.dtype, want, `${d} + ${s}`);
    const left = await run(() => sub(s, tensor([1, 2], { dtype: d })));
    assert.equal(left.dtype, want, `${s} - ${d}`);
  }
  // The scalar is rounded to the tensor dtype first (JAX): f16(0.1) + 0 = f16(0.1).
  const r = await run(() => add(tensor([0], { dtype: "f16" }), 0.1));
  assert.deepEqual(r.data, [Math.f16round(0.1)]);
  const f = await run(() => mul(tensor([3], { dtype: "f64" }), 0.1));
  assert.deepEqual(f.data, [3 * 0.1]);
  assert.throws(() => add(1 as unknown as Tensor, 2), /at least one tensor/);
});

// ---------------------------------------------------------------------------------------------
// where

Deno.test("where: both branches, broadcasting, promotion and scalar branches", async () => {
  const c = [true, false];
  const out = await run(() =>
    where(
      tensor(c, { shape: [2, 1] }),
      tensor([1, 2, 3], { shape: [1, 3] }),
      tensor([10, 20, 30, 40, 50, 60], { shape: [2, 3] }),
    )
  );
  assert.deepEqual(out.shape, [2, 3]);
  assert.deepEqual(out.data, [1, 2, 3, 40, 50, 60]);
  const mixed = await run(() =>
    where(tensor([true, false]), tensor([1.5, 2.5], { dtype: "f16" }), tensor([0.1, 0.2]))
  );
  assert.equal(mixed.dtype, "f32");
  assert.deepEqual(mixed.data, [1.5, Math.fround(0.2)]);
  const scalars = await run(() => where(tensor([false, true, true]), 1, 0));
  assert.deepEqual([scalars.dtype, scalars.data], ["f32", [0, 1, 1]]);
  const weak = await run(() => where(tensor([true, false]), tensor([4, 5], { dtype: "bf16" }), -1));
  assert.deepEqual([weak.dtype, weak.data], ["bf16", [4, -1]]);
  const nan = await run(() => where(tensor([false, true]), NaN, tensor([7, 8])));
  assertValues(nan.data, [7, NaN], "where NaN branch");
});

// ---------------------------------------------------------------------------------------------
// astype

/** Source values per dtype: representable, with rounding, overflow and special cases. */
function rawValuesFor(d: DType): number[] {
  if (d === "bool") return [0, 1, 1, 0];
  if (d === "u8") return [0, 1, 2, 7, 100, 200, 255];
  if (d === "i32") return [0, 1, -2, 7, 100, -300, 70000, 2 ** 31 - 1, -(2 ** 31)];
  return [
    0,
    -0,
    1,
    -2,
    2.5,
    -3.75,
    0.1,
    1 / 3,
    100.3,
    255.9,
    300,
    -1e5,
    1e-3,
    70000,
    1e-6,
    1 + 2 ** -11 + 2 ** -40,
    2 ** 31 + 5e3,
    NaN,
    Infinity,
    -Infinity,
  ];
}

Deno.test("astype: every pair of dtypes rounds once from the source value", async () => {
  for (const from of dtypes) {
    const src = await stored(rawValuesFor(from), from);
    for (const to of dtypes) {
      const out = await run(() => astype(tensor(rawValuesFor(from), { dtype: from }), to));
      assert.equal(out.dtype, to, `${from}→${to}`);
      assertValues(out.data, src.map((x) => storeAs(to, x)), `${from}→${to}`);
    }
  }
});

Deno.test("astype: fp8 saturating mode clips to ±max; same dtype returns the tensor itself", async () => {
  const sat = await run(() =>
    astype(tensor([500, -1e6, Infinity, NaN]), "f8e4m3", { saturate: true })
  );
  assertValues(sat.data, [448, -448, 448, NaN], "e4m3 saturate");
  const x = tensor([1, 2]);
  assert.equal(astype(x, "f32"), x);
  x.dispose();
  assert.throws(() => astype(zeros([1]), "half" as DType), /Valid dtypes/);
});

// ---------------------------------------------------------------------------------------------
// Reductions (hand-computed)

const R = [[1, 5, 3], [4, 2, 6]];

Deno.test("sum/mean/max/min over axes with keepdims (hand-computed)", async () => {
  for (const d of FLOATS) {
    const x = () => tensor(R, { dtype: d });
    const check = async (f: () => Tensor, shape: number[], data: number[], what: string) => {
      const out = await run(f);
      assert.deepEqual(out.shape, shape, `${what} ${d} shape`);
      assert.equal(out.dtype, d, `${what} ${d} dtype`);
      assertValues(out.data, data.map((v) => opResult(d, v)), `${what} ${d}`);
    };
    await check(() => sum(x()), [], [21], "sum()");
    await check(() => sum(x(), 0), [3], [5, 7, 9], "sum(0)");
    await check(() => sum(x(), -1, true), [2, 1], [9, 12], "sum(-1, keep)");
    await check(() => sum(x(), [0, 1], true), [1, 1], [21], "sum([0,1], keep)");
    await check(() => mean(x()), [], [3.5], "mean()");
    await check(() => mean(x(), 0), [3], [2.5, 3.5, 4.5], "mean(0)");
    await check(() => mean(x(), 1, true), [2, 1], [3, 4], "mean(1, keep)");
    await check(() => max(x(), 1), [2], [5, 6], "max(1)");
    await check(() => max(x()), [], [6], "max()");
    await check(() => min(x(), 0, true), [1, 3], [1, 2, 3], "min(0, keep)");
    await check(() => min(x(), [1]), [2], [1, 2], "min([1])");
  }
});

Deno.test("argmax/argmin: first occurrence, default last axis, NaN counts as the extreme", async () => {
  const a = await run(() => argmax(tensor(R)));
  assert.deepEqual([a.dtype, a.shape, a.data], ["i32", [2], [1, 2]]);
  assert.deepEqual((await run(() => argmin(tensor(R), 0))).data, [0, 1, 0]);
  assert.deepEqual((await run(() => argmax(tensor(R), 0, true))).shape, [1, 3]);
  assert.deepEqual((await run(() => argmax(tensor([3, 1, 3])))).data, [0]);
  assert.deepEqual((await run(() => argmin(tensor([1, 0, 0])))).data, [1]);
  assert.deepEqual((await run(() => argmax(tensor([1, NaN, 5])))).data, [1]);
  assert.deepEqual((await run(() => argmin(tensor([1, NaN, -5])))).data, [1]);
  assert.deepEqual((await run(() => argmax(tensor([1, 7, 2], { dtype: "bf16" })))).data, [1]);
});

Deno.test("max/min reductions propagate NaN; ±Inf are ordinary values", async () => {
  for (const d of FLOATS) {
    assertValues((await run(() => max(tensor([1, NaN, 3], { dtype: d })))).data, [NaN], `max ${d}`);
    assertValues((await run(() => min(tensor([NaN, 1, 3], { dtype: d })))).data, [NaN], `min ${d}`);
    assertValues((await run(() => max(tensor([-Infinity, -Infinity], { dtype: d })))).data, [
      -Infinity,
    ], "max -Inf");
    assertValues((await run(() => min(tensor([Infinity, 2], { dtype: d })))).data, [2], "min Inf");
  }
  const rows = await run(() => max(tensor([[1, NaN], [2, 3]]), 1));
  assertValues(rows.data, [NaN, 3], "max rows");
});

Deno.test("reductions of narrow floats accumulate in f32 and round once", async () => {
  // Pairwise in f16, 2048 + 1 rounds back to 2048 (ties to even); in f32 the sum is 2050.
  assert.deepEqual((await run(() => sum(tensor([2048, 1, 1], { dtype: "f16" })))).data, [2050]);
  assert.deepEqual((await run(() => sum(tensor([256, 1, 1], { dtype: "bf16" })))).data, [258]);
  // The mean of values whose sum overflows f16 is still finite.
  const big = await run(() => mean(tensor(new Array(100).fill(1000), { dtype: "f16" })));
  assert.deepEqual([big.dtype, big.data], ["f16", [1000]]);
  const bbig = await run(() => mean(tensor([60000, 60000, 36000], { dtype: "f16" }), 0));
  assert.deepEqual(bbig.data, [52000]);
});

Deno.test("integer and bool reductions: sums give i32, mean gives f32, all/any give bool", async () => {
  const s = await run(() => sum(tensor([true, true, false])));
  assert.deepEqual([s.dtype, s.data], ["i32", [2]]);
  const u = await run(() => sum(tensor([200, 100], { dtype: "u8" })));
  assert.deepEqual([u.dtype, u.data], ["i32", [300]]);
  const m = await run(() => mean(tensor([1, 2], { dtype: "i32" })));
  assert.deepEqual([m.dtype, m.data], ["f32", [1.5]]);
  const mx = await run(() => max(tensor([3, -7], { dtype: "i32" })));
  assert.deepEqual([mx.dtype, mx.data], ["i32", [3]]);
  const b = tensor([[true, false], [true, true]]);
  assert.deepEqual((await run(() => all(b, 1))).data, [0, 1]);
  assert.deepEqual((await run(() => any(b, 0))).data, [1, 1]);
  assert.deepEqual((await run(() => all(b))).dtype, "bool");
  b.dispose();
  // Empty sums are 0; an empty max has no answer.
  assert.deepEqual((await run(() => sum(zeros([0, 3]), 0))).data, [0, 0, 0]);
  const empty = await run(() => sum(zeros([3, 0, 2]), [0, 2]));
  assert.deepEqual([empty.shape, empty.data], [[0], []]);
  assert.deepEqual((await run(() => sum(zeros([0, 3, 2]), [0, 2]))).data, [0, 0, 0]);
  assert.throws(() => max(zeros([0, 3]), 0), /max: cannot reduce an empty axis/);
});

Deno.test("logsumexp: stable for large values, axis and keepdims, -Inf rows", async () => {
  const lse = (xs: number[]) => {
    const m = Math.max(...xs);
    return m + Math.log(xs.reduce((s, x) => s + Math.exp(x - m), 0));
  };
  const f = await run(() => logsumexp(tensor(R, { dtype: "f64" }), 1));
  assertClose(f.data, R.map(lse), () => 1e-14, "logsumexp f64");
  const k = await run(() => logsumexp(tensor(R, { dtype: "f64" }), 0, true));
  assert.deepEqual(k.shape, [1, 3]);
  assertClose(k.data, [0, 1, 2].map((j) => lse([R[0][j], R[1][j]])), () => 1e-14, "axis 0");
  const big = await run(() => logsumexp(tensor([1000, 1000])));
  assertClose(big.data, [1000 + Math.LN2], () => 1e-4, "no overflow");
  const ninf = await run(() => logsumexp(tensor([-Infinity, -Infinity])));
  assertValues(ninf.data, [-Infinity], "all -Inf");
  for (const d of ["f32", "f16", "bf16"] as const) {
    const out = await run(() => logsumexp(tensor(R, { dtype: d })));
    assert.equal(out.dtype, d);
    assertClose(out.data, [lse(R.flat())], () => 8 * 2 ** -7 * 7, `logsumexp ${d}`);
  }
});

Deno.test("isFinite and allFinite over several tensors (bool, on the device)", async () => {
  const f = await run(() => isFinite(tensor([1, NaN, Infinity, -Infinity, -0], { dtype: "f16" })));
  assert.deepEqual([f.dtype, f.data], ["bool", [1, 0, 0, 0, 1]]);
  assert.deepEqual((await run(() => isFinite(tensor([1, 2], { dtype: "i32" })))).data, [1, 1]);
  const ok = await run(() => allFinite(tensor([1, 2]), tensor([[3]], { dtype: "bf16" })));
  assert.deepEqual([ok.dtype, ok.shape, ok.data], ["bool", [], [1]]);
  assert.deepEqual((await run(() => allFinite(tensor([1]), tensor([NaN])))).data, [0]);
  assert.deepEqual((await run(() => allFinite(tensor([Infinity]), tensor([1])))).data, [0]);
  assert.deepEqual(
    (await run(() => allFinite(tensor([1]), tensor([1]), tensor([1e5], { dtype: "f16" })))).data,
    [0],
  );
  assert.throws(() => allFinite(), /at least one tensor/);
});

// ---------------------------------------------------------------------------------------------
// matmul

/** NumPy broadcasting, written independently of lib/ops/util.ts. */
function refBroadcast(a: readonly number[], b: readonly number[]): number[] | undefined {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = i - (n - a.length) >= 0 ? a[i - (n - a.length)] : 1;
    const y = i - (n - b.length) >= 0 ? b[i - (n - b.length)] : 1;
    if (x !== y && x !== 1 && y !== 1) return undefined;
    out.push(Math.max(x, y) === 1 ? Math.min(x, y) === 0 ? 0 : 1 : x === 1 ? y : x);
  }
  return out;
}

/** Flat index into `shape` of the broadcast multi-index `idx` (of a result of higher rank). */
function sourceIndex(idx: readonly number[], shape: readonly number[]): number {
  let flat = 0;
  const lead = idx.length - shape.length;
  for (let i = 0; i < shape.length; i++) {
    flat = flat * shape[i] + (shape[i] === 1 ? 0 : idx[lead + i]);
  }
  return flat;
}

function unravel(flat: number, shape: readonly number[]): number[] {
  const idx = new Array(shape.length);
  for (let i = shape.length - 1; i >= 0; i--) {
    idx[i] = flat % shape[i];
    flat = Math.floor(flat / shape[i]);
  }
  return idx;
}

/** Naive matmul with NumPy semantics (1-D promotion, batch broadcasting), in f64. */
function refMatmul(a: number[], as: number[], b: number[], bs: number[]) {
  const a2 = as.length === 1 ? [1, as[0]] : as;
  const b2 = bs.length === 1 ? [bs[0], 1] : bs;
  const [m, k] = a2.slice(-2);
  const n = b2[b2.length - 1];
  const batch = refBroadcast(a2.slice(0, -2), b2.slice(0, -2))!;
  const out: number[] = [];
  const absOut: number[] = [];
  for (let t = 0; t < size(batch); t++) {
    const bi = unravel(t, batch);
    const ao = sourceIndex(bi, a2.slice(0, -2)) * m * k;
    const bo = sourceIndex(bi, b2.slice(0, -2)) * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        let sa = 0;
        for (let p = 0; p < k; p++) {
          s += a[ao + i * k + p] * b[bo + p * n + j];
          sa += Math.abs(a[ao + i * k + p] * b[bo + p * n + j]);
        }
        out.push(s);
        absOut.push(sa);
      }
    }
  }
  let shape = [...batch, m, n];
  if (as.length === 1) shape = [...batch, n];
  if (bs.length === 1) shape = as.length === 1 ? [...batch] : [...batch, m];
  return { data: out, abs: absOut, shape };
}

const MATMUL_CASES: [number[], number[]][] = [
  [[3, 4], [4, 2]],
  [[2, 3, 4], [4, 5]],
  [[4, 5], [2, 5, 3]],
  [[2, 1, 3, 4], [5, 4, 2]],
  [[1, 3, 4], [2, 4, 2]],
  [[4], [4, 3]],
  [[2, 3, 4], [4]],
  [[4], [4]],
  [[4], [2, 4, 3]],
  [[17, 33], [33, 9]],
  [[1, 1], [1, 1]],
  [[3, 0], [0, 2]],
];

Deno.test("matmul: 2-D, batched, broadcast batch dims and 1-D operands against a naive reference", async () => {
  const r = rng(7);
  const eps = { f64: 2 ** -52, f32: 2 ** -24, f16: 2 ** -11, bf16: 2 ** -8 } as const;
  for (const [as, bs] of MATMUL_CASES) {
    const ar = Array.from({ length: size(as) }, () => Math.round((r() * 4 - 2) * 64) / 64);
    const br = Array.from({ length: size(bs) }, () => Math.round((r() * 4 - 2) * 64) / 64);
    for (const d of FLOATS) {
      const av = await stored(ar, d);
      const bv = await stored(br, d);
      const ref = refMatmul(av, as, bv, bs);
      const out = await run(() =>
        matmul(tensor(ar, { dtype: d, shape: as }), tensor(br, { dtype: d, shape: bs }))
      );
      assert.deepEqual(out.shape, ref.shape, `[${as}]@[${bs}] shape`);
      assert.equal(out.dtype, d);
      const k = as[as.length - 1];
      // f32 accumulation of k products, then one rounding to d.
      const tol = (i: number) =>
        (k + 1) * 2 ** -24 * ref.abs[i] + eps[d as keyof typeof eps] * Math.abs(ref.data[i]) * 2;
      assertClose(
        out.data,
        ref.data,
        d === "f64" ? (i) => 1e-15 * ref.abs[i] : tol,
        `[${as}]@[${bs}] ${d}`,
      );
    }
  }
});

Deno.test("matmul: mixed dtypes promote; matmulT multiplies by the transpose", async () => {
  const out = await run(() =>
    matmul(tensor([[1, 2]], { dtype: "f16" }), tensor([[3], [4]], { dtype: "bf16" }))
  );
  assert.deepEqual([out.dtype, out.data], ["f32", [11]]);
  const a = [[1, 2, 3], [4, 5, 6]];
  const b = [[1, 0, 1], [2, 1, 0], [0, 0, 1], [1, 1, 1]];
  const t = await run(() => matmulT(tensor(a, { dtype: "f64" }), tensor(b, { dtype: "f64" })));
  assert.deepEqual(t.shape, [2, 4]);
  assert.deepEqual(t.data, [4, 4, 3, 6, 10, 13, 6, 15]);
  const bt = await run(() => matmulT(ones3x2x3(), tensor(b)));
  assert.deepEqual(bt.shape, [3, 2, 4]);
});

function ones3x2x3(): Tensor {
  return tensor(new Float32Array(18).fill(1), { shape: [3, 2, 3] });
}

Deno.test("matmul property: random shapes and batch broadcasting agree with the reference (f64)", () => {
  const dim = fc.integer({ min: 1, max: 7 });
  fc.assert(
    fc.asyncProperty(
      dim,
      dim,
      dim,
      fc.array(fc.constantFrom(1, 2, 3), { maxLength: 2 }),
      fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
      fc.integer(),
      async (m, k, n, batch, ones, seed) => {
        const r = rng(seed);
        const as = [...batch.map((b, i) => (ones[i] ? 1 : b)), m, k];
        const bs = [...batch.slice(1), k, n];
        const ar = Array.from({ length: size(as) }, () => r() - 0.5);
        const br = Array.from({ length: size(bs) }, () => r() - 0.5);
        const ref = refMatmul(ar, as, br, bs);
        const out = await run(() =>
          matmul(tensor(ar, { dtype: "f64", shape: as }), tensor(br, { dtype: "f64", shape: bs }))
        );
        assert.deepEqual(out.shape, ref.shape);
        assertClose(out.data, ref.data, (i) => 1e-14 * ref.abs[i], "matmul");
      },
    ),
    { numRuns: 60 },
  );
});

// ---------------------------------------------------------------------------------------------
// Movement ops

Deno.test("reshape (with -1) shares the buffer; expandDims and squeeze", async () => {
  const x = arange(6, undefined, 1, { dtype: "f32" });
  const before = memory().bytes;
  const r = reshape(x, [2, -1]);
  assert.deepEqual(r.shape, [2, 3]);
  assert.equal(memory().bytes, before, "reshape copies nothing");
  assert.deepEqual(await r.toArray(), [[0, 1, 2], [3, 4, 5]]);
  assert.deepEqual(expandDims(r, 1).shape, [2, 1, 3]);
  assert.deepEqual(expandDims(r, -1).shape, [2, 3, 1]);
  assert.deepEqual(squeeze(reshape(x, [1, 6, 1])).shape, [6]);
  assert.deepEqual(squeeze(reshape(x, [1, 6, 1]), -1).shape, [1, 6]);
  assert.throws(() => squeeze(r, 0), /squeeze: axis 0 of shape \[2,3\] has size 2/);
  x.dispose();
  r.dispose();
});

Deno.test("transpose: default reverses axes, explicit permutations (3-D)", async () => {
  const x = [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]]; // [2,3,2]
  for (const d of ["f64", "f16", "bf16", "i32"] as DType[]) {
    const t = await run(() => transpose(tensor(x, { dtype: d })));
    assert.deepEqual(t.shape, [2, 3, 2]);
    const want: number[] = [];
    for (let k = 0; k < 2; k++) {
      for (let j = 0; j < 3; j++) for (let i = 0; i < 2; i++) want.push(x[i][j][k]);
    }
    assert.deepEqual(t.data, want, `transpose ${d}`);
    const p = await run(() => transpose(tensor(x, { dtype: d }), [1, 0, 2]));
    assert.deepEqual(p.shape, [3, 2, 2]);
    assert.deepEqual(p.data, [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]);
  }
});

Deno.test("broadcastTo repeats along new and size-1 axes", async () => {
  const b = await run(() => broadcastTo(tensor([[1], [2]]), [3, 2, 2]));
  assert.deepEqual(b.shape, [3, 2, 2]);
  assert.deepEqual(b.data, [1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2]);
});

Deno.test("concat along any axis with promotion; stack along a new axis", async () => {
  const a = [[1, 2], [3, 4]];
  const b = [[5, 6]];
  const c0 = await run(() => concat([tensor(a), tensor(b)], 0));
  assert.deepEqual([c0.shape, c0.data], [[3, 2], [1, 2, 3, 4, 5, 6]]);
  const c1 = await run(() =>
    concat([tensor(a), tensor([[7], [8]], { dtype: "f16" }), tensor(a)], -1)
  );
  assert.deepEqual([c1.shape, c1.dtype], [[2, 5], "f32"]);
  assert.deepEqual(c1.data, [1, 2, 7, 1, 2, 3, 4, 8, 3, 4]);
  const mixed = await run(() =>
    concat([tensor([1], { dtype: "f16" }), tensor([2], { dtype: "bf16" })])
  );
  assert.deepEqual([mixed.dtype, mixed.data], ["f32", [1, 2]]);
  const s0 = await run(() => stack([tensor([1, 2]), tensor([3, 4]), tensor([5, 6])]));
  assert.deepEqual([s0.shape, s0.data], [[3, 2], [1, 2, 3, 4, 5, 6]]);
  const s1 = await run(() => stack([tensor([1, 2]), tensor([3, 4])], 1));
  assert.deepEqual([s1.shape, s1.data], [[2, 2], [1, 3, 2, 4]]);
  const sc = await run(() => stack([tensor(1), tensor(2)]));
  assert.deepEqual([sc.shape, sc.data], [[2], [1, 2]]);
});

Deno.test("slice: begin/size, negative begin, size -1 to the end, full slice is the input", async () => {
  const x = () => tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], { dtype: "bf16" });
  const s = await run(() => slice(x(), [1, 1], [2, 2]));
  assert.deepEqual([s.shape, s.data, s.dtype], [[2, 2], [5, 6, 9, 10], "bf16"]);
  const n = await run(() => slice(x(), [-1, 0], [1, -1]));
  assert.deepEqual([n.shape, n.data], [[1, 4], [8, 9, 10, 11]]);
  const e = await run(() => slice(x(), [0, 3]));
  assert.deepEqual([e.shape, e.data], [[3, 1], [3, 7, 11]]);
  const t = tensor([1, 2, 3]);
  assert.equal(slice(t, [0]), t);
  t.dispose();
});

Deno.test("take: any axis, negative and repeated indices, index tensors of any shape", async () => {
  const x = () => tensor([[1, 2], [3, 4], [5, 6]]);
  const idx = (v: number[], shape?: number[]) => tensor(v, { dtype: "i32", shape });
  const t0 = await run(() => take(x(), idx([2, 0, 2])));
  assert.deepEqual([t0.shape, t0.data], [[3, 2], [5, 6, 1, 2, 5, 6]]);
  const t1 = await run(() => take(x(), idx([1, -2]), 1));
  assert.deepEqual([t1.shape, t1.data], [[3, 2], [2, 1, 4, 3, 6, 5]]);
  const t2 = await run(() => take(x(), idx([0, 1, 2, 0], [2, 2]), 0));
  assert.deepEqual([t2.shape, t2.data], [[2, 2, 2], [1, 2, 3, 4, 5, 6, 1, 2]]);
  const u8 = await run(() =>
    take(tensor([9, 8, 7], { dtype: "f16" }), tensor([2, 1], { dtype: "u8" }))
  );
  assert.deepEqual([u8.dtype, u8.data], ["f16", [7, 8]]);
});

Deno.test("scatterAdd: repeated indices accumulate (in f32 for narrow floats), any axis", async () => {
  const s = await run(() =>
    scatterAdd(zeros([3]), tensor([0, 0, 2], { dtype: "i32" }), tensor([1, 1, 5]))
  );
  assert.deepEqual(s.data, [2, 0, 5]);
  const a1 = await run(() =>
    scatterAdd(
      tensor([[1, 1, 1], [2, 2, 2]], { dtype: "f64" }),
      tensor([2, -1, 0], { dtype: "i32" }),
      tensor([[10, 20, 30], [40, 50, 60]], { dtype: "f64" }),
      1,
    )
  );
  // Row 0: column 2 gets 10 + 20 (index −1 is 2), column 0 gets 30.
  assert.deepEqual(a1.data, [31, 1, 31, 62, 2, 92]);
  // In f16, 2048 + 1 + 1 accumulated pairwise would stay 2048.
  const h = await run(() =>
    scatterAdd(tensor([2048], { dtype: "f16" }), tensor([0, 0], { dtype: "i32" }), tensor([1, 1]))
  );
  assert.deepEqual([h.dtype, h.data], ["f16", [2050]]);
  assert.throws(
    () => scatterAdd(zeros([3]), tensor([5], { dtype: "i32" }), tensor([1])),
    /scatterAdd: index 5 is out of range/,
  );
});

Deno.test("oneHot: labels of any shape, chosen dtype", async () => {
  const o = await run(() => oneHot(tensor([0, 2], { dtype: "i32" }), 3));
  assert.deepEqual([o.dtype, o.shape, o.data], ["f32", [2, 3], [1, 0, 0, 0, 0, 1]]);
  const b = await run(() => oneHot(tensor([[1], [0]], { dtype: "u8" }), 2, "bf16"));
  assert.deepEqual([b.dtype, b.shape, b.data], ["bf16", [2, 1, 2], [0, 1, 1, 0]]);
  assert.throws(() => oneHot(tensor([0.5]), 2), /oneHot: indices must be i32 or u8/);
});

Deno.test("softmax and logSoftmax: against a naive reference, any axis, large and -Inf logits", async () => {
  const x = [[1, 2, 3], [-1, 0, 1000]];
  const sm = (row: number[]) => {
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };
  const s1 = await run(() => softmax(tensor(x, { dtype: "f64" })));
  assertClose(s1.data, x.flatMap(sm), () => 1e-15, "softmax last axis");
  const s0 = await run(() => softmax(tensor(x, { dtype: "f64" }), 0));
  const col = [0, 1, 2].map((j) => sm([x[0][j], x[1][j]]));
  assertClose(s0.data, [0, 1].flatMap((i) => col.map((c) => c[i])), () => 1e-15, "softmax axis 0");
  const l1 = await run(() => logSoftmax(tensor(x, { dtype: "f64" })));
  const lse = (r: number[]) => {
    const m = Math.max(...r);
    return m + Math.log(r.reduce((s, v) => s + Math.exp(v - m), 0));
  };
  assertClose(l1.data, x.flatMap((r) => r.map((v) => v - lse(r))), () => 1e-13, "logSoftmax");
  const masked = await run(() => softmax(tensor([0, -Infinity, 0])));
  assert.deepEqual(masked.data, [0.5, 0, 0.5]);
  for (const d of ["f32", "f16", "bf16"] as const) {
    const out = await run(() => softmax(tensor(x, { dtype: d })));
    assert.equal(out.dtype, d);
    assertClose(out.data, x.flatMap(sm), () => 4 * 2 ** -7, `softmax ${d}`);
  }
});

Deno.test("stopGradient passes values through unchanged", async () => {
  const s = await run(() => stopGradient(tensor([1, 2], { dtype: "f16" })));
  assert.deepEqual([s.dtype, s.data], ["f16", [1, 2]]);
});

// ---------------------------------------------------------------------------------------------
// Memory: ops called outside tidy free their temporaries

Deno.test("ops outside tidy leave only their result alive (scalars, casts, composites)", () => {
  const x = tensor([[1, -2, 3], [4, 5, -6]]);
  const h = tensor([1, 2, 3], { dtype: "f16" });
  const i = tensor([0, 1], { dtype: "i32" });
  const c = tensor([true, false, true]);
  const y = tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], { dtype: "f64" });
  const upd = tensor([1, 1]);
  const calls: (() => Tensor)[] = [
    () => add(x, 1),
    () => mul(2, h),
    () => add(x, h),
    () => div(i, 2),
    () => where(c, 1, 0),
    () => where(c, h, 0),
    () => softmax(x),
    () => logSoftmax(x, 0),
    () => gelu(h),
    () => mean(x, 1),
    () => mean(h),
    () => logsumexp(x),
    () => sum(x, [0, 1]),
    () => max(y, [0, 2]),
    () => sum(y, [0, 2], true),
    () => matmul(x, h),
    () => matmul(h, h),
    () => concat([x, x]),
    () => stack([h, h]),
    () => oneHot(i, 4),
    () => scatterAdd(h, i, upd),
    () => allFinite(x, h),
    () => relu(x),
  ];
  const before = memory();
  for (const call of calls) {
    const out = call();
    out.dispose();
    const now = memory();
    assert.equal(now.tensors, before.tensors, `${call} leaves tensors`);
    assert.equal(now.bytes, before.bytes, `${call} leaves bytes`);
  }
  for (const t of [x, h, i, c, y, upd]) t.dispose();
});

// ---------------------------------------------------------------------------------------------
// Properties

/** A result shape and two operand shapes that broadcast to it (with 1s and missing dims). */
const broadcastable = fc
  .array(fc.integer({ min: 1, max: 4 }), { maxLength: 4 })
  .chain((out) =>
    fc.tuple(
      fc.constant(out),
      fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length }),
      fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length }),
      fc.integer({ min: 0, max: out.length }),
      fc.integer({ min: 0, max: out.length }),
    )
  )
  .map(([out, oa, ob, dropA, dropB]) => {
    const shrink = (ones: boolean[], drop: number) =>
      out.map((d, i) => (ones[i] ? 1 : d)).slice(drop);
    return { a: shrink(oa, dropA), b: shrink(ob, dropB) };
  });

Deno.test("property: add broadcasts like the reference rule, with reference values", () => {
  fc.assert(
    fc.asyncProperty(
      broadcastable,
      fc.constantFrom<DType>("f64", "f32", "i32"),
      async ({ a, b }, d) => {
        const av = Array.from({ length: size(a) }, (_, i) => i * 3 - 7);
        const bv = Array.from({ length: size(b) }, (_, i) => 100 * i + 1);
        const shape = refBroadcast(a, b)!;
        const out = await run(() =>
          add(tensor(av, { dtype: d, shape: a }), tensor(bv, { dtype: d, shape: b }))
        );
        assert.deepEqual(out.shape, shape);
        const want = Array.from({ length: size(shape) }, (_, f) => {
          const idx = unravel(f, shape);
          return av[sourceIndex(idx, a)] + bv[sourceIndex(idx, b)];
        });
        assert.deepEqual(out.data, want);
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("property: incompatible shapes throw an error naming add and both shapes", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }),
      fc.integer({ min: 0, max: 2 }),
      fc.integer({ min: 2, max: 4 }),
      (a, where_, delta) => {
        const pos = where_ % a.length;
        if (a[pos] === 1) return; // 1 broadcasts against anything
        const b = [...a];
        b[pos] = a[pos] + delta;
        assert.equal(refBroadcast(a, b), undefined);
        const x = zeros(a);
        const y = zeros(b);
        try {
          assert.throws(
            () => add(x, y),
            (e: Error) =>
              e.message.includes("add") && e.message.includes(`[${a}]`) &&
              e.message.includes(`[${b}]`),
          );
        } finally {
          x.dispose();
          y.dispose();
        }
      },
    ),
    { numRuns: 80 },
  );
});

type ReduceName = "sum" | "mean" | "max" | "min";
const REDUCERS: Record<ReduceName, (x: Tensor, axis: number[], keep: boolean) => Tensor> = {
  sum: (x, a, k) => sum(x, a, k),
  mean: (x, a, k) => mean(x, a, k),
  max: (x, a, k) => max(x, a, k),
  min: (x, a, k) => min(x, a, k),
};

/** Naive f64 reduction over `axes`; also Σ|x| per output (for error bounds) and counts. */
function refReduce(op: ReduceName, x: number[], shape: number[], axes: number[], keep: boolean) {
  const outShape = shape.flatMap((d, i) => (axes.includes(i) ? (keep ? [1] : []) : [d]));
  const n = size(outShape);
  const acc = new Array(n).fill(op === "max" ? -Infinity : op === "min" ? Infinity : 0);
  const absSum = new Array(n).fill(0);
  const count = size(axes.map((a) => shape[a]));
  x.forEach((v, f) => {
    const idx = unravel(f, shape);
    let o = 0;
    shape.forEach((d, i) => {
      if (!axes.includes(i)) o = o * d + idx[i];
    });
    if (op === "max") acc[o] = Math.max(acc[o], v);
    else if (op === "min") acc[o] = Math.min(acc[o], v);
    else acc[o] += v;
    absSum[o] += Math.abs(v);
  });
  const data = op === "mean" ? acc.map((s) => s / count) : acc;
  return { shape: outShape, data, absSum, count };
}

const reduction = fc
  .array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 4 })
  .chain((shape) =>
    fc.record({
      shape: fc.constant(shape),
      axes: fc.subarray(shape.map((_, i) => i)),
      negate: fc.boolean(),
      keep: fc.boolean(),
      op: fc.constantFrom<ReduceName>("sum", "mean", "max", "min"),
      seed: fc.integer(),
    })
  );

Deno.test("property: sum/mean/max/min over random axis subsets agree with a naive f64 reference", () => {
  fc.assert(
    fc.asyncProperty(reduction, fc.constantFrom<DType>("f64", "f32"), async (c, d) => {
      const r = rng(c.seed);
      const raw = Array.from({ length: size(c.shape) }, () => (r() - 0.5) * 10 ** (r() * 6 - 3));
      const x = await stored(raw, d);
      // Negative axis numbers name the same axes.
      const axes = c.negate ? c.axes.map((a) => a - c.shape.length) : c.axes;
      const ref = refReduce(c.op, x, c.shape, c.axes, c.keep);
      const out = await run(() =>
        REDUCERS[c.op](tensor(x, { dtype: d, shape: c.shape }), axes, c.keep)
      );
      assert.deepEqual(out.shape, ref.shape);
      assert.equal(out.dtype, d);
      if (c.op === "max" || c.op === "min") {
        assert.deepEqual(out.data, ref.data); // exact in any dtype
        return;
      }
      const scale = (i: number) => (c.op === "mean" ? ref.absSum[i] / ref.count : ref.absSum[i]);
      // f64: 1e-12 relative; f32: f32 rounding of the sum of `count` terms.
      const tol = d === "f64"
        ? (i: number) => 1e-12 * scale(i)
        : (i: number) => (ref.count + 1) * 2 ** -24 * scale(i);
      assertClose(out.data, ref.data, tol, `${c.op} over [${c.axes}] of [${c.shape}] in ${d}`);
    }),
    { numRuns: 200 },
  );
});
