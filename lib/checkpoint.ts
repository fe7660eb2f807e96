/**
 * Checkpoints: save and load trees of tensors and whole {@linkcode TrainState}s as safetensors
 * files (`lib/safetensors.ts` is the byte format, `lib/tree_codec.ts` the tree structure).
 *
 * ## What a file holds
 *
 * - Every tensor leaf, bit for bit, under its dotted tree path (`"layers.0.w"`), in its own
 *   dtype (f16/bf16/fp8 raw bits, u8 codes, f32 absmax …). Python's `safetensors` reads them
 *   as they are (`F8_E4M3` is torch's `float8_e4m3fn`).
 * - One metadata key with the tree's JSON skeleton (see `lib/tree_codec.ts`), which restores
 *   the exact structure and the non-tensor leaves (numbers, strings, booleans, null,
 *   undefined; NaN, ±Infinity and −0 too):
 *   - {@linkcode save} writes `"nbit.tree"`: `{"version":1,"tree":<skeleton>}`;
 *   - {@linkcode saveState} writes `"nbit.state"`: `{"version":1,"step":<n>,"tree":<skeleton of
 *     {params, opt, plugins}>}` plus `"key":[k0,k1]` (the state's PRNG key) and `"preset"`
 *     when given. Tensor names then start with
 *     `params.`, `opt.` and `plugins.` (e.g. `plugins.gradScale.scale`).
 *
 *   With no other metadata the file is byte-identical to what Python's safetensors writes with
 *   `save_file(tensors, metadata={"nbit.tree": …})` (one metadata key: a deterministic order).
 * - Your own string metadata, if you pass some (keys starting with `nbit.` are reserved).
 *
 * {@linkcode load} rebuilds the tree from the skeleton; for a file without one (written by
 * another program) it rebuilds nested objects from the names, turning nodes whose keys are
 * `0 … n-1` into arrays. A tensor that appears twice in a tree is stored twice and loads as two
 * tensors. Paths are written atomically and durably (a temporary file next to the target,
 * fsynced, renamed over the target, then the directory fsynced; see `writeFileAtomic`), so a
 * crash or power loss while saving leaves the previous checkpoint or the complete new one,
 * never a partial file. A writer gets the bytes only: its durability is the writer's.
 *
 * ## Errors
 *
 * Malformed files throw a `SafetensorsError` (`safetensorsErrorCode(e)`, see
 * `lib/safetensors.ts`); tree and state problems throw a `CheckpointError`
 * (`checkpointErrorCode(e)`, see `lib/tree_codec.ts`). Both have documented codes and messages.
 *
 * @module
 */
import type { Backend } from "./backend/backend.ts";
import { cpu } from "./backend/cpu/cpu.ts";
import { dispose, fromStorage, Tensor } from "./tensor.ts";
import { leaves } from "./tree.ts";
import type { TrainState } from "./train.ts";
import { decodeSafetensors, encodeSafetensors, type SafetensorsEntry } from "./safetensors.ts";
import { checkpointFail, treeFromNames, treeFromSkeleton, treeSkeleton } from "./tree_codec.ts";

/**
 * Metadata key of the tree skeleton that {@linkcode save} writes.
 *
 * @example
 * ```ts
 * decodeSafetensors(bytes).metadata?.[TREE_KEY]; // '{"version":1,"tree":{…}}'
 * ```
 */
export const TREE_KEY = "nbit.tree";

/**
 * Metadata key of the train-state record that {@linkcode saveState} writes.
 *
 * @example
 * ```ts
 * JSON.parse(decodeSafetensors(bytes).metadata![STATE_KEY]).step; // 1200
 * ```
 */
export const STATE_KEY = "nbit.state";

/**
 * The checkpoint format version nbit writes and reads.
 *
 * @example
 * ```ts
 * CHECKPOINT_VERSION; // 1
 * ```
 */
export const CHECKPOINT_VERSION = 1;

/**
 * Something bytes can be written to: `Deno.FsFile`, a `Deno.Writer`, a stream writer. A numeric
 * result is the count written (short writes are continued); no result means all was written.
 *
 * @example
 * ```ts
 * const chunks: Uint8Array[] = [];
 * const w: WriterLike = { write: (c) => void chunks.push(c.slice()) };
 * ```
 */
export interface WriterLike {
  /** Write (some of) `chunk`. */
  write(chunk: Uint8Array): Promise<number | void> | number | void;
}

/**
 * Options of {@linkcode load}.
 *
 * @example
 * ```ts
 * const opts: LoadOptions = { device: cpu };
 * ```
 */
export interface LoadOptions {
  /** Where the tensors are created (default `cpu`). */
  device?: Backend;
}

/**
 * Options of {@linkcode loadState}.
 *
 * @example
 * ```ts
 * const opts: LoadStateOptions = { device: cpu, check: false };
 * ```
 */
export interface LoadStateOptions extends LoadOptions {
  /** With a step, compare the file's structure with `step.init` (default true). */
  check?: boolean;
}

/**
 * Options of {@linkcode saveState}.
 *
 * @example
 * ```ts
 * const opts: SaveStateOptions = { preset: "16-mixed", metadata: { run: "mnist-3" } };
 * ```
 */
export interface SaveStateOptions {
  /** Your own string metadata (keys must not start with `nbit.`). */
  metadata?: Readonly<Record<string, string>>;
  /** The precision preset the state was trained with, recorded in `nbit.state`. */
  preset?: string;
}

// ---------------------------------------------------------------------------------------------
// bytes

function checkUserMetadata(metadata: Readonly<Record<string, string>> | undefined): void {
  for (const k of Object.keys(metadata ?? {})) {
    if (k.startsWith("nbit.")) {
      checkpointFail("reserved-metadata", `metadata key ${JSON.stringify(k)} is reserved`);
    }
  }
}

async function encodeWith(
  tree: unknown,
  key: string,
  record: Record<string, unknown>,
  metadata: Readonly<Record<string, string>> | undefined,
): Promise<Uint8Array> {
  checkUserMetadata(metadata);
  const { skeleton, tensors } = treeSkeleton(tree);
  const entries: SafetensorsEntry[] = [];
  for (const { name, tensor } of tensors) {
    entries.push({ name, dtype: tensor.dtype, shape: tensor.shape, data: await tensor.bits() });
  }
  const json = JSON.stringify({ version: CHECKPOINT_VERSION, ...record, tree: skeleton });
  return encodeSafetensors(entries, { ...metadata, [key]: json });
}

/**
 * The bytes of a safetensors file holding `tree` (what {@linkcode save} writes). Works in any
 * runtime.
 *
 * @example
 * ```ts
 * const bytes = await encodeTree({ w: ones([2, 2]), step: 3 });
 * const back = await load(bytes); // { w: Tensor, step: 3 }
 * ```
 */
export function encodeTree(
  tree: unknown,
  metadata?: Readonly<Record<string, string>>,
): Promise<Uint8Array> {
  return encodeWith(tree, TREE_KEY, {}, metadata);
}

/**
 * The bytes of a safetensors file holding a whole train state (what {@linkcode saveState}
 * writes). Works in any runtime.
 *
 * @example
 * ```ts
 * const bytes = await encodeState(state, { preset: "bf16-mixed" });
 * ```
 */
export function encodeState(state: TrainState, opts: SaveStateOptions = {}): Promise<Uint8Array> {
  const { params, opt, plugins, step } = state;
  const record: Record<string, unknown> = { step };
  if (state.key !== undefined) record.key = [state.key.k0, state.key.k1];
  if (opts.preset !== undefined) record.preset = opts.preset;
  return encodeWith({ params, opt, plugins }, STATE_KEY, record, opts.metadata);
}

// ---------------------------------------------------------------------------------------------
// files

/** An open file, as `Deno.FsFile` gives it. */
interface FileHandle {
  write(b: Uint8Array): Promise<number>;
  sync(): Promise<void>;
  close(): void;
}

/**
 * The file system calls checkpoints use, as `Deno` has them.
 *
 * @internal Exported for tests that inject failures into {@linkcode writeFileAtomic}.
 */
export interface CheckpointFiles {
  /** Read a whole file. */
  readFile(p: string | URL): Promise<Uint8Array>;
  /** Open a file (`{ write, createNew }`) or a directory (`{ read }`). */
  open(
    p: string | URL,
    opts: { read?: boolean; write?: boolean; createNew?: boolean },
  ): Promise<FileHandle>;
  /** Rename a file, replacing the target. */
  rename(a: string | URL, b: string | URL): Promise<void>;
  /** Remove a file. */
  remove(p: string | URL): Promise<void>;
  /** The host; a directory cannot be opened and synced on Windows. */
  readonly build?: { readonly os: string };
}

function denoFiles(what: string): CheckpointFiles {
  const d = (globalThis as { Deno?: CheckpointFiles }).Deno;
  if (!d || typeof d.readFile !== "function" || typeof d.open !== "function") {
    checkpointFail(
      "no-file-system",
      `${what} a path needs Deno's file API; pass bytes or a writer instead`,
    );
  }
  return d;
}

/** The directory holding `target` (for its fsync after the rename; not used on Windows). */
function directoryOf(target: string | URL): string | URL {
  if (target instanceof URL) return new URL(".", target);
  const cut = target.lastIndexOf("/");
  return cut < 0 ? "." : cut === 0 ? "/" : target.slice(0, cut);
}

/** Write all of `bytes` (continuing short writes). */
async function writeAll(w: WriterLike, bytes: Uint8Array): Promise<void> {
  let rest = bytes;
  while (rest.length > 0) {
    const n = await w.write(rest);
    if (typeof n !== "number") return;
    if (n <= 0) throw new Error("checkpoint: the writer wrote 0 bytes");
    rest = rest.subarray(n);
  }
}

/**
 * Replace the file at `target` with `bytes` so that a crash at any moment leaves either the old
 * file or the complete new one: write a new temporary file next to it, `fsync` it, close it,
 * rename it over `target`, then `fsync` the directory so that the rename itself is durable (not
 * on Windows, where a directory cannot be opened; there the rename is all the runtime offers).
 * If anything fails before the rename, the temporary file is removed and `target` is untouched.
 *
 * @internal Used by {@linkcode save} and {@linkcode saveState}; `files` is for tests.
 *
 * @example
 * ```ts
 * await writeFileAtomic("model.safetensors", bytes);
 * ```
 */
export async function writeFileAtomic(
  target: string | URL,
  bytes: Uint8Array,
  files: CheckpointFiles = denoFiles("writing to"),
): Promise<void> {
  const suffix = `.tmp-${crypto.randomUUID()}`;
  const tmp = typeof target === "string" ? target + suffix : new URL(target.href + suffix);
  let file: FileHandle | undefined;
  try {
    file = await files.open(tmp, { write: true, createNew: true });
    await writeAll(file, bytes);
    await file.sync();
    const f = file;
    file = undefined;
    f.close();
    await files.rename(tmp, target);
  } catch (e) {
    try {
      file?.close();
    } catch { /* already failing: the first error is the one to report */ }
    await files.remove(tmp).catch(() => {});
    throw e;
  }
  if (files.build?.os === "windows") return;
  const dirPath = directoryOf(target);
  let dir: FileHandle;
  try {
    dir = await files.open(dirPath, { read: true });
  } catch (e) {
    throw new Error(
      `checkpoint: ${String(target)} was written, but its directory ${String(dirPath)} could ` +
        `not be opened to fsync the rename (${(e as Error)?.message ?? e}); grant read access ` +
        "to the directory (e.g. --allow-read) so that the save is durable",
      { cause: e },
    );
  }
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

async function writeTo(target: string | URL | WriterLike, bytes: Uint8Array): Promise<void> {
  if (typeof target === "string" || target instanceof URL) {
    await writeFileAtomic(target, bytes);
  } else {
    await writeAll(target, bytes);
  }
}

function readFrom(source: string | URL | Uint8Array): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return Promise.resolve(source);
  return denoFiles("reading from").readFile(source);
}

/**
 * Save a tree of tensors (nested objects and arrays; numbers, strings, booleans, null and
 * undefined leaves too) to a safetensors file, or to a writer. Reads each tensor back from its
 * device first.
 *
 * @example
 * ```ts
 * await save("model.safetensors", { layers: [{ w, b }], epochs: 3 }, { author: "me" });
 * ```
 */
export async function save(
  target: string | URL | WriterLike,
  tree: unknown,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  await writeTo(target, await encodeTree(tree, metadata));
}

/**
 * Save a whole {@linkcode TrainState}: params, optimizer state (8-bit codes and absmax bit for
 * bit), plugin state with its config numbers, and the step count.
 *
 * @example
 * ```ts
 * await saveState("run.safetensors", state, { preset: "16-mixed" });
 * ```
 */
export async function saveState(
  target: string | URL | WriterLike,
  state: TrainState,
  opts: SaveStateOptions = {},
): Promise<void> {
  await writeTo(target, await encodeState(state, opts));
}

// ---------------------------------------------------------------------------------------------
// load

/** Checks of restored plugin state, by plugin slot name (see `registerPluginStateCheck`). */
const pluginStateChecks = new Map<string, (state: unknown) => void>();

/**
 * Register the check that {@linkcode loadState} runs on a restored `state.plugins[name]`
 * before the state is returned: it throws (with a message naming the field, the rule and the
 * value) when the file's plugin state or config breaks the rules that the plugin's options
 * obey. Built-in plugins register theirs when their module is imported (`gradScale`, `fp8`);
 * registering a name again replaces its check.
 *
 * @example
 * ```ts
 * registerPluginStateCheck("countSkipped", (s) => {
 *   if (!((s as { n?: unknown }).n instanceof Tensor)) throw new Error("countSkipped: n must be a tensor");
 * });
 * ```
 */
export function registerPluginStateCheck(name: string, check: (state: unknown) => void): void {
  if (typeof name !== "string" || name === "" || typeof check !== "function") {
    throw new Error(
      "registerPluginStateCheck: needs a non-empty plugin name and a check function, got " +
        `${typeof name} ${JSON.stringify(name)} and ${typeof check}`,
    );
  }
  pluginStateChecks.set(name, check);
}

/** Run the registered checks on each restored plugin slot; a `bad-plugin-state` error if one fails. */
function checkPluginStates(plugins: Record<string, unknown>): void {
  for (const [name, slot] of Object.entries(plugins)) {
    const check = pluginStateChecks.get(name);
    if (!check) continue;
    try {
      check(slot);
    } catch (e) {
      checkpointFail(
        "bad-plugin-state",
        `the file's state.plugins.${name} is invalid: ${(e as Error)?.message ?? e}`,
      );
    }
  }
}

/** Parse a `nbit.tree` / `nbit.state` record and check its version. */
function parseRecord(key: string, json: string): Record<string, unknown> {
  let r: unknown;
  try {
    r = JSON.parse(json);
  } catch {
    checkpointFail("bad-skeleton", `metadata ${JSON.stringify(key)} is not valid JSON`);
  }
  if (r === null || typeof r !== "object" || Array.isArray(r) || !("tree" in r)) {
    checkpointFail("bad-skeleton", `metadata ${JSON.stringify(key)} must be an object with "tree"`);
  }
  const version = (r as { version?: unknown }).version;
  if (version !== CHECKPOINT_VERSION) {
    checkpointFail(
      "bad-skeleton",
      `metadata ${JSON.stringify(key)} has format version ${JSON.stringify(version)}; ` +
        `this nbit reads version ${CHECKPOINT_VERSION}`,
    );
  }
  return r as Record<string, unknown>;
}

/** Create the tensors and rebuild the tree; frees what was created if anything fails. */
function buildTree(
  entries: readonly SafetensorsEntry[],
  skeleton: unknown,
  hasSkeleton: boolean,
  device: Backend,
): unknown {
  const byName = new Map(entries.map((e) => [e.name, e]));
  const created: Tensor[] = [];
  const make = (name: string): Tensor => {
    const e = byName.get(name)!;
    const t = fromStorage(e.data, e.dtype, e.shape, device);
    created.push(t);
    return t;
  };
  try {
    return hasSkeleton
      ? treeFromSkeleton(skeleton, new Set(byName.keys()), make)
      : treeFromNames([...byName.keys()], make);
  } catch (e) {
    dispose(created);
    throw e;
  }
}

/**
 * Load a tree saved by {@linkcode save} (or any safetensors file) from a path or from bytes,
 * with its tensors on `opts.device` (default `cpu`). A file written by {@linkcode saveState}
 * loads as `{ params, opt, plugins }`; a file without nbit metadata as nested objects built from
 * the dotted names (nodes keyed `0 … n-1` become arrays).
 *
 * @example
 * ```ts
 * const params = await load("model.safetensors", { device: await webgpu() });
 * ```
 */
export async function load(
  source: string | URL | Uint8Array,
  opts: LoadOptions = {},
): Promise<unknown> {
  const { entries, metadata } = decodeSafetensors(await readFrom(source));
  const key = metadata?.[TREE_KEY] !== undefined
    ? TREE_KEY
    : metadata?.[STATE_KEY] !== undefined
    ? STATE_KEY
    : undefined;
  const skeleton = key === undefined ? undefined : parseRecord(key, metadata![key]).tree;
  return buildTree(entries, skeleton, key !== undefined, opts.device ?? cpu);
}

function isPlain(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype;
}

function kindOf(x: unknown): string {
  if (x instanceof Tensor) return `${x.dtype}[${x.shape}]`;
  if (Array.isArray(x)) return `a list of ${x.length}`;
  if (isPlain(x)) return `an object with keys [${Object.keys(x).sort()}]`;
  return "a plain value";
}

/** The first path where `a` and `b` differ in structure, dtype or shape (values not compared). */
function firstDifference(a: unknown, b: unknown, path: string): string | undefined {
  const ka = kindOf(a);
  const kb = kindOf(b);
  if (ka !== kb) return `at ${JSON.stringify(path)}: the file has ${ka}, step.init makes ${kb}`;
  const sub = (k: string | number) => path ? `${path}.${k}` : `${k}`;
  if (Array.isArray(a)) {
    for (let i = 0; i < a.length; i++) {
      const d = firstDifference(a[i], (b as unknown[])[i], sub(i));
      if (d) return d;
    }
  } else if (isPlain(a)) {
    for (const k of Object.keys(a)) {
      const d = firstDifference(a[k], (b as Record<string, unknown>)[k], sub(k));
      if (d) return d;
    }
  }
  return undefined;
}

/**
 * Load a train state saved by {@linkcode saveState}, with its tensors on `opts.device`
 * (default `cpu`). With a `step`, the file's structure (tree paths, dtypes, shapes) is checked
 * against `step.init(loaded params)` so that resuming with another optimizer or precision setup
 * fails with a message naming the first difference (`state-mismatch`); this allocates one
 * fresh optimizer/plugin state for the comparison and frees it (pass `check: false` to skip).
 * Non-tensor leaves (config numbers) are not compared: the file's values are restored, after
 * each plugin's registered check ({@linkcode registerPluginStateCheck}) has held them to the
 * same rules as the plugin's options (`bad-plugin-state` otherwise; this runs with
 * `check: false` too).
 *
 * @example
 * ```ts
 * let state = await loadState("run.safetensors", step);
 * [state] = step(state, batch); // continues exactly where the saved run stopped
 * ```
 */
export async function loadState(
  source: string | URL | Uint8Array,
  step?: { init(params: unknown): TrainState },
  opts: LoadStateOptions = {},
): Promise<TrainState> {
  const { entries, metadata } = decodeSafetensors(await readFrom(source));
  const json = metadata?.[STATE_KEY];
  if (json === undefined) {
    checkpointFail(
      "not-a-state",
      `the file has no ${JSON.stringify(STATE_KEY)} metadata; was it written by saveState?`,
    );
  }
  const record = parseRecord(STATE_KEY, json);
  const count = record.step;
  if (!Number.isSafeInteger(count) || (count as number) < 0) {
    checkpointFail("bad-skeleton", `the step count ${JSON.stringify(count)} is not an integer ≥ 0`);
  }
  const words = record.key;
  const isWord = (w: unknown) =>
    Number.isInteger(w) && (w as number) >= 0 && (w as number) < 2 ** 32;
  if (words !== undefined && !(Array.isArray(words) && words.length === 2 && words.every(isWord))) {
    checkpointFail("bad-skeleton", `the key ${JSON.stringify(words)} is not two u32 words`);
  }
  const tree = buildTree(entries, record.tree, true, opts.device ?? cpu);
  if (!isPlain(tree) || !("params" in tree) || !("opt" in tree) || !isPlain(tree.plugins)) {
    dispose(tree);
    checkpointFail("bad-skeleton", "the state must be an object with params, opt and plugins");
  }
  try {
    checkPluginStates(tree.plugins);
  } catch (e) {
    dispose(tree);
    throw e;
  }
  const state: TrainState = {
    params: tree.params,
    opt: tree.opt,
    step: count as number,
    plugins: tree.plugins,
    ...(words === undefined
      ? {}
      : { key: Object.freeze({ kind: "nbit.key" as const, k0: words[0], k1: words[1] }) }),
  };
  if (step && opts.check !== false) {
    let diff: string | undefined;
    try {
      const fresh = step.init(state.params);
      const keep = new Set(leaves(state));
      try {
        diff = firstDifference(
          { params: state.params, opt: state.opt, plugins: state.plugins },
          { params: fresh.params, opt: fresh.opt, plugins: fresh.plugins },
          "",
        );
      } finally {
        for (const t of leaves(fresh)) if (!keep.has(t)) t.dispose();
      }
    } catch (e) {
      dispose(state);
      throw e;
    }
    if (diff) {
      dispose(state);
      checkpointFail("state-mismatch", `the checkpoint does not match this step ${diff}`);
    }
  }
  return state;
}
