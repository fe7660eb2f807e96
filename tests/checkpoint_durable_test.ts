/**
 * Issue 13, item 9: `save` promises that a crash leaves the previous checkpoint intact, which
 * needs an fsync of the new file before the rename and of the directory after it. The first
 * test watches the real system calls with strace; the others inject failures at each stage.
 */
import assert from "node:assert/strict";
import { dispose, memory, tensor } from "../lib/tensor.ts";
import { type CheckpointFiles, encodeTree, save, writeFileAtomic } from "../lib/checkpoint.ts";

const tree = () => ({ w: tensor([1, 2, 3, 4]), b: tensor([0.5], { dtype: "f16" }) });

/** The checkpoint bytes of a tree, which is then freed. */
async function fileOf(t: unknown, metadata?: Record<string, string>): Promise<Uint8Array> {
  const bytes = await encodeTree(t, metadata);
  dispose(t);
  return bytes;
}

/** Run `fn` in a fresh directory under /tmp, then remove it; checks that no tensor leaked. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "nbit-durable-" });
  const before = memory().tensors;
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(memory().tensors, before, "no tensor leaks");
}

const namesIn = async (dir: string) =>
  (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name);

const strace = await new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" })
  .output().then((o) => o.success, () => false);
if (!strace) {
  console.log("checkpoint_durable_test: strace is not installed; skipping the syscall test");
}

Deno.test({
  name: "save: the real syscalls are fsync(temp file), rename, fsync(directory), in that order",
  ignore: !strace,
  fn: async () => {
    await withDir(async (dir) => {
      const target = `${dir}/model.safetensors`;
      const script = `${dir}/save.ts`;
      const lib = new URL("../lib/", import.meta.url).href;
      await Deno.writeTextFile(
        script,
        `import { save } from "${lib}checkpoint.ts";\nimport { tensor } from "${lib}tensor.ts";\n` +
          `await save(${JSON.stringify(target)}, { w: tensor([1, 2, 3, 4]) });\n`,
      );
      const log = `${dir}/strace.log`;
      const out = await new Deno.Command("strace", {
        args: [
          ...[
            "-f",
            "-y",
            "-qq",
            "-o",
            log,
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
          ],
          ...[Deno.execPath(), "run", "--no-lock", `--allow-read`, `--allow-write=${dir}`, script],
        ],
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const lines = (await Deno.readTextFile(log)).split("\n").filter((l) => l.includes(dir));
      const renamed = lines.findIndex((l) =>
        /rename(at2?)?\(/.test(l) && l.includes(`"${target}"`) && l.includes(".tmp-")
      );
      assert.ok(renamed >= 0, `no rename onto the target in:\n${lines.join("\n")}`);
      const tmp = lines[renamed].match(/"([^"]*\.tmp-[^"]*)"/)![1];
      const synced = (path: string) => (l: string) =>
        /\b(fsync|fdatasync)\(\d+<([^>]*)>\) = 0/.exec(l)?.[2] === path;
      assert.ok(lines.slice(0, renamed).some(synced(tmp)), `no fsync of ${tmp} before the rename`);
      assert.ok(lines.slice(renamed).some(synced(dir)), `no fsync of ${dir} after the rename`);
      const want = await fileOf({ w: tensor([1, 2, 3, 4]) });
      assert.deepEqual(await Deno.readFile(target), want);
    });
  },
});

Deno.test("save: overwriting a larger checkpoint leaves exactly the new bytes, no temp file", async () => {
  await withDir(async (dir) => {
    const target = `${dir}/model.safetensors`;
    await Deno.writeFile(target, new Uint8Array(100_000).fill(7));
    const t = tree();
    await save(target, t);
    assert.deepEqual(await Deno.readFile(target), await encodeTree(t));
    await save(new URL(`file://${target}`), t, { note: "via a URL" });
    assert.deepEqual(await Deno.readFile(target), await encodeTree(t, { note: "via a URL" }));
    assert.deepEqual(await namesIn(dir), ["model.safetensors"]);
    dispose(t);
  });
});

type Stage = "open" | "write" | "sync" | "rename" | "dir-open" | "dir-sync";

/** Deno's calls, logged, with an injected failure at `failAt` (a short write then an error). */
function loggedFiles(log: string[], failAt?: Stage, os = "linux"): CheckpointFiles {
  const boom = (stage: Stage) => {
    if (stage === failAt) throw new Error(`injected ${stage} failure`);
  };
  const short = (p: string | URL) => String(p).replace(/.*\//, "").replace(/\.tmp-.*/, ".tmp");
  return {
    readFile: Deno.readFile,
    remove: async (p) => {
      log.push(`remove ${short(p)}`);
      await Deno.remove(p);
    },
    rename: async (a, b) => {
      log.push(`rename ${short(a)} ${short(b)}`);
      boom("rename");
      await Deno.rename(a, b);
    },
    open: async (p, opts) => {
      const isDir = opts.read === true;
      log.push(`open ${isDir ? "dir" : short(p)}`);
      boom(isDir ? "dir-open" : "open");
      const f = await Deno.open(p, opts);
      return {
        write: async (b) => {
          log.push("write");
          if (failAt === "write") {
            await f.write(b.subarray(0, 10)); // a partial file on disk, then the error
            boom("write");
          }
          return await f.write(b);
        },
        sync: async () => {
          log.push(`sync ${isDir ? "dir" : short(p)}`);
          boom(isDir ? "dir-sync" : "sync");
          await f.sync();
        },
        close: () => {
          log.push(`close ${isDir ? "dir" : short(p)}`);
          f.close();
        },
      };
    },
    build: { os },
  };
}

Deno.test("writeFileAtomic: fsync the file, close, rename, then fsync the directory", async () => {
  await withDir(async (dir) => {
    const log: string[] = [];
    const bytes = await fileOf(tree());
    await writeFileAtomic(`${dir}/m.st`, bytes, loggedFiles(log));
    const writes = log.filter((l) => l === "write").length;
    assert.ok(writes >= 1);
    assert.deepEqual(log.filter((l) => l !== "write"), [
      "open m.st.tmp",
      "sync m.st.tmp",
      "close m.st.tmp",
      "rename m.st.tmp m.st",
      "open dir",
      "sync dir",
      "close dir",
    ]);
    assert.deepEqual(await Deno.readFile(`${dir}/m.st`), bytes);

    const onWindows: string[] = [];
    await writeFileAtomic(`${dir}/w.st`, bytes, loggedFiles(onWindows, undefined, "windows"));
    assert.ok(!onWindows.includes("open dir"), "a directory cannot be opened on Windows");
    assert.ok(onWindows.includes("sync w.st.tmp"));
  });
});

Deno.test("writeFileAtomic: a failure before the rename leaves the old file intact, no temp file", async () => {
  await withDir(async (dir) => {
    const target = `${dir}/m.st`;
    const old = await fileOf({ old: tensor([9, 9]) });
    const fresh = await fileOf(tree());
    for (const stage of ["open", "write", "sync", "rename"] as const) {
      await Deno.writeFile(target, old);
      const log: string[] = [];
      await assert.rejects(
        () => writeFileAtomic(target, fresh, loggedFiles(log, stage)),
        new RegExp(`injected ${stage} failure`),
      );
      assert.deepEqual(await Deno.readFile(target), old, stage);
      assert.deepEqual(await namesIn(dir), ["m.st"], `${stage}: ${log}`);
      if (stage !== "open") assert.ok(log.includes("close m.st.tmp"), `${stage}: ${log}`);
    }
  });
});

Deno.test("writeFileAtomic: a directory that cannot be synced is reported, the file is in place", async () => {
  await withDir(async (dir) => {
    const target = `${dir}/m.st`;
    const bytes = await fileOf(tree());
    await assert.rejects(
      () => writeFileAtomic(target, bytes, loggedFiles([], "dir-open")),
      /m\.st was written, but its directory .* could not be opened to fsync the rename \(injected dir-open failure\); grant read access/,
    );
    assert.deepEqual(await Deno.readFile(target), bytes);
    await assert.rejects(
      () => writeFileAtomic(target, bytes, loggedFiles([], "dir-sync")),
      /injected dir-sync failure/,
    );
  });
});
