/**
 * A short training run of the tiny MLP ("bf16-mixed" preset, so narrow dtypes go through the
 * heap too) while tensors of growing size are held, so the CPU heap grows between steps with
 * live tensors in it. Used in-process and, by cpu_heap_nonshared.ts, without SharedArrayBuffer.
 */
import { tinyMlp } from "./tiny_mlp.ts";
import { precision } from "../plugins/presets.ts";
import { disposeReplaced } from "../lib/train.ts";
import { dispose, type Tensor, zeros } from "../lib/tensor.ts";
import { heapStats } from "../lib/backend/cpu/heap.ts";

/** Losses of `steps` steps (JSON-exact numbers), heap growth, and live bytes left behind. */
export async function trainLosses(steps = 24): Promise<{
  losses: number[];
  shared: boolean;
  grows: number;
  liveBytes: number;
}> {
  const before = heapStats().liveBytes;
  const { batch, params, base } = tinyMlp(3);
  const step = precision("bf16-mixed")(base);
  let state = step.init(params);
  const held: Tensor[] = [];
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    if (i % 4 === 0) held.push(zeros([1 << (17 + i / 4)])); // 0.5 MiB, 1 MiB, … 16 MiB
    const [next, metrics] = step(state, batch);
    disposeReplaced(state, next);
    state = next;
    losses.push(await metrics.loss.item());
    dispose(metrics);
  }
  dispose(held);
  dispose([state, batch, params]);
  const s = heapStats();
  return { losses, shared: s.shared, grows: s.grows, liveBytes: s.liveBytes - before };
}
