/**
 * CPU kernel throughput: square matmul at N = 256, 512, 1024 and an elementwise chain
 * `tanh(add(mul(x, 2), 1))` on 2^20 elements, per dtype. Every bench frees what it makes.
 *
 * GFLOP/s = 2·N³ / time for matmul, 3·2^20 / time for the chain (one op per element per step).
 *
 * Run: `deno bench --allow-read --allow-env bench/cpu_ops.bench.ts`
 */
import { add, cpu, type DType, matmul, mul, random, tanh, type Tensor, tidy } from "../mod.ts";

const DTYPES: readonly DType[] = ["f32", "f16", "bf16", "f64"];
const SIZES = [256, 512, 1024];
const CHAIN = 1 << 20;

function randomTensor(shape: number[], dtype: DType, seed: number): Tensor {
  return random.normal(random.key(seed), shape, { dtype, device: cpu });
}

for (const n of SIZES) {
  for (const dtype of DTYPES) {
    const a = randomTensor([n, n], dtype, 1);
    const b = randomTensor([n, n], dtype, 2);
    Deno.bench({
      name: `matmul ${n}×${n} ${dtype}`,
      group: `matmul ${n}`,
      baseline: dtype === "f32",
      n: n >= 1024 ? 3 : n >= 512 ? 10 : 30,
      warmup: n >= 1024 ? 1 : 3,
      fn: () => matmul(a, b).dispose(),
    });
  }
}

for (const dtype of DTYPES) {
  const x = randomTensor([CHAIN], dtype, 3);
  Deno.bench({
    name: `tanh(x·2 + 1) on 2^20 ${dtype}`,
    group: "elementwise chain",
    baseline: dtype === "f32",
    n: 20,
    warmup: 3,
    fn: () => tidy(() => tanh(add(mul(x, 2), 1))).dispose(),
  });
}
