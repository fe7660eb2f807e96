/**
 * The jit pass that folds casts f32 → f16/bf16 into matmuls (lib/jit/passes.ts,
 * `foldMatmulCasts`): the folded program gives eager's bits, its cast nodes are gone when only
 * matmuls read them and stay when something else does, and `foldCasts: false` keeps them.
 */
import assert from "node:assert/strict";
import { assertSameBits, bitsOf } from "./same_bits.ts";
import * as nb from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { rng as mulberry32 } from "./rng.ts";

const { jit, tensor, astype } = nb;

/**
 * A tensor of uniform values in ±3 with a few f16-delicate ones (ties, overflow and NaN unless
 * `finite`).
 */
function data(shape: number[], seed: number, finite = false): Tensor {
  const r = mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const odd = [1 + 2 ** -11, 1 + 2 ** -8, 2 ** -25, -0, ...(finite ? [] : [70000, NaN])];
  const v = Array.from({ length: n }, (_, i) => (i % 17 === 3 ? odd[i % odd.length] : r() * 6 - 3));
  return tensor(v, { shape });
}

/** Number of cast operations a program runs (alone or inside fused kernels). */
const castsIn = (s: nb.ProgramStats | undefined) =>
  (s?.schedule ?? []).reduce((c, line) => c + (line.match(/\bcast\b/g)?.length ?? 0), 0);

for (const d of ["f16", "bf16"] as const) {
  Deno.test(`jit folds casts f32 → ${d} into matmul and matmulT: eager's bits, no cast kernel`, async () => {
    const x = data([7, 37], 1), w = data([37, 13], 2), wt = data([13, 37], 3);
    const fns = {
      matmul: (a: Tensor, b: Tensor) => nb.matmul(astype(a, d), astype(b, d)),
      matmulT: (a: Tensor, b: Tensor) => nb.matmulT(astype(a, d), astype(b, d)),
      // dW = xᵀ·g: a transA product of the cast x.
      transA: (a: Tensor, b: Tensor) =>
        nb.grad((v: Tensor) => nb.sum(astype(nb.matmul(astype(a, d), astype(v, d)), "f32")))(b),
    };
    for (const [name, fn] of Object.entries(fns)) {
      const b = name === "matmulT" ? wt : w;
      const eager = fn(x, b);
      const f = jit(fn);
      const got = f(x, b);
      assertSameBits(await bitsOf(eager), await bitsOf(got), `${d} ${name}`);
      // transA's gradient is cast back to its f32 parameter's dtype; no other cast is left.
      const left = name === "transA" ? 1 : 0;
      assert.equal(castsIn(f.lastStats), left, `${name}: ${f.lastStats?.schedule.join("; ")}`);
      assert.equal(f.lastStats?.byKind.matmul, 1);
      const plain = jit(fn, { foldCasts: false });
      const unfolded = plain(x, b);
      assertSameBits(await bitsOf(unfolded), await bitsOf(got), `${d} ${name} foldCasts: false`);
      assert.ok(castsIn(plain.lastStats) >= 2, `${name}: casts kept without the pass`);
      f.clear(), plain.clear();
      nb.dispose([eager, got, unfolded]);
    }
    nb.dispose([x, w, wt]);
  });
}

Deno.test("jit keeps a folded cast that something else reads (and still folds the matmul)", async () => {
  const x = data([5, 20], 4), w = data([20, 6], 5);
  const fn = (a: Tensor, b: Tensor) => {
    const a16 = astype(a, "f16");
    return [nb.matmul(a16, astype(b, "f16")), nb.mul(a16, 2)];
  };
  const eager = fn(x, w);
  const f = jit(fn);
  const got = f(x, w);
  assertSameBits(await bitsOf(eager), await bitsOf(got), "shared cast");
  assert.equal(castsIn(f.lastStats), 1, f.lastStats?.schedule.join("; "));
  f.clear();
  nb.dispose([eager, got, x, w]);
});

Deno.test("jit leaves casts from other dtypes alone (f64 → f16 is not folded)", async () => {
  const x = astype(data([4, 9], 6), "f64"), w = data([9, 3], 7);
  const fn = (a: Tensor, b: Tensor) => nb.matmul(astype(a, "f16"), astype(b, "f16"));
  const eager = fn(x, w);
  const f = jit(fn);
  const got = f(x, w);
  assertSameBits(await bitsOf(eager), await bitsOf(got), "f64 source");
  assert.equal(castsIn(f.lastStats), 1, f.lastStats?.schedule.join("; "));
  f.clear();
  nb.dispose([eager, got, x, w]);
});

for (const preset of ["16-mixed", "bf16-mixed"] as const) {
  Deno.test(`jit ${preset} MLP step: casts folded into the matmuls, bitwise as without the pass and eager`, async () => {
    const loss = (p: nb.nn.MlpParams, b: { x: Tensor; y: Tensor }) =>
      nb.nn.crossEntropy(nb.nn.mlp(p, b.x), b.y);
    const step = nb.precision(preset)(nb.trainStep({ loss, optimizer: nb.optim.adam() }));
    const params = nb.nn.mlpInit(nb.random.key(1), [64, 48, 10]);
    const batch = {
      x: data([16, 64], 8, true),
      y: tensor([...Array(16).keys()].map((i) => i % 10), { dtype: "i32" }),
    };
    const folded = jit(step), plain = jit(step, { foldCasts: false });
    let se = step.init(params), sf = folded.init(params), sp = plain.init(params);
    for (let i = 0; i < 3; i++) {
      const [ne, me] = step(se, batch), [nf, mf] = folded(sf, batch), [np, mp] = plain(sp, batch);
      const want = await bitsOf([ne, me]);
      assertSameBits(want, await bitsOf([nf, mf]), `${preset} step ${i} folded`);
      assertSameBits(want, await bitsOf([np, mp]), `${preset} step ${i} plain`);
      if (i > 0) nb.disposeReplaced(se, ne), nb.disposeReplaced(sf, nf), nb.disposeReplaced(sp, np);
      nb.dispose([me, mf, mp]);
      se = ne, sf = nf, sp = np;
    }
    const fs = folded.lastStats!, ps = plain.lastStats!;
    assert.equal(fs.byKind.matmul, ps.byKind.matmul);
    // At least the two weight casts of castParams and the input's cast of autocast are gone.
    assert.ok(castsIn(fs) <= castsIn(ps) - 3, `casts ${castsIn(ps)} → ${castsIn(fs)}`);
    folded.clear(), plain.clear();
    nb.dispose([se, sf, sp, params, batch]);
  });
}
