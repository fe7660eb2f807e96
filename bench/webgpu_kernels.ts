/**
 * Per-kernel times of one train step of the peer bench's MLP (784-512-512-10, batch 128, Adam,
 * f32; the step of `bench/webgpu_peers.ts`) on one WebGPU adapter: nbit's jitted step and,
 * with `--jax`, jax-js's jitted step in the same process.
 *
 * How. The WebGPU objects are wrapped (not nbit's code): every compute dispatch of one warm step
 * is captured with its pipeline, bind group and grid, and the uniform words its bind group
 * points at are read from the bytes written at buffer creation or by `writeBuffer`. Then each
 * captured dispatch runs alone, `reps` times in one compute pass and one submit, between
 * `await device.queue.onSubmittedWorkDone()`; ms per dispatch is the minimum over `--passes` (the least disturbed by other load) of
 * (time of 2·reps − time of reps) / reps, which cancels the submit and wait latency (several ms
 * on Deno); reps doubles until that difference exceeds `--target-ms`. Dispatches rerun on
 * the step's own buffers, so values drift (e.g. toward Inf/NaN); element-wise code on a CPU
 * adapter does not branch on values, so the times stand.
 *
 * Run: `XDG_RUNTIME_DIR=/tmp DENO_WEBGPU_BACKEND=vulkan deno run -A bench/webgpu_kernels.ts
 * [--jax] [--passes 5] [--target-ms 20] [--only KEY-SUBSTRING]`. Prints one line per dispatch (kernel key,
 * grid, leading uniform words: for a matmul `M N K batch`, for a fused kernel `n`), then ms
 * per kernel kind.
 *
 * @module
 */
import { jaxLib, nbitLib, trainSetup } from "./webgpu_peers.ts";

interface Captured {
  readonly pipe: GPUComputePipeline;
  readonly bind: GPUBindGroup;
  readonly groups: readonly [number, number, number];
}

const args = Deno.args;
const flag = (name: string, def: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const withJax = args.includes("--jax");
const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined;
const passes = flag("--passes", 5);
const targetMs = flag("--target-ms", 20);

// --- wrapping of the WebGPU objects --------------------------------------------------------
const shaderOf = new WeakMap<GPUComputePipeline, string>();
const deviceOf = new WeakMap<GPUComputePipeline, GPUDevice>();
const moduleCode = new WeakMap<GPUShaderModule, string>();
const bindEntries = new WeakMap<GPUBindGroup, readonly GPUBindGroupEntry[]>();
const bytesOf = new WeakMap<GPUBuffer, Uint8Array>();
const mapped = new WeakMap<GPUBuffer, ArrayBuffer[]>();
let capture: Captured[] | undefined;

function wrap<T extends object, K extends keyof T>(
  proto: T,
  name: K,
  f: (orig: T[K]) => T[K],
): void {
  proto[name] = f(proto[name]);
}
const dev = GPUDevice.prototype;
wrap(dev, "createShaderModule", (orig) =>
  function (this: GPUDevice, d: GPUShaderModuleDescriptor) {
    const m = orig.call(this, d);
    moduleCode.set(m, d.code);
    return m;
  });
wrap(
  dev,
  "createComputePipeline",
  (orig) =>
    function (this: GPUDevice, d: GPUComputePipelineDescriptor) {
      const p = orig.call(this, d);
      shaderOf.set(p, d.label || moduleCode.get(d.compute.module) || "?");
      deviceOf.set(p, this);
      return p;
    },
);
wrap(
  dev,
  "createComputePipelineAsync",
  (orig) =>
    async function (this: GPUDevice, d: GPUComputePipelineDescriptor) {
      const p = await orig.call(this, d);
      shaderOf.set(p, d.label || moduleCode.get(d.compute.module) || "?");
      deviceOf.set(p, this);
      return p;
    },
);
wrap(dev, "createBindGroup", (orig) =>
  function (this: GPUDevice, d: GPUBindGroupDescriptor) {
    const g = orig.call(this, d);
    bindEntries.set(g, [...d.entries]);
    return g;
  });
wrap(
  GPUBuffer.prototype,
  "getMappedRange",
  (orig) =>
    function (this: GPUBuffer, offset?: number, size?: number) {
      const r = orig.call(this, offset, size);
      if ((offset ?? 0) === 0) mapped.set(this, [...(mapped.get(this) ?? []), r]);
      return r;
    },
);
wrap(GPUBuffer.prototype, "unmap", (orig) =>
  function (this: GPUBuffer) {
    const r = mapped.get(this)?.[0];
    if (r) bytesOf.set(this, new Uint8Array(r.slice(0)));
    mapped.delete(this);
    return orig.call(this);
  });
wrap(GPUQueue.prototype, "writeBuffer", (orig) =>
  function (
    this: GPUQueue,
    buf: GPUBuffer,
    off: number,
    data: BufferSource,
    dOff?: number,
    size?: number,
  ) {
    const src = ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);
    const per = ArrayBuffer.isView(data)
      ? (data as unknown as { BYTES_PER_ELEMENT?: number })
        .BYTES_PER_ELEMENT ?? 1
      : 1;
    const from = (dOff ?? 0) * per;
    const n = size === undefined ? src.byteLength - from : size * per;
    if (buf.size <= 4096) {
      const cur = bytesOf.get(buf) ?? new Uint8Array(buf.size);
      cur.set(src.subarray(from, from + n), off);
      bytesOf.set(buf, cur);
    }
    return orig.call(this, buf, off, data, dOff, size);
  });
const pass = GPUComputePassEncoder.prototype;
let curPipe: GPUComputePipeline | undefined;
let curBind: GPUBindGroup | undefined;
wrap(pass, "setPipeline", (orig) =>
  function (this: GPUComputePassEncoder, p: GPUComputePipeline) {
    curPipe = p;
    return orig.call(this, p);
  });
wrap(
  pass,
  "setBindGroup",
  (orig) =>
    function (this: GPUComputePassEncoder, i: number, g: GPUBindGroup | null, ...rest: unknown[]) {
      if (i === 0 && g) curBind = g;
      return (orig as (...a: unknown[]) => void).call(this, i, g, ...rest);
    } as GPUComputePassEncoder["setBindGroup"],
);
wrap(
  pass,
  "dispatchWorkgroups",
  (orig) =>
    function (this: GPUComputePassEncoder, x: number, y?: number, z?: number) {
      if (capture && curPipe && curBind) {
        capture.push({ pipe: curPipe, bind: curBind, groups: [x, y ?? 1, z ?? 1] });
      }
      return orig.call(this, x, y, z);
    },
);

// --- timing ---------------------------------------------------------------------------------
function uniformWords(c: Captured, n: number): number[] {
  const e = bindEntries.get(c.bind)?.find((x) => x.binding === 0);
  const res = e?.resource as GPUBufferBinding | undefined;
  const bytes = res?.buffer ? bytesOf.get(res.buffer) : undefined;
  if (!res || !bytes) return [];
  const at = res.offset ?? 0;
  const w = new Uint32Array(bytes.buffer.slice(at, at + 4 * n));
  return [...w];
}

function name(c: Captured): string {
  const s = shaderOf.get(c.pipe) ?? "?";
  if (!s.includes("\n")) return s;
  // jax-js: no label; name it by its entry point's first line and its length.
  const line = s.split("\n").find((l) => /fn |workgroup_size/.test(l)) ?? "";
  return `wgsl(${s.length}ch) ${line.trim().slice(0, 50)}`;
}

async function timeOne(c: Captured, reps: number): Promise<number> {
  const device = deviceOf.get(c.pipe)!;
  const enc = device.createCommandEncoder();
  const p = enc.beginComputePass();
  p.setPipeline(c.pipe);
  p.setBindGroup(0, c.bind);
  for (let r = 0; r < reps; r++) p.dispatchWorkgroups(...c.groups);
  p.end();
  await device.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  device.queue.submit([enc.finish()]);
  await device.queue.onSubmittedWorkDone();
  return performance.now() - t0;
}

async function msPer(c: Captured): Promise<number> {
  let reps = 1;
  while (reps < 4096 && (await timeOne(c, 2 * reps)) - (await timeOne(c, reps)) < targetMs) {
    reps *= 2;
  }
  const xs: number[] = [];
  for (let i = 0; i < passes; i++) {
    xs.push(((await timeOne(c, 2 * reps)) - (await timeOne(c, reps))) / reps);
  }
  xs.sort((a, b) => a - b);
  return Math.max(0, xs[0]);
}

function kind(n: string): string {
  return n.startsWith("wgsl(") ? "jax-js" : n.split(":")[0];
}

async function report(lib: string, caps: Captured[], stepMs: number): Promise<void> {
  console.log(`\n## ${lib}: ${caps.length} dispatches, ${stepMs.toFixed(1)} ms/step (replay)`);
  const byKind = new Map<string, { n: number; ms: number }>();
  let total = 0;
  for (const c of caps) {
    const n = name(c);
    if (only !== undefined && !n.includes(only)) continue;
    const ms = await msPer(c);
    total += ms;
    const k = kind(n);
    const s = byKind.get(k) ?? { n: 0, ms: 0 };
    byKind.set(k, { n: s.n + 1, ms: s.ms + ms });
    const w = uniformWords(c, 4).join(" ");
    console.log(
      `${ms.toFixed(3).padStart(8)} ms  grid ${c.groups.join("×").padEnd(12)} u[${w}]  ${
        n.slice(0, 110)
      }`,
    );
  }
  console.log(`sum of kernels alone: ${total.toFixed(2)} ms`);
  for (const [k, s] of [...byKind].sort((a, b) => b[1].ms - a[1].ms)) {
    console.log(`  ${k.padEnd(12)} ${String(s.n).padStart(3)} dispatches ${s.ms.toFixed(2)} ms`);
  }
}

type Make = typeof nbitLib | typeof jaxLib;

async function measure(lib: string, make: () => ReturnType<Make>): Promise<void> {
  const [l] = await make();
  // deno-lint-ignore no-explicit-any
  const tr = await (l as any).train(trainSetup()) as { step(): void; loss(): Promise<number> };
  for (let i = 0; i < 3; i++) tr.step();
  await tr.loss();
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) tr.step();
  await tr.loss();
  const stepMs = (performance.now() - t0) / 5;
  capture = [];
  tr.step();
  await tr.loss();
  const caps = capture;
  capture = undefined;
  await report(lib, caps, stepMs);
}

await measure("nbit jit", () => nbitLib(true));
if (withJax) await measure("jax-js jit", () => jaxLib());
Deno.exit(0);
