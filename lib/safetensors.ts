/**
 * The safetensors file format, byte level and pure: {@linkcode encodeSafetensors} turns named
 * raw storages into bytes, {@linkcode decodeSafetensors} checks and reads them back. No file
 * system, no tensors: `Uint8Array` in, `Uint8Array` out, so it runs anywhere.
 *
 * ## Layout
 *
 * 1. 8 bytes: `N`, the header length, an unsigned little-endian 64-bit integer.
 * 2. `N` bytes: a UTF-8 JSON object `{"__metadata__": {string: string}, NAME: {"dtype": "F32",
 *    "shape": [2, 3], "data_offsets": [BEGIN, END]}, …}`, padded with spaces.
 * 3. The data region: each tensor's elements, little-endian, row-major, at
 *    `[BEGIN, END)` relative to the region's start.
 *
 * ## Deterministic output, as Python's `safetensors` writes it
 *
 * - Tensors are laid out (and listed in the header) by dtype size, largest first (F64, F32,
 *   I32, BF16, F16, F8_E4M3, F8_E5M2, U8, BOOL: the order of safetensors' `Dtype` enum,
 *   reversed), then by name in UTF-8 byte order. Every tensor then starts at a multiple of its
 *   element size.
 * - The header is compact JSON (no spaces), `__metadata__` first when given, then the tensors
 *   in data order, each as `{"dtype":…,"shape":…,"data_offsets":…}`; it is padded with spaces
 *   to a multiple of 8 bytes.
 *
 * So for the same tensors the bytes equal those of Python's `safetensors.serialize` /
 * `save_file` when the metadata has at most one key. One difference: Python keeps
 * `__metadata__` in a hash map, so with two or more keys its key order varies from run to run;
 * nbit writes the keys sorted (UTF-8 byte order). An empty metadata object is written as
 * `"__metadata__":{}` (as Python does for `metadata={}`); `undefined` writes no `__metadata__`.
 *
 * ## Errors
 *
 * Every error thrown here is an `Error` named `"SafetensorsError"` whose `code` is a
 * {@linkcode SafetensorsErrorCode} and whose message starts with `safetensors:`. Reading never
 * looks past the buffer, and a header above {@linkcode MAX_HEADER_BYTES} is refused before it
 * is decoded.
 *
 * @module
 */
import { byteSize, type DType, dtypes, parseDType, type Storage, storageFor } from "./dtype.ts";

/**
 * The largest header nbit reads: 100,000,000 bytes, the limit Python's safetensors uses.
 *
 * @example
 * ```ts
 * MAX_HEADER_BYTES; // 100000000
 * ```
 */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * One named tensor in a safetensors file: its dtype, shape and raw storage (f16/bf16 as
 * `Uint16Array` bits, fp8 as `Uint8Array` bits, as `storageFor` makes them).
 *
 * @example
 * ```ts
 * const e: SafetensorsEntry = { name: "w", dtype: "f32", shape: [2], data: new Float32Array(2) };
 * ```
 */
export interface SafetensorsEntry {
  /** The tensor's name (any well-formed string except `__metadata__`). */
  readonly name: string;
  /** nbit's dtype (stored as the safetensors name, e.g. `"bf16"` as `BF16`). */
  readonly dtype: DType;
  /** Dimensions, outermost first; `[]` is a scalar. */
  readonly shape: readonly number[];
  /** The raw elements, `storageFor(dtype, size)`'s type, exactly `size` long. */
  readonly data: Storage;
}

/**
 * What {@linkcode decodeSafetensors} returns: the tensors in file order and the `__metadata__`
 * map (`null` when the file has none).
 *
 * @example
 * ```ts
 * const { entries, metadata }: SafetensorsFile = decodeSafetensors(bytes);
 * ```
 */
export interface SafetensorsFile {
  /** The tensors, in data-region order. */
  readonly entries: SafetensorsEntry[];
  /** The `__metadata__` string map, or `null` if absent. */
  readonly metadata: Record<string, string> | null;
}

/**
 * Why encoding or decoding failed (the `code` of a thrown `SafetensorsError`):
 *
 * | code | meaning |
 * |---|---|
 * | `not-bytes` | (decode) the input is not a `Uint8Array` |
 * | `too-small` | fewer than 8 bytes: no header length |
 * | `header-too-large` | the header length is above {@linkcode MAX_HEADER_BYTES} |
 * | `header-beyond-file` | the header length reaches past the end of the bytes |
 * | `header-not-utf8` | the header is not valid UTF-8 |
 * | `header-not-json` | the header is not valid JSON |
 * | `header-not-object` | the header is JSON but not an object |
 * | `bad-metadata` | `__metadata__` is not an object of strings to strings |
 * | `bad-entry` | a tensor's header entry is not an object with `dtype`, `shape`, `data_offsets` |
 * | `unknown-dtype` | a dtype nbit does not read (the message lists the valid ones) |
 * | `bad-shape` | a shape that is not a list of integers ≥ 0, or has more than 2^53 − 1 bytes |
 * | `bad-offsets` | `data_offsets` that are not two integers `0 ≤ begin ≤ end` |
 * | `size-mismatch` | `end − begin` differs from the shape's size times the dtype's size |
 * | `offsets-not-contiguous` | tensors overlap, leave a gap, or do not start at 0 |
 * | `truncated` | the data region is shorter than the tensors' offsets need |
 * | `trailing-bytes` | the data region has bytes after the last tensor |
 * | `invalid-name` | (encode) a name that is not a well-formed string, or is `__metadata__` |
 * | `duplicate-name` | (encode) two tensors with the same name |
 * | `storage-mismatch` | (encode) data that is not the dtype's storage type or not `size` long |
 *
 * @example
 * ```ts
 * try { decodeSafetensors(bytes); } catch (e) { if (safetensorsErrorCode(e) === "truncated") retry(); }
 * ```
 */
export type SafetensorsErrorCode =
  | "not-bytes"
  | "too-small"
  | "header-too-large"
  | "header-beyond-file"
  | "header-not-utf8"
  | "header-not-json"
  | "header-not-object"
  | "bad-metadata"
  | "bad-entry"
  | "unknown-dtype"
  | "bad-shape"
  | "bad-offsets"
  | "size-mismatch"
  | "offsets-not-contiguous"
  | "truncated"
  | "trailing-bytes"
  | "invalid-name"
  | "duplicate-name"
  | "storage-mismatch";

function fail(code: SafetensorsErrorCode, message: string): never {
  const e = new Error(`safetensors: ${message}`);
  e.name = "SafetensorsError";
  throw Object.assign(e, { code });
}

/**
 * The {@linkcode SafetensorsErrorCode} of an error thrown by this module, else `undefined`.
 *
 * @example
 * ```ts
 * safetensorsErrorCode(new Error("x")); // undefined
 * ```
 */
export function safetensorsErrorCode(e: unknown): SafetensorsErrorCode | undefined {
  return e instanceof Error && e.name === "SafetensorsError"
    ? (e as Error & { code: SafetensorsErrorCode }).code
    : undefined;
}

// ---------------------------------------------------------------------------------------------
// dtype names

const TO_ST: Readonly<Record<DType, string>> = {
  f64: "F64",
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
  f8e4m3: "F8_E4M3",
  f8e5m2: "F8_E5M2",
  i32: "I32",
  u8: "U8",
  bool: "BOOL",
};

const FROM_ST: ReadonlyMap<string, DType> = new Map(dtypes.map((d) => [TO_ST[d], d]));

/** Position in safetensors' `Dtype` enum (BOOL < U8 < I8 < F8_E5M2 < F8_E4M3 < … < F64). */
const ENUM_RANK: Readonly<Record<DType, number>> = {
  bool: 0,
  u8: 1,
  f8e5m2: 3,
  f8e4m3: 4,
  f16: 7,
  bf16: 8,
  i32: 9,
  f32: 11,
  f64: 12,
};

/**
 * The safetensors dtype name of an nbit dtype: `F64`, `F32`, `F16`, `BF16`, `F8_E4M3`,
 * `F8_E5M2`, `I32`, `U8`, `BOOL`.
 *
 * @example
 * ```ts
 * safetensorsDType("f8e4m3"); // "F8_E4M3"
 * ```
 */
export function safetensorsDType(d: DType): string {
  return TO_ST[parseDType(d)];
}

// ---------------------------------------------------------------------------------------------
// byte helpers

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Reverse each `size`-byte group in place (only on big-endian hosts). */
function swapBytes(b: Uint8Array, size: number): void {
  for (let i = 0; i + size <= b.length; i += size) b.subarray(i, i + size).reverse();
}

function utf8Compare(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

const utf8 = new TextEncoder();

/** Sort strings in UTF-8 byte order (Rust's `String` order). */
function sortUtf8(xs: readonly string[]): string[] {
  const keyed = xs.map((s) => ({ s, k: utf8.encode(s) }));
  keyed.sort((a, b) => utf8Compare(a.k, b.k));
  return keyed.map((x) => x.s);
}

function shapeBytes(shape: readonly number[], d: DType, name: string): number {
  let n = byteSize(d);
  for (const s of shape) {
    n *= s;
    if (n > Number.MAX_SAFE_INTEGER) {
      fail("bad-shape", `tensor ${JSON.stringify(name)} with shape [${shape}] is too large`);
    }
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// encode

function checkName(name: unknown, what: string): string {
  if (typeof name !== "string" || !name.isWellFormed()) {
    fail("invalid-name", `${what} must be a well-formed string, got ${String(name)}`);
  }
  return name;
}

function checkEntry(e: SafetensorsEntry): number {
  const name = checkName(e.name, "a tensor name");
  if (name === "__metadata__") {
    fail("invalid-name", `"__metadata__" is reserved for metadata and cannot name a tensor`);
  }
  const d = parseDType(e.dtype);
  if (!Array.isArray(e.shape) || !e.shape.every((s) => Number.isSafeInteger(s) && s >= 0)) {
    fail("bad-shape", `tensor ${JSON.stringify(name)}: shape [${e.shape}] must be integers ≥ 0`);
  }
  const bytes = shapeBytes(e.shape, d, name);
  const like = storageFor(d, 0);
  if (
    !(e.data instanceof (like.constructor as typeof Uint8Array)) ||
    e.data.byteLength !== bytes
  ) {
    fail(
      "storage-mismatch",
      `tensor ${JSON.stringify(name)}: ${d}[${e.shape}] needs a ${like.constructor.name} of ` +
        `${bytes / byteSize(d)} elements, got ${e.data?.constructor?.name} of ${e.data?.length}`,
    );
  }
  return bytes;
}

/**
 * Encode tensors (and an optional string-to-string metadata map) as a safetensors file. The
 * output is deterministic: see the module docs for the order and the padding.
 *
 * @example
 * ```ts
 * const bytes = encodeSafetensors([{ name: "w", dtype: "f32", shape: [2], data: new Float32Array([1, 2]) }]);
 * bytes.length; // 8 + 56 + 8
 * ```
 */
export function encodeSafetensors(
  entries: readonly SafetensorsEntry[],
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  const seen = new Set<string>();
  const sized = entries.map((e) => {
    const bytes = checkEntry(e);
    if (seen.has(e.name)) fail("duplicate-name", `two tensors are named ${JSON.stringify(e.name)}`);
    seen.add(e.name);
    return { e, bytes, key: utf8.encode(e.name) };
  });
  sized.sort((a, b) => ENUM_RANK[b.e.dtype] - ENUM_RANK[a.e.dtype] || utf8Compare(a.key, b.key));

  const parts: string[] = [];
  if (metadata !== undefined) {
    if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) {
      fail("bad-metadata", "metadata must be an object of strings");
    }
    const kv = sortUtf8(Object.keys(metadata)).map((k) => {
      const v = metadata[k];
      checkName(k, "a metadata key");
      if (typeof v !== "string" || !v.isWellFormed()) {
        fail("bad-metadata", `metadata ${JSON.stringify(k)} must be a well-formed string`);
      }
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${kv.join(",")}}`);
  }
  let offset = 0;
  for (const { e, bytes } of sized) {
    const info = `{"dtype":"${TO_ST[e.dtype]}","shape":[${e.shape.join(",")}],` +
      `"data_offsets":[${offset},${offset + bytes}]}`;
    parts.push(`${JSON.stringify(e.name)}:${info}`);
    offset += bytes;
  }
  const json = utf8.encode(`{${parts.join(",")}}`);
  const n = Math.ceil(json.length / 8) * 8;

  const out = new Uint8Array(8 + n + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, n % 2 ** 32, true);
  view.setUint32(4, Math.floor(n / 2 ** 32), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + n);
  let at = 8 + n;
  for (const { e, bytes } of sized) {
    const raw = new Uint8Array(e.data.buffer, e.data.byteOffset, bytes);
    out.set(raw, at);
    if (!LITTLE_ENDIAN) swapBytes(out.subarray(at, at + bytes), byteSize(e.dtype));
    at += bytes;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// decode

interface Parsed {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

function parseEntry(name: string, info: unknown): Parsed {
  const q = JSON.stringify(name);
  if (info === null || typeof info !== "object" || Array.isArray(info)) {
    fail("bad-entry", `the header entry of tensor ${q} must be an object`);
  }
  const { dtype, shape, data_offsets: offs } = info as Record<string, unknown>;
  if (dtype === undefined || shape === undefined || offs === undefined) {
    fail("bad-entry", `tensor ${q} needs "dtype", "shape" and "data_offsets"`);
  }
  const d = typeof dtype === "string" ? FROM_ST.get(dtype) : undefined;
  if (d === undefined) {
    fail(
      "unknown-dtype",
      `tensor ${q} has unknown dtype ${JSON.stringify(dtype)}; ` +
        `valid dtypes: ${dtypes.map((x) => TO_ST[x]).join(", ")}`,
    );
  }
  if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0)) {
    fail("bad-shape", `tensor ${q} has shape ${JSON.stringify(shape)}; need integers ≥ 0`);
  }
  if (
    !Array.isArray(offs) || offs.length !== 2 ||
    !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[0] > offs[1]
  ) {
    fail(
      "bad-offsets",
      `tensor ${q} has data_offsets ${JSON.stringify(offs)}; need [begin, end], 0 ≤ begin ≤ end`,
    );
  }
  const [begin, end] = offs as number[];
  const need = shapeBytes(shape, d, name);
  if (end - begin !== need) {
    fail(
      "size-mismatch",
      `tensor ${q}: ${TO_ST[d]}[${shape}] needs ${need} bytes but data_offsets ` +
        `[${begin}, ${end}] hold ${end - begin}`,
    );
  }
  return { name, dtype: d, shape: shape as number[], begin, end };
}

function parseMetadata(m: unknown): Record<string, string> {
  if (m === null || typeof m !== "object" || Array.isArray(m)) {
    fail("bad-metadata", `"__metadata__" must be an object of strings, got ${JSON.stringify(m)}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== "string") {
      fail("bad-metadata", `"__metadata__" value of ${JSON.stringify(k)} must be a string`);
    }
    Object.defineProperty(out, k, {
      value: v,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

function describeInput(x: unknown): string {
  if (x === null || typeof x !== "object") return String(x);
  return `a ${(x as object).constructor?.name ?? "object"}`;
}

/** Read and parse the header: returns the parsed JSON object and where the data region begins. */
function readHeader(bytes: Uint8Array): { header: Record<string, unknown>; start: number } {
  if (bytes.length < 8) {
    fail("too-small", `${bytes.length} bytes is too small: a file starts with an 8-byte length`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const n = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (n > MAX_HEADER_BYTES) {
    fail("header-too-large", `the header length ${n} is above the limit of ${MAX_HEADER_BYTES}`);
  }
  if (8 + n > bytes.length) {
    fail(
      "header-beyond-file",
      `the header length ${n} reaches past the end of the file (${bytes.length} bytes)`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
      bytes.subarray(8, 8 + n),
    );
  } catch {
    fail("header-not-utf8", "the header is not valid UTF-8");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail("header-not-json", `the header is not valid JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    fail("header-not-object", "the header must be a JSON object");
  }
  return { header: header as Record<string, unknown>, start: 8 + n };
}

/**
 * Decode and check a safetensors file. Every tensor's bytes are copied into a fresh storage
 * (`storageFor(dtype, size)`'s type); the input is not kept. Throws a `SafetensorsError` (see
 * the module docs) for anything malformed: truncated data, a header length past the end or
 * above {@linkcode MAX_HEADER_BYTES}, invalid UTF-8 or JSON, offsets that are out of range,
 * overlap or leave gaps, unknown dtypes, shapes that disagree with their offsets.
 *
 * @example
 * ```ts
 * const { entries, metadata } = decodeSafetensors(await Deno.readFile("model.safetensors"));
 * entries[0].name; entries[0].dtype; entries[0].data; // "w", "f32", Float32Array
 * ```
 */
export function decodeSafetensors(bytes: Uint8Array): SafetensorsFile {
  if (!(bytes instanceof Uint8Array)) {
    fail(
      "not-bytes",
      `decodeSafetensors needs a Uint8Array, got ${describeInput(bytes)}; ` +
        "wrap an ArrayBuffer as new Uint8Array(buffer)",
    );
  }
  // A plain view of exactly the input's bytes: a Node `Buffer` (whose `slice` is a view), any
  // other subclass and any offset view are read from their own `byteOffset`, never from the
  // start of the underlying buffer, and no subclass method is called.
  const src = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { header, start } = readHeader(src);
  let metadata: Record<string, string> | null = null;
  const parsed: Parsed[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") metadata = parseMetadata(info);
    else parsed.push(parseEntry(name, info));
  }
  parsed.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const p of parsed) {
    if (p.begin !== at) {
      fail(
        "offsets-not-contiguous",
        `tensor ${JSON.stringify(p.name)} begins at ${p.begin} but the previous tensor ends at ` +
          `${at}: tensors must cover the data region in order, without gaps or overlaps`,
      );
    }
    at = p.end;
  }
  const available = src.length - start;
  if (at > available) {
    fail(
      "truncated",
      `the file is truncated: the tensors need ${at} data bytes but ${available} follow the header`,
    );
  }
  if (at < available) {
    fail(
      "trailing-bytes",
      `${available - at} bytes follow the last tensor (the data region must end the file)`,
    );
  }
  const entries = parsed.map((p): SafetensorsEntry => {
    const data = storageFor(p.dtype, (p.end - p.begin) / byteSize(p.dtype));
    const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    raw.set(src.subarray(start + p.begin, start + p.end));
    if (!LITTLE_ENDIAN) swapBytes(raw, byteSize(p.dtype));
    return { name: p.name, dtype: p.dtype, shape: p.shape, data };
  });
  return { entries, metadata };
}
