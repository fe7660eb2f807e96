/**
 * Issue 13, item 8: a checkpoint's plugin config is held to the same rules as the plugin's
 * options when it is loaded (it was used as is: `backoffFactor: 0`, `growthInterval: NaN`, an
 * fp8 `margin: Infinity` …). The property tests check "the same rules": for any value of a
 * field, the option throws exactly when the restored state is refused, with the same message.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import { dispose, memory, type Tensor, tensor, zeros } from "../lib/tensor.ts";
import { pipe, type Step, type TrainState, trainStep } from "../lib/train.ts";
import { sgd } from "../lib/optim/mod.ts";
import { matmul, square, sum } from "../lib/ops/mod.ts";
import { encodeState, loadState } from "../lib/checkpoint.ts";
import { checkpointErrorCode } from "../lib/tree_codec.ts";
import {
  checkGradScaleState,
  GRAD_SCALE,
  gradScale,
  type GradScaleOptions,
} from "../plugins/grad_scale.ts";
import { checkFp8State, FP8, fp8, type Fp8Options } from "../plugins/fp8.ts";

type Params = { w: Tensor };
type Batch = { x: Tensor };
const loss = (p: Params, b: Batch) => sum(square(matmul(b.x, p.w)));
const base = () => trainStep({ loss, optimizer: sgd({ lr: 0.1 }) });

/** `step.init`'s state with `state.plugins[slot]` patched by `patch`, as checkpoint bytes. */
async function patchedFile(
  step: Step<Batch>,
  slot: string,
  patch: (s: Record<string, unknown>) => Record<string, unknown>,
): Promise<Uint8Array> {
  const params = { w: tensor([[1], [2]]) };
  const state = step.init(params);
  const old = state.plugins[slot] as Record<string, unknown>;
  const patched = patch(old);
  const bytes = await encodeState({ ...state, plugins: { ...state.plugins, [slot]: patched } });
  const extra = Object.values(patched).filter((v) => !Object.values(old).includes(v));
  dispose([state, params, extra]);
  return bytes;
}

/** The message of `fn`'s error, or undefined when it does not throw. */
function thrown(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  return undefined;
}

/** loadState's refusal message (all three ways of calling it agree), or undefined if it loads. */
async function refusal(bytes: Uint8Array, step: Step<Batch>): Promise<string | undefined> {
  const messages: (string | undefined)[] = [];
  const calls = [
    () => loadState(bytes),
    () => loadState(bytes, step),
    () => loadState(bytes, step, { check: false }),
  ];
  for (const call of calls) {
    try {
      const s: TrainState = await call();
      dispose(s);
      messages.push(undefined);
    } catch (e) {
      assert.equal(checkpointErrorCode(e), "bad-plugin-state", (e as Error).message);
      messages.push((e as Error).message);
    }
  }
  assert.equal(new Set(messages).size, 1, `${messages}`);
  return messages[0];
}

const anyValue = fc.oneof(
  fc.double(),
  fc.integer({ min: -3, max: 4000 }),
  fc.constantFrom(0, 1, 0.5, 2, 1.5, -0, NaN, Infinity, -Infinity, 1e-300),
  fc.constantFrom(null, true, "2", "max"),
);

Deno.test("loadState: the issue's gradScale configs (backoffFactor 0, growthInterval NaN) are refused", async () => {
  const step = pipe(base(), gradScale());
  const before = memory().tensors;
  for (
    const [field, value, rule] of [
      ["backoffFactor", 0, /backoffFactor must be in \(0, 1\), got 0 in state\.plugins\.gradScale/],
      ["growthInterval", NaN, /growthInterval must be an integer ≥ 1, got NaN/],
      ["growthFactor", 1, /growthFactor must be > 1, got 1/],
      ["minScale", -Infinity, /minScale must be a finite number ≥ 0, got -Infinity/],
      ["dynamic", "yes", /dynamic must be true or false, got yes/],
    ] as const
  ) {
    const bytes = await patchedFile(step, GRAD_SCALE, (s) => ({ ...s, [field]: value }));
    const msg = await refusal(bytes, step);
    assert.match(msg ?? "loaded", rule, field);
    assert.match(msg!, /^checkpoint: the file's state\.plugins\.gradScale is invalid: gradScale: /);
  }
  const noScale = await patchedFile(step, GRAD_SCALE, (s) => ({ ...s, scale: 3 }));
  assert.match((await refusal(noScale, step))!, /scale must be a f32 scalar tensor, got 3/);
  assert.equal(memory().tensors, before, "a refused load frees what it created");
});

Deno.test("loadState: a gradScale field is refused exactly when the option is (property)", async () => {
  const step = pipe(base(), gradScale());
  const fields = ["growthFactor", "backoffFactor", "growthInterval", "minScale"] as const;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...fields), anyValue, async (field, value) => {
      const option = thrown(() => gradScale({ [field]: value } as GradScaleOptions));
      const bytes = await patchedFile(step, GRAD_SCALE, (s) => ({ ...s, [field]: value }));
      const restored = await refusal(bytes, step);
      if (option === undefined) assert.equal(restored, undefined, `${field}: ${value}`);
      else assert.ok(restored?.includes(`${option} in state.plugins.gradScale`), restored);
    }),
    { numRuns: 80 },
  );
});

Deno.test("loadState: a static gradScale and a valid dynamic one load and keep their config", async () => {
  for (const opts of [{ static: 1024 }, { backoffFactor: 0.25, growthInterval: 7 }]) {
    const step = pipe(base(), gradScale(opts));
    const bytes = await patchedFile(step, GRAD_SCALE, (s) => s);
    const state = await loadState(bytes, step);
    const s = state.plugins[GRAD_SCALE] as Record<string, unknown>;
    if ("static" in opts) assert.equal(s.dynamic, false);
    else assert.deepEqual([s.backoffFactor, s.growthInterval], [0.25, 7]);
    checkGradScaleState(s);
    dispose(state);
  }
});

Deno.test("loadState: out-of-range fp8 configs are refused", async () => {
  const step = pipe(base(), fp8({ maxGemms: 2, amaxHistoryLen: 3 }));
  const before = memory().tensors;
  const cases: [(s: Record<string, unknown>) => Record<string, unknown>, RegExp][] = [
    [(s) => ({ ...s, margin: Infinity }), /margin must be finite, got Infinity in state\.plugins/],
    [(s) => ({ ...s, margin: NaN }), /margin must be finite, got NaN/],
    [(s) => ({ ...s, format: "e5m2" }), /format must be "hybrid" or "e4m3".*got "e5m2"/],
    [(s) => ({ ...s, amaxComputeAlgo: "mean" }), /amaxComputeAlgo must be .*got "mean"/],
    [
      (s) => ({ ...s, amaxHistory: zeros([0, 2, 3]) }),
      /amaxHistoryLen must be an integer ≥ 1, got 0/,
    ],
    [
      (s) => ({ ...s, amaxHistory: zeros([3, 0, 3]), scale: zeros([0, 3]) }),
      /maxGemms must be an integer ≥ 1, got 0/,
    ],
    [(s) => ({ ...s, scale: zeros([3, 3]) }), /scale must be an f32 tensor \[2, 3\]/],
    [(s) => ({ ...s, amaxHistory: zeros([3, 2]) }), /amaxHistory must be an f32 tensor/],
  ];
  for (const [patch, rule] of cases) {
    const msg = await refusal(await patchedFile(step, FP8, patch), step);
    assert.match(msg ?? "loaded", rule);
    assert.match(msg!, /^checkpoint: the file's state\.plugins\.fp8 is invalid: fp8: /);
  }
  assert.equal(memory().tensors, before, "a refused load frees what it created");
});

Deno.test("loadState: an fp8 field is refused exactly when the option is (property)", async () => {
  const step = pipe(base(), fp8({ maxGemms: 2, amaxHistoryLen: 2 }));
  const fields = ["margin", "format", "amaxComputeAlgo"] as const;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...fields),
      fc.oneof(anyValue, fc.constantFrom("hybrid", "e4m3", "most_recent", "e5m2")),
      async (field, value) => {
        const option = thrown(() => fp8({ [field]: value } as Fp8Options));
        const bytes = await patchedFile(step, FP8, (s) => ({ ...s, [field]: value }));
        const restored = await refusal(bytes, step);
        if (option === undefined) assert.equal(restored, undefined, `${field}: ${value}`);
        else assert.ok(restored?.includes(`${option} in state.plugins.fp8`), restored);
      },
    ),
    { numRuns: 60 },
  );
  const ok = await loadState(await patchedFile(step, FP8, (s) => s), step);
  checkFp8State(ok.plugins[FP8]);
  dispose(ok);
});
