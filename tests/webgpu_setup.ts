/**
 * Shared setup of the WebGPU test files: one device per test process, and `gtest`, which
 * registers a test that is ignored (with the reason printed once) when no adapter exists,
 * unless `NBIT_REQUIRE_WEBGPU=1` makes a missing adapter a failure.
 */
import { webgpu, type WebGPUBackend } from "../lib/backend/webgpu/webgpu.ts";

const REQUIRE = Deno.env.get("NBIT_REQUIRE_WEBGPU") === "1";

/** The shared device, or undefined when WebGPU is unavailable. */
export let gpu: WebGPUBackend | undefined;
let why = "";
try {
  gpu = await webgpu();
} catch (e) {
  why = (e as Error).message;
}
if (!gpu) {
  if (REQUIRE) {
    Deno.test("webgpu: an adapter is required (NBIT_REQUIRE_WEBGPU=1)", () => {
      throw new Error(why);
    });
  } else console.log(`webgpu tests ignored: ${why}`);
} else {
  console.log(`webgpu tests on ${gpu.name}, shader-f16: ${gpu.features.shaderF16}`);
}

/** Register a GPU test (ignored without an adapter). */
export function gtest(name: string, fn: (g: WebGPUBackend) => Promise<void> | void): void {
  Deno.test({
    name: `webgpu: ${name}`,
    ignore: !gpu,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () => fn(gpu!),
  });
}
