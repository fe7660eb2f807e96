/**
 * The WebGPU backend against the CPU reference: kernel by kernel through the Backend interface
 * (fast-check over shapes, broadcasts, strided layouts and values), then end to end through the
 * ops (gradients, readback counts, pooled memory, device loss).
 *
 * Without a WebGPU adapter every test is registered with `ignore: true` and the reason is
 * printed; with `NBIT_REQUIRE_WEBGPU=1` a missing adapter fails instead. Run both software
 * adapters: `DENO_WEBGPU_BACKEND=vulkan` (lavapipe, shader-f16) and `DENO_WEBGPU_BACKEND=gl`
 * (llvmpipe, no shader-f16: the packed f16 path).
 *
 * Bitwise means equal bits, except that two NaNs count as equal whatever their payload and
 * sign (GPUs and V8 produce different default NaNs). f32 and bf16 inputs avoid subnormals,
 * which WGSL lets a GPU flush to zero in arithmetic (casts are exact even for subnormals).
 */
import fc from "./fc.ts";
import assert from "node:assert/strict";
import { decode, type DType, encode, type Storage, storageFor } from "../lib/dtype.ts";
import type { Arg, Backend, BinaryOp, Handle, UnaryOp, View } from "../lib/backend/backend.ts";
import { cpu } from "../lib/backend/cpu/cpu.ts";
import { webgpu } from "../lib/backend/webgpu/webgpu.ts";
import { gtest } from "./webgpu_setup.ts";
import { keyFromSeed } from "../lib/prng.ts";

const FC = { numRuns: 40, endOnFailure: true } as const;

// ---------------------------------------------------------------------------------------------
// Backend-level helpers

const GPU_DTYPES: readonly DType[] = [
  "f32",
  "f16",
  "bf16",
  "f8e4m3",
  "f8e5m2",
  "i32",
  "u8",
  "bool",
];
const FLOATS: readonly DType[] = ["f32", "f16", "bf16", "f8e4m3", "f8e5m2"];

function arg(be: Backend, dtype: DType, data: Storage): Arg {
  return { h: be.upload(dtype, data), dtype, size: data.length };
}

/** Run `make` on both backends and read both results. */
async function both(
  g: Backend,
  make: (be: Backend) => Handle,
  dtype: DType,
  size: number,
): Promise<[Storage, Storage]> {
  const hc = make(cpu);
  const hg = make(g);
  const c = await cpu.read({ h: hc, dtype, size });
  const r = await g.read({ h: hg, dtype, size });
  g.free(hg, dtype, size);
  return [c, r];
}

function isNaNBits(d: DType, s: Storage, i: number): boolean {
  if (d === "i32" || d === "u8" || d === "bool") return false;
  return Number.isNaN(decode(d, s.subarray(i, i + 1) as Storage)[0]);
}

/** Bitwise equality (any NaN equals any NaN). */
function assertBits(d: DType, want: Storage, got: Storage, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (want[i] === got[i]) continue;
    if (isNaNBits(d, want, i) && isNaNBits(d, got, i)) continue;
    const wv = decode(d, want.subarray(i, i + 1) as Storage)[0];
    const gv = decode(d, got.subarray(i, i + 1) as Storage)[0];
    assert.fail(
      `${what}: element ${i} differs: cpu ${wv} (0x${want[i].toString(16)}), ` +
        `webgpu ${gv} (0x${got[i].toString(16)})`,
    );
  }
}

/** Distance in units in the last place between two f32 values (Infinity if one is NaN). */
function ulps32(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) && Number.isNaN(b) ? 0 : Infinity;
  if (a === b) return 0;
  const f = new Float32Array([a, b]);
  const i = new Int32Array(f.buffer);
  const ord = (x: number) => (x < 0 ? -0x80000000 - x : x);
  return Math.abs(ord(i[0]) - ord(i[1]));
}

// Value generators: raw storage of each dtype. f32/bf16 avoid subnormals (see module doc).
const f32Special = fc.constantFrom(0, -0, 1, -1, 0.5, 3, Infinity, -Infinity, NaN, 65504, 448);
const f32Normal = fc.float({ min: -(2 ** 60), max: 2 ** 60, noNaN: true })
  .filter((x) => x === 0 || Math.abs(x) >= 2 ** -60);
const f32Value = fc.oneof(f32Normal, f32Normal, f32Special, fc.integer({ min: -300, max: 300 }));
const bf16Bits = fc.integer({ min: 0, max: 0xffff }).filter((b) => {
  const e = (b >> 7) & 0xff;
  return e === 0xff || (b & 0x7fff) === 0 || (e >= 67 && e <= 187);
});

function valuesOf(d: DType, n: number): fc.Arbitrary<Storage> {
  const len = { minLength: n, maxLength: n };
  switch (d) {
    case "f32":
      return fc.array(f32Value, len).map((a) => Float32Array.from(a));
    case "f16":
      return fc.array(fc.integer({ min: 0, max: 0xffff }), len).map((a) => Uint16Array.from(a));
    case "bf16":
      return fc.array(bf16Bits, len).map((a) => Uint16Array.from(a));
    case "f8e4m3":
    case "f8e5m2":
      return fc.array(fc.integer({ min: 0, max: 255 }), len).map((a) => Uint8Array.from(a));
    case "i32":
      return fc.array(fc.integer({ min: -(2 ** 24), max: 2 ** 24 }), len)
        .map((a) => Int32Array.from(a));
    case "u8":
      return fc.array(fc.integer({ min: 0, max: 255 }), len).map((a) => Uint8Array.from(a));
    case "bool":
      return fc.array(fc.integer({ min: 0, max: 1 }), len).map((a) => Uint8Array.from(a));
  }
  throw new Error(d);
}

/** Small integers (exact in every dtype), as storage of `d`. */
function smallInts(d: DType, n: number, max = 8): fc.Arbitrary<Storage> {
  const lo = d === "u8" || d === "bool" ? 0 : -max;
  const hi = d === "bool" ? 1 : max;
  return fc.array(fc.integer({ min: lo, max: hi }), { minLength: n, maxLength: n })
    .map((a) => encode(d, a));
}

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** An output shape and, per input, a broadcastable shape and a memory-layout permutation. */
function broadcastCase(inputs: number) {
  return fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 0, maxLength: 4 }).chain((out) =>
    fc.tuple(
      fc.constant(out),
      fc.array(
        fc.tuple(
          fc.integer({ min: 0, max: out.length }),
          fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length }),
          fc.array(fc.nat(), { minLength: out.length, maxLength: out.length }),
        ).map(([drop, ones, keys]) => {
          const shape = out.slice(drop).map((d, i) => (ones[i + drop] ? 1 : d));
          const order = shape.map((_, i) => i).sort((a, b) => keys[a] - keys[b] || a - b);
          return { shape, order };
        }),
        { minLength: inputs, maxLength: inputs },
      ),
    )
  );
}

/** A strided view of a buffer of shape `shape` stored in axis order `order`, broadcast to `out`. */
function viewOf(
  a: Arg,
  shape: readonly number[],
  order: readonly number[],
  out: readonly number[],
): View {
  const own = new Array(shape.length).fill(0);
  let acc = 1;
  for (let k = order.length - 1; k >= 0; k--) {
    own[order[k]] = acc;
    acc *= shape[order[k]];
  }
  const lead = out.length - shape.length;
  const strides = out.map((d, i) => {
    if (i < lead) return 0;
    return shape[i - lead] === 1 && d !== 1 ? 0 : own[i - lead];
  });
  return { ...a, shape: out, strides, offset: 0 };
}

function binaryOut(op: BinaryOp, d: DType): DType {
  if (["equal", "notEqual", "less", "lessEqual", "greater", "greaterEqual"].includes(op)) {
    return "bool";
  }
  if ((op === "div" || op === "pow") && !FLOATS.includes(d)) return "f32";
  return d;
}

// ---------------------------------------------------------------------------------------------
// Device basics

gtest("device: kind, unique name, features, f64 message", async (g) => {
  assert.equal(g.kind, "webgpu");
  assert.match(g.name, /^webgpu:/);
  assert.equal(typeof g.features.shaderF16, "boolean");
  assert.ok(g.limits.maxComputeWorkgroupsPerDimension >= 65535);
  assert.match(g.unsupported("f64") ?? "", /cpu backend/);
  for (const d of GPU_DTYPES) assert.equal(g.unsupported(d), undefined);
  const other = await webgpu();
  assert.notEqual(other.name, g.name);
  other.device.destroy();
});

gtest("upload/read round trip and fill, every dtype and odd sizes", async (g) => {
  for (const d of GPU_DTYPES) {
    for (const n of [0, 1, 2, 3, 5, 7, 1001]) {
      const data = storageFor(d, n);
      for (let i = 0; i < n; i++) {
        (data as Uint8Array)[i] = (i * 37 + 11) % (d === "bool" ? 2 : 200);
      }
      const a = arg(g, d, data);
      assertBits(d, data, await g.read(a), `round trip ${d}[${n}]`);
      g.free(a.h, d, n);
      for (const v of [0, 1.3, -2.5, 70000, NaN]) {
        const [c, r] = await both(g, (be) => be.fill(d, n, v), d, n);
        assertBits(d, c, r, `fill ${d}[${n}] ${v}`);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Casts

gtest("astype: every bit pattern of f16, bf16 and f8 to every dtype, bitwise", async (g) => {
  const sources: [DType, Storage][] = [
    ["f16", Uint16Array.from({ length: 65536 }, (_, i) => i)],
    ["bf16", Uint16Array.from({ length: 65536 }, (_, i) => i)],
    ["f8e4m3", Uint8Array.from({ length: 256 }, (_, i) => i)],
    ["f8e5m2", Uint8Array.from({ length: 256 }, (_, i) => i)],
  ];
  for (const [from, data] of sources) {
    for (const to of GPU_DTYPES) {
      for (const saturate of to.startsWith("f8") ? [false, true] : [false]) {
        const [c, r] = await both(
          g,
          (be) => be.cast(arg(be, from, data), to, { saturate }),
          to,
          data.length,
        );
        assertBits(to, c, r, `${from} → ${to}${saturate ? " (saturate)" : ""}`);
      }
    }
  }
});

gtest(
  "astype: f32 and integer sources to every dtype, bitwise (incl. subnormals, ties)",
  async (g) => {
    // Rounding boundaries of every format, subnormals, specials and large integers.
    const edge: number[] = [0, -0, Infinity, -Infinity, NaN, 2 ** -149, -(2 ** -149), 2 ** -126];
    for (
      const v of [65504, 65520, 448, 464, 57344, 61440, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 255.5]
    ) {
      edge.push(v, -v, Math.fround(v * (1 + 2 ** -20)), Math.fround(v * (1 - 2 ** -20)));
    }
    for (let e = -30; e < 30; e++) edge.push(2 ** e * (1 + 2 ** -11), 2 ** e * (1 + 3 * 2 ** -11));
    edge.push(2 ** 31, -(2 ** 31), 2 ** 31 - 128, 1e10, -1e10, 2.5, -2.5, 0.5, 255, 256, -1);
    const f32 = Float32Array.from(edge);
    const ints = Int32Array.from([
      0,
      1,
      -1,
      255,
      256,
      2047,
      2049,
      16777217,
      -16777219,
      2147483647,
      -2147483648,
      65519,
      65520,
      65536,
      463,
      464,
      465,
      61439,
      61440,
      1000,
      123456789,
    ]);
    const u8 = Uint8Array.from({ length: 256 }, (_, i) => i);
    const bool = Uint8Array.from([0, 1, 1, 0, 1]);
    for (const [from, data] of [["f32", f32], ["i32", ints], ["u8", u8], ["bool", bool]] as const) {
      for (const to of GPU_DTYPES) {
        for (const saturate of to.startsWith("f8") ? [false, true] : [false]) {
          const [c, r] = await both(
            g,
            (be) => be.cast(arg(be, from, data), to, { saturate }),
            to,
            data.length,
          );
          assertBits(to, c, r, `${from} → ${to}${saturate ? " (saturate)" : ""}`);
        }
      }
    }
    // Random f32 bit patterns (any value, subnormals and NaN payloads included).
    const rand = new Uint32Array(20000);
    let s = 12345;
    for (let i = 0; i < rand.length; i++) rand[i] = s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const rf = new Float32Array(rand.buffer);
    for (const to of GPU_DTYPES) {
      const [c, r] = await both(g, (be) => be.cast(arg(be, "f32", rf), to), to, rf.length);
      assertBits(to, c, r, `random f32 → ${to}`);
    }
  },
);

// ---------------------------------------------------------------------------------------------
// Elementwise

const BITWISE_BINARY: readonly BinaryOp[] = [
  "add",
  "sub",
  "mul",
  "div",
  "maximum",
  "minimum",
  "equal",
  "notEqual",
  "less",
  "lessEqual",
  "greater",
  "greaterEqual",
];

gtest("binary: bitwise over random shapes, broadcasts, layouts and dtypes", async (g) => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...BITWISE_BINARY),
      fc.constantFrom(...GPU_DTYPES),
      broadcastCase(2),
      fc.nat(),
      async (op, d, [out, ins], seed) => {
        const data = ins.map((x, k) =>
          fc.sample(valuesOf(d, prod(x.shape)), { seed: seed + k, numRuns: 1 })[0]
        );
        const od = binaryOut(op, d);
        const [c, r] = await both(
          g,
          (be) => {
            const v = ins.map((x, k) => viewOf(arg(be, d, data[k]), x.shape, x.order, out));
            return be.binary(op, v[0], v[1], od);
          },
          od,
          prod(out),
        );
        assertBits(od, c, r, `${op} ${d} [${out}] <- [${ins[0].shape}], [${ins[1].shape}]`);
      },
    ),
    FC,
  );
});

gtest("binary: div is correctly rounded, pow within its documented bound", async (g) => {
  const n = 4096;
  const a = new Float32Array(n);
  const b = new Float32Array(n);
  let s = 7;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (let i = 0; i < n; i++) {
    a[i] = Math.fround((rnd() - 0.5) * 2 ** (rnd() * 80 - 40));
    b[i] = Math.fround((rnd() - 0.5) * 2 ** (rnd() * 80 - 40));
  }
  const flat = (x: Arg): View => ({ ...x, shape: [n], strides: [1], offset: 0 });
  const [c, r] = await both(
    g,
    (be) => be.binary("div", flat(arg(be, "f32", a)), flat(arg(be, "f32", b)), "f32"),
    "f32",
    n,
  );
  assertBits("f32", c, r, "div");
  // pow: positive bases with any exponent, negative bases with integer exponents, specials.
  const pa = new Float32Array(n);
  const pb = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const k = i % 4;
    pa[i] = k === 3 ? -Math.fround(rnd() * 4) : Math.fround(rnd() * 8);
    pb[i] = k >= 2 ? Math.round(rnd() * 12 - 6) : Math.fround(rnd() * 8 - 4);
  }
  pa.set([0, -0, Infinity, -Infinity, NaN, 1, -1, 2, -2, 0]);
  pb.set([2, 3, -1, 3, 0, Infinity, Infinity, 0.5, 3, -2]);
  const [pc, pr] = await both(
    g,
    (be) => be.binary("pow", flat(arg(be, "f32", pa)), flat(arg(be, "f32", pb)), "f32"),
    "f32",
    n,
  );
  const cw = pc as Float32Array;
  const gw = pr as Float32Array;
  let worst = 0;
  for (let i = 0; i < n; i++) {
    // Documented bound: exact for b = 2, else 2 + 2·|b·ln a| ulp (the exponent's rounding).
    const u = ulps32(cw[i], gw[i]);
    const bound = pb[i] === 2 ? 0 : 2 + 2 * Math.abs(pb[i] * Math.log(Math.abs(pa[i])));
    worst = Math.max(worst, u);
    assert.ok(
      u === 0 || u <= bound,
      `pow(${pa[i]}, ${pb[i]}): cpu ${cw[i]}, webgpu ${gw[i]} (${u} ulp)`,
    );
  }
  console.log(`  pow: worst ${worst} ulp`);
});

gtest("where: bitwise over broadcasts and layouts", async (g) => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...GPU_DTYPES),
      broadcastCase(3),
      fc.nat(),
      async (d, [out, ins], seed) => {
        const cond = fc.sample(valuesOf("bool", prod(ins[0].shape)), { seed, numRuns: 1 })[0];
        const a = fc.sample(valuesOf(d, prod(ins[1].shape)), { seed: seed + 1, numRuns: 1 })[0];
        const b = fc.sample(valuesOf(d, prod(ins[2].shape)), { seed: seed + 2, numRuns: 1 })[0];
        const [c, r] = await both(
          g,
          (be) => {
            const vc = viewOf(arg(be, "bool", cond), ins[0].shape, ins[0].order, out);
            const va = viewOf(arg(be, d, a), ins[1].shape, ins[1].order, out);
            const vb = viewOf(arg(be, d, b), ins[2].shape, ins[2].order, out);
            return be.where(vc, va, vb, d);
          },
          d,
          prod(out),
        );
        assertBits(d, c, r, `where ${d} [${out}]`);
      },
    ),
    FC,
  );
});

const EXACT_UNARY: readonly UnaryOp[] = ["neg", "abs", "square", "relu", "sign", "isfinite", "not"];

gtest("unary: neg, abs, square, relu, sign, isfinite, not bitwise on every dtype", async (g) => {
  for (const d of GPU_DTYPES) {
    const data = fc.sample(valuesOf(d, 3001), { seed: 5, numRuns: 1 })[0];
    for (const op of EXACT_UNARY) {
      const od: DType = op === "isfinite" || op === "not" ? "bool" : d;
      const [c, r] = await both(g, (be) => be.unary(op, arg(be, d, data), od), od, data.length);
      assertBits(od, c, r, `${op} ${d}`);
    }
  }
});

/** Documented accuracy of the WebGPU transcendental kernels, in f32 ulps of the CPU result. */
const ULP_BOUND: Partial<Record<UnaryOp, number>> = {
  exp: 4,
  log: 4,
  sqrt: 3,
  rsqrt: 3,
  tanh: 4,
  sigmoid: 4,
};

gtest("unary: exp, log, sqrt, rsqrt, tanh, sigmoid within the documented ulp bound", async (g) => {
  const n = 8000;
  const x = new Float32Array(n);
  let s = 99;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (let i = 0; i < n; i++) {
    const k = i % 3;
    x[i] = k === 0
      ? (rnd() - 0.5) * 40
      : k === 1
      ? (rnd() - 0.5) * 4
      : (rnd() - 0.5) * 2 ** (rnd() * 60 - 30);
  }
  x.set([
    0,
    -0,
    Infinity,
    -Infinity,
    NaN,
    88.72283935546875,
    88.7228317,
    -87.3,
    1e-30,
    10,
    -10,
    9.5,
  ]);
  for (const [op, bound] of Object.entries(ULP_BOUND) as [UnaryOp, number][]) {
    for (const d of ["f32", "f16", "bf16"] as const) {
      const src = encode(d, x);
      const [c, r] = await both(g, (be) => be.unary(op, arg(be, d, src), d), d, n);
      const cv = decode(d, c);
      const gv = decode(d, r);
      let worst = 0;
      let at = 0;
      for (let i = 0; i < n; i++) {
        // Below f32's normal range (bf16 shares it) the GPU may flush subnormal results to zero.
        if (d !== "f16" && Math.abs(cv[i]) < 2 ** -126) {
          if (Math.abs(gv[i]) < 2 ** -126) continue;
        }
        const u = d === "f32" ? ulps32(cv[i], gv[i]) : ulpsNarrow(d, c, r, i);
        if (u > worst) (worst = u), (at = x[i]);
        assert.ok(
          u <= (d === "f32" ? bound : 1),
          `${op} ${d} at x=${decode(d, src)[i]}: cpu ${cv[i]}, webgpu ${gv[i]} (${u} ulp)`,
        );
      }
      if (d === "f32") console.log(`  ${op}: worst ${worst} ulp at x=${at}`);
    }
  }
});

function ulpsNarrow(d: DType, a: Storage, b: Storage, i: number): number {
  const x = a[i];
  const y = b[i];
  if (x === y) return 0;
  if (isNaNBits(d, a, i) || isNaNBits(d, b, i)) {
    return isNaNBits(d, a, i) && isNaNBits(d, b, i) ? 0 : Infinity;
  }
  const ord = (v: number) => (v & 0x8000 ? -(v & 0x7fff) : v);
  return Math.abs(ord(x) - ord(y));
}

// ---------------------------------------------------------------------------------------------
// Copies (transpose, slice, broadcast)

gtest("copy: strided views (transpose, slice, broadcast) bitwise on every dtype", async (g) => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...GPU_DTYPES),
      fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 4 }),
      fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
      fc.nat(),
      async (d, shape, picks, seed) => {
        const data = fc.sample(valuesOf(d, prod(shape)), { seed, numRuns: 1 })[0];
        // A random slice [begin, begin + size) of each axis, then a random axis order, then
        // one broadcast axis of size 3 in front.
        const begin = shape.map((s, i) => picks[i] % s);
        const size = shape.map((s, i) => 1 + (picks[i + 4 < 8 ? i + 4 : 0] % (s - begin[i])));
        const own: number[] = [];
        let acc = 1;
        for (let i = shape.length - 1; i >= 0; i--) (own[i] = acc), (acc *= shape[i]);
        const offset = begin.reduce((o, b, i) => o + b * own[i], 0);
        const perm = shape.map((_, i) => i).sort((a, b) =>
          ((picks[a] * 7 + a) % 5) - ((picks[b] * 7 + b) % 5)
        );
        const vshape = [3, ...perm.map((p) => size[p])];
        const vstrides = [0, ...perm.map((p) => own[p])];
        const [c, r] = await both(
          g,
          (be) => {
            const a = arg(be, d, data);
            return be.copy({ ...a, shape: vshape, strides: vstrides, offset }, d);
          },
          d,
          prod(vshape),
        );
        assertBits(d, c, r, `copy ${d} of [${shape}] as [${vshape}]`);
      },
    ),
    FC,
  );
});

// ---------------------------------------------------------------------------------------------
// Reductions

gtest(
  "reduce: every op on small integers, bitwise (serial and workgroup-tree kernels)",
  async (g) => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("sum", "max", "min", "argmax", "argmin", "all", "any" as const),
        fc.constantFrom(...GPU_DTYPES),
        fc.integer({ min: 1, max: 6 }),
        fc.oneof(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 65, max: 700 })),
        fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 9 })),
        fc.nat(),
        async (op, d, outer, r, inner, seed) => {
          const data = fc.sample(smallInts(d, outer * r * inner), { seed, numRuns: 1 })[0];
          const od: DType = op === "sum"
            ? (d === "bool" || d === "u8" ? "i32" : d)
            : op === "argmax" || op === "argmin"
            ? "i32"
            : op === "all" || op === "any"
            ? "bool"
            : d;
          const [c, res] = await both(
            g,
            (be) => be.reduce(op, arg(be, d, data), outer, r, inner, od),
            od,
            outer * inner,
          );
          assertBits(od, c, res, `${op} ${d} [${outer}, ${r}, ${inner}]`);
        },
      ),
      FC,
    );
  },
);

gtest("reduce: NaN propagation and first-occurrence arg ops", async (g) => {
  const x = Float32Array.from([1, NaN, 3, NaN, 2, 5, 5, 1, -0, 0, 0, -0]);
  for (const op of ["max", "min", "argmax", "argmin", "all", "any", "sum"] as const) {
    for (const [outer, r] of [[1, 12], [2, 6], [3, 4], [12, 1]]) {
      const od: DType = op.startsWith("arg")
        ? "i32"
        : op === "all" || op === "any"
        ? "bool"
        : "f32";
      const [c, res] = await both(
        g,
        (be) => be.reduce(op, arg(be, "f32", x), outer, r, 1, od),
        od,
        outer,
      );
      assertBits(od, c, res, `${op} [${outer}, ${r}]`);
    }
  }
  // The tree kernel (long rows) with NaNs and ties scattered.
  const long = new Float32Array(3 * 1000).map((_, i) => (i * 7919) % 13);
  long[1500] = NaN;
  long[2999] = NaN;
  long[2100] = NaN;
  for (const op of ["max", "min", "argmax", "argmin"] as const) {
    const od: DType = op.startsWith("arg") ? "i32" : "f32";
    const [c, res] = await both(
      g,
      (be) => be.reduce(op, arg(be, "f32", long), 3, 1000, 1, od),
      od,
      3,
    );
    assertBits(od, c, res, `${op} long rows`);
  }
});

// ---------------------------------------------------------------------------------------------
// Indexing

gtest("gather, scatterAdd and concat: bitwise on every dtype", async (g) => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...GPU_DTYPES),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 7 }),
      fc.integer({ min: 1, max: 5 }),
      fc.array(fc.integer({ min: -7, max: 6 }), { minLength: 1, maxLength: 9 }),
      fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 4 }),
      fc.nat(),
      async (d, outer, axis, inner, rawIdx, sizes, seed) => {
        const idx = Int32Array.from(
          rawIdx.map((i) => ((i % axis) + axis) % axis - (i < 0 ? axis : 0)),
        );
        const x = fc.sample(valuesOf(d, outer * axis * inner), { seed, numRuns: 1 })[0];
        const nOut = outer * idx.length * inner;
        const [c, r] = await both(
          g,
          (be) => be.gather(arg(be, d, x), arg(be, "i32", idx), outer, axis, inner),
          d,
          nOut,
        );
        assertBits(d, c, r, `gather ${d}`);
        const ud = fc.sample(smallInts(d, nOut, 4), { seed: seed + 1, numRuns: 1 })[0];
        const bd =
          fc.sample(smallInts(d, outer * axis * inner, 4), { seed: seed + 2, numRuns: 1 })[0];
        const [c2, r2] = await both(
          g,
          (be) =>
            be.scatterAdd(arg(be, d, bd), arg(be, "i32", idx), arg(be, d, ud), outer, axis, inner),
          d,
          bd.length,
        );
        assertBits(d, c2, r2, `scatterAdd ${d}`);
        const parts = sizes.map((s, k) =>
          fc.sample(valuesOf(d, outer * s * inner), { seed: seed + 3 + k, numRuns: 1 })[0]
        );
        const total = outer * sizes.reduce((a, b) => a + b, 0) * inner;
        const [c3, r3] = await both(
          g,
          (be) => be.concat(parts.map((p) => arg(be, d, p)), outer, sizes, inner, d),
          d,
          total,
        );
        assertBits(d, c3, r3, `concat ${d} sizes [${sizes}] outer ${outer} inner ${inner}`);
      },
    ),
    FC,
  );
});

gtest(
  "scatterAdd: the listed path for large problems (many indices, long rows), bitwise",
  async (g) => {
    for (const d of ["f32", "bf16", "i32", "u8"] as const) {
      for (
        const [outer, axis, inner, nIdx] of [[2, 50, 64, 400], [1, 3000, 8, 600], [1, 7, 300, 2000]]
      ) {
        const idx = Int32Array.from({ length: nIdx }, (_, j) => ((j * 7919) % (2 * axis)) - axis);
        const upd = fc.sample(smallInts(d, outer * nIdx * inner, 3), { seed: axis, numRuns: 1 })[0];
        const base =
          fc.sample(smallInts(d, outer * axis * inner, 3), { seed: nIdx, numRuns: 1 })[0];
        for (const idxDtype of ["i32", "u8"] as const) {
          const ix = idxDtype === "i32"
            ? idx
            : Uint8Array.from(idx, (v) => (v + axis) % Math.min(axis, 256));
          const [c, r] = await both(
            g,
            (be) =>
              be.scatterAdd(
                arg(be, d, base),
                arg(be, idxDtype, ix),
                arg(be, d, upd),
                outer,
                axis,
                inner,
              ),
            d,
            base.length,
          );
          assertBits(
            d,
            c,
            r,
            `scatterAdd ${d} [${outer}, ${axis}, ${inner}] with ${nIdx} ${idxDtype} indices`,
          );
        }
      }
    }
  },
);

gtest("gather with u8 indices; an out-of-range index fails at the next readback", async (g) => {
  const x = Float32Array.from([1, 2, 3, 4, 5, 6]);
  const [c, r] = await both(
    g,
    (be) => be.gather(arg(be, "f32", x), arg(be, "u8", Uint8Array.from([2, 0, 1])), 1, 3, 2),
    "f32",
    6,
  );
  assertBits("f32", c, r, "gather u8 indices");
  // The GPU cannot throw in a kernel: it flags the index, and the next read reports it.
  const h = g.gather(arg(g, "f32", x), arg(g, "i32", Int32Array.from([5, -4, 1])), 1, 3, 2);
  await assert.rejects(
    () => g.read({ h, dtype: "f32", size: 6 }),
    /take: index 5 is out of range for an axis of size 3/,
  );
  g.free(h, "f32", 6);
});

// ---------------------------------------------------------------------------------------------
// Matmul

/** Matmul signatures tested (each one compiles a pipeline; GL compiles take seconds). */
const MATMUL_CASES: readonly [DType, boolean, boolean][] = [
  ["f32", false, false],
  ["f32", true, true],
  ["f16", false, true],
  ["bf16", true, false],
  ["f8e4m3", false, false],
  ["i32", false, false],
];

gtest(
  "matmul: within the f32 accumulation bound (transposes, batches, broadcast, dtypes)",
  async (g) => {
    for (const [d, transA, transB] of MATMUL_CASES) {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 70 }),
          fc.integer({ min: 1, max: 70 }),
          fc.integer({ min: 0, max: 70 }),
          fc.constantFrom([], [2], [2, 3], [1, 2]),
          fc.boolean(),
          fc.nat(),
          async (m, n, k, batchShape, bcast, seed) => {
            await checkMatmul(g, d, m, n, k, transA, transB, batchShape, bcast, seed);
          },
        ),
        { ...FC, numRuns: 6 },
      );
    }
  },
);

async function checkMatmul(
  g: Backend,
  d: DType,
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
  batchShape: readonly number[],
  bcast: boolean,
  seed: number,
): Promise<void> {
  const batch = prod(batchShape);
  const aBatch = batchShape.map((_, i) => prod(batchShape.slice(i + 1)) * m * k);
  const bBatch = bcast
    ? batchShape.map(() => 0)
    : batchShape.map((_, i) => prod(batchShape.slice(i + 1)) * k * n);
  const aData = fc.sample(mmValues(d, batch * m * k), { seed, numRuns: 1 })[0];
  const bVals =
    fc.sample(mmValues(d, (bcast ? 1 : batch) * k * n), { seed: seed + 1, numRuns: 1 })[0];
  const geo = {
    batch,
    m,
    k,
    n,
    aBatchStride: aBatch,
    bBatchStride: bBatch,
    batchShape,
    transA,
    transB,
  };
  const [c, r] = await both(
    g,
    (be) => be.matmul(arg(be, d, aData), arg(be, d, bVals), geo, d),
    d,
    batch * m * n,
  );
  const cv = decode(d, c);
  const gv = decode(d, r);
  const av = decode(d, aData);
  const bv = decode(d, bVals);
  for (let bt = 0; bt < batch; bt++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let mag = 0;
        const ao = bt * m * k;
        const bo = bcast ? 0 : bt * k * n;
        for (let p = 0; p < k; p++) {
          mag += Math.abs(
            av[ao + (transA ? p * m + i : i * k + p)] * bv[bo + (transB ? j * k + p : p * n + j)],
          );
        }
        const o = bt * m * n + i * n + j;
        // f32 accumulation: |error| <= (k + 2)·2^-24·Σ|a||b|, plus one ulp of a narrow output.
        const tol = (k + 2) * 2 ** -24 * mag + (d === "f32" || d === "i32" ? 0 : ulpOf(d, cv[o]));
        assert.ok(
          Math.abs(cv[o] - gv[o]) <= tol,
          `matmul ${d} ${transA ? "T" : "N"}${transB ? "T" : "N"} batch [${batchShape}] ` +
            `[${m},${k}]x[${k},${n}] at (${bt},${i},${j}): cpu ${cv[o]}, webgpu ${gv[o]}`,
        );
      }
    }
  }
}

/** Matmul operands: moderate values (no overflow, no subnormals), as storage of `d`. */
function mmValues(d: DType, n: number): fc.Arbitrary<Storage> {
  const v = d === "i32"
    ? fc.integer({ min: -100, max: 100 })
    : fc.float({ min: -4, max: 4, noNaN: true }).filter((x) => x === 0 || Math.abs(x) >= 2 ** -20);
  return fc.array(v, { minLength: n, maxLength: n }).map((a) => encode(d, a));
}

/** The spacing of `d` at |x| (one ulp). */
function ulpOf(d: DType, x: number): number {
  const bits = encode(d, [Math.abs(x)]);
  const at = decode(d, bits)[0];
  (bits as Uint8Array)[0]++;
  const up = decode(d, bits)[0];
  return Number.isFinite(up) ? up - at : at;
}

// ---------------------------------------------------------------------------------------------
// Random

gtest("random: uniform and bernoulli bitwise, normal within tolerance", async (g) => {
  for (const seed of [0, 2 ** 40 + 7]) {
    const key = keyFromSeed(seed);
    for (const n of [1, 7, 1000, 4097]) {
      for (const d of ["f32", "f16", "bf16", "f8e5m2"] as const) {
        for (const [lo, hi] of [[0, 1], [-0.1, 0.1], [-3, 5], [2, 2], [-1, 0]]) {
          const dist = { kind: "uniform", lo, hi } as const;
          const [c, r] = await both(g, (be) => be.random(key, n, d, dist), d, n);
          assertBits(d, c, r, `uniform ${d} [${lo}, ${hi}) n=${n}`);
        }
      }
      for (const d of ["bool", "u8", "f32", "f16"] as const) {
        for (const p of [0, 0.1, 0.5, 0.9, 1]) {
          const [c, r] = await both(
            g,
            (be) => be.random(key, n, d, { kind: "bernoulli", p }),
            d,
            n,
          );
          assertBits(d, c, r, `bernoulli ${d} p=${p} n=${n}`);
        }
      }
      const [c, r] = await both(g, (be) => be.random(key, n, "f32", { kind: "normal" }), "f32", n);
      const cv = c as Float32Array;
      const gv = r as Float32Array;
      for (let i = 0; i < n; i++) {
        // r·cos(2πu) in f32: the angle and radius carry ~1 ulp each, so allow 8 ulps of the
        // radius scale near zero crossings.
        const tol = 8 * 2 ** -24 * Math.max(Math.abs(cv[i]), 1);
        assert.ok(Math.abs(cv[i] - gv[i]) <= tol, `normal[${i}] cpu ${cv[i]}, webgpu ${gv[i]}`);
      }
      const [c16, r16] = await both(
        g,
        (be) => be.random(key, n, "f16", { kind: "normal" }),
        "f16",
        n,
      );
      for (let i = 0; i < n; i++) {
        assert.ok(ulpsNarrow("f16", c16, r16, i) <= 1, `normal f16[${i}]`);
      }
    }
  }
});
