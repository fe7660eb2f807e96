/**
 * CPU matmul throughput: nbit's WebAssembly SIMD kernel (1 and 2 threads; f32, f16 and bf16
 * operands) beside jax-js (its `wasm` device, `jit`) and TensorFlow.js (`wasm` backend, XNNPACK)
 * in the same run, so ratios hold on a noisy host.
 *
 * - square N×N×N, N = 256, 512, 1024, 2048;
 * - skinny M×4096 @ 4096×4096, M = 1, 4, 16, 64, with f32, bf16 and f16 weights; the inputs
 *   have the weights' dtype, as under autocast (mixed dtypes would first be cast to f32 by
 *   `matmul`'s promotion, a separate pass over the weights);
 * - in both, "f32→bf16 folded": f32 operands cast to bf16 inside a `jit`, whose cast folding
 *   rounds them while packing (no cast pass, no bf16 copies), as autocast's casts of f32 weights.
 *
 * Each case is one bench that times its variants in interleaved rounds (see `group`); at the
 * end a table of GFLOP/s (median per call) and ratios is printed. Run: `deno bench --allow-read --allow-env bench/wasm_matmul.bench.ts`
 * (`--filter skinny` or `--filter square` for one part).
 */
import * as nb from "../mod.ts";
import { setCpuThreads, wasmMatmulInfo } from "../lib/backend/cpu/wasm/matmul.ts";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import * as jax from "@jax-js/jax";

const np = jax.numpy;
await jax.init("wasm");
jax.defaultDevice("wasm");
if (!(await tf.setBackend("wasm"))) throw new Error('tfjs: setBackend("wasm") failed');
await tf.ready();

const times = new Map<string, number[]>();
const flopsOf = new Map<string, number>();

function rand(n: number, seed: number): Float32Array<ArrayBuffer> {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

async function useThreads(n: number): Promise<void> {
  if (wasmMatmulInfo()?.threads !== n) setCpuThreads(n);
  for (let i = 0; i < 400 && (wasmMatmulInfo()?.readyThreads ?? 0) < n; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  if (wasmMatmulInfo()?.readyThreads !== n) throw new Error(`${n} CPU threads did not start`);
}

type Run = () => void | Promise<void>;

interface Variant {
  readonly name: string;
  /** nbit's CPU threads (peers: undefined, run in the first pass). */
  readonly threads?: number;
  readonly make: () => Promise<Run>;
}

/**
 * One bench per case: every variant is built, warmed twice, then timed in interleaved rounds
 * (variant after variant, `rounds` times), so load from other processes hits all alike.
 * Variants with 2 threads (and the peers) run in one pass, those with 1 thread in another.
 */
function group(name: string, flops: number, variants: Variant[]): void {
  for (const v of variants) {
    flopsOf.set(`${name} | ${v.name}`, flops);
    times.set(`${name} | ${v.name}`, []);
  }
  const rounds = flops > 5e9 ? 3 : flops > 1e9 ? 5 : 12;
  Deno.bench({
    name: `${name}: ${variants.length} variants, ${rounds} interleaved rounds`,
    n: 1,
    warmup: 0,
    async fn() {
      for (const t of [2, 1]) {
        const pass = variants.filter((v) => (v.threads ?? 2) === t);
        await useThreads(t);
        const runs: Run[] = [];
        for (const v of pass) runs.push(await v.make());
        for (const run of runs) await run(), await run();
        for (let r = 0; r < rounds; r++) {
          for (let i = 0; i < pass.length; i++) {
            const t0 = performance.now();
            await runs[i]();
            times.get(`${name} | ${pass[i].name}`)!.push(performance.now() - t0);
          }
        }
      }
    },
  });
}

function nbit(m: number, k: number, n: number, at: nb.DType, bt: nb.DType) {
  return (): Promise<Run> => {
    const a = nb.tensor(rand(m * k, 1), { shape: [m, k], dtype: at });
    const b = nb.tensor(rand(k * n, 2), { shape: [k, n], dtype: bt });
    return Promise.resolve(() => nb.matmul(a, b).dispose()); // the CPU backend is eager
  };
}

/** f32 operands cast to `d` in a jitted product: the casts fold into the matmul's packing. */
function nbitFolded(m: number, k: number, n: number, d: "f16" | "bf16") {
  return (): Promise<Run> => {
    const a = nb.tensor(rand(m * k, 1), { shape: [m, k] });
    const b = nb.tensor(rand(k * n, 2), { shape: [k, n] });
    const f = nb.jit((x: nb.Tensor, y: nb.Tensor) => nb.matmul(nb.astype(x, d), nb.astype(y, d)));
    return Promise.resolve(() => f(a, b).dispose());
  };
}

function jaxjs(m: number, k: number, n: number) {
  return async (): Promise<Run> => {
    const a = np.array(rand(m * k, 1)).reshape([m, k]);
    const b = np.array(rand(k * n, 2)).reshape([k, n]);
    await a.blockUntilReady(), await b.blockUntilReady();
    const f = jax.jit((x: jax.Array, y: jax.Array) => np.matmul(x, y));
    return async () => {
      const out = f(a.ref, b.ref);
      await out.blockUntilReady();
      out.dispose();
    };
  };
}

function tfjs(m: number, k: number, n: number) {
  return () => {
    const a = tf.tensor2d(rand(m * k, 1), [m, k]);
    const b = tf.tensor2d(rand(k * n, 2), [k, n]);
    return Promise.resolve(() => {
      const out = tf.matMul(a, b);
      out.dataSync();
      out.dispose();
    });
  };
}

for (const N of [256, 512, 1024, 2048]) {
  const v: Variant[] = [
    { name: "jax-js wasm f32", make: jaxjs(N, N, N) },
    { name: "tfjs wasm f32", make: tfjs(N, N, N) },
  ];
  for (const t of [2, 1]) {
    for (const d of ["f32", "f16", "bf16"] as const) {
      v.push({ name: `nbit ${d} ${t}T`, threads: t, make: nbit(N, N, N, d, d) });
    }
  }
  v.push({ name: "nbit f32→bf16 folded 2T", threads: 2, make: nbitFolded(N, N, N, "bf16") });
  group(`square N=${N}`, 2 * N ** 3, v);
}
for (const M of [1, 4, 16, 64]) {
  const K = 4096, N = 4096;
  const v: Variant[] = [
    { name: "jax-js wasm f32", make: jaxjs(M, K, N) },
    { name: "tfjs wasm f32", make: tfjs(M, K, N) },
  ];
  for (const d of ["f32", "bf16", "f16"] as const) {
    v.push({ name: `nbit ${d} 2T`, threads: 2, make: nbit(M, K, N, d, d) });
  }
  v.push({ name: "nbit f32→bf16 folded 2T", threads: 2, make: nbitFolded(M, K, N, "bf16") });
  group(`skinny M=${M}`, 2 * M * K * N, v);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

globalThis.addEventListener("unload", () => {
  const groups = new Map<string, [string, number, number][]>();
  for (const [key, ts] of times) {
    if (ts.length === 0) continue;
    const [group, name] = key.split(" | ");
    const ms = median(ts);
    const row: [string, number, number] = [name, ms, flopsOf.get(key)! / ms / 1e6];
    groups.set(group, [...(groups.get(group) ?? []), row]);
  }
  const lines = [
    "",
    "| case | library | ms (median) | GFLOP/s | × jax-js | × nbit f32 |",
    "|---|---|---|---|---|---|",
  ];
  for (const [group, rows] of groups) {
    const jaxRate = rows.find((r) => r[0].startsWith("jax-js"))?.[2];
    for (const [name, ms, rate] of rows) {
      const rj = jaxRate ? (rate / jaxRate).toFixed(2) : "";
      // The same threads and layout with f32 operands.
      const f32 = rows.find((r) => r[0] === name.replace(/^nbit .* (\d+T)$/, "nbit f32 $1"))?.[2];
      const rf = f32 && name.startsWith("nbit") ? (rate / f32).toFixed(2) : "";
      lines.push(`| ${group} | ${name} | ${ms.toFixed(2)} | ${rate.toFixed(1)} | ${rj} | ${rf} |`);
    }
  }
  console.log(lines.join("\n"));
});
