/**
 * The runtime code imports from a plain HTTP server: serve the repo on 127.0.0.1 and run a
 * `deno` subprocess, with no config, no lock file and network access to 127.0.0.1 only, that
 * imports `http://127.0.0.1:PORT/mod.ts` and computes a gradient. Any npm:, jsr: or remote
 * import in mod.ts, lib/ or plugins/ would fail here.
 */
import assert from "node:assert/strict";
import { join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = normalize(fileURLToPath(new URL("..", import.meta.url)));

const TYPES: Record<string, string> = {
  ".ts": "application/typescript; charset=utf-8",
  ".js": "application/javascript; charset=utf-8",
  ".json": "application/json",
};

/** Serve files under ROOT read-only (GET/HEAD); no directory listings, no paths outside ROOT. */
async function serveFile(req: Request): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("method not allowed", { status: 405 });
  }
  const path = normalize(join(ROOT, decodeURIComponent(new URL(req.url).pathname)));
  if (!path.startsWith(ROOT.endsWith(sep) ? ROOT : ROOT + sep)) {
    return new Response("forbidden", { status: 403 });
  }
  try {
    const body = await Deno.readFile(path);
    const ext = path.slice(path.lastIndexOf("."));
    return new Response(req.method === "HEAD" ? null : body, {
      headers: { "content-type": TYPES[ext] ?? "application/octet-stream" },
    });
  } catch {
    return new Response("not found", { status: 404 });
  }
}

const SCRIPT = (port: number) => `
import * as nb from "http://127.0.0.1:${port}/mod.ts";
const f = (p) => nb.sum(nb.mul(nb.square(p.w), 0.5));
const [loss, g] = nb.valueAndGrad(f)({ w: nb.tensor([1, -2, 3], { dtype: "f64" }) });
console.log(JSON.stringify({ loss: await loss.item(), grad: Array.from(await g.w.data()) }));
`;

Deno.test("mod.ts imports from a plain HTTP server and computes a gradient", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, serveFile);
  const dir = await Deno.makeTempDir({ prefix: "nbit_url_import_" });
  try {
    const script = join(dir, "main.js");
    await Deno.writeTextFile(script, SCRIPT(server.addr.port));
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        "--allow-import=127.0.0.1",
        "--no-lock",
        "--no-config",
        "--no-npm",
        "--reload=http://127.0.0.1",
        script,
      ],
      cwd: dir,
      env: { NO_COLOR: "1", DENO_DIR: join(dir, "deno_dir") },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `the subprocess failed:\n${stderr}`);
    const result = JSON.parse(new TextDecoder().decode(out.stdout).trim());
    assert.deepEqual(result, { loss: 7, grad: [1, -2, 3] });
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Send one raw HTTP/1.1 request line (no URL parsing on the way) and return status and body. */
async function rawGet(port: number, target: string): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const request = `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`;
  await conn.write(new TextEncoder().encode(request));
  const chunks: Uint8Array[] = [];
  for await (const chunk of conn.readable) chunks.push(chunk);
  const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
  return { status, body: text.slice(text.indexOf("\r\n\r\n") + 4) };
}

Deno.test("the static server refuses paths outside the repository (raw requests)", async () => {
  // A file outside the repository that a traversal would reach: without the root check in
  // serveFile, the %2f request below returns it with status 200.
  const outside = await Deno.makeTempDir({ dir: "/tmp", prefix: "nbit_outside_" });
  await Deno.writeTextFile(join(outside, "secret.txt"), "SECRET");
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, serveFile);
  try {
    const port = server.addr.port;
    const up = "..%2f".repeat(32) + outside.slice(1).replaceAll("/", "%2f") + "%2fsecret.txt";
    // An encoded slash is no dot segment for the URL parser: decodeURIComponent turns it into
    // "../../…", so only serveFile's root check stands between this request and the file.
    const encoded = await rawGet(port, `/${up}`);
    assert.equal(encoded.status, 403, `status ${encoded.status}, body ${encoded.body}`);
    assert.equal(encoded.body, "forbidden");
    // Plain and %2e dot segments, sent raw: the URL parser removes them, so they stay inside.
    for (const dots of ["..", "%2e%2e", ".%2E"]) {
      const r = await rawGet(port, `/${`${dots}/`.repeat(32)}${outside.slice(1)}/secret.txt`);
      assert.equal(r.status, 404, `${dots}: status ${r.status}`);
      assert.ok(!r.body.includes("SECRET"), dots);
    }
    const ok = await rawGet(port, "/mod.ts");
    assert.equal(ok.status, 200);
    assert.match(ok.body, /export /);
  } finally {
    await server.shutdown();
    await Deno.remove(outside, { recursive: true });
  }
});
