/**
 * nbit's WebGPU backend against its JavaScript peers, on one WebGPU adapter in one process:
 *
 * 1. square matmul N×N×N (f32, f16) — nbit, TensorFlow.js (webgpu backend), jax-js (webgpu);
 * 2. one Adam train step of an MLP 784-512-512-10, batch 128, softmax cross-entropy, f32.
 *
 * Every library gets the same host data (inputs, initial weights, labels). Each measurement is
 * wrapped so a library that cannot run here is reported with its error message instead of
 * stopping the script.
 *
 * Timing. A matmul pass enqueues K independent products `C_i = A·B` (all K results kept alive,
 * since jax-js is lazy and would skip work whose result is freed) and ends with ONE sync: nbit
 * and tfjs read back the last result (their queues are in order); jax-js, lazy, is made to
 * dispatch each result (`gpuBuffer()`, no wait) and then waits once (`blockUntilReady` on
 * the last). K is calibrated so a
 * pass takes about `--target-ms`; after a warm pass of the same K, `--reps` passes are timed
 * round-robin across the libraries (so load from other processes hits all alike) and the
 * median is reported as GFLOP/s = 2·N³·K / seconds. Each result is checked against a host
 * f64 dot product on 16 entries. A train pass runs S steps and reads the loss once; ms/step
 * is the median over `--reps` passes, after `--warmup` steps. S (`--steps`, default auto:
 * passes of about 8 × `--target-ms` for the fastest library, 10 ≤ S ≤ 500) is the same for all
 * libraries, which start from the same weights, so their reported losses should agree.
 *
 * Run (software adapter): `XDG_RUNTIME_DIR=/tmp DENO_WEBGPU_BACKEND=vulkan deno run -A
 * bench/webgpu_peers.ts --sizes 256,512`. See docs/webgpu-bench.md.
 *
 * @module
 */
import type { WebGPUBackend } from "../lib/backend/webgpu/webgpu.ts";

type NB = typeof import("../mod.ts");
type TF = typeof import("@tensorflow/tfjs");
type JAX = typeof import("@jax-js/jax");
type JArray = import("@jax-js/jax").Array;
type TFTensor = import("@tensorflow/tfjs").Tensor;
type F32 = Float32Array<ArrayBuffer>;

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  sizes: number[];
  dtypes: MatDType[];
  libs: LibName[];
  json: boolean;
  matmul: boolean;
  train: boolean;
  targetMs: number;
  reps: number;
  /** Train steps per pass; 0 = auto. */
  steps: number;
  warmup: number;
  maxMiB: number;
  timeoutS: number;
}

type MatDType = "f32" | "f16";
type LibName = "nbit" | "nbit-jit" | "tfjs" | "jax-js";
const LIBS: readonly LibName[] = ["nbit", "nbit-jit", "tfjs", "jax-js"];

const USAGE = `usage: deno run -A bench/webgpu_peers.ts [options]
  --sizes 256,512,1024   matmul sizes N (default 256,512,1024)
  --dtypes f32,f16       matmul dtypes (default f32,f16)
  --libs nbit,tfjs,jax-js  libraries to run (default all)
  --json                 print the results as JSON instead of Markdown
  --no-matmul / --no-train  skip a part
  --target-ms 250        wall time one timed matmul pass aims at (K is calibrated to it)
  --reps 5               timed passes per measurement, round-robin over libraries (median)
  --steps auto           train steps per timed pass (auto: a pass of ~8×target-ms)
  --warmup 3             untimed train steps first (at least 2)
  --max-mib 1024         cap on the memory the K kept matmul results may take
  --timeout 300          seconds before one measurement is abandoned`;

function parseArgs(args: string[]): Options {
  const o: Options = {
    sizes: [256, 512, 1024],
    dtypes: ["f32", "f16"],
    libs: [...LIBS],
    json: false,
    matmul: true,
    train: true,
    targetMs: 250,
    reps: 5,
    steps: 0,
    warmup: 3,
    maxMiB: 1024,
    timeoutS: 300,
  };
  const num = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min) {
      throw new Error(`${flag} needs a number ≥ ${min}, got ${JSON.stringify(v)}\n${USAGE}`);
    }
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.split("=")[1]] : [
      a,
      undefined,
    ];
    const value = () => inline ?? args[++i];
    switch (flag) {
      case "--sizes": {
        const v = value() ?? "";
        o.sizes = v.split(",").map((s) => num("--sizes", s.trim(), 1));
        if (o.sizes.some((n) => !Number.isInteger(n))) throw new Error(`--sizes: integers only`);
        break;
      }
      case "--dtypes": {
        const v = (value() ?? "").split(",").map((s) => s.trim());
        for (const d of v) {
          if (d !== "f32" && d !== "f16") throw new Error(`--dtypes: f32 or f16, got ${d}`);
        }
        o.dtypes = v as MatDType[];
        break;
      }
      case "--libs": {
        const v = (value() ?? "").split(",").map((s) => s.trim());
        for (const l of v) {
          if (!LIBS.includes(l as LibName)) {
            throw new Error(`--libs: one of ${LIBS.join(", ")}, got ${l}`);
          }
        }
        o.libs = v as LibName[];
        break;
      }
      case "--json":
        o.json = true;
        break;
      case "--no-matmul":
        o.matmul = false;
        break;
      case "--no-train":
        o.train = false;
        break;
      case "--target-ms":
        o.targetMs = num(flag, value(), 1);
        break;
      case "--reps":
        o.reps = Math.round(num(flag, value(), 1));
        break;
      case "--steps": {
        const v = value();
        o.steps = v === "auto" ? 0 : Math.round(num(flag, v, 1));
        break;
      }
      case "--warmup":
        o.warmup = Math.round(num(flag, value(), 2));
        break;
      case "--max-mib":
        o.maxMiB = num(flag, value(), 1);
        break;
      case "--timeout":
        o.timeoutS = num(flag, value(), 1);
        break;
      case "-h":
      case "--help":
        console.log(USAGE);
        Deno.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${a}\n${USAGE}`);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const log = (msg: string) => console.error(`[webgpu_peers] ${msg}`);

function errText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`.split("\n").slice(0, 4).join(" ");
  return String(e);
}

async function withTimeout<T>(p: Promise<T>, seconds: number, what: string): Promise<T> {
  let id: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    id = setTimeout(() => reject(new Error(`${what} timed out after ${seconds} s`)), seconds * 1e3);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(id);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A seeded host generator (xorshift32), uniform in [0, 1) with 32-bit resolution. */
function hostRandom(seed: number): () => number {
  let x = (Math.imul(seed + 1, 0x9e3779b1) | 1) >>> 0;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

function uniformArray(n: number, seed: number, lo: number, hi: number): F32 {
  const r = hostRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

function normalArray(n: number, seed: number, std: number): F32 {
  const r = hostRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - r(), v = r();
    const rad = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = rad * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = rad * Math.sin(2 * Math.PI * v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Results

interface MatmulResult {
  lib: LibName;
  n: number;
  dtype: MatDType;
  gflops?: number;
  /** Matmuls per timed pass and the passes' GFLOP/s. */
  k?: number;
  passes?: number[];
  /** Max error over 16 checked entries, relative to sqrt(Σ (a_ik·b_kj)²). */
  checkErr?: number;
  checkOk?: boolean;
  error?: string;
}

interface TrainResult {
  lib: LibName;
  msPerStep?: number;
  passes?: number[];
  firstLoss?: number;
  lastLoss?: number;
  steps?: number;
  error?: string;
}

interface LibInfo {
  lib: LibName;
  version: string;
  adapter?: string;
  error?: string;
  /** Live allocations the library reports after every measurement freed its tensors. */
  leftover?: string;
}

// ---------------------------------------------------------------------------------------------
// The libraries behind one interface

interface Lib<T> {
  readonly name: LibName;
  /** Undefined when the dtype works, else why not. */
  unsupported(dtype: MatDType): Promise<string | undefined>;
  /** Upload an n×n f32 host matrix as `dtype` and wait until it is on the device. */
  upload(data: F32, n: number, dtype: MatDType): Promise<T>;
  matmul(a: T, b: T): T;
  /** One sync after a pass: all of `outs` are computed when it resolves. */
  finish(outs: T[]): Promise<void>;
  /** Read `x` back as f32 values (does not free it). */
  read(x: T): Promise<Float32Array>;
  free(xs: T[]): void;
  /** A train step on the device; see {@linkcode TrainSetup}. */
  train(setup: TrainSetup): Promise<Trainer>;
  /** What is still allocated after everything was freed (a leak check), if the library says. */
  leftover(): string | undefined;
}

/** The MLP problem, as host data shared by all libraries. */
interface TrainSetup {
  sizes: number[];
  batch: number;
  /** Weights `[in, out]` row-major per layer; biases start at zero. */
  w: F32[];
  x: F32;
  y: Int32Array<ArrayBuffer>;
  lr: number;
}

interface Trainer {
  /** Enqueue one step (nothing read back). */
  step(): void;
  /** Read the last step's loss (the one sync). */
  loss(): Promise<number>;
  dispose(): void;
}

const B1 = 0.9, B2 = 0.999, EPS = 1e-8;

/** nbit; with `jit`, its train step is compiled with `jit` (its matmuls are the same kernels). */
export async function nbitLib(jit = false): Promise<[Lib<import("../mod.ts").Tensor>, LibInfo]> {
  const nb: NB = await import("../mod.ts");
  const { webgpu } = await import("../lib/backend/webgpu/webgpu.ts");
  const gpu: WebGPUBackend = await webgpu({ powerPreference: "high-performance" });
  type T = import("../mod.ts").Tensor;
  const lib: Lib<T> = {
    name: jit ? "nbit-jit" : "nbit",
    // f16 always runs: packed storage, with native f16 math where shader-f16 exists.
    unsupported: () => Promise.resolve(undefined),
    async upload(data, n, dtype) {
      const t = nb.tensor(data, { shape: [n, n], dtype, device: gpu });
      await gpu.sync();
      return t;
    },
    matmul: (a, b) => nb.matmul(a, b),
    async finish(outs) {
      await outs[outs.length - 1].data();
    },
    async read(x) {
      return Float32Array.from(await x.data() as ArrayLike<number>);
    },
    free: (xs) => nb.dispose(xs),
    train(s) {
      const device = gpu;
      const params = {
        layers: s.w.map((w, i) => ({
          w: nb.tensor(w, { shape: [s.sizes[i], s.sizes[i + 1]], device }),
          b: nb.zeros([s.sizes[i + 1]], { device }),
        })),
      };
      type P = typeof params;
      const batch = {
        x: nb.tensor(s.x, { shape: [s.batch, s.sizes[0]], device }),
        y: nb.tensor(s.y, { shape: [s.batch], dtype: "i32", device }),
      };
      const base = nb.trainStep<P, typeof batch>({
        loss: (p, b) => nb.nn.crossEntropy(nb.nn.mlp(p, b.x), b.y),
        optimizer: nb.optim.adam({ lr: s.lr, b1: B1, b2: B2, eps: EPS }),
      });
      const step = jit ? nb.jit(base) : base;
      let state = step.init(params);
      let last: T | undefined;
      return Promise.resolve({
        step() {
          const [next, metrics] = step(state, batch);
          nb.disposeReplaced(state, next);
          state = next;
          for (const [k, v] of Object.entries(metrics)) if (k !== "loss") v.dispose();
          last?.dispose();
          last = metrics.loss;
        },
        async loss() {
          if (!last) throw new Error("no step yet");
          return await last.item();
        },
        dispose() {
          nb.dispose([state, last, batch]);
        },
      });
    },
    leftover() {
      const m = nb.memory(gpu);
      return `${m.tensors} tensors, ${m.bytes} bytes live (peak ${m.peakBytes} bytes)`;
    },
  };
  return [lib, { lib: jit ? "nbit-jit" : "nbit", version: "this tree", adapter: gpu.adapter }];
}

async function tfjsLib(): Promise<[Lib<TFTensor>, LibInfo]> {
  const tf: TF = await import("@tensorflow/tfjs");
  await import("@tensorflow/tfjs-backend-webgpu");
  // tfjs reports a failed backend init only on the console: keep those lines for the report.
  const said: string[] = [];
  const { warn, error } = console;
  console.warn = console.error = (...a: unknown[]) => void said.push(a.map(String).join(" "));
  let ok: boolean;
  try {
    ok = await tf.setBackend("webgpu");
    await tf.ready();
  } finally {
    Object.assign(console, { warn, error });
  }
  if (!ok || tf.getBackend() !== "webgpu") {
    throw new Error(
      `tf.setBackend("webgpu") returned ${ok}; backend is ${tf.getBackend()} ` +
        `(registered: ${Object.keys(tf.engine().registryFactory).join(", ")}); tfjs said: ` +
        [...new Set(said.map((l) => l.split("\n")[0]))].join(" / "),
    );
  }
  for (const l of said) log(`tfjs: ${l.split("\n")[0]}`);
  const backend = tf.backend() as unknown as { device?: GPUDevice };
  const info = (backend.device as (GPUDevice & { adapterInfo?: GPUAdapterInfo }) | undefined)
    ?.adapterInfo;
  const lib: Lib<TFTensor> = {
    name: "tfjs",
    unsupported(dtype) {
      if (dtype === "f32") return Promise.resolve(undefined);
      // Ask tfjs rather than assume: it has no float16 dtype (DataType is float32|int32|…).
      try {
        const t = tf.tensor1d([1, 2]);
        try {
          tf.cast(t, "float16" as unknown as "float32").dispose();
        } finally {
          t.dispose();
        }
        return Promise.resolve(undefined);
      } catch (e) {
        return Promise.resolve(`tfjs has no f16 dtype (${errText(e)})`);
      }
    },
    async upload(data, n) {
      const t = tf.tensor2d(data, [n, n], "float32");
      // Move it to the GPU now (tfjs uploads lazily): an op on it, then a readback.
      const probe = tf.sum(t);
      await probe.data();
      probe.dispose();
      return t;
    },
    matmul: (a, b) => tf.matMul(a, b),
    async finish(outs) {
      await outs[outs.length - 1].data();
    },
    async read(x) {
      return Float32Array.from(await x.data() as ArrayLike<number>);
    },
    free: (xs) => tf.dispose(xs),
    train(s) {
      const L = s.w.length;
      // tf.variable keeps its initial tensor's data; free that tensor so dispose() frees all.
      const asVariable = (t: TFTensor) => {
        const v = tf.variable(t);
        t.dispose();
        return v;
      };
      const ws = s.w.map((w, i) => asVariable(tf.tensor2d(w, [s.sizes[i], s.sizes[i + 1]])));
      const bs = s.sizes.slice(1).map((n) => asVariable(tf.zeros([n])));
      const x = tf.tensor2d(s.x, [s.batch, s.sizes[0]]);
      const labels = tf.tensor1d(s.y, "int32");
      const y = tf.oneHot(labels, s.sizes[L]);
      labels.dispose();
      const opt = tf.train.adam(s.lr, B1, B2, EPS);
      const f = () => {
        let h: TFTensor = x;
        for (let i = 0; i < L; i++) {
          h = tf.add(tf.matMul(h, ws[i]), bs[i]);
          if (i < L - 1) h = tf.relu(h);
        }
        return tf.losses.softmaxCrossEntropy(y, h) as import("@tensorflow/tfjs").Scalar;
      };
      let last: TFTensor | null = null;
      return Promise.resolve({
        step() {
          const cost = opt.minimize(f, true, [...ws, ...bs]);
          last?.dispose();
          last = cost;
        },
        async loss() {
          if (!last) throw new Error("no step yet");
          return (await last.data())[0];
        },
        dispose() {
          last?.dispose();
          tf.dispose([...ws, ...bs, x, y]);
          opt.dispose();
        },
      });
    },
    leftover() {
      const m = tf.memory();
      return `${m.numTensors} tensors, ${m.numBytes} bytes live`;
    },
  };
  return [lib, {
    lib: "tfjs",
    version: `${tf.version.tfjs}`,
    adapter: info?.description || (info ? `vendor ${info.vendor}` : undefined),
  }];
}

export async function jaxLib(): Promise<[Lib<JArray>, LibInfo]> {
  const jax: JAX = await import("@jax-js/jax");
  const np = jax.numpy;
  const started = await jax.init("webgpu");
  if (!started.includes("webgpu")) {
    throw new Error(
      `jax.init("webgpu") did not start webgpu (started: ${started.join(", ") || "none"}); ` +
        "jax-js needs navigator.gpu, an adapter and a device",
    );
  }
  jax.defaultDevice("webgpu");
  const device = jax.getWebGPUDevice() as GPUDevice & { adapterInfo?: GPUAdapterInfo };
  const lib: Lib<JArray> = {
    name: "jax-js",
    async unsupported(dtype) {
      if (dtype === "f32") return undefined;
      // Ask jax-js rather than assume (it needs shader-f16 for float16 on WebGPU).
      try {
        const t = np.array([1, 2]).astype(np.float16).mul(2);
        await t.data();
        return undefined;
      } catch (e) {
        return `jax-js float16 failed on this device (${errText(e)})`;
      }
    },
    async upload(data, n, dtype) {
      let a = np.array(data).reshape([n, n]);
      if (dtype === "f16") a = a.astype(np.float16);
      await a.blockUntilReady();
      return a;
    },
    matmul: (a, b) => np.matmul(a.ref, b.ref),
    async finish(outs) {
      // jax-js is lazy: only a sync of an array dispatches its pending work. gpuBuffer()
      // dispatches without waiting, so dispatch every product, then wait once on the last
      // (one queue, in order) instead of K blockUntilReady round trips.
      for (const x of outs.slice(0, -1)) await x.ref.gpuBuffer();
      await outs[outs.length - 1].blockUntilReady();
    },
    async read(x) {
      return Float32Array.from(await x.ref.data() as ArrayLike<number>);
    },
    free(xs) {
      for (const x of xs) x.dispose();
    },
    train(s) {
      const L = s.w.length;
      type P = { w: JArray[]; b: JArray[] };
      const params: P = {
        w: s.w.map((w, i) => np.array(w).reshape([s.sizes[i], s.sizes[i + 1]])),
        b: s.sizes.slice(1).map((n) => np.zeros([n])),
      };
      const x = np.array(s.x).reshape([s.batch, s.sizes[0]]);
      const y = jax.nn.oneHot(np.array(s.y, { dtype: np.int32 }), s.sizes[L]);
      const lossFn = (p: P, xb: JArray, yb: JArray): JArray => {
        let h = xb;
        for (let i = 0; i < L; i++) {
          h = np.matmul(h, p.w[i]).add(p.b[i]);
          if (i < L - 1) h = jax.nn.relu(h);
        }
        // Softmax cross-entropy, mean over the batch.
        return jax.nn.logSoftmax(h, -1).mul(yb).sum().mul(-1 / s.batch);
      };
      // Adam (PyTorch/optax rule) by hand: jax-js ships no optimizer in @jax-js/jax and
      // @jax-js/optax is not on npm. c1 = lr/(1−b1^t), c2 = 1/(1−b2^t) come from the host.
      const update = (p: JArray, g: JArray, m: JArray, v: JArray, c1: JArray, c2: JArray) => {
        const m2 = m.mul(B1).add(g.ref.mul(1 - B1));
        const v2 = v.mul(B2).add(g.ref.mul(g).mul(1 - B2));
        const p2 = p.sub(m2.ref.mul(c1).div(np.sqrt(v2.ref.mul(c2)).add(EPS)));
        return [p2, m2, v2] as const;
      };
      const stepFn = jax.jit(
        (p: P, m: P, v: P, c1: JArray, c2: JArray, xb: JArray, yb: JArray) => {
          const [loss, g] = jax.valueAndGrad(lossFn)(jax.tree.ref(p), xb, yb);
          const out = {
            p: { w: [], b: [] } as P,
            m: { w: [], b: [] } as P,
            v: { w: [], b: [] } as P,
          };
          for (const key of ["w", "b"] as const) {
            for (let i = 0; i < L; i++) {
              const [p2, m2, v2] = update(
                p[key][i],
                g[key][i],
                m[key][i],
                v[key][i],
                c1.ref,
                c2.ref,
              );
              out.p[key].push(p2);
              out.m[key].push(m2);
              out.v[key].push(v2);
            }
          }
          c1.dispose();
          c2.dispose();
          return [out.p, out.m, out.v, loss];
        },
      );
      const zerosLike = (t: P): P => ({
        w: t.w.map((a) => np.zeros(a.shape)),
        b: t.b.map((a) => np.zeros(a.shape)),
      });
      let p = params, m = zerosLike(params), v = zerosLike(params);
      let last: JArray | undefined;
      let t = 0;
      return Promise.resolve({
        step() {
          t++;
          const c1 = np.array(s.lr / (1 - B1 ** t)), c2 = np.array(1 / (1 - B2 ** t));
          const out = stepFn(p, m, v, c1, c2, x.ref, y.ref) as unknown as [P, P, P, JArray];
          [p, m, v] = out;
          last?.dispose();
          last = out[3];
        },
        async loss() {
          if (!last) throw new Error("no step yet");
          return (await last.ref.data())[0];
        },
        dispose() {
          jax.tree.dispose([p, m, v, x, y]);
          last?.dispose();
          stepFn.dispose();
        },
      });
    },
    leftover: () => undefined, // jax-js has no public live-memory count
  };
  const info = device.adapterInfo;
  return [lib, {
    lib: "jax-js",
    version: "",
    adapter: info?.description || (info ? `vendor ${info.vendor}` : undefined),
  }];
}

// ---------------------------------------------------------------------------------------------
// Measurements

function f16Round(a: F32): F32 {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = Math.f16round(a[i]);
  return out;
}

/** Max over 16 entries of |c − ref| / sqrt(Σ (a_ik b_kj)²), with ref in f64. */
function checkMatmul(a: Float32Array, b: Float32Array, c: Float32Array, n: number): number {
  let worst = 0;
  const r = hostRandom(99);
  for (let s = 0; s < 16; s++) {
    const i = Math.floor(r() * n), j = Math.floor(r() * n);
    let ref = 0, scale = 0;
    for (let k = 0; k < n; k++) {
      const t = a[i * n + k] * b[k * n + j];
      ref += t;
      scale += t * t;
    }
    const e = Math.abs(c[i * n + j] - ref) / Math.sqrt(scale || 1);
    worst = Number.isNaN(e) ? Infinity : Math.max(worst, e);
  }
  return worst;
}

/** A prepared measurement: `pass()` times one pass and records it; `close()` frees it. */
interface Runner {
  readonly name: LibName;
  pass(): Promise<void>;
  close(): void;
}

/** Upload, check, calibrate K and warm up one library's matmul; the passes come later. */
async function prepareMatmul<T>(
  lib: Lib<T>,
  res: MatmulResult,
  o: Options,
): Promise<Runner | undefined> {
  const { n, dtype } = res;
  const why = await lib.unsupported(dtype);
  if (why) {
    res.error = `n/a: ${why}`;
    return undefined;
  }
  let ha = uniformArray(n * n, 1000 + n, -1, 1), hb = uniformArray(n * n, 2000 + n, -1, 1);
  if (dtype === "f16") [ha, hb] = [f16Round(ha), f16Round(hb)];
  const a = await lib.upload(ha, n, dtype);
  const b = await lib.upload(hb, n, dtype);
  const close = () => lib.free([a, b]);
  try {
    // Correctness (and first compile).
    const c0 = lib.matmul(a, b);
    await lib.finish([c0]);
    res.checkErr = checkMatmul(ha, hb, await lib.read(c0), n);
    res.checkOk = res.checkErr <= (dtype === "f32" ? 1e-3 : 1e-2);
    lib.free([c0]);

    const bytes = n * n * (dtype === "f32" ? 4 : 2);
    const kMax = Math.max(1, Math.min(2000, Math.floor(o.maxMiB * 2 ** 20 / bytes)));
    const pass = async (k: number): Promise<number> => {
      const outs: T[] = [];
      const t0 = performance.now();
      for (let i = 0; i < k; i++) outs.push(lib.matmul(a, b));
      await lib.finish(outs);
      const ms = performance.now() - t0;
      lib.free(outs);
      return ms;
    };
    // Calibrate K to about target-ms per pass.
    let k = 1;
    let ms = await pass(k);
    while (ms < o.targetMs / 8 && k < kMax) {
      k = Math.min(kMax, k * 4);
      ms = await pass(k);
    }
    ms = Math.min(ms, await pass(k)); // a second try, in case the first met a busy moment
    k = Math.max(
      Math.min(2, kMax),
      Math.min(kMax, Math.round(k * o.targetMs / Math.max(ms, 1e-3))),
    );
    await pass(k); // warm pass at the final K (fills buffer pools)
    res.k = k;
    res.passes = [];
    return {
      name: lib.name,
      async pass() {
        const t = await pass(k);
        res.passes!.push(2 * n ** 3 * k / (t / 1e3) / 1e9);
        res.gflops = median(res.passes!);
      },
      close,
    };
  } catch (e) {
    close();
    throw e;
  }
}

export function trainSetup(): TrainSetup {
  const sizes = [784, 512, 512, 10];
  const batch = 128;
  const w = sizes.slice(1).map((out, i) =>
    normalArray(sizes[i] * out, 300 + i, Math.sqrt(2 / sizes[i]))
  );
  const x = uniformArray(batch * sizes[0], 400, 0, 1);
  const r = hostRandom(500);
  const y = Int32Array.from({ length: batch }, () => Math.floor(r() * 10));
  return { sizes, batch, w, x, y, lr: 1e-3 };
}

/** Build one library's train step, read the step-1 loss and run the warm-up steps. */
async function prepareTrain<T>(
  lib: Lib<T>,
  res: TrainResult,
  o: Options,
  plan: { steps: number },
): Promise<{ runner: Runner; estimateMs: number }> {
  const tr = await lib.train(trainSetup());
  let estimateMs: number;
  try {
    tr.step();
    res.firstLoss = await tr.loss();
    const t0 = performance.now();
    for (let i = 1; i < o.warmup; i++) tr.step();
    await tr.loss();
    estimateMs = (performance.now() - t0) / (o.warmup - 1);
    res.steps = o.warmup;
    res.passes = [];
  } catch (e) {
    tr.dispose();
    throw e;
  }
  const runner: Runner = {
    name: lib.name,
    async pass() {
      const t0 = performance.now();
      for (let i = 0; i < plan.steps; i++) tr.step();
      const loss = await tr.loss();
      res.passes!.push((performance.now() - t0) / plan.steps);
      res.lastLoss = loss;
      res.steps! += plan.steps;
      res.msPerStep = median(res.passes!);
    },
    close: () => tr.dispose(),
  };
  return { runner, estimateMs };
}

/**
 * Run the timed passes round-robin (rep r starts at library r mod count), so that load from
 * other processes falls on every library alike. A library whose pass fails or times out is
 * dropped with its error recorded.
 */
async function interleave(
  runners: { runner: Runner; res: { error?: string } }[],
  o: Options,
  what: string,
): Promise<void> {
  let live = [...runners];
  for (let r = 0; r < o.reps && live.length; r++) {
    const order = live.map((_, i) => live[(i + r) % live.length]);
    for (const x of order) {
      try {
        await withTimeout(x.runner.pass(), o.timeoutS, `${x.runner.name} ${what} pass`);
      } catch (e) {
        x.res.error = errText(e);
        live = live.filter((y) => y !== x);
      }
    }
  }
  for (const x of runners) {
    try {
      x.runner.close();
    } catch (e) {
      log(`${x.runner.name} ${what}: freeing failed: ${errText(e)}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Report

interface Report {
  date: string;
  deno: string;
  env: Record<string, string>;
  adapter: Record<string, unknown> | { error: string };
  libs: LibInfo[];
  matmul: MatmulResult[];
  train: TrainResult[];
  unhandled: string[];
  /** 1/5/15-minute load averages at the start and at the end (other processes skew timings). */
  loadavg: number[][];
  /** Train steps per timed pass (the resolved `--steps`). */
  trainSteps?: number;
  options: Options;
}

const fmt = (x: number | undefined) =>
  x === undefined ? "—" : x.toFixed(Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2);
const ratio = (x: number | undefined) => x === undefined ? "—" : `${x.toFixed(2)}×`;

function markdown(r: Report): string {
  const lines: string[] = [];
  const notes: string[] = [];
  const note = (s: string) => {
    if (!notes.includes(s)) notes.push(s);
    return `[${notes.indexOf(s) + 1}]`;
  };
  const ad = r.adapter as Record<string, unknown>;
  lines.push(`## WebGPU: nbit and its peers (${r.date})`, "");
  if ("error" in r.adapter) lines.push(`Adapter: none — ${r.adapter.error}`);
  else {
    lines.push(
      `Adapter: vendor \`${ad.vendor}\`, architecture \`${ad.architecture}\`, device ` +
        `\`${ad.device}\`, description \`${ad.description}\`, fallback adapter: ` +
        `${ad.isFallbackAdapter}, shader-f16: ${ad.shaderF16 ? "yes" : "no"}; Deno ${r.deno}` +
        `${Object.entries(r.env).map(([k, v]) => `, ${k}=${v}`).join("")}.`,
    );
  }
  const la = (x: number[] | undefined) => x?.map((v) => v.toFixed(2)).join(" ") ?? "?";
  lines.push(
    "",
    `Load average (1/5/15 min) at start ${la(r.loadavg[0])}, at end ${la(r.loadavg.at(-1))} ` +
      `on ${navigator.hardwareConcurrency} CPU threads.`,
    "",
  );
  for (const l of r.libs) {
    lines.push(
      `- ${l.lib} ${l.version}${l.adapter ? ` — device on \`${l.adapter}\`` : ""}` +
        `${l.error ? ` — could not start: ${l.error}` : ""}` +
        `${l.leftover ? `; left allocated at the end: ${l.leftover}` : ""}`,
    );
  }
  lines.push("");
  const cell = (x: { error?: string } | undefined, v: string, bad?: boolean) => {
    if (!x) return "not run";
    if (x.error) {
      return x.error.startsWith("n/a") ? `n/a ${note(x.error)}` : `error ${note(x.error)}`;
    }
    return bad ? `${v} ✗${note("wrong result (see check error in JSON)")}` : v;
  };
  if (r.matmul.length) {
    lines.push(
      "### matmul N×N×N, GFLOP/s (higher is better)",
      "",
      `Median of ${r.options.reps} passes, run round-robin across libraries; a pass = K ` +
        "matmuls enqueued, then one sync. " +
        "Ratios compare nbit with the faster peer and with each peer (>1: nbit faster).",
      "",
      "| N | dtype | nbit | tfjs | jax-js | K (nbit/tfjs/jax-js) | nbit ÷ best peer | " +
        "nbit ÷ tfjs | nbit ÷ jax-js |",
      "|---:|:---|---:|---:|---:|:---|---:|---:|---:|",
    );
    const keys = [...new Set(r.matmul.map((m) => `${m.n}|${m.dtype}`))];
    for (const key of keys) {
      const [n, dtype] = key.split("|");
      const get = (lib: LibName) =>
        r.matmul.find((m) => m.lib === lib && `${m.n}|${m.dtype}` === key);
      const nbit = get("nbit"), tfjs = get("tfjs"), jaxjs = get("jax-js");
      const ok = (m?: MatmulResult) => (m?.gflops !== undefined ? m.gflops : undefined);
      const peers = [ok(tfjs), ok(jaxjs)].filter((x): x is number => x !== undefined);
      const best = peers.length ? Math.max(...peers) : undefined;
      const nv = ok(nbit);
      const div = (p?: number) => (nv !== undefined && p !== undefined ? nv / p : undefined);
      lines.push(
        `| ${n} | ${dtype} | ${cell(nbit, fmt(nv), nbit?.checkOk === false)} | ` +
          `${cell(tfjs, fmt(ok(tfjs)), tfjs?.checkOk === false)} | ` +
          `${cell(jaxjs, fmt(ok(jaxjs)), jaxjs?.checkOk === false)} | ` +
          `${[nbit, tfjs, jaxjs].map((m) => m?.k ?? "—").join("/")} | ${ratio(div(best))} | ` +
          `${ratio(div(ok(tfjs)))} | ${ratio(div(ok(jaxjs)))} |`,
      );
    }
    lines.push("");
  }
  if (r.train.length) {
    lines.push(
      "### Train step: MLP 784-512-512-10, batch 128, Adam, softmax cross-entropy, f32",
      "",
      `ms/step (lower is better): median of ${r.options.reps} passes of ${r.trainSteps} ` +
        "steps (round-robin across libraries, after " +
        `${r.options.warmup} warm-up steps), each pass ending with one loss readback. ` +
        "Same initial weights and batch for " +
        "all, so the losses should agree. Ratio = peer ms ÷ nbit ms (>1: nbit faster).",
      "",
      "| library | ms/step | loss at step 1 | loss at last step (step #) | nbit speed ÷ this |",
      "|:---|---:|---:|---:|---:|",
    );
    const nb = r.train.find((t) => t.lib === "nbit")?.msPerStep;
    for (const t of r.train) {
      lines.push(
        `| ${t.lib} | ${cell(t, fmt(t.msPerStep))} | ${
          t.firstLoss === undefined ? "—" : t.firstLoss.toFixed(5)
        } | ` +
          `${t.lastLoss === undefined ? "—" : `${t.lastLoss.toFixed(5)} (${t.steps})`} | ` +
          `${
            t.lib === "nbit"
              ? (t.msPerStep ? "1.00×" : "—")
              : ratio(nb && t.msPerStep ? t.msPerStep / nb : undefined)
          } |`,
      );
    }
    const peers = r.train.filter((t) => !t.lib.startsWith("nbit") && t.msPerStep !== undefined);
    const jitMs = r.train.find((t) => t.lib === "nbit-jit")?.msPerStep;
    if (peers.length) {
      const best = peers.reduce((a, b) => (a.msPerStep! <= b.msPerStep! ? a : b));
      for (const [name, ms] of [["nbit", nb], ["nbit-jit", jitMs]] as const) {
        if (!ms) continue;
        lines.push(
          "",
          `${name} ÷ best peer (${best.lib}), ms/step: ${(ms / best.msPerStep!).toFixed(2)} ` +
            `(speed: ${(best.msPerStep! / ms).toFixed(2)}×).`,
        );
      }
    }
    lines.push("");
  }
  for (const u of r.unhandled) note(`unhandled rejection: ${u}`);
  if (notes.length) {
    lines.push("Notes:", "");
    notes.forEach((s, i) => lines.push(`${i + 1}. ${s.replaceAll("|", "\\|")}`));
    lines.push("");
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Main

async function adapterInfo(): Promise<Report["adapter"]> {
  const gpu = (globalThis.navigator as { gpu?: GPU }).gpu;
  if (!gpu) return { error: "navigator.gpu is missing in this runtime" };
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return { error: "navigator.gpu.requestAdapter() returned null" };
  const i = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  return {
    vendor: i.vendor,
    architecture: i.architecture,
    device: i.device,
    description: i.description,
    isFallbackAdapter: i.isFallbackAdapter,
    shaderF16: adapter.features.has("shader-f16"),
  };
}

async function main() {
  const o = parseArgs(Deno.args);
  const unhandled: string[] = [];
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    unhandled.push(errText(e.reason));
    log(`unhandled rejection: ${errText(e.reason)}`);
  });
  const env: Record<string, string> = {};
  for (const k of ["DENO_WEBGPU_BACKEND", "DENO_WEBGPU_POWER_PREFERENCE"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  const report: Report = {
    date: new Date().toISOString().slice(0, 16).replace("T", " "),
    deno: Deno.version.deno,
    env,
    adapter: await adapterInfo().catch((e) => ({ error: errText(e) })),
    libs: [],
    matmul: [],
    train: [],
    unhandled,
    loadavg: [Deno.loadavg()],
    options: o,
  };
  log(`adapter: ${JSON.stringify(report.adapter)}`);
  let versions: Record<string, string> = {};
  try {
    const cfg = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
    versions = cfg.imports ?? {};
  } catch { /* versions stay unknown */ }

  const starters: Record<LibName, () => Promise<[Lib<unknown>, LibInfo]>> = {
    "nbit": nbitLib as () => Promise<[Lib<unknown>, LibInfo]>,
    "nbit-jit": (() => nbitLib(true)) as () => Promise<[Lib<unknown>, LibInfo]>,
    "tfjs": tfjsLib as () => Promise<[Lib<unknown>, LibInfo]>,
    "jax-js": jaxLib as () => Promise<[Lib<unknown>, LibInfo]>,
  };
  const pkg: Record<LibName, string> = {
    "nbit": "(this tree)",
    "nbit-jit": "(this tree)",
    "tfjs": `${versions["@tensorflow/tfjs"] ?? "@tensorflow/tfjs"} + ` +
      `${versions["@tensorflow/tfjs-backend-webgpu"] ?? "@tensorflow/tfjs-backend-webgpu"}`,
    "jax-js": versions["@jax-js/jax"] ?? "@jax-js/jax",
  };
  const libs: Lib<unknown>[] = [];
  for (const name of o.libs) {
    log(`starting ${name}`);
    try {
      const [lib, info] = await withTimeout(starters[name](), o.timeoutS, `${name} start`);
      libs.push(lib);
      report.libs.push({ ...info, version: pkg[name] });
    } catch (e) {
      log(`${name} could not start: ${errText(e)}`);
      report.libs.push({ lib: name, version: pkg[name], error: errText(e) });
    }
  }
  const failed = (name: LibName) => report.libs.find((l) => l.lib === name)?.error;

  if (o.matmul) {
    for (const n of o.sizes) {
      for (const dtype of o.dtypes) {
        const what = `matmul ${n} ${dtype}`;
        const runners: { runner: Runner; res: MatmulResult }[] = [];
        const results: MatmulResult[] = [];
        for (const name of o.libs.filter((l) => l !== "nbit-jit")) { // same kernels as nbit
          const res: MatmulResult = { lib: name, n, dtype };
          results.push(res);
          const lib = libs.find((l) => l.name === name);
          if (!lib) {
            res.error = `could not start: ${failed(name)}`;
            continue;
          }
          try {
            const runner = await withTimeout(prepareMatmul(lib, res, o), o.timeoutS, what);
            if (runner) runners.push({ runner, res });
          } catch (e) {
            res.error = errText(e);
          }
        }
        await interleave(runners, o, what);
        for (const res of results) {
          log(
            `${what} ${res.lib}: ` +
              (res.error ??
                `${fmt(res.gflops)} GFLOP/s (K=${res.k}, passes ${
                  res.passes?.map((g) => fmt(g)).join(" ")
                }, check err ${res.checkErr?.toExponential(1)})`),
          );
        }
        report.matmul.push(...results);
      }
    }
  }
  if (o.train) {
    const runners: { runner: Runner; res: TrainResult }[] = [];
    const plan = { steps: o.steps };
    const estimates: number[] = [];
    for (const name of o.libs) {
      const res: TrainResult = { lib: name };
      report.train.push(res);
      const lib = libs.find((l) => l.name === name);
      if (!lib) {
        res.error = `could not start: ${failed(name)}`;
        continue;
      }
      try {
        const { runner, estimateMs } = await withTimeout(
          prepareTrain(lib, res, o, plan),
          o.timeoutS,
          `${name} train`,
        );
        runners.push({ runner, res });
        estimates.push(estimateMs);
      } catch (e) {
        res.error = errText(e);
      }
    }
    if (plan.steps === 0) {
      const fastest = Math.min(...estimates);
      plan.steps = Math.max(10, Math.min(500, Math.round(8 * o.targetMs / fastest))) || 20;
    }
    report.trainSteps = plan.steps;
    log(`train: ${plan.steps} steps per pass (warm-up ms/step ${estimates.map((e) => fmt(e))})`);
    await interleave(runners, o, "train");
    for (const res of report.train) {
      log(
        `train ${res.lib}: ` +
          (res.error ??
            `${fmt(res.msPerStep)} ms/step (passes ${
              res.passes?.map((m) => fmt(m)).join(" ")
            }), loss ${res.firstLoss} → ${res.lastLoss}`),
      );
    }
  }
  report.loadavg.push(Deno.loadavg());
  for (const l of libs) {
    const info = report.libs.find((i) => i.lib === l.name);
    try {
      if (info) info.leftover = l.leftover();
    } catch (e) {
      if (info) info.leftover = `unknown (${errText(e)})`;
    }
  }
  console.log(o.json ? JSON.stringify(report, null, 2) : markdown(report));
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(errText(e));
    Deno.exit(2);
  }
  // Some peers keep timers or device handles alive; the report is out, so end here.
  Deno.exit(0);
}
