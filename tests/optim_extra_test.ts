/**
 * rmsprop against PyTorch, lion against a hand-written reference, and weight-decay masks
 * (adamw, lion) over several steps; jit ≡ eager bitwise for both new optimizers.
 *
 * The rmsprop oracle comes from torch 2.13.0+cpu (the wheel in /opt/wheels, installed into a
 * venv; torch's RMSprop update is unchanged since 1.x), in float64, by this script:
 *
 * ```py
 * # python3 rmsprop_oracle.py (torch float64)
 * import torch, json
 * torch.set_default_dtype(torch.float64)
 * p0 = [0.5, -1.25, 2.0, -0.75]
 * def grad(t):
 *     return [((i * 3 + t * 5) % 7 - 3) / 4 for i in range(4)]
 * configs = [
 *     dict(lr=0.01),
 *     dict(lr=0.05, alpha=0.9, eps=1e-6),
 *     dict(lr=0.02, centered=True),
 *     dict(lr=0.01, momentum=0.9),
 *     dict(lr=0.03, alpha=0.95, momentum=0.5, centered=True, weight_decay=0.1),
 * ]
 * out = []
 * for c in configs:
 *     p = torch.tensor(p0, requires_grad=True)
 *     opt = torch.optim.RMSprop([p], **c)
 *     traj = []
 *     for t in range(5):
 *         p.grad = torch.tensor(grad(t))
 *         opt.step()
 *         traj.append([float(v) for v in p.detach()])
 *     out.append(dict(config=c, params=traj))
 * print(torch.__version__)
 * print(json.dumps(out))
 * ```
 */
import assert from "node:assert/strict";
import * as nb from "../mod.ts";
import { assertSameBits, bitsOf } from "./same_bits.ts";

const { optim, tensor } = nb;

const P0 = [0.5, -1.25, 2.0, -0.75];
/** The oracle's gradient at step t (exact binary fractions). */
const gradAt = (t: number) => P0.map((_, i) => ((i * 3 + t * 5) % 7 - 3) / 4);

/** torch.optim.RMSprop, float64: params after each of 5 steps. */
const TORCH_RMSPROP: { config: nb.optim.RmspropOptions; params: number[][] }[] = [
  {
    config: { "lr": 0.01 },
    params: [
      [0.5999999866666684, -1.25, 1.9000000133333317, -0.650000039999984],
      [0.5443369588642768, -1.150000019999996, 1.8682339704701683, -0.5550842524367446],
      [0.5443369588642768, -1.233333344074071, 1.8986476539654893, -0.608747538468724],
      [0.5933467131868798, -1.2602228351642366, 1.9662337467688733, -0.608747538468724],
      [0.5339222032501552, -1.234133796525686, 1.9249819582627004, -0.5610929397492719],
    ],
  },
  {
    config: { "lr": 0.05, "alpha": 0.9, "eps": 1e-06 },
    params: [
      [0.6581132163445632, -1.25, 1.8418867836554367, -0.5918881169662831],
      [0.5672044560127826, -1.0918871169852564, 1.789472761598639, -0.44113305073557085],
      [0.5672044560127826, -1.2255172617526893, 1.8416295013654094, -0.5291437253556592],
      [0.6523267351603945, -1.270527453250838, 1.9557677475735686, -0.5291437253556592],
      [0.5498391606321299, -1.2250843385355528, 1.884236937814544, -0.4459753988703806],
    ],
  },
  {
    config: { "lr": 0.02, "centered": true },
    params: [
      [0.701007536115819, -1.25, 1.798992463884181, -0.548992517756206],
      [0.5896408902846415, -1.04899247735219, 1.7349490627911524, -0.3576300395218158],
      [0.5896408902846415, -1.2157260639388343, 1.796019441839627, -0.46510383554799084],
      [0.6879176421245936, -1.2695837517950235, 1.9311919636697525, -0.46510383554799084],
      [0.5690684774348368, -1.2173882724687766, 1.8486248264749936, -0.3693780224892792],
    ],
  },
  {
    config: { "lr": 0.01, "momentum": 0.9 },
    params: [
      [0.5999999866666684, -1.25, 1.9000000133333317, -0.650000039999984],
      [0.6343369468642783, -1.150000019999996, 1.7782339824701667, -0.4650842884367303],
      [0.6652402110421273, -1.1433333620740675, 1.6990582381886394, -0.35232339806178126],
      [0.7420629031247943, -1.1642228610308976, 1.695386161138649, -0.2508385967243271],
      [0.7517788160624699, -1.1569343714534939, 1.6508295032874847, -0.11184767680116633],
    ],
  },
  {
    config: { "lr": 0.03, "alpha": 0.95, "momentum": 0.5, "centered": true, "weightDecay": 0.1 },
    params: [
      [0.6376494312997812, -1.1123506102039602, 1.8623505663258622, -0.6123505791108587],
      [0.6209864216917662, -0.9071915592625449, 1.7337316291717908, -0.41304006067446025],
      [0.6030215432151167, -0.9032810347080842, 1.6800840916783761, -0.3778045882770805],
      [0.656471603764101, -0.9254554304467025, 1.7224246213981806, -0.3547432506416538],
      [0.5943576636977076, -0.8871124952385611, 1.6724145896292426, -0.2736239356525847],
    ],
  },
];

function freeAll(...xs: unknown[]) {
  for (const t of new Set(nb.tree.leaves(xs))) if (!t.disposed) t.dispose();
}

/** Run `opt` for `steps` steps on `p0` with `gradAt`, returning the params after each. */
async function trajectory(
  opt: nb.Optimizer,
  p0: number[],
  steps: number,
  dtype: nb.DType,
): Promise<number[][]> {
  let p = { w: tensor(p0, { dtype }) };
  let s = opt.init(p);
  const out: number[][] = [];
  for (let t = 0; t < steps; t++) {
    const g = { w: tensor(gradAt(t), { dtype }) };
    const [p2, s2] = opt.update(g, s, p);
    nb.disposeReplaced([p, s, g], [p2, s2]);
    [p, s] = [p2, s2];
    out.push(Array.from(await p.w.data()));
  }
  freeAll(p, s);
  return out;
}

const ulpsApart = (a: number, b: number) =>
  Math.abs(a - b) / (Math.abs(b) * 2 ** -52 || 2 ** -1074);

for (const { config, params } of TORCH_RMSPROP) {
  Deno.test(`rmsprop ≡ torch.optim.RMSprop over 5 f64 steps: ${JSON.stringify(config)}`, async () => {
    const before = nb.memory().tensors;
    const got = await trajectory(optim.rmsprop(config), P0, 5, "f64");
    got.forEach((row, t) =>
      row.forEach((v, i) => {
        // torch fuses (1-α)·g·g and addcdiv in another order: a few ulps apart at most.
        assert.ok(
          ulpsApart(v, params[t][i]) <= 16,
          `step ${t} [${i}]: ${v} vs torch ${params[t][i]}`,
        );
      })
    );
    // f32 params follow the same trajectory to f32 precision.
    const f32 = await trajectory(optim.rmsprop(config), P0, 5, "f32");
    f32.forEach((row, t) =>
      row.forEach((v, i) =>
        assert.ok(Math.abs(v - params[t][i]) <= 1e-5 * Math.max(1, Math.abs(params[t][i])))
      )
    );
    assert.equal(nb.memory().tensors, before);
  });
}

/** Lion as the paper writes it (Algorithm 2), in plain f64 (or f32 with `r = Math.fround`). */
function lionReference(
  p0: number[],
  steps: number,
  o: { lr: number; b1: number; b2: number; wd: number; decay: boolean },
  r: (x: number) => number = (x) => x,
): number[][] {
  const p = [...p0];
  const m = p0.map(() => 0);
  const out: number[][] = [];
  for (let t = 0; t < steps; t++) {
    const g = gradAt(t);
    for (let i = 0; i < p.length; i++) {
      const c = r(r(o.b1 * m[i]) + r((1 - o.b1) * g[i]));
      const update = Math.sign(c) + (o.decay ? r(o.wd * p[i]) : 0);
      p[i] = r(p[i] - r(o.lr * r(update)));
      m[i] = r(r(o.b2 * m[i]) + r((1 - o.b2) * g[i]));
    }
    out.push([...p]);
  }
  return out;
}

Deno.test("lion ≡ the paper's update over 6 steps, bitwise in f64 and f32, with and without decay", async () => {
  const before = nb.memory().tensors;
  for (const wd of [0, 0.1]) {
    const o = { lr: 0.03, b1: 0.9, b2: 0.99, wd, decay: true };
    const opt = optim.lion({ lr: o.lr, b1: o.b1, b2: o.b2, weightDecay: wd });
    assert.deepEqual(await trajectory(opt, P0, 6, "f64"), lionReference(P0, 6, o));
    assert.deepEqual(
      await trajectory(opt, P0, 6, "f32"),
      lionReference(P0.map(Math.fround), 6, o, Math.fround),
    );
  }
  assert.equal(nb.memory().tensors, before);
});

/** Params with a matrix, a bias and a norm scale; gradients from gradAt. */
function model(dtype: nb.DType = "f32") {
  return {
    layer: { w: tensor([[0.5, -1], [2, 0.25]], { dtype }), b: tensor([0.1, -0.2], { dtype }) },
    norm: { scale: tensor([1, 1.5], { dtype }) },
  };
}
function gradsFor(t: number, dtype: nb.DType = "f32") {
  const g = gradAt(t);
  return {
    layer: {
      w: tensor([[g[0], g[1]], [g[2], g[3]]], { dtype }),
      b: tensor([g[1], g[2]], { dtype }),
    },
    norm: { scale: tensor([g[3], g[0]], { dtype }) },
  };
}
async function run(opt: nb.Optimizer, steps = 4) {
  let p: unknown = model();
  let s = opt.init(p);
  for (let t = 0; t < steps; t++) {
    const g = gradsFor(t);
    const [p2, s2] = opt.update(g, s, p);
    nb.disposeReplaced([p, s, g], [p2, s2]);
    [p, s] = [p2, s2];
  }
  const bits = await bitsOf(p);
  freeAll(p, s);
  return bits; // leaves: layer.w, layer.b, norm.scale
}

for (
  const [name, make] of [
    [
      "adamw",
      (o: { weightDecay: number; mask?: nb.optim.DecayMask }) => optim.adamw({ lr: 0.05, ...o }),
    ],
    [
      "adam (L2)",
      (o: { weightDecay: number; mask?: nb.optim.DecayMask }) => optim.adam({ lr: 0.05, ...o }),
    ],
    [
      "lion",
      (o: { weightDecay: number; mask?: nb.optim.DecayMask }) => optim.lion({ lr: 0.05, ...o }),
    ],
  ] as const
) {
  Deno.test(`${name}: a weight-decay mask decays exactly the masked params (tree and function masks)`, async () => {
    const before = nb.memory().tensors;
    const decayed = await run(make({ weightDecay: 0.5 }));
    const plain = await run(make({ weightDecay: 0 }));
    const tree = { layer: { w: true, b: false }, norm: { scale: false } };
    const byTree = await run(make({ weightDecay: 0.5, mask: tree }));
    const byFn = await run(make({ weightDecay: 0.5, mask: optim.decayMatrices }));
    const byPath = await run(
      make({ weightDecay: 0.5, mask: (path: string) => path === "layer.w" }),
    );
    const expected = [decayed[0], plain[1], plain[2]];
    assertSameBits(expected, byTree, "tree mask");
    assertSameBits(expected, byFn, "decayMatrices");
    assertSameBits(expected, byPath, "path mask");
    // The mask matters: decay changes the matrix.
    assert.notDeepEqual(decayed[0], plain[0]);
    assert.equal(nb.memory().tensors, before);
  });
}

Deno.test("weight-decay mask errors name the optimizer, the path and the fix", () => {
  const before = nb.memory().tensors;
  const p = model();
  const g = gradsFor(0);
  const tryMask = (mask: unknown) => {
    const opt = optim.adamw({ mask });
    const s = opt.init(p);
    try {
      opt.update(g, s, p);
    } finally {
      freeAll(s);
    }
  };
  assert.throws(
    () => tryMask({ layer: { w: true, b: 1 }, norm: { scale: false } }),
    /adamw: the weight-decay mask gives number at "layer.b"; it must be a boolean/,
  );
  assert.throws(
    () => tryMask({ layer: true, norm: { scale: false } }),
    /adamw: the weight-decay mask has boolean at "layer" where the params have a subtree/,
  );
  assert.throws(() => tryMask(() => "yes"), /gives string at "layer.w"/);
  assert.throws(() => optim.rmsprop({ alpha: -1 }), /rmsprop.*alpha/);
  freeAll(p, g);
  assert.equal(nb.memory().tensors, before);
});

Deno.test("jit ≡ eager bitwise: rmsprop (centered, momentum) and masked lion train steps", async () => {
  const before = nb.memory().tensors;
  const [kx, kp] = nb.random.split(nb.random.key(2), 2);
  const batch = {
    x: nb.random.normal(kx, [16, 4]),
    y: tensor(Int32Array.from({ length: 16 }, (_, i) => i % 3), { dtype: "i32" }),
  };
  const params = nb.nn.mlpInit(kp, [4, 8, 3]);
  const all: unknown[] = [];
  for (
    const optimizer of [
      optim.rmsprop({ lr: 1e-2, momentum: 0.9, centered: true, weightDecay: 1e-2 }),
      optim.lion({ lr: 1e-3, weightDecay: 0.1, mask: optim.decayMatrices }),
    ]
  ) {
    const eager = nb.trainStep({
      loss: (p: nb.nn.MlpParams, b: typeof batch) => nb.nn.crossEntropy(nb.nn.mlp(p, b.x), b.y),
      optimizer,
    });
    const jitted = nb.jit(eager);
    const states: unknown[] = [];
    let a = eager.init(params), b = jitted.init(params);
    for (let i = 0; i < 4; i++) {
      const [na, ma] = eager(a, batch);
      const [nb2, mb] = jitted(b, batch);
      states.push(a, b, ma, mb);
      [a, b] = [na, nb2];
    }
    assertSameBits(await bitsOf(a), await bitsOf(b), "state");
    assert.equal(jitted.traces, 1);
    jitted.clear();
    all.push(states, a, b);
  }
  freeAll(all, params, batch);
  assert.equal(nb.memory().tensors, before);
});
