/**
 * The composite ops of issue 12 (tril/triu, split/chunk, clip, variance/std, softplus, silu,
 * logicalAnd/Or, cumsum) and the new losses (binaryCrossEntropyWithLogits, nllLoss, label
 * smoothing) and random.categorical: values against PyTorch, gradients against central
 * differences in f64, properties with fast-check, autocast classes as torch's, jit ≡ eager
 * bitwise, and memory.
 *
 * The oracle values come from torch 2.13.0+cpu (the wheel in /opt/wheels, in a venv), by:
 *
 * ```py
 * # python3 ops_oracle.py (torch 2.13.0+cpu)
 * import torch, json
 * F = torch.nn.functional
 * x = [[1.5, -2.0, 3.0, 0.25], [4.0, 4.5, -1.0, 2.0]]
 * pts = [-100.0, -20.0, -5.0, -1e-3, 0.0, 1e-3, 1.0, 5.0, 19.5, 20.0, 20.5, 100.0]
 * logits = [[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 4.0, 2.0, -3.0]]
 * labels = [1, -100, 3]
 * out = {}
 * for dt, name in [(torch.float64, "f64"), (torch.float32, "f32")]:
 *     X = torch.tensor(x, dtype=dt)
 *     P = torch.tensor(pts, dtype=dt)
 *     L = torch.tensor(logits, dtype=dt)
 *     y = torch.tensor(labels)
 *     y0 = torch.tensor([1, 0, 3])
 *     out[name] = {
 *         "var": {str(c): X.var(dim=1, correction=c).tolist() for c in [0, 1, 2]},
 *         "varAll": X.var().item(),
 *         "std": {str(c): X.std(dim=1, correction=c).tolist() for c in [0, 1, 2]},
 *         "softplus": F.softplus(P).tolist(),
 *         "silu": F.silu(P).tolist(),
 *         "cumsum1": X.cumsum(1).tolist(),
 *         "bce": F.binary_cross_entropy_with_logits(
 *             torch.tensor([1.5, -2.0, 30.0, -30.0, 0.0], dtype=dt),
 *             torch.tensor([1.0, 0.0, 0.3, 1.0, 0.5], dtype=dt)).item(),
 *         "nll": F.nll_loss(F.log_softmax(L, 1), y, ignore_index=-100).item(),
 *         "ce": {str(e): F.cross_entropy(L, y0, label_smoothing=e).item() for e in [0.0, 0.1, 0.3]},
 *         "ceIgnore": {str(e): F.cross_entropy(L, y, ignore_index=-100, label_smoothing=e).item()
 *                      for e in [0.0, 0.1, 0.3]},
 *     }
 * print(json.dumps(out))
 * ```
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import * as nb from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import { rng } from "./rng.ts";

const { tensor } = nb;
type Dt = "f32" | "f64";

/** torch's outputs (see the module docs), per dtype. */
const TORCH = {
  "f64": {
    "var": {
      "0": [3.3554687500000004, 4.671875],
      "1": [4.473958333333334, 6.229166666666667],
      "2": [6.710937500000001, 9.34375],
    },
    "varAll": 5.400669642857143,
    "std": {
      "0": [1.8317938612191058, 2.161452058223823],
      "1": [2.1151733577495095, 2.4958298553119898],
      "2": [2.5905477220078383, 3.056754815159371],
    },
    "softplus": [
      3.720075976020836e-44,
      2.061153620314381e-09,
      0.006715348489118068,
      0.6926473055599401,
      0.6931471805599453,
      0.6936473055599401,
      1.3132616875182228,
      5.006715348489118,
      19.500000003398267,
      20.000000002061153,
      20.5,
      100.0,
    ],
    "silu": [
      -3.720075976020836e-42,
      -4.122307236380407e-08,
      -0.03346425462142428,
      -0.0004997500000208334,
      0.0,
      0.0005002499999791667,
      0.7310585786300049,
      4.966535745378576,
      19.499999933733775,
      19.999999958776925,
      20.499999974371867,
      100.0,
    ],
    "cumsum1": [[1.5, -0.5, 2.5, 2.75], [4.0, 8.5, 7.5, 9.5]],
    "bce": 10.40429769391717,
    "nll": 6.167948403605721,
    "ce": { "0.0": 4.574063722777111, "0.1": 4.369897056110444, "0.3": 3.961563722777111 },
    "ceIgnore": { "0.0": 6.167948403605721, "0.1": 5.861698403605722, "0.3": 5.249198403605721 },
  },
  "f32": {
    "var": {
      "0": [3.35546875, 4.671875],
      "1": [4.473958492279053, 6.229166507720947],
      "2": [6.7109375, 9.34375],
    },
    "varAll": 5.400669574737549,
    "std": {
      "0": [1.8317939043045044, 2.161452054977417],
      "1": [2.11517333984375, 2.4958298206329346],
      "2": [2.590547800064087, 3.0567548274993896],
    },
    "softplus": [
      3.783505853677006e-44,
      2.06115369216775e-09,
      0.006715348456054926,
      0.6926472783088684,
      0.6931471824645996,
      0.6936473250389099,
      1.31326162815094,
      5.006715297698975,
      19.5,
      20.0,
      20.5,
      100.0,
    ],
    "silu": [
      -0.0,
      -4.1223074731533416e-08,
      -0.033464252948760986,
      -0.0004997500218451023,
      0.0,
      0.000500250025652349,
      0.7310585975646973,
      4.966535568237305,
      19.5,
      20.0,
      20.5,
      100.0,
    ],
    "cumsum1": [[1.5, -0.5, 2.5, 2.75], [4.0, 8.5, 7.5, 9.5]],
    "bce": 10.404297828674316,
    "nll": 6.167948246002197,
    "ce": { "0.0": 4.574063777923584, "0.1": 4.36989688873291, "0.3": 3.9615638256073 },
    "ceIgnore": { "0.0": 6.167948246002197, "0.1": 5.861698150634766, "0.3": 5.249197959899902 },
  },
};

const X = [[1.5, -2.0, 3.0, 0.25], [4.0, 4.5, -1.0, 2.0]];
const PTS = [-100, -20, -5, -1e-3, 0, 1e-3, 1, 5, 19.5, 20, 20.5, 100];
const LOGITS = [[1, -2, 0.5, 3], [0, 0, 0, 0], [-1, 4, 2, -3]];

/** |a − b| in units of b's ulp in `dt` (0 when bitwise equal, NaN-safe). */
function ulps(a: number, b: number, dt: Dt): number {
  if (Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b))) return 0;
  const eps = dt === "f64" ? 2 ** -52 : 2 ** -23;
  const tiny = dt === "f64" ? 2 ** -1074 : 2 ** -149;
  return Math.abs(a - b) / Math.max(Math.abs(b) * eps, tiny);
}

async function near(
  t: Tensor,
  want: number | number[] | number[][],
  dt: Dt,
  max: number,
  what: string,
) {
  const got = Array.from(await t.data());
  const flat = [want].flat(2) as number[];
  assert.equal(got.length, flat.length, `${what}: size`);
  // Below the normal range torch's silu underflows to −0 (see silu's docs): compare absolutely.
  const tiny = dt === "f64" ? 2 ** -1022 : 2 ** -126;
  got.forEach((v, i) =>
    assert.ok(
      ulps(v, flat[i], dt) <= max || Math.abs(v - flat[i]) < tiny,
      `${what}[${i}] (${dt}): ${v} vs torch ${flat[i]}`,
    )
  );
}

for (const dt of ["f32", "f64"] as const) {
  Deno.test(`composite ops match torch (${dt})`, async () => {
    const before = nb.memory().tensors;
    const o = TORCH[dt];
    const x = tensor(X, { dtype: dt });
    const p = tensor(PTS, { dtype: dt });
    const l = tensor(LOGITS, { dtype: dt });
    const y = tensor([1, -100, 3], { dtype: "i32" });
    const y0 = tensor([1, 0, 3], { dtype: "i32" });
    const made: Tensor[] = [x, p, l, y, y0];
    const keep = (t: Tensor) => (made.push(t), t);
    for (const c of [0, 1, 2] as const) {
      await near(keep(nb.variance(x, { axis: 1, correction: c })), o.var[c], dt, 2, `var c=${c}`);
      await near(keep(nb.std(x, { axis: 1, correction: c })), o.std[c], dt, 2, `std c=${c}`);
    }
    await near(keep(nb.variance(x)), o.varAll, dt, 2, "var all");
    await near(keep(nb.softplus(p)), o.softplus, dt, 4, "softplus");
    await near(keep(nb.silu(p)), o.silu, dt, 4, "silu");
    await near(keep(nb.cumsum(x, 1)), o.cumsum1, dt, 0, "cumsum");
    const bx = keep(tensor([1.5, -2, 30, -30, 0], { dtype: dt }));
    const bt = keep(tensor([1, 0, 0.3, 1, 0.5], { dtype: dt }));
    await near(keep(nb.nn.binaryCrossEntropyWithLogits(bx, bt)), o.bce, dt, 4, "bce");
    const lp = keep(nb.logSoftmax(l));
    await near(keep(nb.nn.nllLoss(lp, y, { ignoreIndex: -100 })), o.nll, dt, 4, "nll");
    for (const e of ["0.0", "0.1", "0.3"] as const) {
      const eps = Number(e);
      await near(
        keep(nb.nn.crossEntropy(l, y0, { labelSmoothing: eps })),
        o.ce[e],
        dt,
        4,
        `ce ${e}`,
      );
      await near(
        keep(nb.nn.crossEntropy(l, y, { ignoreIndex: -100, labelSmoothing: eps })),
        o.ceIgnore[e],
        dt,
        4,
        `ce ignore ${e}`,
      );
    }
    nb.dispose(made);
    assert.equal(nb.memory().tensors, before);
  });
}

// ---------------------------------------------------------------------------------------------
// Gradients: central differences in f64 of sum(f(x) · W), W fixed random weights.

async function checkGrad(name: string, f: (x: Tensor) => Tensor, xs: number[], shape: number[]) {
  const before = nb.memory().tensors;
  const make = (v: number[]) => tensor(v, { dtype: "f64", shape });
  const outShape = nb.tidy(() => f(make(xs)).shape);
  const w = nb.random.uniform(nb.random.key(name.length), outShape, {
    dtype: "f64",
    lo: -1,
    hi: 1,
  });
  const loss = (x: Tensor) => nb.sum(nb.mul(f(x), w));
  const at = async (v: number[]) => {
    const l = nb.tidy(() => loss(make(v)));
    const out = await l.item();
    l.dispose();
    return out;
  };
  const x = make(xs);
  const g = nb.grad(loss)(x);
  const analytic = Array.from(await g.data());
  nb.dispose([x, g]);
  const h = 1e-6;
  const numeric: number[] = [];
  for (let i = 0; i < xs.length; i++) {
    const plus = xs.slice(), minus = xs.slice();
    plus[i] += h;
    minus[i] -= h;
    numeric.push(((await at(plus)) - (await at(minus))) / (2 * h));
  }
  const scale = Math.max(1e-3, ...numeric.map(Math.abs));
  const err = Math.max(...analytic.map((a, i) => Math.abs(a - numeric[i])));
  assert.ok(
    err / scale < 1e-6,
    `${name}: gradient off by ${err / scale}\n  ${analytic}\n  ${numeric}`,
  );
  w.dispose();
  assert.equal(nb.memory().tensors, before, `${name}: memory`);
}

const R = rng(12);
const vals = (n: number, lo = -2, hi = 2) => Array.from({ length: n }, () => lo + (hi - lo) * R());
const labels = tensor([2, 0, -100], { dtype: "i32" });
const targets = tensor([[1, 0, 0.25], [0.5, 1, 0]], { dtype: "f64" });

const GRADS: [string, (x: Tensor) => Tensor, number[], number[]][] = [
  ["tril k=0", (x) => nb.tril(x), vals(12), [3, 4]],
  ["tril k=-1 batched", (x) => nb.tril(x, -1), vals(18), [2, 3, 3]],
  ["triu k=1", (x) => nb.triu(x, 1), vals(12), [3, 4]],
  [
    "split (weighted pieces)",
    (x) => {
      const [a, b, c] = nb.split(x, [1, 2, 2], 1);
      return nb.concat([nb.mul(a, 3), nb.square(b), c], 1);
    },
    vals(10),
    [2, 5],
  ],
  ["chunk", (x) => nb.mul(nb.chunk(x, 3, 0)[1], nb.chunk(x, 3, 0)[0]), vals(12), [6, 2]],
  // Points away from the bounds (the kink).
  ["clip", (x) => nb.clip(x, -0.5, 0.75), [-1.2, -0.3, 0.1, 0.6, 1.4, -0.9], [6]],
  ["variance axis 1", (x) => nb.variance(x, { axis: 1 }), vals(12), [3, 4]],
  ["variance all, correction 0", (x) => nb.variance(x, { correction: 0 }), vals(6), [6]],
  ["std axis 0 keepdims", (x) => nb.std(x, { axis: 0, keepdims: true }), vals(12), [3, 4]],
  ["softplus", nb.softplus, [-30, -5, -0.5, 0, 0.3, 4, 19.5, 25], [8]],
  ["silu", nb.silu, vals(8, -6, 6), [8]],
  ["cumsum last axis", (x) => nb.cumsum(x), vals(14), [2, 7]],
  ["cumsum axis 0", (x) => nb.cumsum(x, 0), vals(15), [5, 3]],
  [
    "binaryCrossEntropyWithLogits",
    (x) => nb.nn.binaryCrossEntropyWithLogits(x, targets),
    vals(6, -4, 4),
    [2, 3],
  ],
  ["nllLoss with ignoreIndex", (x) => nb.nn.nllLoss(x, labels, { ignoreIndex: -100 }), vals(12), [
    3,
    4,
  ]],
  [
    "crossEntropy label smoothing + ignore",
    (x) => nb.nn.crossEntropy(x, labels, { ignoreIndex: -100, labelSmoothing: 0.2 }),
    vals(12),
    [3, 4],
  ],
];

for (const [name, f, xs, shape] of GRADS) {
  Deno.test(`grad of ${name} matches central differences (f64)`, () =>
    checkGrad(name, f, xs, shape));
}

Deno.test("softplus's gradient is sigmoid(x) even where the parts' would be lost (|x| large)", async () => {
  const x = tensor([-100, -40, 40, 100]);
  const g = nb.grad((x: Tensor) => nb.sum(nb.softplus(x)))(x);
  const s = nb.sigmoid(x);
  assert.deepEqual(await g.bits(), await s.bits());
  nb.dispose([x, g, s]);
});

// ---------------------------------------------------------------------------------------------
// Properties

/** f32 values with the special ones mixed in. */
const f32Value = fc.oneof(
  fc.float({ noDefaultInfinity: false, noNaN: false }),
  fc.constantFrom(0, -0, NaN, Infinity, -Infinity, 2 ** -149, -(2 ** -140), 1.5, -2.5),
);
const sameF32 = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));

/** The documented cumsum order (Hillis–Steele), in f32. */
function scanReference(x: number[]): number[] {
  let y = x.map(Math.fround);
  for (let s = 1; s < y.length; s *= 2) {
    const prev = y;
    y = prev.map((v, i) => (i >= s ? Math.fround(v + prev[i - s]) : v));
  }
  return y;
}

/** Run `body` (which creates tensors), read the named results, free everything. */
async function readAll(body: () => Tensor[]): Promise<number[][]> {
  const ts = body();
  const out = await Promise.all(ts.map(async (t) => Array.from(await t.data())));
  nb.dispose(nb.tree.leaves(ts));
  return out;
}

Deno.test("cumsum ≡ the documented scan order, bitwise in f32, special values included (property)", async () => {
  const before = nb.memory().tensors;
  await fc.assert(
    fc.asyncProperty(fc.array(f32Value, { minLength: 1, maxLength: 40 }), async (xs) => {
      const [got] = await readAll(() => nb.tidy(() => [nb.cumsum(tensor(xs))]));
      const want = scanReference(xs);
      return got.every((v, i) => sameF32(v, want[i]));
    }),
    { numRuns: 150 },
  );
  assert.equal(nb.memory().tensors, before);
});

/** torch's piece sizes of splitting n into pieces of size k. */
const sizesOf = (n: number, k: number) =>
  Array.from({ length: Math.max(1, Math.ceil(n / k)) }, (_, i) => Math.min(k, n - i * k));

Deno.test("split/chunk: torch's piece sizes, and the pieces concat back to x bitwise (property)", async () => {
  const before = nb.memory().tensors;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 3 }),
      fc.integer({ min: 0, max: 2 }),
      fc.integer({ min: 1, max: 7 }),
      async (shape, axisPick, k) => {
        const axis = axisPick % shape.length;
        const n = shape[axis];
        const sizes: number[][] = [];
        const [x, bySize, byChunk] = await readAll(() =>
          nb.tidy(() => {
            const x = nb.reshape(nb.arange(shape.reduce((a, b) => a * b, 1)), shape);
            const a = nb.split(x, k, axis);
            const c = nb.chunk(x, k, axis);
            sizes.push(a.map((p) => p.shape[axis]), c.map((p) => p.shape[axis]));
            return [x, nb.concat(a, axis), nb.concat(c, axis)];
          })
        );
        return JSON.stringify(sizes[0]) === JSON.stringify(sizesOf(n, k)) &&
          JSON.stringify(sizes[1]) === JSON.stringify(sizesOf(n, Math.ceil(n / k))) &&
          bySize.every((v, i) => v === x[i]) && byChunk.every((v, i) => v === x[i]);
      },
    ),
    { numRuns: 100 },
  );
  assert.equal(nb.memory().tensors, before);
});

Deno.test("clip ≡ min(max(x, lo), hi) as C++'s ternaries (torch's), special values (property)", async () => {
  const before = nb.memory().tensors;
  await fc.assert(
    fc.asyncProperty(
      fc.array(f32Value, { minLength: 1, maxLength: 20 }),
      fc.float({ noNaN: true, min: -10, max: 10 }),
      fc.float({ noNaN: true, min: -10, max: 10 }),
      async (xs, a, b) => {
        const [got] = await readAll(() => nb.tidy(() => [nb.clip(tensor(xs), a, b)]));
        return got.every((v, i) => {
          const x = Math.fround(xs[i]);
          const y0 = x < a ? a : x;
          return sameF32(v, Math.fround(y0 > b ? b : y0));
        });
      },
    ),
    { numRuns: 150 },
  );
  assert.equal(nb.memory().tensors, before);
});

Deno.test("logicalAnd/Or: nonzero (and NaN) is true, any dtype, broadcast (property)", async () => {
  const before = nb.memory().tensors;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.constantFrom(0, -0, 1, -3, NaN, Infinity, 0.5), { minLength: 4, maxLength: 4 }),
      fc.array(fc.constantFrom(0, 2, NaN), { minLength: 2, maxLength: 2 }),
      async (as, bs) => {
        const dtypes: string[] = [];
        const [and, or] = await readAll(() =>
          nb.tidy(() => {
            const a = nb.reshape(tensor(as), [2, 2]);
            const b = tensor(bs); // broadcast along rows
            const r = [nb.logicalAnd(a, b), nb.logicalOr(a, nb.greater(b, 1))];
            dtypes.push(...r.map((t) => t.dtype));
            return r;
          })
        );
        const t = (v: number) => v !== 0; // NaN !== 0
        return dtypes.every((d) => d === "bool") &&
          and.every((v, i) => v === Number(t(as[i]) && t(bs[i % 2]))) &&
          or.every((v, i) => v === Number(t(as[i]) || bs[i % 2] > 1));
      },
    ),
    { numRuns: 60 },
  );
  assert.equal(nb.memory().tensors, before);
});

Deno.test("tril/triu ≡ the index rule j − i ≤ k / ≥ k for every k, bool and int too", async () => {
  const before = nb.memory().tensors;
  for (const dtype of ["f32", "i32", "bool"] as const) {
    for (let k = -4; k <= 5; k++) {
      const dts: string[] = [];
      const [xs, lo, up] = await readAll(() =>
        nb.tidy(() => {
          const x = nb.astype(nb.reshape(nb.add(nb.arange(24), 1), [2, 3, 4]), dtype);
          const r = [x, nb.tril(x, k), nb.triu(x, k)];
          dts.push(...r.map((t) => t.dtype));
          return r;
        })
      );
      assert.deepEqual(dts, [dtype, dtype, dtype]);
      for (let e = 0; e < 24; e++) {
        const i = Math.floor(e / 4) % 3, j = e % 4;
        assert.equal(lo[e], j - i <= k ? xs[e] : 0, `tril ${dtype} k=${k} [${e}]`);
        assert.equal(up[e], j - i >= k ? xs[e] : 0, `triu ${dtype} k=${k} [${e}]`);
      }
    }
  }
  assert.equal(nb.memory().tensors, before);
});

// ---------------------------------------------------------------------------------------------
// Autocast classes (torch's lists: softplus, cumsum and losses in f32; silu, clip, var promote)

Deno.test("autocast classes as torch: softplus, cumsum, losses f32; the others promote", () => {
  const before = nb.memory().tensors;
  nb.tidy(() => {
    const seen = new Map<string, nb.OpClass>();
    const x = nb.astype(tensor([[0.5, -1, 2], [1, 0, -2]]), "bf16");
    const y = tensor([0, 2], { dtype: "i32" });
    nb.intercept((call, inputs, next) => {
      seen.set(call.op.name, nb.classifyOp({ name: call.op.name, tags: call.op.tags }));
      return next(inputs);
    }, () => {
      nb.softplus(x), nb.silu(x), nb.cumsum(x), nb.clip(x, 0, 1), nb.variance(x), nb.std(x);
      nb.tril(x), nb.logicalAnd(x, x), nb.nn.binaryCrossEntropyWithLogits(x, x);
      nb.nn.nllLoss(x, y), nb.nn.crossEntropy(x, y, { labelSmoothing: 0.1 });
    });
    assert.deepEqual(Object.fromEntries(seen), {
      softplus: "f32",
      silu: "promote",
      cumsum: "f32",
      clip: "promote",
      variance: "promote",
      std: "promote",
      tril: "promote",
      logicalAnd: "promote",
      binaryCrossEntropyWithLogits: "f32",
      nllLoss: "f32",
      crossEntropy: "f32",
    });
    // Under an autocast region the f32 class really runs in f32, promote keeps bf16.
    nb.withAutocast("bf16", () => {
      assert.equal(nb.softplus(x).dtype, "f32");
      assert.equal(nb.cumsum(x).dtype, "f32");
      assert.equal(nb.silu(x).dtype, "bf16");
      assert.equal(nb.variance(x).dtype, "bf16");
    });
  });
  assert.equal(nb.memory().tensors, before);
});

// ---------------------------------------------------------------------------------------------
// jit, random.categorical, errors

Deno.test("jit ≡ eager bitwise: a function using every new op, value and gradient", async () => {
  const before = nb.memory().tensors;
  const f = (p: { w: Tensor }, b: { x: Tensor; t: Tensor; y: Tensor }) =>
    nb.valueAndGrad((q: { w: Tensor }) => {
      const h = nb.silu(nb.matmul(b.x, q.w)); // [4, 6]
      const [a, c] = nb.chunk(h, 2, -1);
      const m = nb.tril(nb.cumsum(nb.clip(a, -1, 1), 0), -1);
      const extra = nb.add(nb.mean(nb.softplus(c)), nb.std(m, { axis: 0 }));
      const mask = nb.logicalOr(nb.greater(a, 0), nb.less(c, 0));
      const l1 = nb.nn.binaryCrossEntropyWithLogits(a, b.t);
      const l2 = nb.nn.crossEntropy(nb.where(mask, c, 0), b.y, { labelSmoothing: 0.1 });
      return nb.add(nb.add(l1, l2), nb.sum(extra));
    })(p);
  const [kx, kw, kt] = nb.random.split(nb.random.key(4), 3);
  const p = { w: nb.random.normal(kw, [5, 6]) };
  const b = {
    x: nb.random.normal(kx, [4, 5]),
    t: nb.random.uniform(kt, [4, 3]),
    y: tensor([0, 2, 1, -1].map((v) => (v < 0 ? 0 : v)), { dtype: "i32" }),
  };
  const jf = nb.jit(f);
  const eager = f(p, b);
  const jitted = jf(p, b);
  assertSameBits(await bitsOf(eager), await bitsOf(jitted), "jit");
  jf.clear();
  nb.dispose([p, b, eager, jitted] as never);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("random.categorical: frequencies follow softmax, reproducible, -Inf never drawn, jit ≡ eager", async () => {
  const before = nb.memory().tensors;
  const logits = tensor([[0, Math.log(2), Math.log(5), -Infinity], [3, 3, 3, 3]]);
  const n = 4000;
  const s = nb.random.categorical(nb.random.key(8), logits, { shape: [n, 2] });
  assert.equal(s.dtype, "i32");
  assert.deepEqual(s.shape, [n, 2]);
  const d = await s.data();
  const counts = [[0, 0, 0, 0], [0, 0, 0, 0]];
  d.forEach((c, i) => counts[i % 2][c]++);
  const expect = [[1 / 8, 2 / 8, 5 / 8, 0], [0.25, 0.25, 0.25, 0.25]];
  counts.forEach((row, r) =>
    row.forEach((c, k) => {
      const p = expect[r][k];
      const sd = Math.sqrt(n * p * (1 - p));
      assert.ok(Math.abs(c - n * p) <= 5 * sd + 1e-9, `row ${r} class ${k}: ${c} vs ${n * p}`);
    })
  );
  // The same key gives the same draws; another key other ones.
  const again = nb.random.categorical(nb.random.key(8), logits, { shape: [n, 2] });
  const other = nb.random.categorical(nb.random.key(9), logits, { shape: [n, 2] });
  assert.deepEqual(await again.bits(), await s.bits());
  assert.notDeepEqual(await other.bits(), await s.bits());
  // Axis 0, and under jit (the key is an input).
  const t = nb.transpose(logits);
  const ax0 = nb.random.categorical(nb.random.key(8), t, { axis: 0, shape: [n, 2] });
  assert.deepEqual(await ax0.bits(), await s.bits());
  const jc = nb.jit((k: nb.random.Key, l: Tensor) =>
    nb.random.categorical(k, l, { shape: [n, 2] })
  );
  const js = jc(nb.random.key(8), logits);
  const js2 = jc(nb.random.key(9), logits);
  assert.deepEqual(await js.bits(), await s.bits());
  assert.deepEqual(await js2.bits(), await other.bits());
  assert.equal(jc.traces, 1);
  jc.clear();
  nb.dispose([logits, s, again, other, t, ax0, js, js2]);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("errors name the op, the argument and the fix", () => {
  const before = nb.memory().tensors;
  const x = tensor([[1, 2], [3, 4]]);
  const v = tensor([1, 2, 3]);
  const y = tensor([0, 1], { dtype: "i32" });
  const cases: [() => unknown, RegExp][] = [
    [() => nb.tril(v), /tril: needs a tensor with at least 2 dimensions .* got shape \[3\]/],
    [() => nb.triu(x, 0.5), /triu: k must be an integer/],
    [() => nb.split(v, [1, 1]), /split: sizes \[1,1\] add up to 2 but axis 0 of \[3\] has 3/],
    [() => nb.split(v, 0), /split: the piece size must be an integer ≥ 1/],
    [() => nb.chunk(v, 0), /chunk: chunks must be an integer ≥ 1/],
    [() => nb.clip(v), /clip: give at least one bound/],
    [() => nb.clip(v, NaN), /clip: lo is NaN/],
    [() => nb.variance(v, { correction: -1 }), /variance: correction must be a number ≥ 0/],
    [() => nb.std(v, { axis: 3 }), /std: axis 3 is out of range/],
    [() => nb.cumsum(v, 2), /cumsum: axis 2 is out of range/],
    [() => nb.logicalAnd(v, undefined as never), /logicalAnd: argument 2 must be a Tensor/],
    [() => nb.softplus(v, { threshold: NaN }), /softplus: threshold is NaN/],
    [
      () => nb.nn.binaryCrossEntropyWithLogits(x, v),
      /binaryCrossEntropyWithLogits: logits of shape \[2,2\] and targets of shape \[3\] differ/,
    ],
    [() => nb.nn.nllLoss(x, tensor([0, 1])), /nllLoss: labels must be integer class ids/],
    [() => nb.nn.nllLoss(x, y, { ignoreIndex: 0.5 }), /nllLoss: ignoreIndex must be an integer/],
    [
      () => nb.nn.crossEntropy(x, y, { labelSmoothing: 2 }),
      /crossEntropy: labelSmoothing must be in \[0, 1\]/,
    ],
    [
      () => nb.random.categorical(nb.random.key(0), tensor(1)),
      /random.categorical: logits need a class axis/,
    ],
    [
      () => nb.random.categorical(nb.random.key(0), x, { shape: [3] }),
      /random.categorical: the logits' batch shape \[2\] does not broadcast to shape \[3\]/,
    ],
    [() => nb.random.categorical(nb.random.key(0), y), /random.categorical: logits must be floats/],
  ];
  for (const [f, re] of cases) assert.throws(() => nb.tidy(f as () => Tensor), re);
  nb.dispose([x, v, y]);
  assert.equal(nb.memory().tensors, before);
});
