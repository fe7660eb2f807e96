/**
 * Issue 13, item 16: docs and code cite primary sources (repository paths, tests, specs), never
 * a "REFERENCE" file that is not part of the repository.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const DIRS = ["docs", "lib", "plugins", "tests", "examples"];
// Built from parts so that this file does not match itself.
const CITATION = new RegExp(["REFER", "ENCE(\\.md)?\\s*(§|row\\b|rows\\b)"].join(""));

async function* files(dir: URL): AsyncGenerator<URL> {
  for await (const e of Deno.readDir(dir)) {
    const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    if (e.isDirectory) yield* files(url);
    else if (/\.(ts|md)$/.test(e.name)) yield url;
  }
}

Deno.test("no citation of a REFERENCE file outside the repository", async () => {
  const found: string[] = [];
  const check = async (url: URL) => {
    const lines = (await Deno.readTextFile(url)).split("\n");
    lines.forEach((l, i) => {
      if (CITATION.test(l)) {
        found.push(`${url.pathname.slice(ROOT.pathname.length)}:${i + 1}: ${l}`);
      }
    });
  };
  await check(new URL("README.md", ROOT));
  for (const d of DIRS) {
    for await (const f of files(new URL(`${d}/`, ROOT))) await check(f);
  }
  assert.deepEqual(found, [], "cite the primary source (repository path, test, spec) instead");
});
