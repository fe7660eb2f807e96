/**
 * The CPU heap (lib/backend/cpu/heap.ts): alignment, no overlap, reuse, coalescing, growth in
 * both memory modes, and clear errors.
 */
import assert from "node:assert/strict";
import fc from "./fc.ts";
import {
  blockBytes,
  Heap,
  HEAP_ALIGN,
  heapMemory,
  type HeapStats,
  heapStats,
  SMALL_MAX,
} from "../lib/backend/cpu/heap.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { dispose, memory, type Tensor, tensor, tidy, zeros } from "../lib/tensor.ts";
import { add, astype, exp, greater, mul, sub, take, transpose, where } from "../lib/ops/mod.ts";
import { promoteTypes } from "../lib/dtype.ts";
import { disposeReplaced } from "../lib/train.ts";
import { rng } from "./rng.ts";
import { tinyMlp } from "./tiny_mlp.ts";
import { trainLosses } from "./cpu_heap_train.ts";

Deno.test("heap: size classes lose at most 25% (64 bytes for tiny requests), 4 KiB above 256 KiB", () => {
  assert.equal(blockBytes(0), 64);
  assert.equal(blockBytes(1), 64);
  assert.equal(blockBytes(65), 128);
  assert.equal(blockBytes(257), 320);
  assert.equal(blockBytes(1000), 1024);
  assert.equal(blockBytes(1025), 1280);
  assert.equal(blockBytes(SMALL_MAX), SMALL_MAX);
  assert.equal(blockBytes(SMALL_MAX + 1), SMALL_MAX + 4096);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 64 << 20 }), (b) => {
      const s = blockBytes(b);
      assert.ok(s >= b && s % HEAP_ALIGN === 0);
      assert.ok(s <= Math.max(64, b <= SMALL_MAX ? b * 1.25 : b + 4095), `${b} → ${s}`);
    }),
  );
});

/** Stamp a block's first and last bytes with an id derived from its pointer. */
function stamp(heap: Heap, ptr: number, bytes: number): void {
  const u = new Uint8Array(heap.buffer, ptr, Math.max(bytes, 1));
  u[0] = u[u.length - 1] = (ptr >>> 6) & 255;
}
function stamped(heap: Heap, ptr: number, bytes: number): boolean {
  const u = new Uint8Array(heap.buffer, ptr, Math.max(bytes, 1));
  return u[0] === ((ptr >>> 6) & 255) && u[u.length - 1] === u[0];
}

/** Blocks (rounded to their block size) do not overlap. */
function disjoint(live: readonly { ptr: number; bytes: number }[]): boolean {
  const s = [...live].sort((a, b) => a.ptr - b.ptr);
  return s.every((b, i) => i === 0 || s[i - 1].ptr + blockBytes(s[i - 1].bytes) <= b.ptr);
}

for (const shared of [true, false]) {
  const mode = shared ? "shared" : "non-shared";

  Deno.test(`heap (${mode}): random alloc/release keeps blocks aligned, disjoint and intact`, () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({
              op: fc.constant("alloc" as const),
              bytes: fc.integer({ min: 0, max: 3000 }),
            }),
            fc.record({
              op: fc.constant("alloc" as const),
              bytes: fc.integer({ min: 0, max: 900_000 }),
            }),
            fc.record({ op: fc.constant("release" as const), i: fc.nat() }),
          ),
          { minLength: 20, maxLength: 80 },
        ),
        (ops) => {
          const heap = new Heap({ shared, initialBytes: 65536 });
          const live: { ptr: number; bytes: number }[] = [];
          for (const o of ops) {
            if (o.op === "alloc") {
              const bytes = Math.max(0, o.bytes);
              const ptr = heap.alloc(bytes);
              assert.equal(ptr % HEAP_ALIGN, 0);
              assert.ok(ptr > 0 && ptr + bytes <= heap.buffer.byteLength);
              stamp(heap, ptr, bytes);
              live.push({ ptr, bytes });
            } else if (live.length > 0) {
              const [b] = live.splice(o.i % live.length, 1);
              heap.release(b.ptr, b.bytes);
            }
            // Blocks never overlap, and growth loses nothing.
            assert.ok(disjoint(live));
            for (const b of live) assert.ok(stamped(heap, b.ptr, b.bytes));
          }
          const s = heap.stats();
          assert.equal(s.liveBlocks, live.length);
          assert.equal(s.liveBytes, live.reduce((a, b) => a + blockBytes(b.bytes), 0));
          assert.equal(s.cachedBytes, s.reservedBytes - s.liveBytes);
          for (const b of live) heap.release(b.ptr, b.bytes);
          assert.equal(heap.stats().liveBytes, 0);
        },
      ),
      { numRuns: 200 },
    );
  });

  Deno.test(`heap (${mode}): growth keeps data; old buffer ${shared ? "stays valid" : "detaches"}`, () => {
    const heap = new Heap({ shared, initialBytes: 65536 });
    assert.equal(heap.shared, shared);
    assert.equal(heap.memory.buffer instanceof SharedArrayBuffer, shared);
    const p = heap.alloc(4000);
    const old = new Float32Array(heap.buffer, p, 1000);
    old.fill(7);
    const before = heap.stats();
    const q = heap.alloc(3 << 20); // beyond the initial 64 KiB
    const after = heap.stats();
    assert.equal(after.grows, before.grows + 1);
    assert.ok(after.memoryBytes >= (3 << 20) + 4000);
    assert.notEqual(heap.buffer, old.buffer);
    if (shared) {
      assert.equal(old.length, 1000); // still a live view of the same bytes
      old[0] = 8;
      assert.equal(new Float32Array(heap.buffer, p, 1000)[0], 8);
    } else {
      assert.equal(old.length, 0); // detached: views must be re-derived after an alloc
      assert.equal(old.buffer.byteLength, 0);
    }
    const now = new Float32Array(heap.buffer, p, 1000);
    assert.ok(now.slice(1).every((v) => v === 7));
    new Float32Array(heap.buffer, q, 3 << 18).fill(1);
    heap.release(q, 3 << 20);
    heap.release(p, 4000);
  });
}

Deno.test("heap: a released block is reused; reserved bytes stay flat over a repeated pattern", () => {
  const heap = new Heap();
  const sizes = [12, 4000, 70_000, 300_000, 1_600_000, 1_600_000, 65, 250_000];
  let reserved = -1;
  for (let round = 0; round < 50; round++) {
    const ptrs = sizes.map((b) => heap.alloc(b));
    ptrs.forEach((p, i) => heap.release(p, sizes[i]));
    if (round === 0) reserved = heap.stats().reservedBytes;
  }
  const s = heap.stats();
  assert.equal(s.liveBytes, 0);
  assert.equal(s.reservedBytes, reserved);
  const p = heap.alloc(4000);
  assert.equal(heap.alloc(4000) !== p, true);
  heap.release(p, 4000);
  assert.equal(heap.alloc(4000), p); // the free list hands the same block back
});

Deno.test("heap: large ranges coalesce and give the top back", () => {
  const heap = new Heap({ shared: false });
  const small = heap.alloc(100);
  const base = heap.stats().reservedBytes;
  const a = heap.alloc(1 << 20);
  const b = heap.alloc(1 << 20);
  const c = heap.alloc(1 << 20);
  assert.equal(b, a + (1 << 20));
  heap.release(a, 1 << 20);
  heap.release(b, 1 << 20);
  // a and b merged: a 2 MiB request fits in their place.
  const ab = heap.alloc(2 << 20);
  assert.equal(ab, a);
  heap.release(ab, 2 << 20);
  heap.release(c, 1 << 20); // c touched the top: everything above `small` goes back
  assert.equal(heap.stats().reservedBytes, base);
  assert.equal(heap.stats().cachedBytes, 0);
  // Best fit: a 600 KiB request takes the smaller of two free ranges.
  const x = heap.alloc(3 << 20);
  const sep = heap.alloc(100);
  const y = heap.alloc(1 << 20);
  const sep2 = heap.alloc(100);
  heap.release(x, 3 << 20);
  heap.release(y, 1 << 20);
  assert.equal(heap.alloc(600 << 10), y);
  [small, sep, sep2].forEach((p) => heap.release(p, 100));
});

Deno.test("heap: clear errors for bad sizes, double or mismatched release, and exhaustion", () => {
  const heap = new Heap({ shared: false, initialBytes: 65536, maximumBytes: 4 << 20 });
  assert.throws(() => heap.alloc(-1), /alloc: bytes must be a non-negative integer, got -1/);
  assert.throws(() => heap.alloc(1.5), /alloc: bytes must be a non-negative integer/);
  const p = heap.alloc(100);
  assert.throws(() => heap.release(p, 1000), /allocated for 128 bytes, released as 1000/);
  heap.release(p, 100);
  assert.throws(() => heap.release(p, 100), /not a live block .*released twice/);
  assert.throws(() => heap.alloc(5 << 20), /cpu: out of memory: cannot allocate .*dispose/);
  const q = heap.alloc(3 << 20); // still usable after the failure
  heap.release(q, 3 << 20);
  assert.throws(() => new Heap({ maximumBytes: NaN }), /maximumBytes must be a non-negative/);
});

// ---------------------------------------------------------------------------------------------
// The CPU backend on the heap

Deno.test("cpu: read and data() return copies; writing them never changes the tensor", async () => {
  const t = tensor([1, 2, 3]);
  const h = tensor([1, 2, 3], { dtype: "f16" });
  const raw = await cpu.read({ h: t.handle, dtype: t.dtype, size: t.size });
  raw[0] = 99;
  const d = await t.data();
  d[1] = 99;
  const b = await h.bits();
  b[2] = 0;
  assert.deepEqual(Array.from(await t.data()), [1, 2, 3]);
  assert.deepEqual(Array.from(await h.data()), [1, 2, 3]);
  assert.ok(!(d.buffer instanceof SharedArrayBuffer) && d.buffer !== heapMemory().buffer);
  assert.notEqual(await t.data(), await t.data());
  dispose([t, h]);
});

Deno.test("cpu: dispose returns blocks to the heap; a throwing kernel leaks nothing", () => {
  const before = heapStats();
  const x = zeros([1000, 300]); // a large block (1.2 MB)
  const y = tidy(() => add(mul(x, 2), astype(x, "bf16")));
  assert.ok(heapStats().liveBytes >= before.liveBytes + 2 * 1.2e6);
  const ix = tensor([0, 5000], { dtype: "i32" });
  assert.throws(() => take(x, ix), /take: index 5000 is out of range for an axis of size 1000/);
  dispose([x, y, ix]);
  const after = heapStats();
  assert.equal(after.liveBytes, before.liveBytes);
  assert.equal(after.liveBlocks, before.liveBlocks);
});

Deno.test("cpu: narrow-dtype ops (scratch widening) equal the f32 op rounded once", async () => {
  const narrow = ["f16", "bf16", "f8e4m3", "f8e5m2"] as const;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...narrow),
      fc.constantFrom(...narrow),
      fc.integer({ min: 1, max: 7 }),
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      async (da, db, m, n, seed) => {
        const r = rng(seed);
        const vals = (k: number) => Array.from({ length: k }, () => (r() - 0.5) * 40);
        // a is read transposed and b broadcast along rows: both go through materialize.
        const a = transpose(astype(tensor(vals(m * n), { shape: [n, m] }), da));
        const b = astype(tensor(vals(n), { shape: [n] }), db);
        const out = promoteTypes(da, db);
        const wide = (t: Tensor) => astype(t, "f32");
        const cases: [string, () => Tensor, () => Tensor][] = [
          ["mul", () => mul(a, b), () => astype(mul(wide(a), wide(b)), out)],
          ["sub", () => sub(b, a), () => astype(sub(wide(b), wide(a)), out)],
          ["exp", () => exp(a), () => astype(exp(wide(a)), da)],
          [
            "where",
            () => where(greater(a, 0), a, b),
            () => astype(where(greater(wide(a), 0), wide(a), wide(b)), out),
          ],
          ["transpose", () => add(transpose(a), 0), () => astype(transpose(wide(a)), da)],
        ];
        for (const [name, f, g] of cases) {
          const got = tidy(f);
          const ref = tidy(g);
          assert.equal(got.dtype, ref.dtype, name);
          assert.deepEqual(await got.bits(), await ref.bits(), `${name} ${da} ${db} [${m}, ${n}]`);
          dispose([got, ref]);
        }
        dispose([a, b]);
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("cpu: heap bytes flat over 1,000 train steps of the tiny MLP", async () => {
  const { batch, params, base } = tinyMlp(7);
  let state = base.init(params);
  let at100: HeapStats | undefined;
  let mem100 = 0;
  for (let i = 1; i <= 1000; i++) {
    const [next, metrics] = base(state, batch);
    disposeReplaced(state, next);
    state = next;
    if (i % 250 === 0) assert.ok(Number.isFinite(await metrics.loss.item()));
    dispose(metrics);
    if (i === 100) [at100, mem100] = [heapStats(), memory(cpu).bytes];
  }
  const end = heapStats();
  assert.ok(at100);
  assert.equal(end.liveBytes, at100.liveBytes);
  assert.equal(end.liveBlocks, at100.liveBlocks);
  assert.equal(end.reservedBytes, at100.reservedBytes);
  assert.equal(end.memoryBytes, at100.memoryBytes);
  assert.equal(memory(cpu).bytes, mem100);
  assert.deepEqual(memory(cpu).heap, end);
  // Every block allocated after step 100 was released again.
  assert.equal(end.allocs - at100.allocs, end.releases - at100.releases);
  assert.ok(end.allocs - at100.allocs > 900 * 20, "steps allocate from the heap");
  dispose(state);
});

Deno.test("cpu: training gives the same bits on a non-shared heap that grows (no SharedArrayBuffer)", async () => {
  const here = await trainLosses();
  assert.equal(here.shared, true);
  const child = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      new URL("./cpu_heap_nonshared.ts", import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(child.stderr);
  assert.ok(child.success, err);
  const there = JSON.parse(new TextDecoder().decode(child.stdout));
  assert.equal(there.shared, false);
  assert.ok(there.grows >= 3, `the non-shared heap grew ${there.grows} times`);
  assert.equal(there.liveBytes, 0); // the second run left nothing behind
  assert.deepEqual(there.losses, here.losses);
  assert.deepEqual(there.firstLosses, here.losses);
  assert.ok(here.losses.every(Number.isFinite) && here.losses[23] < here.losses[0]);
});
