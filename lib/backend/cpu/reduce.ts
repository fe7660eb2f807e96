/**
 * CPU reductions over the middle axis of an `[outer, reduce, inner]` layout. Sums accumulate
 * in f64 (at least as precise as the f32 accumulation the design asks for; the WebGPU backend
 * accumulates in f32, so the two may differ in the last bit of long sums) and round once from
 * the accumulator to the output dtype: `out` is a `Float64Array` for f16/bf16/fp8 sums (the
 * backend encodes it), never an f32 array that would round a second time.
 *
 * This is the reference and the fallback of the WebAssembly kernels (`wasm/reduce.ts`: f32, bf16
 * and f16 inputs, bool/u8 for all/any), which give the same bits.
 *
 * @module
 */
import type { ReduceOp } from "../backend.ts";

type Num = Float64Array | Float32Array | Int32Array | Uint8Array;

/** Reduce `src` (`[outer, reduce, inner]`) into `out` (`[outer, inner]`). */
export function reduceKernel(
  op: ReduceOp,
  src: Num,
  outer: number,
  reduce: number,
  inner: number,
  out: Num,
): void {
  const acc = new Float64Array(inner);
  const arg = new Int32Array(inner);
  for (let o = 0; o < outer; o++) {
    const base = o * reduce * inner;
    switch (op) {
      case "sum":
        acc.fill(0);
        for (let r = 0; r < reduce; r++) {
          const row = base + r * inner;
          for (let i = 0; i < inner; i++) acc[i] += src[row + i];
        }
        break;
      case "max":
      case "min": {
        const isMax = op === "max";
        acc.fill(isMax ? -Infinity : Infinity);
        for (let r = 0; r < reduce; r++) {
          const row = base + r * inner;
          for (let i = 0; i < inner; i++) {
            const v = src[row + i];
            if (v !== v || acc[i] !== acc[i]) acc[i] = NaN;
            else if (isMax ? v > acc[i] : v < acc[i]) acc[i] = v;
          }
        }
        break;
      }
      case "argmax":
      case "argmin": {
        const isMax = op === "argmax";
        acc.fill(NaN);
        arg.fill(0);
        for (let r = 0; r < reduce; r++) {
          const row = base + r * inner;
          for (let i = 0; i < inner; i++) {
            const v = src[row + i];
            const best = acc[i];
            // First occurrence wins; NaN counts as the extreme (like NumPy).
            if (r === 0 || (best === best && (v !== v || (isMax ? v > best : v < best)))) {
              acc[i] = v;
              arg[i] = r;
            }
          }
        }
        for (let i = 0; i < inner; i++) acc[i] = arg[i];
        break;
      }
      case "all":
        acc.fill(1);
        for (let r = 0; r < reduce; r++) {
          const row = base + r * inner;
          for (let i = 0; i < inner; i++) if (!src[row + i]) acc[i] = 0;
        }
        break;
      case "any":
        acc.fill(0);
        for (let r = 0; r < reduce; r++) {
          const row = base + r * inner;
          for (let i = 0; i < inner; i++) if (src[row + i]) acc[i] = 1;
        }
        break;
    }
    out.set(acc as never, o * inner);
  }
}
