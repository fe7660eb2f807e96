/**
 * nbit: a functional tensor library for training neural networks in N-bit precision (f64, f32,
 * f16, bf16, fp8 and 8-bit optimizer states) on the CPU and WebGPU.
 *
 * @example
 * ```ts
 * import * as nb from "./mod.ts";
 * const f = (p: { w: nb.Tensor }) => nb.sum(nb.square(p.w));
 * const [loss, g] = nb.valueAndGrad(f)({ w: nb.tensor([1, 2, 3]) });
 * console.log(await loss.item(), await g.w.data()); // 14, [2, 4, 6]
 * ```
 *
 * @module
 */
export {
  byteSize,
  type CastOptions,
  type DType,
  dtypes,
  type FInfo,
  finfo,
  isFloating,
  promoteTypes,
  roundTo,
  type Storage,
  type Widened,
} from "./lib/dtype.ts";
export type {
  Arg,
  Backend,
  BinaryOp,
  Handle,
  MatmulGeometry,
  RandomKind,
  Recording,
  ReduceOp,
  ReplayOptions,
  UnaryOp,
  View,
} from "./lib/backend/backend.ts";
export type { Blockwise8bitUpdate } from "./lib/backend/optim8.ts";
export type { Key } from "./lib/prng.ts";
export type { LearningRate, Optimizer, Schedule } from "./lib/optim/types.ts";
export { cpu } from "./lib/backend/cpu/cpu.ts";
export type { HeapStats } from "./lib/backend/cpu/heap.ts";
export { setCpuThreads } from "./lib/backend/cpu/wasm/matmul.ts";
export type { FusedKernel, FusedOp, FusedOperand, FusedReduce } from "./lib/backend/fused.ts";
export {
  type AllMemoryInfo,
  arange,
  dispose,
  full,
  keep,
  memory,
  type MemoryInfo,
  type NestedArray,
  ones,
  resetPeak,
  Tensor,
  tensor,
  type TensorOptions,
  tidy,
  zeros,
} from "./lib/tensor.ts";
export * from "./lib/ops/mod.ts";
export { grad, type GradOptions, valueAndGrad, vjp } from "./lib/autodiff.ts";
export {
  intercept,
  type Interceptor,
  type Meta,
  type OpCall,
  type OpDef,
  type OpTag,
} from "./lib/op.ts";
export {
  type CompileOptions,
  jit,
  type JitOptions,
  type Jitted,
  type JittedStep,
  type ProgramStats,
} from "./lib/jit/mod.ts";
export * as tree from "./lib/tree.ts";
export * as random from "./lib/random.ts";
export * as nn from "./lib/nn/mod.ts";
export * as optim from "./lib/optim/mod.ts";
export {
  disposeReplaced,
  evaluate,
  fit,
  type FitOptions,
  type GradientOut,
  type LogEntry,
  type LossFn,
  makeStep,
  type Metrics,
  type Objective,
  type ObjectiveOut,
  pipe,
  runParts,
  type Step,
  type StepContext,
  type StepParts,
  type TrainState,
  trainStep,
  type TrainStepOptions,
  type Transformer,
  type UpdateOut,
  withStepKey,
} from "./lib/train.ts";
export {
  CHECKPOINT_VERSION,
  encodeState,
  encodeTree,
  load,
  type LoadOptions,
  loadState,
  type LoadStateOptions,
  save,
  saveState,
  type SaveStateOptions,
  STATE_KEY,
  TREE_KEY,
  type WriterLike,
} from "./lib/checkpoint.ts";
export {
  decodeSafetensors,
  encodeSafetensors,
  MAX_HEADER_BYTES,
  safetensorsDType,
  type SafetensorsEntry,
  type SafetensorsErrorCode,
  safetensorsErrorCode,
  type SafetensorsFile,
} from "./lib/safetensors.ts";
export { type CheckpointErrorCode, checkpointErrorCode, MAX_TREE_DEPTH } from "./lib/tree_codec.ts";
export {
  castFloating,
  definePlugin,
  type NextUpdate,
  type PluginHooks,
  pluginState,
  selectTree,
  traceGrads,
  withPluginState,
} from "./plugins/plugin.ts";
export {
  autocast,
  type AutocastPolicy,
  type AutocastSpec,
  classifyOp,
  type OpClass,
  type OpInfo,
  withAutocast,
} from "./plugins/autocast.ts";
export { castParams, type CastParamsOptions } from "./plugins/cast_params.ts";
export {
  GRAD_SCALE,
  gradScale,
  type GradScaleOptions,
  type GradScaleState,
  type StaticScale,
  updateScale,
} from "./plugins/grad_scale.ts";
export { precision, type PresetName, presetNames } from "./plugins/presets.ts";
export {
  type AmaxComputeAlgo,
  fakeQuantize,
  FP8,
  fp8,
  FP8_ROLES,
  type Fp8DType,
  type Fp8Format,
  type Fp8Options,
  type Fp8ScaleOptions,
  type Fp8State,
  updateFp8Scale,
} from "./plugins/fp8.ts";
export {
  type PoolStats,
  readbackCount,
  webgpu,
  type WebGPUBackend,
  type WebGPUFeatures,
  type WebGPULimits,
  type WebGPUOptions,
} from "./lib/backend/webgpu/webgpu.ts";
