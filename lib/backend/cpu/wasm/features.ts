/**
 * Feature detection for the WebAssembly fast path: SIMD and relaxed SIMD are detected by
 * validating tiny modules, shared memory and workers by probing the globals. `NBIT_WASM=0`
 * (read through a feature-detected `Deno.env` / `process.env` seam; browsers have neither)
 * disables WebAssembly so the TypeScript fallback runs; `NBIT_WASM_FMA=0` keeps plain SIMD
 * (separate multiply and add, the same bits on every machine) even where relaxed SIMD exists.
 *
 * @module
 */
import { type Code, type Func, I, T, V, wasmModule } from "./emit.ts";

/** An environment variable, or undefined where the runtime has none or denies access. */
export function envVar(name: string): string | undefined {
  try {
    const g = globalThis as {
      Deno?: {
        env?: { get(n: string): string | undefined };
        permissions?: { querySync?(d: { name: "env"; variable: string }): { state: string } };
      };
      process?: { env?: Record<string, string | undefined> };
    };
    if (g.Deno?.env) {
      // Without --allow-env Deno would prompt on a terminal: only read what is granted.
      const q = g.Deno.permissions?.querySync?.({ name: "env", variable: name });
      if (q && q.state !== "granted") return undefined;
      return g.Deno.env.get(name);
    }
    return g.process?.env?.[name];
  } catch {
    return undefined; // no --allow-env: defaults
  }
}

function validates(funcs: readonly Func[]): boolean {
  try {
    return typeof WebAssembly === "object" &&
      WebAssembly.validate(wasmModule(funcs, { shared: false, minPages: 1, maxPages: 1 }));
  } catch {
    return false;
  }
}

/** What this runtime offers the WebAssembly kernels. */
export interface WasmFeatures {
  /** 128-bit SIMD validates. */
  readonly simd: boolean;
  /** `f32x4.relaxed_madd` validates. */
  readonly relaxed: boolean;
  /** `SharedArrayBuffer` and shared `WebAssembly.Memory` work (needed for threads). */
  readonly shared: boolean;
}

function detect(): WasmFeatures {
  const v = (operands: number, op: Code): Func[] => [{
    name: "f",
    params: [T.i32],
    locals: [T.v128],
    body: [...new Array(operands).fill([I.get(0), V.load()]), op, I.set(1)],
  }];
  const simd = validates(v(2, V.f32x4Add));
  const relaxed = simd && validates(v(3, V.f32x4RelaxedMadd));
  let shared = false;
  try {
    shared = typeof SharedArrayBuffer === "function" &&
      new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer instanceof
        SharedArrayBuffer;
  } catch {
    shared = false;
  }
  return { simd, relaxed, shared };
}

let cached: WasmFeatures | undefined;

/** The runtime's features (detected once). */
export function wasmFeatures(): WasmFeatures {
  return cached ??= detect();
}

/** Whether the WebAssembly path is enabled: SIMD exists and `NBIT_WASM` is not `0`. */
export function wasmEnabled(): boolean {
  return envVar("NBIT_WASM") !== "0" && wasmFeatures().simd;
}

/** Whether kernels use relaxed FMA (`NBIT_WASM_FMA=0` turns it off). */
export function useRelaxedFma(): boolean {
  return envVar("NBIT_WASM_FMA") !== "0" && wasmFeatures().relaxed;
}
