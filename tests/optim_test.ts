import assert from "node:assert/strict";
import fc from "./fc.ts";
import { type DType, roundTo } from "../lib/dtype.ts";
import { dispose, memory, type Tensor, tensor, tidy } from "../lib/tensor.ts";
import { leaves } from "../lib/tree.ts";
import {
  adam,
  adamw,
  chain,
  clipByGlobalNorm,
  constant,
  cosine,
  globalNorm,
  type Optimizer,
  type Schedule,
  sgd,
  warmup,
} from "../lib/optim/mod.ts";

// ---------------------------------------------------------------------------------------------
// Fixtures: two params (a matrix and a vector) and three steps of fixed gradients.

type Arrays = { w: number[]; b: number[] };
const P0: Arrays = { w: [0.5, -1.25, 2, 0.125, -0.75, 1.5], b: [0.3, -0.2, 0.1] };
const GRADS: Arrays[] = [
  { w: [0.1, -0.4, 0.25, 1.5, -0.05, 0.3], b: [0.2, 0.0, -0.6] },
  { w: [-0.3, 0.2, 0.05, 1.1, 0.45, -0.2], b: [0.1, -0.25, 0.35] },
  { w: [0.7, -0.1, -0.15, 0.9, 0.0, 0.05], b: [-0.4, 0.15, 0.05] },
];

const asTree = (a: Arrays, dtype: DType) => ({
  w: tensor(a.w, { dtype, shape: [2, 3] }),
  b: tensor(a.b, { dtype }),
});

async function read(tree: { w: Tensor; b: Tensor }): Promise<Arrays> {
  return { w: Array.from(await tree.w.data()), b: Array.from(await tree.b.data()) };
}

/** Run `opt` for the three fixed steps in `dtype`; returns the params after each step. */
async function runSteps(opt: Optimizer, dtype: DType, steps = GRADS.length): Promise<Arrays[]> {
  let params = asTree(P0, dtype);
  let state = opt.init(params);
  const out: Arrays[] = [];
  for (let i = 0; i < steps; i++) {
    const grads = asTree(GRADS[i], dtype);
    const [p, s] = opt.update(grads, state, params);
    dispose([grads, params, state]);
    params = p;
    state = s;
    out.push(await read(params));
  }
  dispose([params, state]);
  return out;
}

/** Apply a per-element reference rule to both params. */
function refRun(
  rule: (p: number, g: number, st: Record<string, number>, step: number) => number,
  steps = GRADS.length,
): Arrays[] {
  const p = { w: [...P0.w], b: [...P0.b] };
  const states = { w: P0.w.map(() => ({})), b: P0.b.map(() => ({})) } as Record<
    keyof Arrays,
    Record<string, number>[]
  >;
  const out: Arrays[] = [];
  for (let t = 0; t < steps; t++) {
    for (const k of ["w", "b"] as const) {
      p[k] = p[k].map((v, i) => rule(v, GRADS[t][k][i], states[k][i], t + 1));
    }
    out.push({ w: [...p.w], b: [...p.b] });
  }
  return out;
}

function assertClose(got: Arrays[], want: Arrays[], rel: number, what: string) {
  assert.equal(got.length, want.length);
  got.forEach((g, s) => {
    for (const k of ["w", "b"] as const) {
      g[k].forEach((v, i) => {
        const w = want[s][k][i];
        const err = Math.abs(v - w) / Math.max(1, Math.abs(w));
        assert.ok(err <= rel, `${what}: step ${s + 1} ${k}[${i}] = ${v}, want ${w} (err ${err})`);
      });
    }
  });
}

/** torch.optim.SGD (dampening 0) for one element. */
function sgdRule(lr: number | ((t: number) => number), momentum = 0, nesterov = false, wd = 0) {
  return (p: number, g: number, st: Record<string, number>, t: number) => {
    const rate = typeof lr === "number" ? lr : lr(t);
    let d = g + wd * p;
    if (momentum !== 0) {
      st.buf = t === 1 ? d : momentum * st.buf + d;
      d = nesterov ? d + momentum * st.buf : st.buf;
    }
    return p - rate * d;
  };
}

/** torch.optim.Adam / AdamW for one element. */
function adamRule(
  o: { lr: number | ((t: number) => number); b1: number; b2: number; eps: number; wd: number },
  decoupled: boolean,
) {
  return (p: number, g: number, st: Record<string, number>, t: number) => {
    const lr = typeof o.lr === "number" ? o.lr : o.lr(t);
    if (decoupled) p = p * (1 - lr * o.wd);
    else g = g + o.wd * p;
    st.m = o.b1 * (st.m ?? 0) + (1 - o.b1) * g;
    st.v = o.b2 * (st.v ?? 0) + (1 - o.b2) * g * g;
    const bc1 = 1 - o.b1 ** t;
    const bc2 = 1 - o.b2 ** t;
    const denom = Math.sqrt(st.v) / Math.sqrt(bc2) + o.eps;
    return p - (lr / bc1) * (st.m / denom);
  };
}

const EXACT = 1e-13;

// ---------------------------------------------------------------------------------------------
// PyTorch rules, three steps in f64

Deno.test("sgd matches torch.optim.SGD for 3 steps in f64 (plain, momentum, nesterov, weight decay)", async () => {
  const cases = [
    { lr: 0.1 },
    { lr: 0.1, momentum: 0.9 },
    { lr: 0.05, momentum: 0.8, nesterov: true },
    { lr: 0.1, weightDecay: 0.01 },
    { lr: 0.1, momentum: 0.9, weightDecay: 0.05 },
    { lr: 0.02, momentum: 0.7, nesterov: true, weightDecay: 0.1 },
  ];
  for (const c of cases) {
    const got = await runSteps(sgd(c), "f64");
    const want = refRun(sgdRule(c.lr, c.momentum, c.nesterov, c.weightDecay));
    assertClose(got, want, EXACT, `sgd ${JSON.stringify(c)}`);
  }
});

Deno.test("adam matches torch.optim.Adam for 3 steps in f64, with and without weight decay", async () => {
  const cases = [
    { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0 },
    { lr: 0.1, b1: 0.8, b2: 0.95, eps: 1e-6, wd: 0 },
    { lr: 0.05, b1: 0.9, b2: 0.99, eps: 1e-8, wd: 0.1 },
  ];
  for (const c of cases) {
    const opt = adam({ lr: c.lr, b1: c.b1, b2: c.b2, eps: c.eps, weightDecay: c.wd });
    assertClose(
      await runSteps(opt, "f64"),
      refRun(adamRule(c, false)),
      EXACT,
      `adam ${JSON.stringify(c)}`,
    );
  }
  // The defaults are PyTorch's.
  const d = { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0 };
  assertClose(await runSteps(adam(), "f64"), refRun(adamRule(d, false)), EXACT, "adam defaults");
});

Deno.test("adamw matches torch.optim.AdamW for 3 steps in f64 (decoupled decay, default 1e-2)", async () => {
  const d = { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 1e-2 };
  assertClose(await runSteps(adamw(), "f64"), refRun(adamRule(d, true)), EXACT, "adamw defaults");
  const c = { lr: 0.1, b1: 0.85, b2: 0.98, eps: 1e-7, wd: 0.2 };
  const opt = adamw({ lr: c.lr, b1: c.b1, b2: c.b2, eps: c.eps, weightDecay: c.wd });
  assertClose(await runSteps(opt, "f64"), refRun(adamRule(c, true)), EXACT, "adamw wd 0.2");
  // AdamW differs from Adam with the same weight decay (decoupled vs L2).
  const l2 = await runSteps(
    adam({ lr: 0.1, b1: 0.85, b2: 0.98, eps: 1e-7, weightDecay: 0.2 }),
    "f64",
  );
  assert.notDeepEqual(l2, refRun(adamRule(c, true)));
});

Deno.test("optimizers step with a schedule's rate at the applied-update count (0, 1, 2)", async () => {
  const sched = warmup(0.2, 4);
  const lrAt = async (t: number) => {
    const c = tensor(t - 1);
    const v = await sched(c).item();
    c.dispose();
    return v;
  };
  const rates = await Promise.all([1, 2, 3].map(lrAt));
  const lr = (t: number) => rates[t - 1];
  assert.deepEqual(rates, [0, Math.fround(0.05), Math.fround(0.1)]);
  assertClose(
    await runSteps(sgd({ lr: sched, momentum: 0.9 }), "f64"),
    refRun(sgdRule(lr, 0.9)),
    EXACT,
    "sgd",
  );
  const c = { lr, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.1 };
  assertClose(
    await runSteps(adamw({ lr: sched, weightDecay: 0.1 }), "f64"),
    refRun(adamRule(c, true)),
    EXACT,
    "adamw",
  );
});

// ---------------------------------------------------------------------------------------------
// dtypes

Deno.test("states keep the params' dtypes by default; stateDtype overrides; count is f32", () => {
  tidy(() => {
    const params = {
      a: tensor([1, 2], { dtype: "f16" }),
      b: tensor([3], { dtype: "bf16" }),
      c: tensor([4], { dtype: "f64" }),
    };
    const s = adam().init(params);
    assert.equal(s.count.dtype, "f32");
    assert.deepEqual(s.count.shape, []);
    const mu = s.mu as typeof params;
    assert.deepEqual([mu.a.dtype, mu.b.dtype, mu.c.dtype], ["f16", "bf16", "f64"]);
    const s32 = adamw({ stateDtype: "f32" }).init(params);
    assert.deepEqual(leaves(s32.nu).map((t) => t.dtype), ["f32", "f32", "f32"]);
    const m = sgd({ lr: 1, momentum: 0.9 }).init(params);
    assert.deepEqual(leaves(m.momentum).map((t) => t.dtype), ["f16", "bf16", "f64"]);
    assert.equal(sgd({ lr: 1 }).init(params).momentum, undefined);
  });
});

Deno.test("16-true: f16 params, grads and state stay f16 and track the f64 reference", async () => {
  const got = await runSteps(adam({ lr: 0.01 }), "f16");
  const want = refRun(adamRule({ lr: 0.01, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0 }, false));
  assertClose(got, want, 2e-3, "adam f16");
  tidy(() => {
    const params = asTree(P0, "f16");
    const opt = adam({ lr: 0.01 });
    const [p, s] = opt.update(asTree(GRADS[0], "f16"), opt.init(params), params);
    assert.deepEqual(
      [...leaves(p), ...leaves(s.mu), ...leaves(s.nu)].map((t) => t.dtype),
      Array(6).fill("f16"),
    );
  });
});

Deno.test("narrow params are updated in f32 and rounded once to their dtype", async () => {
  for (const dtype of ["bf16", "f16"] as const) {
    const opt = sgd({ lr: 0.1, momentum: 0.9, stateDtype: "f32" });
    const got = await runSteps(opt, dtype, 1);
    // The first step from the rounded start values, computed in f64, rounded once.
    const p0 = { w: P0.w.map((v) => roundTo(dtype, v)), b: P0.b.map((v) => roundTo(dtype, v)) };
    const g0 = {
      w: GRADS[0].w.map((v) => roundTo(dtype, v)),
      b: GRADS[0].b.map((v) => roundTo(dtype, v)),
    };
    for (const k of ["w", "b"] as const) {
      const want = p0[k].map((p, i) => roundTo(dtype, p - 0.1 * g0[k][i]));
      assert.deepEqual(got[0][k], want, `${dtype} ${k}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// count, chain, clip

Deno.test("count counts applied updates", async () => {
  let params = asTree(P0, "f32");
  const opt = adam();
  let state = opt.init(params);
  for (let i = 0; i < 3; i++) {
    const g = asTree(GRADS[i], "f32");
    const [p, s] = opt.update(g, state, params);
    dispose([g, params, state]);
    [params, state] = [p, s];
  }
  assert.equal(await state.count.item(), 3);
  dispose([params, state]);
});

Deno.test("clipByGlobalNorm scales to maxNorm above it and passes grads below it", async () => {
  const g = { a: tensor([3, 0], { dtype: "f64" }), b: tensor([4], { dtype: "bf16" }) };
  assert.equal(await globalNorm(g).item(), 5);
  const clip = clipByGlobalNorm(1);
  const [big] = clip.transform(g, clip.init(g), g);
  assert.deepEqual(Array.from(await big.a.data()), [3 * (1 / 5), 0]);
  assert.equal(big.b.dtype, "bf16");
  assert.equal(await big.b.item(), roundTo("bf16", 0.8));
  const [small] = clipByGlobalNorm(10).transform(g, {}, g);
  assert.deepEqual(Array.from(await small.a.data()), [3, 0]);
  assert.equal(await small.b.item(), 4);
  dispose([g, big, small]);
});

Deno.test("chain(clipByGlobalNorm, sgd) is an optimizer that clips before stepping", async () => {
  const opt = chain(clipByGlobalNorm(0.5), sgd({ lr: 1, momentum: 0.9 }));
  const got = await runSteps(opt, "f64");
  const norms = GRADS.map((g) => Math.hypot(...g.w, ...g.b));
  assert.ok(norms.every((n) => n > 0.5), "the fixture must trigger clipping");
  const scaledGrads = GRADS.map((g, t) => ({
    w: g.w.map((v) => v * (0.5 / norms[t])),
    b: g.b.map((v) => v * (0.5 / norms[t])),
  }));
  const p = { w: [...P0.w], b: [...P0.b] };
  const buf = { w: P0.w.map(() => 0), b: P0.b.map(() => 0) };
  const want: Arrays[] = scaledGrads.map((g) => {
    for (const k of ["w", "b"] as const) {
      buf[k] = buf[k].map((m, i) => 0.9 * m + g[k][i]);
      p[k] = p[k].map((v, i) => v - buf[k][i]);
    }
    return { w: [...p.w], b: [...p.b] };
  });
  assertClose(got, want, 1e-12, "clip+sgd");
  // The state is the array of the parts' states.
  tidy(() => {
    const s = opt.init(asTree(P0, "f32"));
    assert.ok(Array.isArray(s) && s.length === 2);
    assert.deepEqual(s[0], {});
  });
});

Deno.test("chain of transforms alone is a transform; an optimizer must come last", () => {
  const t = chain(clipByGlobalNorm(1), clipByGlobalNorm(2));
  assert.equal(typeof t.transform, "function");
  assert.equal((t as unknown as Optimizer).update, undefined);
  assert.throws(
    () => chain(sgd({ lr: 1 }) as never, clipByGlobalNorm(1)),
    /only the last part may be one/,
  );
  assert.throws(() => (chain as (...x: unknown[]) => unknown)(), /at least one/);
});

// ---------------------------------------------------------------------------------------------
// Schedules

async function at(s: Schedule, count: number): Promise<number> {
  const c = tensor(count);
  const lr = s(c);
  const v = await lr.item();
  dispose([c, lr]);
  return v;
}

Deno.test("constant and warmup schedules", async () => {
  assert.equal(await at(constant(0.1), 0), Math.fround(0.1));
  assert.equal(await at(constant(0.1), 1000), Math.fround(0.1));
  const w = warmup(1e-3, 10);
  for (const [c, want] of [[0, 0], [1, 1e-4], [5, 5e-4], [10, 1e-3], [25, 1e-3]]) {
    assert.ok(Math.abs((await at(w, c)) - want) <= 1e-9, `warmup at ${c}`);
  }
});

Deno.test("cosine schedule follows optax (with alpha and warmup)", async () => {
  const ref = (peak: number, decay: number, alpha: number, wu: number, c: number) => {
    if (c < wu) return (peak * c) / wu;
    const u = Math.min(c - wu, decay - wu) / (decay - wu);
    return peak * ((1 - alpha) * 0.5 * (1 + Math.cos(Math.PI * u)) + alpha);
  };
  const configs = [
    { peak: 1, decay: 100, alpha: 0, wu: 0 },
    { peak: 0.01, decay: 1000, alpha: 0.1, wu: 0 },
    { peak: 3e-4, decay: 500, alpha: 0.05, wu: 50 },
  ];
  for (const k of configs) {
    const s = cosine(k.peak, k.decay, { alpha: k.alpha, warmupSteps: k.wu });
    for (
      const c of [
        0,
        1,
        7,
        k.wu,
        k.wu + 1,
        Math.floor(k.decay / 3),
        k.decay - 1,
        k.decay,
        3 * k.decay,
      ]
    ) {
      const got = await at(s, c);
      const want = ref(k.peak, k.decay, k.alpha, k.wu, c);
      assert.ok(
        Math.abs(got - want) <= 1e-6 * k.peak,
        `${JSON.stringify(k)} at ${c}: ${got} vs ${want}`,
      );
    }
    assert.equal(
      await at(s, k.decay),
      Math.fround(k.alpha * k.peak) || 0,
      "ends exactly at alpha·peak",
    );
  }
});

Deno.test("property: cosine stays within [alpha·peak, peak] and never increases after warmup", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 2, max: 10_000 }),
      fc.double({ min: 0, max: 0.9, noNaN: true }),
      fc.integer({ min: 0, max: 20_000 }),
      async (decay, alpha, c) => {
        const s = cosine(1, decay, { alpha });
        const [now, next] = [await at(s, c), await at(s, c + 1)];
        return now <= 1 && now >= alpha - 1e-6 && next <= now + 1e-6;
      },
    ),
    { numRuns: 100 },
  );
});

// ---------------------------------------------------------------------------------------------
// Errors and memory

Deno.test("bad options and mismatched trees throw clear errors", () => {
  assert.throws(() => sgd({ lr: 0.1, nesterov: true }), /nesterov needs momentum > 0/);
  assert.throws(() => sgd({ lr: -1 }), /lr must be a finite number/);
  assert.throws(() => adam({ b1: 1.5 }), /b1 must be a finite number ≥ 0 and ≤ 1/);
  assert.throws(() => clipByGlobalNorm(0), /maxNorm must be a finite number > 0/);
  assert.throws(() => warmup(1, 0), /steps must be an integer ≥ 1/);
  assert.throws(() => cosine(1, 10, { warmupSteps: 10 }), /decaySteps must be an integer ≥ 11/);
  tidy(() => {
    const opt = adam();
    const params = asTree(P0, "f32");
    const s = opt.init(params);
    assert.throws(
      () => opt.update({ w: params.w } as never, s, params),
      /grads has 1 tensors but params has 2/,
    );
    assert.throws(
      () => opt.update({ w: params.b, b: params.b } as never, s, params),
      /shape \[3\] but in params \[2,3\]/,
    );
  });
});

Deno.test("memory stays flat across repeated optimizer updates in tidy", () => {
  for (
    const opt of [
      chain(clipByGlobalNorm(1), adamw({ lr: cosine(1e-2, 50, { warmupSteps: 5 }) })),
      sgd({ lr: 0.1, momentum: 0.9, nesterov: true }),
    ] as Optimizer[]
  ) {
    let params = asTree(P0, "bf16");
    let state = opt.init(params);
    const grads = asTree(GRADS[0], "bf16");
    let after1 = -1;
    let bytes1 = -1;
    for (let i = 0; i < 20; i++) {
      const [p, s] = tidy(() => opt.update(grads, state, params));
      dispose([params, state]);
      [params, state] = [p, s];
      if (i === 0) [after1, bytes1] = [memory().tensors, memory().bytes];
    }
    assert.equal(memory().tensors, after1);
    assert.equal(memory().bytes, bytes1);
    dispose([params, state, grads]);
  }
});
