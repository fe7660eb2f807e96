/**
 * 8-bit block-wise optimizers (bitsandbytes' algorithm, Dettmers et al. 2022): `adam8bit`,
 * `adamw8bit` and `sgd8bit`. Each tensor with at least `minSize` elements keeps its moments as
 * u8 codes of a dynamic map plus one f32 absmax per block of `blockSize` (Adam: ≈ 2.03 bytes
 * per parameter instead of 8); smaller tensors (biases, norms) keep plain f32 moments.
 *
 * Every update dequantizes the moments to f32, updates them with the gradient, updates the
 * params with these fresh f32 moments, and requantizes them with new block maxima. Params keep
 * their dtype: the update computes in f32 (f64 for f64 params) and rounds once.
 *
 * Where the device offers `blockwise8bitUpdate` (the CPU backend: WebAssembly SIMD, else a
 * TypeScript loop), a quantized tensor with an f32 compute dtype (f32, bf16 or f16 params) is
 * updated by that one kernel per tensor — dequantize both moments of a block, update them and
 * the param, take the new block absmax, requantize — with the same bits as the composed ops
 * (dequantize, elementwise update, block absmax, quantize), which run everywhere else (WebGPU,
 * f64 params, f32 moments of small tensors, `fused: false`). Under `jit` the kernel is one node.
 *
 * Non-finite gradients: an element whose gradient is Inf/NaN (or whose new moment overflows
 * f32) gets both moments set to 0 and its param left as it was; the other elements update
 * normally (bitsandbytes' Adam kernel does this; nbit's SGD does it too, so one bad element
 * cannot poison its whole block's absmax). Without a scaler this is all that happens, and the
 * count still advances. Under `gradScale` the whole step is skipped instead: the new state,
 * u8 codes and absmax included, is selected away on the device and the count does not advance.
 *
 * @example
 * ```ts
 * const opt = adamw8bit({ lr: 1e-3 });
 * let s = opt.init(params); // { count, mu, nu }: u8 codes + f32 absmax per large tensor
 * [params, s] = opt.update(grads, s, params);
 * ```
 *
 * @module
 */
import type { Backend } from "../backend/backend.ts";
import type { DType } from "../dtype.ts";
import { fromHandle, full, Tensor, tensor, zeros } from "../tensor.ts";
import {
  BLOCKWISE8BIT_DTYPES,
  blockwise8bitOutputs,
  type Blockwise8bitUpdate,
} from "../backend/optim8.ts";
import { add, astype, div, isFinite, mul, sqrt, square, sub, where } from "../ops/elementwise.ts";
import type { LearningRate, Optimizer } from "./types.ts";
import {
  biasCorrections,
  checkLearningRate,
  checkNumber,
  computeDtype,
  defineOptimizer,
  initCount,
  learningRateAt,
  matchingLeaves,
} from "./common.ts";
import { dequantizeBlockwise, dynamicMap, quantizeBlockwise, type Quantized } from "./quantize.ts";

/** One moment of one param: plain f32 (small tensors) or block-wise 8-bit. */
export type Moment = Tensor | Quantized;

/** Options shared by the 8-bit optimizers. */
export interface Blockwise8bitOptions {
  /** Elements per quantization block (default 256, as bitsandbytes' optimizers). */
  blockSize?: number;
  /** Tensors with fewer elements keep f32 moments (default 4096, as bitsandbytes). */
  minSize?: number;
  /**
   * Use the device's one-pass update (`blockwise8bitUpdate`) where it has one (default true);
   * false always runs the composed ops, the reference it is bitwise equal to.
   */
  fused?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Moments: init, load (to the compute dtype), store (requantize)

let hostMaps: { signed: Float32Array; unsigned: Float32Array } | undefined;

function maps() {
  return hostMaps ??= {
    signed: dynamicMap({ signed: true }),
    unsigned: dynamicMap({ signed: false }),
  };
}

/** The maps uploaded to each device once per update (freed with the step's intermediates). */
function deviceMaps(): (device: Backend, signed: boolean) => Tensor {
  const cache = new Map<Backend, Map<boolean, Tensor>>();
  return (device, signed) => {
    let byKind = cache.get(device);
    if (!byKind) cache.set(device, byKind = new Map());
    let t = byKind.get(signed);
    if (!t) byKind.set(signed, t = tensor(signed ? maps().signed : maps().unsigned, { device }));
    return t;
  };
}

function isQuantized(x: unknown): x is Quantized {
  return !(x instanceof Tensor) && typeof x === "object" && x !== null &&
    (x as Quantized).codes instanceof Tensor && (x as Quantized).absmax instanceof Tensor;
}

function initMoment(p: Tensor, signed: boolean, blockSize: number, minSize: number): Moment {
  const device = p.device;
  if (p.size < minSize) return zeros(p.shape, { dtype: "f32", device });
  const zeroCode = (signed ? maps().signed : maps().unsigned).indexOf(0);
  return {
    codes: full(p.shape, zeroCode, { dtype: "u8", device }),
    absmax: zeros([Math.ceil(p.size / blockSize)], { dtype: "f32", device }),
  };
}

function loadMoment(
  s: Moment,
  p: Tensor,
  map: Tensor,
  blockSize: number,
  dtype: DType,
): Tensor {
  return isQuantized(s) ? dequantizeBlockwise(s, map, blockSize, p.shape, dtype) : astype(s, dtype);
}

function storeMoment(x: Tensor, old: Moment, map: Tensor, blockSize: number): Moment {
  if (!isQuantized(old)) return astype(x, old.dtype);
  return quantizeBlockwise(x, map, blockSize, { signGuard: true });
}

// ---------------------------------------------------------------------------------------------
// State trees shaped like the params, whose leaves are moments

function isNode(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && Object.getPrototypeOf(x) === Object.prototype;
}

/** The state entries at the positions of `params`' tensor leaves (in `tree.leaves` order). */
function momentsOf(op: string, name: string, params: unknown, state: unknown): Moment[] {
  const out: Moment[] = [];
  const walk = (p: unknown, s: unknown, path: string) => {
    if (p instanceof Tensor) {
      if (!(s instanceof Tensor) && !isQuantized(s)) {
        throw new Error(
          `${op}: ${name} has no moment at "${path}"; pass the state made by init(params)`,
        );
      }
      out.push(s);
    } else if (Array.isArray(p)) {
      if (!Array.isArray(s) || s.length !== p.length) {
        throw new Error(`${op}: ${name} and params differ at "${path}"`);
      }
      p.forEach((v, i) => walk(v, s[i], path ? `${path}.${i}` : `${i}`));
    } else if (isNode(p)) {
      if (!isNode(s)) throw new Error(`${op}: ${name} and params differ at "${path}"`);
      for (const [k, v] of Object.entries(p)) walk(v, s[k], path ? `${path}.${k}` : k);
    }
  };
  walk(params, state, "");
  return out;
}

/** A tree shaped like `params` whose i-th tensor leaf is `values[i]`. */
function treeOf(params: unknown, values: readonly Moment[]): unknown {
  let i = 0;
  const walk = (p: unknown): unknown => {
    if (p instanceof Tensor) return values[i++];
    if (Array.isArray(p)) return p.map(walk);
    if (isNode(p)) return Object.fromEntries(Object.entries(p).map(([k, v]) => [k, walk(v)]));
    return p;
  };
  return walk(params);
}

/**
 * The fused update of one tensor (outputs: new param, then codes and absmax per moment), or
 * `undefined` where it does not apply: no `blockwise8bitUpdate` on the device, an f64 param,
 * f32 moments, or inputs on another device or of other dtypes (then the composed ops run and
 * give the same bits, or the usual error).
 */
function fusedUpdate(
  u: Blockwise8bitUpdate,
  p: Tensor,
  g: Tensor,
  moments: readonly Moment[],
  maps: readonly Tensor[],
  scalars: readonly (Tensor | number)[],
): [Tensor, ...Quantized[]] | undefined {
  const dev = p.device;
  if (!dev.blockwise8bitUpdate || !BLOCKWISE8BIT_DTYPES.includes(p.dtype)) return undefined;
  if (!moments.every(isQuantized) || g.device !== dev || g.size !== p.size) return undefined;
  const qs = moments as readonly Quantized[];
  const ss = scalars.map((s) => typeof s === "number" ? full([], s, { device: dev }) : s);
  const gc = BLOCKWISE8BIT_DTYPES.includes(g.dtype) ? g : astype(g, "f32");
  const inputs = [p, gc, ...qs.flatMap((q, j) => [q.codes, q.absmax, maps[j]]), ...ss];
  if (inputs.some((t) => t.device !== dev)) return undefined;
  if (ss.some((s) => s.dtype !== "f32" || s.size !== 1)) return undefined;
  if (qs.some((q) => q.codes.size !== p.size || q.codes.dtype !== "u8")) return undefined;
  const arg = (t: Tensor) => ({ h: t.handle, dtype: t.dtype, size: t.size });
  const hs = dev.blockwise8bitUpdate(u, inputs.map(arg));
  const metas = blockwise8bitOutputs(u, p.dtype, p.size);
  const outs = hs.map((h, j) =>
    fromHandle(dev, h, metas[j].dtype, j % 2 === 0 && j > 0 ? [metas[j].size] : p.shape)
  );
  const state: Quantized[] = [];
  for (let j = 1; j < outs.length; j += 2) state.push({ codes: outs[j], absmax: outs[j + 1] });
  return [outs[0], ...state];
}

function checkBlockOptions(op: string, blockSize: number, minSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    throw new Error(`${op}: blockSize must be a positive integer (e.g. 256), got ${blockSize}`);
  }
  if (!Number.isInteger(minSize) || minSize < 0) {
    throw new Error(`${op}: minSize must be an integer ≥ 0 (e.g. 4096), got ${minSize}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Adam / AdamW

/** Options of {@linkcode adam8bit} and {@linkcode adamw8bit}. */
export interface Adam8bitOptions extends Blockwise8bitOptions {
  /** Learning rate: a number or a schedule of the applied-update count (default 1e-3). */
  lr?: LearningRate;
  /** Decay of the first moment (default 0.9). */
  b1?: number;
  /** Decay of the second moment (default 0.999). */
  b2?: number;
  /** Added to the bias-corrected √v (default 1e-8). */
  eps?: number;
  /** Weight decay: L2 for `adam8bit`, decoupled for `adamw8bit` (default 0 / 1e-2). */
  weightDecay?: number;
}

/** The state of {@linkcode adam8bit} / {@linkcode adamw8bit}. */
export interface Adam8bitState {
  /** Applied updates so far (f32 scalar); bias correction uses `count + 1`. */
  readonly count: Tensor;
  /** First moments shaped like the params: `{ codes, absmax }` (signed map) or f32. */
  readonly mu: unknown;
  /** Second moments shaped like the params: `{ codes, absmax }` (unsigned map) or f32. */
  readonly nu: unknown;
}

function adam8bitLike(
  name: string,
  opts: Adam8bitOptions,
  decoupled: boolean,
): Optimizer<Adam8bitState> {
  const {
    lr = 1e-3,
    b1 = 0.9,
    b2 = 0.999,
    eps = 1e-8,
    weightDecay = decoupled ? 1e-2 : 0,
    blockSize = 256,
    minSize = 4096,
    fused = true,
  } = opts ?? {};
  checkLearningRate(name, lr);
  checkNumber(name, "b1", b1, 0, false, 1);
  checkNumber(name, "b2", b2, 0, false, 1);
  checkNumber(name, "eps", eps, 0);
  checkNumber(name, "weightDecay", weightDecay, 0);
  checkBlockOptions(name, blockSize, minSize);
  return {
    init: (params) => ({
      count: initCount(params),
      mu: treeOf(params, leavesOf(params).map((p) => initMoment(p, true, blockSize, minSize))),
      nu: treeOf(params, leavesOf(params).map((p) => initMoment(p, false, blockSize, minSize))),
    }),
    update<P>(grads: P, state: Adam8bitState, params: P): [P, Adam8bitState] {
      const [ps, gs] = matchingLeaves(name, ["params", "grads"], params, grads);
      const mus = momentsOf(name, "state.mu", params, state.mu);
      const nus = momentsOf(name, "state.nu", params, state.nu);
      const rate = learningRateAt(lr, state.count);
      const t = add(state.count, 1);
      // bitsandbytes' folded constants: p −= lr·√(1−b2ᵗ)/(1−b1ᵗ) · m / (√v + √(1−b2ᵗ)·eps).
      const scalars = new Map<DType, { stepSize: Tensor; epsHat: Tensor }>();
      const scalarsFor = (c: DType) => {
        let s = scalars.get(c);
        if (!s) {
          const [bc1, bc2] = biasCorrections([b1, b2], t, c);
          const sqrtBc2 = sqrt(bc2);
          s = { stepSize: mul(rate, div(sqrtBc2, bc1)), epsHat: mul(sqrtBc2, eps) };
          scalars.set(c, s);
        }
        return s;
      };
      const decay = !decoupled || weightDecay === 0
        ? 1
        : typeof rate === "number"
        ? 1 - rate * weightDecay
        : sub(1, mul(rate, weightDecay));
      const mapOn = deviceMaps();
      const newParams: Tensor[] = [];
      const newMu: Moment[] = [];
      const newNu: Moment[] = [];
      ps.forEach((p, i) => {
        const c = computeDtype(p.dtype);
        const { stepSize, epsHat } = scalarsFor(c);
        const mMap = mapOn(p.device, true);
        const vMap = mapOn(p.device, false);
        if (fused && c === "f32") {
          const u: Blockwise8bitUpdate = {
            kind: "adam",
            blockSize,
            l2: decoupled ? 0 : weightDecay,
            b1,
            b2,
            decay: decay !== 1,
          };
          const scalars = decay !== 1 ? [stepSize, epsHat, decay] : [stepSize, epsHat];
          const r = fusedUpdate(u, p, gs[i], [mus[i], nus[i]], [mMap, vMap], scalars);
          if (r) {
            newParams.push(r[0]);
            newMu.push(r[1]);
            newNu.push(r[2]);
            return;
          }
        }
        const pc = astype(p, c);
        let g = astype(gs[i], c);
        if (!decoupled && weightDecay !== 0) g = add(g, mul(pc, weightDecay));
        const m = add(mul(loadMoment(mus[i], p, mMap, blockSize, c), b1), mul(g, 1 - b1));
        const v = add(mul(loadMoment(nus[i], p, vMap, blockSize, c), b2), mul(square(g), 1 - b2));
        const ok = isFinite(v); // false where g is Inf/NaN or g² overflows
        let next = sub(pc, mul(stepSize, div(m, add(sqrt(v), epsHat))));
        if (decay !== 1) next = mul(next, decay); // after the step, as bitsandbytes
        newParams.push(astype(where(ok, next, pc), p.dtype));
        newMu.push(storeMoment(where(ok, m, 0), mus[i], mMap, blockSize));
        newNu.push(storeMoment(where(ok, v, 0), nus[i], vMap, blockSize));
      });
      return [treeOf(params, newParams) as P, {
        count: t,
        mu: treeOf(params, newMu),
        nu: treeOf(params, newNu),
      }];
    },
  };
}

function leavesOf(params: unknown): Tensor[] {
  return matchingLeaves("init", ["params"], params)[0];
}

/**
 * Adam with 8-bit block-wise moments (bitsandbytes `Adam8bit`): `m` as u8 codes of the signed
 * dynamic map, `v` of the unsigned one, each with an f32 absmax per block of `blockSize`
 * (default 256); tensors under `minSize` (default 4096) elements keep f32 moments. Per element:
 * `m = b1·m + (1−b1)·g`, `v = b2·v + (1−b2)·g²`, `p −= lr·√(1−b2ᵗ)/(1−b1ᵗ) · m/(√v + √(1−b2ᵗ)·eps)`
 * with `t = count + 1`, then `m` and `v` are requantized (momentum never changes sign). Weight
 * decay is L2 (`g += wd·p`), as `torch.optim.Adam` and nbit's `adam`; bitsandbytes' `Adam8bit`
 * decays decoupled instead, which is {@linkcode adamw8bit}.
 *
 * @example
 * ```ts
 * const opt = adam8bit({ lr: 1e-3 });
 * let s = opt.init(params);
 * [params, s] = opt.update(grads, s, params);
 * ```
 */
export function adam8bit(opts: Adam8bitOptions = {}): Optimizer<Adam8bitState> {
  return defineOptimizer(adam8bitLike("adam8bit", opts, false));
}

/**
 * AdamW with 8-bit block-wise moments (bitsandbytes `AdamW8bit`): the {@linkcode adam8bit}
 * step without L2, then decoupled decay `p *= 1 − lr·wd` (default wd 1e-2) applied after the
 * step, in bitsandbytes' order.
 *
 * @example
 * ```ts
 * const opt = adamw8bit({ lr: cosine(1e-3, 10_000), weightDecay: 0.05 });
 * ```
 */
export function adamw8bit(opts: Adam8bitOptions = {}): Optimizer<Adam8bitState> {
  return defineOptimizer(adam8bitLike("adamw8bit", opts, true));
}

// ---------------------------------------------------------------------------------------------
// SGD with momentum

/** Options of {@linkcode sgd8bit}. */
export interface Sgd8bitOptions extends Blockwise8bitOptions {
  /** Learning rate: a number or a schedule of the applied-update count. */
  lr: LearningRate;
  /** Momentum factor, > 0 (default 0.9); plain SGD keeps no state, use `sgd`. */
  momentum?: number;
  /** Coupled L2 weight decay: `g += weightDecay · p` (default 0). */
  weightDecay?: number;
}

/** The state of {@linkcode sgd8bit}. */
export interface Sgd8bitState {
  /** Applied updates so far (f32 scalar). */
  readonly count: Tensor;
  /** Momentum buffers shaped like the params: `{ codes, absmax }` (signed map) or f32. */
  readonly momentum: unknown;
}

/**
 * SGD with an 8-bit block-wise momentum buffer (bitsandbytes `SGD8bit`, dampening 0): `g += wd·p`;
 * `m = momentum·m + g` (the first step gives `m = g`); `p −= lr·m`; then `m` is requantized with
 * the signed dynamic map (its sign never flips). Tensors under `minSize` keep an f32 buffer.
 *
 * @example
 * ```ts
 * const opt = sgd8bit({ lr: 0.1, momentum: 0.9 });
 * let s = opt.init(params);
 * [params, s] = opt.update(grads, s, params);
 * ```
 */
export function sgd8bit(opts: Sgd8bitOptions): Optimizer<Sgd8bitState> {
  const {
    lr,
    momentum = 0.9,
    weightDecay = 0,
    blockSize = 256,
    minSize = 4096,
    fused = true,
  } = opts ?? {};
  checkLearningRate("sgd8bit", lr);
  checkNumber("sgd8bit", "momentum", momentum, 0, true);
  checkNumber("sgd8bit", "weightDecay", weightDecay, 0);
  checkBlockOptions("sgd8bit", blockSize, minSize);
  return defineOptimizer({
    init: (params) => ({
      count: initCount(params),
      momentum: treeOf(
        params,
        leavesOf(params).map((p) => initMoment(p, true, blockSize, minSize)),
      ),
    }),
    update<P>(grads: P, state: Sgd8bitState, params: P): [P, Sgd8bitState] {
      const [ps, gs] = matchingLeaves("sgd8bit", ["params", "grads"], params, grads);
      const bufs = momentsOf("sgd8bit", "state.momentum", params, state.momentum);
      const rate = learningRateAt(lr, state.count);
      const mapOn = deviceMaps();
      const newParams: Tensor[] = [];
      const newBufs: Moment[] = [];
      ps.forEach((p, i) => {
        const c = computeDtype(p.dtype);
        const map = mapOn(p.device, true);
        if (fused && c === "f32") {
          const u: Blockwise8bitUpdate = {
            kind: "sgd",
            blockSize,
            l2: weightDecay,
            b1: momentum,
            b2: 0,
            decay: false,
          };
          const r = fusedUpdate(u, p, gs[i], [bufs[i]], [map], [rate]);
          if (r) {
            newParams.push(r[0]);
            newBufs.push(r[1]);
            return;
          }
        }
        const pc = astype(p, c);
        let g = astype(gs[i], c);
        if (weightDecay !== 0) g = add(g, mul(pc, weightDecay));
        const m = add(mul(loadMoment(bufs[i], p, map, blockSize, c), momentum), g);
        const ok = isFinite(m);
        newParams.push(astype(where(ok, sub(pc, mul(m, rate)), pc), p.dtype));
        newBufs.push(storeMoment(where(ok, m, 0), bufs[i], map, blockSize));
      });
      return [treeOf(params, newParams) as P, {
        count: add(state.count, 1),
        momentum: treeOf(params, newBufs),
      }];
    },
  });
}
