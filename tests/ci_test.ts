/**
 * CI must fail when it cannot run what it says it ran: `.ci/run --check-log LOG` (the same
 * tally the CI run applies to each `deno test` log) counts ignored tests as failed, and the
 * WebGPU checkpoint test fails, not ignored, without an adapter under NBIT_REQUIRE_WEBGPU=1.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function checkLog(log: string): Promise<{ code: number; stdout: string }> {
  const path = await Deno.makeTempFile({ dir: "/tmp", prefix: "nbit_ci_log_" });
  try {
    await Deno.writeTextFile(path, log);
    const out = await new Deno.Command("bash", {
      args: [new URL(".ci/run", ROOT).pathname, "--check-log", path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stdout: text(out.stdout) };
  } finally {
    await Deno.remove(path);
  }
}

/** `deno test` on the checkpoint test's WebGPU case with no adapter (a backend wgpu lacks here). */
async function gpuTestWithoutAdapter(require: boolean): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "--allow-read",
      "--allow-env",
      "--allow-write=/tmp",
      "--filter",
      "WebGPU: every GPU dtype round trips",
      "tests/checkpoint_test.ts",
    ],
    cwd: ROOT,
    env: {
      NO_COLOR: "1",
      DENO_WEBGPU_BACKEND: "dx12",
      NBIT_REQUIRE_WEBGPU: require ? "1" : "0",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return text(out.stdout) + text(out.stderr);
}

Deno.test("ci tally: passes a clean summary, counts ignored tests and missing summaries as failed", async () => {
  const clean = await checkLog("running 2 tests\nok | 12 passed | 0 failed (3s)\n");
  assert.deepEqual(clean, { code: 0, stdout: "12 passed, 0 failed\n" });
  const ignored = await checkLog(
    "webgpu: add ... ignored (0ms)\nok | 10 passed | 0 failed | 2 ignored (1s)\n",
  );
  assert.equal(ignored.code, 1);
  assert.match(ignored.stdout, /2 test\(s\) ignored .*\n.*webgpu: add \.\.\. ignored/);
  assert.match(ignored.stdout, /10 passed, 2 failed\n$/);
  const failed = await checkLog("FAILED | 3 passed | 1 failed (1s)\n");
  assert.equal(failed.code, 1);
  assert.match(failed.stdout, /3 passed, 1 failed/);
  const none = await checkLog("error: Module not found\n");
  assert.equal(none.code, 1);
  assert.match(none.stdout, /no test summary/);
});

Deno.test("without an adapter, the WebGPU checkpoint test is ignored, or fails under NBIT_REQUIRE_WEBGPU=1; CI fails both", async () => {
  const ignored = await gpuTestWithoutAdapter(false);
  assert.match(ignored, /ok \| 0 passed \| 0 failed \| 1 ignored/);
  assert.equal((await checkLog(ignored)).code, 1, "an ignored GPU test fails CI");
  const required = await gpuTestWithoutAdapter(true);
  assert.match(required, /FAILED \| 0 passed \| 1 failed/);
  assert.match(required, /NBIT_REQUIRE_WEBGPU=1 but webgpu\(\) failed/);
  assert.equal((await checkLog(required)).code, 1);
});
