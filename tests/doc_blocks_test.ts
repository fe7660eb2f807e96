/**
 * Every fenced code block of README.md and docs/*.md is run, or marked as not run.
 *
 * The conventions (README.md and docs/ follow them):
 *
 * - A ```` ```ts ```` block is a complete program. It is written to a temporary file, with its
 *   relative imports resolved against the markdown file (so `./mod.ts` in README.md and `../mod.ts`
 *   in docs/ are the repository's mod.ts) and any `http(s)://…/mod.ts` import pointed at the local
 *   mod.ts. All programs are type-checked by one `deno check` with the repository's deno.json, then
 *   each runs with `deno run --allow-read --allow-env --allow-write=/tmp`, and must exit with 0.
 * - A ```` ```ts continued ```` block is appended to the previous ts block of the same file: they
 *   are one program, split by prose.
 * - Output: a line comment `// → TEXT` says that the line of code it ends prints the line TEXT.
 *   The program's standard output, line by line, must equal the `→` comments of the program in
 *   order: every printed line has its comment and every comment its printed line. So any number a
 *   block shows is one this test checks.
 * - Not run: only blocks marked ```` ```sh ```` (shell commands) or ```` ```text ```` (layouts,
 *   tables, output). A block with any other info string, or none, fails the first test.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);
const RUN_PERMISSIONS = ["--allow-read", "--allow-env", "--allow-write=/tmp"];
const NOT_RUN = new Set(["sh", "text"]);

/** One fenced block: its file, the line of its opening fence, its info string and its text. */
export interface Block {
  file: string;
  line: number;
  info: string;
  code: string;
}

/** One program: one ts block, plus the `ts continued` blocks that follow it. */
export interface Program {
  file: string;
  line: number;
  code: string;
}

/** The fenced blocks of a markdown text (fences of three or more backticks, at column 0). */
export function extractBlocks(file: string, markdown: string): Block[] {
  const lines = markdown.split("\n");
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(`{3,})(.*)$/.exec(lines[i]);
    if (!open) continue;
    const end = lines.findIndex((l, j) => j > i && l.trimEnd() === open[1]);
    if (end < 0) throw new Error(`${file}:${i + 1}: the code block is never closed`);
    blocks.push({
      file,
      line: i + 1,
      info: open[2].trim(),
      code: lines.slice(i + 1, end).join("\n"),
    });
    i = end;
  }
  return blocks;
}

/** Why a block's info string is not allowed, or null. */
export function badLabel(b: Block): string | null {
  if (b.info === "ts" || b.info === "ts continued" || NOT_RUN.has(b.info)) return null;
  const what = b.info === "" ? "has no language" : `is marked "${b.info}"`;
  return `${b.file}:${b.line}: the code block ${what}; mark it ts (run), ts continued, sh or text`;
}

/** Join the ts blocks of one file into programs (a `ts continued` block joins the previous one). */
export function programs(blocks: Block[]): Program[] {
  const out: Program[] = [];
  for (const b of blocks) {
    if (b.info === "ts") out.push({ file: b.file, line: b.line, code: b.code });
    else if (b.info === "ts continued") {
      const last = out.at(-1);
      if (!last || last.file !== b.file) {
        throw new Error(`${b.file}:${b.line}: "ts continued" with no ts block before it`);
      }
      last.code += "\n" + b.code;
    }
  }
  return out;
}

/** The `// → TEXT` expectations of a program, in order. */
export function expectedOutput(code: string): string[] {
  return code.split("\n").flatMap((l) => {
    const m = /\/\/ → (.*)$/.exec(l);
    return m ? [m[1].trimEnd()] : [];
  });
}

/** The differences between the expected lines and the printed ones (empty when they agree). */
export function compareOutput(expected: string[], printed: string[]): string[] {
  const problems: string[] = [];
  for (let i = 0; i < Math.max(expected.length, printed.length); i++) {
    const [want, got] = [expected[i], printed[i]];
    if (want === undefined) problems.push(`printed line ${i + 1} "${got}" has no // → comment`);
    else if (got === undefined) problems.push(`// → ${want}: nothing was printed for it`);
    else if (want !== got) problems.push(`line ${i + 1}: expected "${want}", printed "${got}"`);
  }
  return problems;
}

/** Point the program's imports at the repository: relative to the markdown file, URLs of mod.ts. */
export function resolveImports(code: string, markdownUrl: URL): string {
  return code.replace(
    /(\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(["'])([^"']+)\2/g,
    (all, head: string, quote: string, spec: string) => {
      let to: string | null = null;
      if (spec.startsWith("./") || spec.startsWith("../")) to = new URL(spec, markdownUrl).href;
      else if (/^https?:\/\/.*\/mod\.ts$/.test(spec)) to = new URL("mod.ts", ROOT).href;
      return to === null ? all : `${head}${quote}${to}${quote}`;
    },
  );
}

async function markdownFiles(): Promise<string[]> {
  const docs: string[] = [];
  for await (const e of Deno.readDir(new URL("docs/", ROOT))) {
    if (e.isFile && e.name.endsWith(".md")) docs.push(`docs/${e.name}`);
  }
  return ["README.md", ...docs.sort()];
}

const FILES = await markdownFiles();
const BLOCKS = (await Promise.all(
  FILES.map(async (f) => extractBlocks(f, await Deno.readTextFile(new URL(f, ROOT)))),
)).flat();
const PROGRAMS = FILES.flatMap((f) => programs(BLOCKS.filter((b) => b.file === f)));
const DIR = await Deno.makeTempDir({ dir: "/tmp", prefix: "nbit_doc_blocks_" });
const PATHS = await Promise.all(PROGRAMS.map(async (p) => {
  const path = `${DIR}/${p.file.replaceAll("/", "_").replace(/\.md$/, "")}_L${p.line}.ts`;
  await Deno.writeTextFile(path, resolveImports(p.code, new URL(p.file, ROOT)));
  return path;
}));

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const deno = (args: string[]) =>
  new Deno.Command(Deno.execPath(), {
    args,
    cwd: DIR,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
const CONFIG = ["--config", new URL("deno.json", ROOT).pathname, "--no-lock"];

Deno.test("the conventions catch a wrong number, a missing comment and an unmarked block", () => {
  const md = "```ts\nconsole.log(1 + 1); // → 2\n```\n\n```\nx\n```\n```ts continued\nf();\n```\n";
  const blocks = extractBlocks("t.md", md);
  assert.deepEqual(blocks.map((b) => [b.line, b.info]), [[1, "ts"], [5, ""], [8, "ts continued"]]);
  assert.match(badLabel(blocks[1])!, /t\.md:5: the code block has no language/);
  assert.equal(badLabel(blocks[0]), null);
  assert.deepEqual(programs(blocks).map((p) => p.code), ["console.log(1 + 1); // → 2\nf();"]);
  assert.deepEqual(expectedOutput(programs(blocks)[0].code), ["2"]);
  assert.deepEqual(compareOutput(["2"], ["2"]), []);
  assert.deepEqual(compareOutput(["2"], ["3"]), [`line 1: expected "2", printed "3"`]);
  assert.equal(compareOutput(["2"], ["2", "4"]).length, 1);
  assert.equal(compareOutput(["2", "4"], ["2"]).length, 1);
  assert.throws(() => programs(extractBlocks("u.md", "```ts continued\n```\n")), /no ts block/);
  const url = new URL("docs/x.md", ROOT);
  assert.equal(
    resolveImports(
      `import * as nb from "../mod.ts";\nimport { a } from "https://x.dev/nbit/mod.ts";`,
      url,
    ),
    `import * as nb from "${new URL("mod.ts", ROOT).href}";\n` +
      `import { a } from "${new URL("mod.ts", ROOT).href}";`,
  );
});

Deno.test("every code block of README.md and docs/*.md is marked ts, ts continued, sh or text", () => {
  assert.ok(FILES.includes("README.md") && FILES.length > 1, `${FILES}`);
  const bad = BLOCKS.map(badLabel).filter((m) => m !== null);
  assert.deepEqual(bad, []);
  assert.ok(PROGRAMS.length >= 1);
});

Deno.test("every ts program of the docs type-checks (deno check)", async () => {
  const out = await deno(["check", "--quiet", ...CONFIG, ...PATHS]);
  assert.equal(out.code, 0, `deno check failed:\n${text(out.stderr)}${text(out.stdout)}`);
});

for (const [i, p] of PROGRAMS.entries()) {
  Deno.test(`${p.file}:${p.line} runs and prints what its // → comments show`, async () => {
    const out = await deno(["run", "--quiet", ...CONFIG, ...RUN_PERMISSIONS, PATHS[i]]);
    const stderr = text(out.stderr);
    assert.equal(out.code, 0, `${p.file}:${p.line} failed (exit ${out.code}):\n${stderr}`);
    const printed = text(out.stdout).split("\n").map((l) => l.trimEnd());
    if (printed.at(-1) === "") printed.pop();
    const problems = compareOutput(expectedOutput(p.code), printed);
    assert.deepEqual(problems, [], `${p.file}:${p.line}:\n${problems.join("\n")}`);
  });
}

globalThis.addEventListener("unload", () => Deno.removeSync(DIR, { recursive: true }));
