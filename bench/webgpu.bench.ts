/**
 * WebGPU matmul throughput: N×N×N products for N = 256, 512, 1024 in f32 and f16 (f32
 * accumulation). Each measurement enqueues a batch of products and waits for the GPU with
 * `queue.onSubmittedWorkDone()` (plus one readback before timing starts, so compilation and
 * warm-up are excluded), and reports GFLOP/s = 2·N³·count / seconds.
 *
 * Run standalone for a table:  deno run -A bench/webgpu.bench.ts [--quick]
 * or under `deno bench -A bench/webgpu.bench.ts` for Deno's own timing.
 * Pick an adapter with DENO_WEBGPU_BACKEND=vulkan|gl|metal|dx12 (XDG_RUNTIME_DIR=/tmp on Linux).
 */
import { webgpu, type WebGPUBackend } from "../lib/backend/webgpu/webgpu.ts";
import type { DType } from "../lib/dtype.ts";
import type { Tensor } from "../lib/tensor.ts";
import { matmul } from "../lib/ops/mod.ts";
import * as random from "../lib/random.ts";

const SIZES = [256, 512, 1024];
const DTYPES: DType[] = ["f32", "f16"];

interface Case {
  readonly n: number;
  readonly dtype: DType;
  readonly a: Tensor;
  readonly b: Tensor;
}

function makeCase(gpu: WebGPUBackend, n: number, dtype: DType): Case {
  const a = random.normal(random.key(n), [n, n], { device: gpu, dtype });
  const b = random.normal(random.key(n + 1), [n, n], { device: gpu, dtype });
  return { n, dtype, a, b };
}

/** Enqueue `count` products and wait until the GPU has finished them. */
async function runBatch(gpu: WebGPUBackend, c: Case, count: number): Promise<void> {
  for (let i = 0; i < count; i++) matmul(c.a, c.b).dispose();
  await gpu.sync();
}

/** Seconds per product, measured over batches lasting at least `minSeconds` in total. */
async function measure(gpu: WebGPUBackend, c: Case, minSeconds: number): Promise<number> {
  const warm = matmul(c.a, c.b);
  await warm.data(); // compile, and one real readback
  warm.dispose();
  let count = 1;
  for (;;) {
    const t0 = performance.now();
    await runBatch(gpu, c, count);
    const s = (performance.now() - t0) / 1000;
    if (s >= minSeconds || count >= 4096) return s / count;
    count = Math.max(count * 2, Math.ceil((count * minSeconds * 1.2) / Math.max(s, 1e-4)));
  }
}

let gpu: WebGPUBackend | undefined;
let why = "";
try {
  gpu = await webgpu({ powerPreference: "high-performance" });
} catch (e) {
  why = (e as Error).message;
}

if (import.meta.main) {
  if (!gpu) {
    console.error(why);
    Deno.exit(1);
  }
  const quick = Deno.args.includes("--quick");
  console.log(`device: ${gpu.name} (shader-f16: ${gpu.features.shaderF16})`);
  console.log("| N | dtype | ms / matmul | GFLOP/s |");
  console.log("|---|---|---|---|");
  for (const n of quick ? [256] : SIZES) {
    for (const dtype of DTYPES) {
      const c = makeCase(gpu, n, dtype);
      const s = await measure(gpu, c, quick ? 0.2 : 1);
      const gflops = (2 * n ** 3) / s / 1e9;
      console.log(`| ${n} | ${dtype} | ${(s * 1000).toFixed(3)} | ${gflops.toFixed(1)} |`);
      c.a.dispose();
      c.b.dispose();
    }
  }
} else if (gpu) {
  for (const n of SIZES) {
    for (const dtype of DTYPES) {
      const c = makeCase(gpu, n, dtype);
      await runBatch(gpu, c, 1);
      Deno.bench({
        name: `webgpu matmul ${n}x${n}x${n} ${dtype} (batch of 8)`,
        group: `matmul ${n}`,
        n: n >= 1024 ? 5 : 20,
        warmup: 2,
        fn: () => runBatch(gpu!, c, 8),
      });
    }
  }
} else {
  console.log(`webgpu bench skipped: ${why}`);
}
