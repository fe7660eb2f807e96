/**
 * A worker pool on one shared `WebAssembly.Memory`. Workers are made from generated source
 * text (a `data:` URL), instantiate the same kernel bytes and run {@link runRegion} on the job
 * slots of a shared control block; they are woken through `Atomics.notify` and park in
 * `Atomics.wait` after spinning briefly; the caller's thread takes the first part of every job
 * and joins the same way. Workers start in the background: until one reports ready, jobs run on
 * the calling thread alone (the split never changes results).
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
    try { runRegion(ex, d.memory, C, base); } catch (e) { Atomics.store(C, ${ERR} + d.id, 1); }
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
      ? new SharedArrayBuffer(4 * (SLOTS + P.size * MAX_WORKERS))
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
      w.postMessage({ bytes, memory, ctrl: sab, id });
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
   * and return when all are done. `parts.length - 1` must not exceed {@link ready}.
   */
  run(parts: number, fill: (slot: Int32Array, base: number, part: number) => void): void {
    const C = this.ctrl;
    const s = this.#seq = (this.#seq % 0x3fffffff) + 1;
    for (let w = 0; w + 1 < parts; w++) {
      const base = SLOTS + P.size * w;
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
      runRegion(this.ex, this.memory, this.own, 0);
    } catch (e) {
      error = e;
    }
    for (let w = 0; w + 1 < parts; w++) this.#join(w, s);
    for (let w = 0; w + 1 < parts; w++) {
      if (Atomics.exchange(C, ERR + w, 0) !== 0) {
        error ??= new Error(`matmul: CPU worker ${w + 1} failed while running its part`);
      }
    }
    if (error) throw error;
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
