/**
 * The device a `--device` flag names.
 *
 * @example
 * ```ts
 * const device = await resolveDevice("auto"); // WebGPU when an adapter exists, else cpu
 * ```
 *
 * @module
 */
import type { Backend } from "../../lib/backend/backend.ts";
import { cpu } from "../../lib/backend/cpu/cpu.ts";
import { webgpu } from "../../lib/backend/webgpu/webgpu.ts";
import type { DeviceName } from "./options.ts";

/**
 * `cpu`, `webgpu` (a clear error without an adapter) or `auto`: WebGPU when an adapter exists,
 * else the CPU, and the CPU when the run needs f64 (`needsF64`), which WGSL lacks.
 *
 * @example
 * ```ts
 * const device = await resolveDevice("auto", { needsF64: precision === "64-true" });
 * ```
 */
export async function resolveDevice(
  name: DeviceName,
  opts: { needsF64?: boolean } = {},
): Promise<Backend> {
  if (name === "cpu" || (name === "auto" && opts.needsF64)) return cpu;
  if (name === "webgpu") return await webgpu();
  try {
    return await webgpu();
  } catch {
    return cpu;
  }
}
