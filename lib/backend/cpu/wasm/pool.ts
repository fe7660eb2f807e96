/**
 * A worker pool on one shared `WebAssembly.Memory`. Workers are made from generated source
 * text (a `data:` URL), instantiate the same kernel bytes and run {@link runRegion} on the job
 * slots of a shared control block; they are woken through `Atomics.notify` and park in
 * `Atomics.wait` after spinning briefly; the caller's thread takes the first part of every job
 * and joins the same way. Workers start in the background: until one reports ready, jobs run on
 * the calling thread alone (the split never changes results).
 *
 * A job is either a matmul region or a call of a fused kernel's `k` export: the kernel's module
 * bytes sit in a shared code area (written once per kernel, {@linkcode codeOffset}), which every
 * worker compiles on first use and caches by offset; the call's i32 arguments sit in the
 * worker's argument words.
 *
 * Workers come from `node:worker_threads` where `process.getBuiltinModule` exists (Deno,
 * Node), unref'd so they never keep the process alive, else from the web `Worker` (browsers).
 * With no `SharedArrayBuffer` or no workers the pool has one thread.
 *
 * @module
 */
import { P, runRegion } from "./region.ts";
import { envVar } from "./features.ts";

const SEQ = 0;
const READY = 64;
const DONE = 128;
const ERR = 192;
const SLOTS = 256;
/** The most workers a pool holds. */
export const MAX_WORKERS = 63;
const SPIN = 20000;
/** Slot word telling the job's kind: 0 a matmul region, 1 a call of a code-area kernel. */
const KIND = 30;
/** Call jobs: slot words 0–3 are the code offset, its length, the argument count, pages. */
const ARGS = SLOTS + P.size * MAX_WORKERS;
/** The most i32 arguments a call job takes. */
export const MAX_ARGS = 64;
const CONTROL_WORDS = ARGS + MAX_ARGS * MAX_WORKERS;
/** Bytes of the shared code area. */
const CODE_BYTES = 1 << 20;

/** The shared code area: module bytes of the kernels that call jobs run. */
let code: { sab: SharedArrayBuffer; used: number; at: WeakMap<Uint8Array, number> } | undefined;

/**
 * The offset of `bytes` in the shared code area (copied there on first use), or `undefined`
 * where there is no `SharedArrayBuffer` or the area is full (then the kernel runs on one thread).
 */
export function codeOffset(bytes: Uint8Array): number | undefined {
  const c = codeArea();
  if (!c) return undefined;
  let at = c.at.get(bytes);
  if (at === undefined) {
    if (c.used + bytes.length > CODE_BYTES) return undefined;
    at = c.used;
    new Uint8Array(c.sab, at, bytes.length).set(bytes);
    c.used = (at + bytes.length + 7) & ~7;
    c.at.set(bytes, at);
  }
  return at;
}

function codeArea() {
  if (!code && typeof SharedArrayBuffer === "function") {
    code = { sab: new SharedArrayBuffer(CODE_BYTES), used: 0, at: new WeakMap() };
  }
  return code;
}

interface AnyWorker {
  postMessage(m: unknown): void;
  terminate(): unknown;
  unref?: () => void;
}

type WorkerCtor = new (url: URL | string, opts?: Record<string, unknown>) => AnyWorker;

function workerSource(): string {
  return `"use strict";
const runRegion = ${runRegion.toString()};
const start = (d) => {
  const C = new Int32Array(d.ctrl);
  let ex;
  try {
    ex = new WebAssembly.Instance(new WebAssembly.Module(d.bytes), { e: { m: d.memory } }).exports;
  } catch (e) {
    Atomics.store(C, ${ERR} + d.id, 1);
    return;
  }
  const kernels = new Map();
  const call = (base) => {
    const at = C[base], len = C[base + 1], argc = C[base + 2], need = C[base + 3] * 65536;
    let k = kernels.get(at);
    if (k === undefined) {
      const bytes = new Uint8Array(d.code, at, len).slice();
      k = new WebAssembly.Instance(new WebAssembly.Module(bytes), { e: { m: d.memory } }).exports.k;
      kernels.set(at, k);
    }
    for (let spin = 0; d.memory.buffer.byteLength < need; spin++) {
      if (spin > 1e6) throw new Error("the shared memory's growth never reached a worker");
    }
    const a = ${ARGS} + ${MAX_ARGS} * d.id;
    k.apply(null, Array.from(C.subarray(a, a + argc)));
  };
  let seen = Atomics.load(C, ${SEQ});
  Atomics.store(C, ${READY} + d.id, 1);
  const base = ${SLOTS} + ${P.size} * d.id;
  for (;;) {
    let s = Atomics.load(C, ${SEQ});
    for (let i = 0; s === seen && i < ${SPIN}; i++) s = Atomics.load(C, ${SEQ});
    if (s === seen) { Atomics.wait(C, ${SEQ}, seen); continue; }
    seen = s;
    if (s < 0) return;
    if (C[base + ${P.seq}] !== s) continue;
    try {
      if (C[base + ${KIND}] === 1) call(base);
      else runRegion(ex, d.memory, C, base);
    } catch (e) { Atomics.store(C, ${ERR} + d.id, 1); }
    Atomics.store(C, ${DONE} + d.id, s);
    Atomics.notify(C, ${DONE} + d.id);
  }
};
const wt = globalThis.process?.getBuiltinModule?.("node:worker_threads");
if (wt && wt.parentPort) wt.parentPort.once("message", start);
else self.onmessage = (e) => start(e.data);
`;
}

function workerCtor(): WorkerCtor | undefined {
  const g = globalThis as {
    process?: { getBuiltinModule?: (n: string) => { Worker?: WorkerCtor } | undefined };
    Worker?: WorkerCtor;
    Deno?: unknown;
  };
  try {
    const wt = g.process?.getBuiltinModule?.("node:worker_threads");
    if (wt?.Worker) return wt.Worker;
  } catch {
    // fall through
  }
  // A web Worker cannot be unref'd in Deno: it would keep the process alive.
  if (g.Deno !== undefined) return undefined;
  return g.Worker;
}

/**
 * The default thread count: `NBIT_THREADS`, else `navigator.hardwareConcurrency` up to 8 (each
 * thread keeps 2.2 MB of packing buffers), else 1.
 */
export function defaultThreads(): number {
  const env = Number(envVar("NBIT_THREADS"));
  if (Number.isInteger(env) && env >= 1) return env;
  const hc = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator
    ?.hardwareConcurrency;
  return typeof hc === "number" && hc >= 1 ? Math.min(8, Math.floor(hc)) : 1;
}

/** Splits of jobs across threads; thread 0 is the caller. */
export class Pool {
  /** Control words: sequence, ready/done/error flags and one job slot per worker. */
  readonly ctrl: Int32Array;
  /** Job slot of the calling thread. */
  readonly own = new Int32Array(P.size);
  #workers: AnyWorker[] = [];
  #seq = 0;

  /**
   * A pool of `threads` (the caller included) over `memory`, running `bytes`.
   * `ex` is the caller's own instance of the same bytes.
   */
  constructor(
    readonly threads: number,
    readonly memory: WebAssembly.Memory,
    bytes: Uint8Array,
    readonly ex: Record<string, (...a: number[]) => void>,
  ) {
    const wanted = Math.min(Math.max(1, Math.floor(threads)), MAX_WORKERS + 1) - 1;
    const sab = typeof SharedArrayBuffer === "function" &&
        memory.buffer instanceof SharedArrayBuffer
      ? new SharedArrayBuffer(4 * CONTROL_WORDS)
      : undefined;
    this.ctrl = new Int32Array(sab ?? new ArrayBuffer(4 * SLOTS));
    const Ctor = sab && wanted > 0 ? workerCtor() : undefined;
    if (!Ctor || !sab) return;
    const url = "data:text/javascript," + encodeURIComponent(workerSource());
    for (let id = 0; id < wanted; id++) {
      let w: AnyWorker;
      try {
        // `env: {}`: the worker needs no environment (Deno would ask for --allow-env to copy it).
        w = new Ctor(new URL(url), { type: "module", env: {} });
      } catch {
        break;
      }
      w.unref?.();
      w.postMessage({ bytes, memory, ctrl: sab, code: codeArea()!.sab, id });
      this.#workers.push(w);
    }
  }

  /** Workers that have started (each takes a job part). */
  ready(): number {
    let r = 0;
    while (r < this.#workers.length && Atomics.load(this.ctrl, READY + r) === 1) r++;
    return r;
  }

  /**
   * Run `parts[0]` on this thread and `parts[w + 1]` on worker w (slots filled by `fill`),
   * and return when all are done. `parts.length - 1` must not exceed {@link ready}. `own` runs
   * this thread's part (default: the matmul region in its own slot); `what` names the job in
   * errors.
   */
  run(
    parts: number,
    fill: (slot: Int32Array, base: number, part: number) => void,
    own: () => void = () => runRegion(this.ex, this.memory, this.own, 0),
    what = "matmul",
  ): void {
    const C = this.ctrl;
    const s = this.#seq = (this.#seq % 0x3fffffff) + 1;
    for (let w = 0; w + 1 < parts; w++) {
      const base = SLOTS + P.size * w;
      C[base + KIND] = 0;
      fill(C, base, w + 1);
      C[base + P.seq] = s;
    }
    if (parts > 1) {
      Atomics.store(C, SEQ, s);
      Atomics.notify(C, SEQ);
    }
    fill(this.own, 0, 0);
    let error: unknown;
    try {
      own();
    } catch (e) {
      error = e;
    }
    for (let w = 0; w + 1 < parts; w++) this.#join(w, s);
    for (let w = 0; w + 1 < parts; w++) {
      if (Atomics.exchange(C, ERR + w, 0) !== 0) {
        error ??= new Error(`${what}: CPU worker ${w + 1} failed while running its part`);
      }
    }
    if (error) throw error;
  }

  /**
   * Call the `k` export of the module at `at` in the code area (`len` bytes; the caller's own
   * instance is `fn`) with `args(part)` on each of `parts` threads; at most {@link MAX_ARGS}
   * arguments, and `parts - 1` must not exceed {@link ready}.
   */
  call(
    parts: number,
    at: number,
    len: number,
    fn: (...a: number[]) => void,
    args: (part: number) => number[],
    what: string,
  ): void {
    const pages = this.memory.buffer.byteLength / 65536;
    this.run(
      parts,
      (J, o, part) => {
        if (part === 0) return;
        const a = args(part);
        if (a.length > MAX_ARGS) throw new RangeError(`${what}: more than ${MAX_ARGS} arguments`);
        J[o] = at, J[o + 1] = len, J[o + 2] = a.length, J[o + 3] = pages, J[o + KIND] = 1;
        J.set(a, ARGS + MAX_ARGS * (part - 1));
      },
      () => fn(...args(0)),
      what,
    );
  }

  #join(w: number, s: number): void {
    const C = this.ctrl;
    for (let i = 0; i < SPIN; i++) if (Atomics.load(C, DONE + w) === s) return;
    for (;;) {
      const d = Atomics.load(C, DONE + w);
      if (d === s) return;
      try {
        Atomics.wait(C, DONE + w, d, 1000);
      } catch {
        // A browser's main thread cannot wait: keep spinning.
      }
    }
  }

  /** Stop and terminate every worker (the pool then runs on one thread). */
  close(): void {
    Atomics.store(this.ctrl, SEQ, -1);
    Atomics.notify(this.ctrl, SEQ);
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
  }
}
