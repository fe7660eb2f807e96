/**
 * Convolution, pooling and pad: forward values and pooling gradients against PyTorch 1.13
 * (fixed vectors in conv_torch_fixtures.ts), conv2d against a direct nested-loop reference over
 * random geometries (fast-check), gradients against f64 central differences, jit ≡ eager
 * bitwise, flat memory, autocast's class, the nn layer's init, and clear errors.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import * as nb from "../mod.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import { fixtures } from "./conv_torch_fixtures.ts";

const { conv1d, conv2d, maxPool2d, avgPool2d, pad, tensor } = nb;

/** The generator's inputs: `((i·a) mod m − ⌊m/2⌋) / s`, exact in every float dtype used. */
function xs(shape: readonly number[], a = 7, m = 11, s = 4, dtype: nb.DType = "f64"): nb.Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const v = Array.from({ length: n }, (_, i) => (((i * a) % m) - Math.floor(m / 2)) / s);
  return tensor(v, { shape, dtype });
}

function close(got: ArrayLike<number>, want: readonly number[], tol: number, what: string) {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= tol * (1 + Math.abs(want[i])))) {
      throw new Error(`${what}: element ${i}: got ${got[i]}, torch ${want[i]} (tol ${tol})`);
    }
  }
}

// deno-lint-ignore no-explicit-any
type Opts = any;

function runConv(c: (typeof fixtures.conv)[number], dtype: nb.DType): nb.Tensor {
  const x = xs(c.x, 7, 11, 4, dtype);
  const w = xs(c.w, 5, 7, 8, dtype);
  const bias = c.bias ? xs([c.w[0]], 3, 5, 2, dtype) : undefined;
  const o: Opts = c.opts;
  return c.x.length === 3 ? conv1d(x, w, { ...o, bias }) : conv2d(x, w, { ...o, bias });
}

Deno.test("conv2d/conv1d: forward equals PyTorch 1.13 (f64 and f32)", async () => {
  for (const c of fixtures.conv) {
    for (const [dtype, tol] of [["f64", 1e-12], ["f32", 1e-5]] as const) {
      const y = runConv(c, dtype);
      assert.deepEqual(y.shape, c.shape, `${c.name}: shape`);
      close(await y.data(), c.y, tol, `${c.name} ${dtype}`);
      y.dispose();
    }
  }
});

Deno.test("maxPool2d/avgPool2d: forward and input gradient equal PyTorch 1.13", async () => {
  for (const p of fixtures.pool) {
    const x = xs(p.x);
    const fn = p.kind === "max" ? maxPool2d : avgPool2d;
    const o: Opts = p.opts;
    const y = fn(x, p.kernel, o);
    assert.deepEqual(y.shape, p.shape, `${p.name}: shape`);
    close(await y.data(), p.y, 1e-12, `${p.name} forward`);
    const gy = xs(p.shape, 3, 5, 2);
    const gx = nb.grad((t: nb.Tensor) => nb.sum(nb.mul(fn(t, p.kernel, o), gy)))(x);
    close(await gx.data(), p.gx, 1e-12, `${p.name} gradient`);
    nb.dispose([x, y, gy, gx]);
  }
});

/** Direct nested-loop conv2d in f64 (the independent reference). */
function naiveConv(
  x: Float64Array,
  xs4: number[],
  w: Float64Array,
  ws4: number[],
  s: [number, number],
  p: [number, number],
  d: [number, number],
  groups: number,
): { y: number[]; shape: number[] } {
  const [n, c, h, wd] = xs4;
  const [o, cg, kh, kw] = ws4;
  const oh = Math.floor((h + 2 * p[0] - d[0] * (kh - 1) - 1) / s[0]) + 1;
  const ow = Math.floor((wd + 2 * p[1] - d[1] * (kw - 1) - 1) / s[1]) + 1;
  const og = o / groups;
  const y: number[] = [];
  for (let b = 0; b < n; b++) {
    for (let oc = 0; oc < o; oc++) {
      const g = Math.floor(oc / og);
      for (let yy = 0; yy < oh; yy++) {
        for (let xx = 0; xx < ow; xx++) {
          let acc = 0;
          for (let ci = 0; ci < cg; ci++) {
            for (let i = 0; i < kh; i++) {
              for (let j = 0; j < kw; j++) {
                const r = yy * s[0] - p[0] + i * d[0];
                const q = xx * s[1] - p[1] + j * d[1];
                if (r < 0 || r >= h || q < 0 || q >= wd) continue;
                acc += x[((b * c + g * cg + ci) * h + r) * wd + q] *
                  w[((oc * cg + ci) * kh + i) * kw + j];
              }
            }
          }
          y.push(acc);
        }
      }
    }
  }
  return { y, shape: [n, o, oh, ow] };
}

Deno.test("conv2d: random geometries equal a direct nested-loop reference (f64)", async () => {
  const geom = fc.record({
    n: fc.integer({ min: 1, max: 2 }),
    groups: fc.integer({ min: 1, max: 3 }),
    cg: fc.integer({ min: 1, max: 2 }),
    og: fc.integer({ min: 1, max: 2 }),
    kh: fc.integer({ min: 1, max: 3 }),
    kw: fc.integer({ min: 1, max: 3 }),
    s: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
    p: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })),
    d: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })),
    h: fc.integer({ min: 1, max: 7 }),
    w: fc.integer({ min: 1, max: 7 }),
    seed: fc.integer({ min: 0, max: 1000 }),
  }).filter((g) =>
    g.h + 2 * g.p[0] >= g.d[0] * (g.kh - 1) + 1 && g.w + 2 * g.p[1] >= g.d[1] * (g.kw - 1) + 1
  );
  await fc.assert(
    fc.asyncProperty(geom, async (g) => {
      const xshape = [g.n, g.groups * g.cg, g.h, g.w];
      const wshape = [g.groups * g.og, g.cg, g.kh, g.kw];
      const k = nb.random.split(nb.random.key(g.seed), 2);
      const x = nb.random.normal(k[0], xshape, { dtype: "f64" });
      const w = nb.random.normal(k[1], wshape, { dtype: "f64" });
      const y = conv2d(x, w, { stride: g.s, padding: g.p, dilation: g.d, groups: g.groups });
      const ref = naiveConv(
        (await x.data()) as Float64Array,
        xshape,
        (await w.data()) as Float64Array,
        wshape,
        g.s,
        g.p,
        g.d,
        g.groups,
      );
      assert.deepEqual(y.shape, ref.shape);
      close(await y.data(), ref.y, 1e-12, "conv2d vs loops");
      nb.dispose([x, w, y]);
    }),
    { numRuns: 60 },
  );
});

/** Gradient of `f` at `x` (f64) by central differences, one element at a time. */
async function centralDiff(f: (x: nb.Tensor) => nb.Tensor, x: nb.Tensor): Promise<number[]> {
  const v = Array.from(await x.data());
  const h = 1e-6;
  const out: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const at = async (d: number) => {
      const u = v.slice();
      u[i] += d;
      const t = tensor(u, { shape: x.shape, dtype: "f64" });
      const r = f(t);
      const val = await r.item();
      nb.dispose([t, r]);
      return val;
    };
    out.push((await at(h) - await at(-h)) / (2 * h));
  }
  return out;
}

Deno.test("conv2d/pools/pad: gradients equal f64 central differences", async () => {
  const x = nb.random.normal(nb.random.key(1), [2, 4, 5, 6], { dtype: "f64" });
  const w = nb.random.normal(nb.random.key(2), [6, 2, 3, 2], { dtype: "f64" });
  const b = nb.random.normal(nb.random.key(3), [6], { dtype: "f64" });
  const opts = { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 2 } as const;
  const r = nb.random.normal(nb.random.key(4), conv2d(x, w, opts).shape, { dtype: "f64" });
  const loss = (xx: nb.Tensor, ww: nb.Tensor, bb: nb.Tensor) =>
    nb.sum(nb.mul(nb.tanh(conv2d(xx, ww, { ...opts, bias: bb })), r));
  const g = nb.grad((p: { x: nb.Tensor; w: nb.Tensor; b: nb.Tensor }) => loss(p.x, p.w, p.b))({
    x,
    w,
    b,
  });
  close(await g.x.data(), await centralDiff((t) => loss(t, w, b), x), 1e-6, "dx");
  close(await g.w.data(), await centralDiff((t) => loss(x, t, b), w), 1e-6, "dw");
  close(await g.b.data(), await centralDiff((t) => loss(x, w, t), b), 1e-6, "db");

  const xp = nb.random.normal(nb.random.key(5), [1, 2, 5, 5], { dtype: "f64" });
  const fns: [string, (t: nb.Tensor) => nb.Tensor][] = [
    ["maxPool2d", (t) => maxPool2d(t, 3, { stride: 2, padding: 1 })],
    ["avgPool2d", (t) => avgPool2d(t, [2, 3], { stride: [1, 2], padding: [1, 1] })],
    ["pad", (t) => pad(t, [1, -2, 0, 3], { value: 0.5 })],
    [
      "conv1d",
      (t) =>
        conv1d(nb.reshape(t, [1, 10, 5]), xs([4, 5, 3], 5, 7, 8), {
          padding: "same",
          groups: 2,
          dilation: 2,
        }),
    ],
  ];
  for (const [name, fn] of fns) {
    const rr = nb.random.normal(nb.random.key(6), fn(xp).shape, { dtype: "f64" });
    const f = (t: nb.Tensor) => nb.sum(nb.mul(fn(t), rr));
    close(await nb.grad(f)(xp).data(), await centralDiff(f, xp), 1e-6, name);
  }
});

Deno.test("pad: torch's F.pad order, negative amounts crop, fill value rounded once", async () => {
  const x = tensor([[1, 2, 3], [4, 5, 6]], { dtype: "bf16" });
  const y = pad(x, [1, 0, 0, 2], { value: 1 / 3 });
  const v = 0.333984375; // 1/3 in bf16
  assert.deepEqual(y.shape, [4, 4]);
  assert.deepEqual(await y.toArray(), [[v, 1, 2, 3], [v, 4, 5, 6], [v, v, v, v], [v, v, v, v]]);
  assert.deepEqual(await pad(x, [-1, 1]).toArray(), [[2, 3, 0], [5, 6, 0]]);
  assert.equal(pad(x, [0, 0]), x);
});

Deno.test("conv2d, pools: jit ≡ eager bitwise (value and gradients, f32)", async () => {
  const params = {
    w1: nb.random.normal(nb.random.key(7), [8, 3, 3, 3]),
    b1: nb.random.normal(nb.random.key(8), [8]),
    w2: nb.random.normal(nb.random.key(9), [4, 4, 3, 3]),
  };
  const x = nb.random.normal(nb.random.key(10), [2, 3, 12, 11]);
  type P = typeof params;
  const f = (p: P, xx: nb.Tensor) =>
    nb.valueAndGrad((q: P) => {
      let h = nb.relu(conv2d(xx, q.w1, { bias: q.b1, padding: "same" }));
      h = maxPool2d(h, 2);
      h = conv2d(h, q.w2, { stride: 2, padding: 1, groups: 2 });
      return nb.mean(nb.square(avgPool2d(h, 2, { stride: 1, padding: 1 })));
    })(p);
  const eager = await bitsOf(f(params, x));
  const jitted = nb.jit(f);
  assertSameBits(eager, await bitsOf(jitted(params, x)), "conv jit");
  assertSameBits(eager, await bitsOf(jitted(params, x)), "conv jit (replay)");
});

Deno.test("conv2d, pools: memory stays flat over a training-like loop", () => {
  const w = nb.random.normal(nb.random.key(11), [4, 2, 3, 3]);
  const x = nb.random.normal(nb.random.key(12), [2, 2, 9, 9]);
  const step = () =>
    nb.tidy(() => {
      const [l, g] = nb.valueAndGrad((ww: nb.Tensor) =>
        nb.sum(avgPool2d(maxPool2d(conv2d(pad(x, [1, 1, 1, 1]), ww, { stride: 2 }), 2), 1))
      )(w);
      return nb.add(l, nb.sum(g));
    }).dispose();
  step();
  const before = nb.memory();
  for (let i = 0; i < 5; i++) step();
  const after = nb.memory();
  assert.equal(after.tensors, before.tensors);
  assert.equal(after.bytes, before.bytes);
  // Outside any tidy scope, each op frees its own intermediates.
  const [xr, wr] = [nb.reshape(x, [2, 2, 81]), nb.reshape(w, [4, 2, 9])];
  const bare = nb.memory().tensors;
  for (
    const y of [
      conv2d(x, w, { padding: 1, stride: 2 }),
      conv1d(xr, wr, { padding: "same" }),
      maxPool2d(x, 3, { padding: 1 }),
      avgPool2d(x, 2, { padding: 1 }),
      pad(x, [1, 2, -1, 0]),
    ]
  ) y.dispose();
  assert.equal(nb.memory().tensors, bare);
  nb.dispose([w, x, xr, wr]);
});

Deno.test("conv2d: autocast runs it in f16 (bias included), as torch's lower-precision list", () => {
  const p = nb.nn.conv2dInit(nb.random.key(13), 3, 4, 3);
  const x = nb.random.normal(nb.random.key(14), [1, 3, 6, 6]);
  const y = nb.withAutocast("f16", () => nb.nn.conv2d(p, x, { padding: 1 }));
  assert.equal(y.dtype, "f16");
  assert.deepEqual(y.shape, [1, 4, 6, 6]);
  nb.dispose([p, x, y]);
});

Deno.test("nn.conv2dInit: torch's Conv2d init (uniform ±1/√fan_in), PyTorch layout", async () => {
  const p = nb.nn.conv2dInit(nb.random.key(15), 8, 16, [3, 5], { groups: 2 });
  assert.deepEqual(p.w.shape, [16, 4, 3, 5]);
  assert.deepEqual(p.b!.shape, [16]);
  const bound = 1 / Math.sqrt(4 * 3 * 5);
  const w = Array.from(await p.w.data());
  assert.ok(w.every((v) => Math.abs(v) <= bound));
  assert.ok(Math.max(...w.map(Math.abs)) > 0.9 * bound, "draws fill the range");
  const b = Array.from(await p.b!.data());
  assert.ok(b.every((v) => Math.abs(v) <= bound));
  assert.notDeepEqual(b, w.slice(0, 16), "bias has its own key");
  assert.equal(nb.nn.conv2dInit(nb.random.key(0), 2, 2, 1, { bias: false }).b, undefined);
  nb.dispose(p);
});

Deno.test("conv2d, pools, pad: bad input gives clear errors", () => {
  const x = nb.zeros([1, 4, 5, 5]);
  const cases: [() => unknown, RegExp][] = [
    [
      () => conv2d(nb.zeros([4, 5, 5]), nb.zeros([2, 4, 3, 3])),
      /conv2d: x must be 4-D.*expandDims/,
    ],
    [() => conv2d(x, nb.zeros([2, 3, 3, 3])), /conv2d: x has 4 channels.*groups 1/],
    [() => conv2d(x, nb.zeros([3, 2, 3, 3]), { groups: 2 }), /out channels 3 divisible/],
    [() => conv2d(x, nb.zeros([2, 4, 7, 3])), /conv2d: the H axis \(5, 5 padded\) is smaller/],
    [
      () => conv2d(x, nb.zeros([2, 4, 3, 3]), { stride: 0 }),
      /conv2d: stride must be an integer ≥ 1/,
    ],
    [
      () => conv2d(x, nb.zeros([2, 4, 3, 3]), { padding: "same", stride: 2 }),
      /"same" needs stride 1/,
    ],
    [() => conv2d(x, nb.zeros([2, 4, 3, 3]), { bias: nb.zeros([3]) }), /bias must be \[2\]/],
    [
      () => conv2d(x, undefined as unknown as nb.Tensor),
      /conv2d: argument 2 \(w\) must be a Tensor/,
    ],
    [() => conv1d(x, nb.zeros([2, 4, 3])), /conv1d: x must be \[N, C, L\]/],
    [() => maxPool2d(x, 3, { padding: 2 }), /maxPool2d: padding 2 is more than half/],
    [() => maxPool2d(nb.zeros([1, 1, 4, 4], { dtype: "i32" }), 2), /float tensor.*astype/],
    [() => avgPool2d(x, 2, { dilation: 2 }), /avgPool2d: dilation is not an option/],
    [() => pad(x, [1]), /pad: pads must be an even-length list/],
    [() => pad(x, [-3, -3]), /crop axis 3/],
    [() => pad(x, [1, 1], { mode: "reflect" as "constant" }), /mode "reflect" is not implemented/],
  ];
  for (const [fn, re] of cases) assert.throws(fn, re);
  x.dispose();
});
