/**
 * Block-wise 8-bit quantization in WebAssembly, bitwise equal to the TypeScript kernels of
 * `../quantize.ts` (which stay the reference and the fallback): `quantize` and `dequantize`
 * (f32 output), and the fused 8-bit optimizer update (`Backend.blockwise8bitUpdate`, see
 * `lib/backend/optim8.ts`), which per block forms the old moments (`map[code] · absmax`, four
 * lanes gathered from one word of codes), updates them and the param four lanes at a time (every
 * f32 operation rounds as the composed ops do), takes the new block absmax and requantizes.
 * Long updates are split by whole blocks across the CPU worker pool (its workers compile the
 * module bytes from the pool's code area, as for fused kernels); each block is computed alone,
 * with its own scratch per thread, so the thread count never changes a bit.
 *
 * The nearest map entry is found as the TypeScript kernel finds it: the first candidate from a
 * table over the top 16 bits of `y = clamp(x / absmax, −1, 1)`, then steps up while the next
 * midpoint is below `y`. Ratios, buckets, the compare of a single step (bitsandbytes' maps
 * need 1) and the sign guard of an ascending map run on four lanes; only the table reads are
 * per lane. Longer searches unroll (≤ 4 steps) or loop, and other maps use the guard table.
 * The tables of each map live once on the CPU heap (68.6 KB per distinct map, at most 8 kept).
 * Vectors may read and write up to 12 bytes past a buffer, inside its 64-byte heap block; only
 * whole 4-lane groups per block are handled, so `blockSize` must be a multiple of 4 (else the
 * TypeScript kernels run).
 *
 * Spec: WebAssembly Core 2.0 (§5.4 instructions, SIMD opcodes of the binary format).
 *
 * @module
 */
import type { DType } from "../../../dtype.ts";
import type { Blockwise8bitUpdate } from "../../optim8.ts";
import { type Code, I, T, uleb, V, wasmModule } from "./emit.ts";
import { f16Lanes, f16x4 } from "./gemm_module.ts";
import { wasmEnabled } from "./features.ts";
import { defaultHeap, heapBuffer, heapMemory } from "../heap.ts";
import { searchTables } from "../quantize.ts";
import { cpuPool } from "./matmul.ts";
import { codeOffset } from "./pool.ts";
import { f32Bits } from "./fused_run.ts";

const simd = (op: number, ...imm: number[]): Code => [0xfd, uleb(op), imm];
/** Instructions `emit.ts` does not name. */
const X = {
  load8u: (o = 0): Code => [0x2d, 0, uleb(o)],
  store8: (o = 0): Code => [0x3a, 0, uleb(o)],
  i32Load: (o = 0): Code => [0x28, 2, uleb(o)],
  f32Ne: 0x5c,
  f32Lt: 0x5d,
  f32Gt: 0x5e,
  f32Abs: 0x8b,
  f32Max: 0x97,
  gtU: 0x4b,
  fAbs: simd(0xe0),
  fSqrt: simd(0xe3),
  fSub: simd(0xe5),
  fDiv: simd(0xe7),
  fMax: simd(0xe9),
  fNe: simd(0x42),
  fLt: simd(0x43),
  fGt: simd(0x44),
  iLtS: simd(0x39),
  extract: (lane: number): Code => simd(0x1f, lane),
  iExtract: (lane: number): Code => simd(0x1b, lane),
  replace: (lane: number): Code => simd(0x20, lane),
  i32Store: (o = 0): Code => [0x36, 0, uleb(o)],
  /** `v128.store64_lane` lane 0: the low 8 bytes. */
  store64: [0xfd, 0x5b, 3, 0, 0] as Code,
  /** `v128.store32_lane` lane 0: the low 4 bytes. */
  store32: [0xfd, 0x5a, 2, 0, 0] as Code,
  /** `i8x16.narrow_i16x8_u`. */
  narrow8: simd(0x66),
  andnot: simd(0x4f),
} as const;

/** Byte offsets inside a map's heap tables. */
const MAP = 0, MIDS = 1024, GUARD = 2048, START = 3072, TABLE_BYTES = 3072 + 65536;
const NAN_BITS = 0x7fc00000;

type Kind = "f32" | "bf16" | "f16";
const KINDS = new Set<DType>(["f32", "bf16", "f16"]);
const BYTES: Record<Kind, number> = { f32: 4, bf16: 2, f16: 2 };

/** A function under construction: typed parameters first, then locals. */
class Fn {
  readonly params: number[] = [];
  readonly locals: number[] = [];
  param(t: number): number {
    if (this.locals.length) throw new Error("wasm quantize: parameters come before locals");
    return this.params.push(t) - 1;
  }
  local(t: number): number {
    return this.params.length + this.locals.push(t) - 1;
  }
}

/** `for (i = 0; i < end; i += step) body` (end: a local). */
function loop(i: number, end: number, step: number, body: Code): Code {
  return [
    I.i32(0),
    I.set(i),
    I.block(
      I.loop(
        I.get(i),
        I.get(end),
        I.geU,
        I.brIf(1),
        body,
        I.get(i),
        I.i32(step),
        I.add,
        I.set(i),
        I.br(0),
      ),
    ),
  ];
}

const splat = (v: number): Code => [I.i32(v), V.i32x4Splat];
const fsplat = (local: number): Code => [I.get(local), V.f32x4Splat];
/** Address `base + (from + i) · bytes`. */
const at = (base: number, from: number, i: number, bytes: number): Code => [
  I.get(base),
  I.get(from),
  I.get(i),
  I.add,
  I.i32(Math.log2(bytes)),
  I.shl,
  I.add,
];

/** Four lanes of `kind` at the address on the stack, widened to f32 (exact). */
function load4(kind: Kind, s1: number, s2: number): Code {
  if (kind === "f32") return V.load();
  if (kind === "bf16") return [V.load16x4u(), I.i32(16), V.i32x4Shl];
  return [V.load16x4u(), f16x4(s1, s2)];
}

/** Store f32 lanes of local `r` rounded once to `kind` (ties to even) at the address on the stack. */
function store4(kind: Kind, r: number, s1: number, s2: number): Code {
  if (kind === "f32") return [I.get(r), V.store()];
  const narrow = (
    bits: Code,
  ): Code => [bits, I.set(s1), I.get(s1), I.get(s1), V.i16x8NarrowU, X.store64];
  if (kind === "f16") return narrow(f16Lanes(r, s1, s2));
  // bf16: (x + 0x7fff + ((x >>> 16) & 1)) >>> 16, a NaN as encode stores it: sign | 0x7fc0.
  const x = I.get(r);
  return narrow([
    [x, I.i32(16), V.i32x4ShrU, splat(0x8000), V.and, splat(0x7fc0), V.or],
    [x, splat(0x7fff), V.i32x4Add, x, I.i32(16), V.i32x4ShrU, splat(1), V.and, V.i32x4Add],
    [I.i32(16), V.i32x4ShrU],
    [x, x, X.fNe],
    V.bitselect,
  ]);
}

/** Locals shared by the quantization phases of one function. */
interface QLocals {
  readonly i: number;
  readonly len: number;
  readonly end4: number;
  readonly c: number;
  readonly y: number;
  readonly vc: number;
  readonly vm: number;
  readonly live: number;
  readonly vb: number;
  readonly vs: number;
  readonly vy: number;
  readonly va: number;
  readonly one: number;
  readonly negOne: number;
}

function qLocals(f: Fn): QLocals {
  return {
    i: f.local(T.i32),
    len: f.local(T.i32),
    end4: f.local(T.i32),
    c: f.local(T.i32),
    y: f.local(T.f32),
    vc: f.local(T.v128),
    vm: f.local(T.v128),
    live: f.local(T.v128),
    vb: f.local(T.v128),
    vs: f.local(T.v128),
    vy: f.local(T.v128),
    va: f.local(T.v128),
    one: f.local(T.v128),
    negOne: f.local(T.v128),
  };
}

const qInit = (q: QLocals): Code => [
  I.f32(1),
  V.f32x4Splat,
  I.set(q.one),
  I.f32(-1),
  V.f32x4Splat,
  I.set(q.negOne),
];

/**
 * Codes of one block: f32 values at `src` (pointer local, `len` of them, read up to `end4`),
 * block absmax in the f32 local `a`, tables at `tbl`, codes to `out + from` (whole words: up to
 * 3 bytes past the block, which only the last block of a buffer has, inside its heap block).
 */
function quantizeBlock(
  q: QLocals,
  src: number,
  a: number,
  tbl: number,
  out: number,
  from: number,
  steps: number,
  guard: boolean,
  z0: number,
): Code {
  const { i, c, y } = q;
  const zero = [I.i32(0), V.i32x4Splat];
  const srcAt: Code = [I.get(src), I.get(i), I.i32(2), I.shl, I.add];
  // y = clamp(x / a, −1, 1); 0 for a dead block (a not > 0) or a NaN ratio.
  const ratio: Code = [
    srcAt,
    V.load(),
    I.get(q.va),
    X.fDiv,
    I.set(q.vy),
    I.get(q.one),
    I.get(q.vy),
    I.get(q.vy),
    I.get(q.one),
    X.fGt,
    V.bitselect,
    I.set(q.vy),
    I.get(q.negOne),
    I.get(q.vy),
    I.get(q.vy),
    I.get(q.negOne),
    X.fLt,
    V.bitselect,
    I.set(q.vy),
    zero,
    I.get(q.vy),
    I.get(q.vy),
    I.get(q.vy),
    X.fNe,
    V.bitselect,
    I.get(q.live),
    V.and,
    I.tee(q.vy),
    // the table bucket of each lane: its top 16 bits
    I.i32(16),
    V.i32x4ShrU,
    I.set(q.vb),
  ];
  // The sign guard's index bits, (x > 0) << 8 | (x < 0) << 9, per lane (for the table guard).
  const signs: Code = guard && z0 < 0
    ? [
      srcAt,
      V.load(),
      I.set(q.vs),
      I.get(q.vs),
      zero,
      X.fGt,
      splat(256),
      V.and,
      I.get(q.vs),
      zero,
      X.fLt,
      splat(512),
      V.and,
      V.or,
      I.set(q.vs),
    ]
    : [];
  const step: Code = [
    I.get(c),
    I.get(c),
    I.i32(2),
    I.shl,
    I.get(tbl),
    I.add,
    I.f32Load(MIDS),
    I.get(y),
    X.f32Lt,
    I.add,
    I.set(c),
  ];
  const search: Code = steps <= 4 ? new Array(steps).fill(step) : I.block(I.loop(
    I.get(c),
    I.i32(2),
    I.shl,
    I.get(tbl),
    I.add,
    I.f32Load(MIDS),
    I.get(y),
    X.f32Lt,
    I.eqz,
    I.brIf(1),
    I.get(c),
    I.i32(1),
    I.add,
    I.set(c),
    I.br(0),
  ));
  // One step and no table guard: the midpoint compare runs on the four lanes at once.
  const vectorStep = steps === 1 && !(guard && z0 < 0);
  const laneVector = (l: number): Code => [
    I.get(tbl),
    I.get(q.vb),
    X.iExtract(l),
    I.add,
    X.load8u(START),
    I.tee(c),
    l === 0 ? V.i32x4Splat : [I.set(c), I.get(q.vc), I.get(c), simd(0x1c, l)],
    I.set(q.vc),
    // mids[c] into lane l of vm
    l === 0 ? [] : I.get(q.vm),
    I.get(c),
    I.i32(2),
    I.shl,
    I.get(tbl),
    I.add,
    I.f32Load(MIDS),
    l === 0 ? V.f32x4Splat : X.replace(l),
    I.set(q.vm),
  ];
  // c += mids[c] < y (true lanes are −1)
  const stepVector: Code = vectorStep
    ? [I.get(q.vc), I.get(q.vm), I.get(q.vy), X.fLt, V.i32x4Sub, I.set(q.vc)]
    : [];
  const lane = (l: number): Code =>
    vectorStep ? laneVector(l) : [
      I.get(q.vy),
      X.extract(l),
      I.set(y),
      I.get(tbl),
      I.get(q.vb),
      X.iExtract(l),
      I.add,
      X.load8u(START),
      I.set(c),
      search,
      guard && z0 < 0
        ? [I.get(tbl), I.get(c), I.get(q.vs), X.iExtract(l), I.or, I.add, X.load8u(GUARD), I.set(c)]
        : [],
      l === 0 ? [I.get(c), V.i32x4Splat] : [I.get(q.vc), I.get(c), simd(0x1c, l)],
      I.set(q.vc),
    ];
  // The guard of an ascending map without NaN, whose entries are < 0 exactly below index z0:
  // x < 0 with c ≥ z0 (and c > 0) takes c − 1; x > 0 with c < z0 (and c < 255) takes c + 1.
  const vectorGuard: Code = guard && z0 >= 0
    ? [
      srcAt,
      V.load(),
      I.set(q.vs),
      I.get(q.vc),
      splat(z0),
      V.i32x4GeS,
      I.set(q.vb), // c ≥ z0: map[c] ≥ 0
      I.get(q.vc),
      // up: x > 0, map[c] < 0, c < 255 (−1 lanes, so subtracting adds one)
      I.get(q.vs),
      zero,
      X.fGt,
      I.get(q.vb),
      X.andnot,
      I.get(q.vc),
      splat(255),
      X.iLtS,
      V.and,
      V.i32x4Sub,
      // down: x < 0, map[c] ≥ 0, c > 0
      I.get(q.vs),
      zero,
      X.fLt,
      I.get(q.vb),
      V.and,
      I.get(q.vc),
      zero,
      V.i32x4GtS,
      V.and,
      V.i32x4Add,
      I.set(q.vc),
    ]
    : [];
  return [
    // live = a > 0 as an all-ones (or zero) mask; va = splat(a).
    I.i32(0),
    I.get(a),
    I.f32(0),
    X.f32Gt,
    I.sub,
    V.i32x4Splat,
    I.set(q.live),
    fsplat(a),
    I.set(q.va),
    loop(i, q.end4, 4, [
      ratio,
      signs,
      lane(0),
      lane(1),
      lane(2),
      lane(3),
      stepVector,
      vectorGuard,
      I.get(out),
      I.get(from),
      I.add,
      I.get(i),
      I.add,
      I.get(q.vc),
      I.get(q.vc),
      V.i16x8NarrowU,
      I.tee(q.vc),
      I.get(q.vc),
      X.narrow8,
      X.store32,
    ]),
  ];
}

/** `for (from = 0, b = 0; from < n; from += bs, b++)` with len and end4 set per block. */
function blocks(q: QLocals, from: number, b: number, n: number, bs: number, body: Code): Code {
  return [
    I.i32(0),
    I.set(from),
    I.i32(0),
    I.set(b),
    I.block(I.loop(
      I.get(from),
      I.get(n),
      I.geU,
      I.brIf(1),
      // len = min(n − from, bs); end4 = (len + 3) & ~3
      I.get(bs),
      I.get(n),
      I.get(from),
      I.sub,
      I.tee(q.len),
      I.get(q.len),
      I.get(bs),
      X.gtU,
      I.select,
      I.tee(q.len),
      I.i32(3),
      I.add,
      I.i32(-4),
      I.and,
      I.set(q.end4),
      body,
      I.get(from),
      I.get(bs),
      I.add,
      I.set(from),
      I.get(b),
      I.i32(1),
      I.add,
      I.set(b),
      I.br(0),
    )),
  ];
}

/** `quantize(x, absmax, tbl, n, bs, out, wide)` for x of `kind`. */
function quantizeFn(kind: Kind, steps: number, guard: boolean, z0: number): Uint8Array {
  const f = new Fn();
  const [x, am, tbl, n, bs, out, wide] = [0, 1, 2, 3, 4, 5, 6].map(() => f.param(T.i32));
  const q = qLocals(f);
  const from = f.local(T.i32), b = f.local(T.i32), src = f.local(T.i32), a = f.local(T.f32);
  const s1 = f.local(T.v128), s2 = f.local(T.v128);
  const pick: Code = kind === "f32"
    ? [I.get(x), I.get(from), I.i32(2), I.shl, I.add, I.set(src)]
    : [
      // Narrow x: widen the block into `wide` first (exact).
      loop(q.i, q.end4, 4, [
        I.get(wide),
        I.get(q.i),
        I.i32(2),
        I.shl,
        I.add,
        at(x, from, q.i, 2),
        load4(kind, s1, s2),
        V.store(),
      ]),
      I.get(wide),
      I.set(src),
    ];
  const body = blocks(q, from, b, n, bs, [
    pick,
    I.get(am),
    I.get(b),
    I.i32(2),
    I.shl,
    I.add,
    I.f32Load(),
    I.set(a),
    quantizeBlock(q, src, a, tbl, out, from, steps, guard, z0),
  ]);
  return wasmModule(
    [{ name: "k", params: f.params, locals: f.locals, body: [qInit(q), body] }],
    { shared: true, minPages: 1, maxPages: 65536 },
  );
}

/** `dequantize(codes, absmax, tbl, n, bs, out)`: f32 `map[code] · absmax`. */
function dequantizeFn(): Uint8Array {
  const f = new Fn();
  const [codes, am, tbl, n, bs, out] = [0, 1, 2, 3, 4, 5].map(() => f.param(T.i32));
  const q = qLocals(f);
  const from = f.local(T.i32), b = f.local(T.i32), a = f.local(T.f32);
  const body = blocks(q, from, b, n, bs, [
    I.get(am),
    I.get(b),
    I.i32(2),
    I.shl,
    I.add,
    I.f32Load(),
    I.set(a),
    loop(q.i, q.len, 1, [
      at(out, from, q.i, 4),
      I.get(codes),
      I.get(from),
      I.add,
      I.get(q.i),
      I.add,
      X.load8u(),
      I.i32(2),
      I.shl,
      I.get(tbl),
      I.add,
      I.f32Load(MAP),
      I.get(a),
      I.f32Mul,
      I.f32Store(),
    ]),
  ]);
  return wasmModule(
    [{ name: "k", params: f.params, locals: f.locals, body }],
    { shared: true, minPages: 1, maxPages: 65536 },
  );
}

/** What a fused update module is specialized for. */
interface UpdateSpec {
  readonly kind: "adam" | "sgd";
  readonly p: Kind;
  readonly g: Kind;
  readonly l2: boolean;
  readonly decay: boolean;
  readonly steps: readonly number[];
  readonly z0: readonly number[];
}

/**
 * The fused update. adam parameters: `p, g, c0, a0, t0, c1, a1, t1, n, bs, outP, outC0, outA0,
 * outC1, outA1, s0, s1` then the f32 bits of `stepSize, epsHat, decay, b1, omb1, b2, omb2, l2`;
 * sgd: `p, g, c0, a0, t0, n, bs, outP, outC0, outA0, s0` then those of `rate, momentum, l2`
 * (all i32). Block 0 is at the given addresses: a part of the blocks runs with offset addresses.
 */
function updateFn(spec: UpdateSpec): Uint8Array {
  const f = new Fn();
  const k = spec.kind === "adam" ? 2 : 1;
  const p = f.param(T.i32), g = f.param(T.i32);
  const codes: number[] = [], am: number[] = [], tbl: number[] = [];
  for (let j = 0; j < k; j++) {
    codes.push(f.param(T.i32)), am.push(f.param(T.i32)), tbl.push(f.param(T.i32));
  }
  const n = f.param(T.i32), bs = f.param(T.i32), outP = f.param(T.i32);
  const outC: number[] = [], outA: number[] = [];
  for (let j = 0; j < k; j++) outC.push(f.param(T.i32)), outA.push(f.param(T.i32));
  const sc: number[] = [];
  for (let j = 0; j < k; j++) sc.push(f.param(T.i32));
  const names = spec.kind === "adam"
    ? ["stepSize", "epsHat", "decay", "b1", "omb1", "b2", "omb2", "l2"]
    : ["rate", "momentum", "l2"];
  // Scalars arrive as f32 bits in i32 parameters (as a pool worker passes its argument words).
  const s: Record<string, number> = {};
  for (const nm of names) s[nm] = f.param(T.i32);

  const q = qLocals(f);
  const from = f.local(T.i32), b = f.local(T.i32);
  const a: number[] = [], acc: number[] = [];
  for (let j = 0; j < k; j++) a.push(f.local(T.f32)), acc.push(f.local(T.v128));
  const sv: Record<string, number> = {};
  for (const nm of names) sv[nm] = f.local(T.v128);
  const vp = f.local(T.v128), vg = f.local(T.v128), ok = f.local(T.v128), nx = f.local(T.v128);
  const mom: number[] = [];
  for (let j = 0; j < k; j++) mom.push(f.local(T.v128));
  const inLen = f.local(T.v128), t1 = f.local(T.v128), t2 = f.local(T.v128);
  const lanes = f.local(T.v128);
  const g4 = (l: number) => I.get(l);
  const scratchAt = (j: number): Code => [I.get(sc[j]), I.get(q.i), I.i32(2), I.shl, I.add];

  const pre: Code = [
    qInit(q),
    ...names.map((nm) => [I.get(s[nm]), I.f32FromBits, V.f32x4Splat, I.set(sv[nm])]),
    // lanes = [0, 1, 2, 3]
    I.i32(0),
    V.i32x4Splat,
    I.i32(1),
    simd(0x1c, 1), // i32x4.replace_lane 1
    I.i32(2),
    simd(0x1c, 2),
    I.i32(3),
    simd(0x1c, 3),
    I.set(lanes),
  ];
  // Each moment's old block absmax, splat (the dequantized values are formed lane by lane).
  const av: number[] = [];
  for (let j = 0; j < k; j++) av.push(f.local(T.v128));
  const cw = f.local(T.i32);
  const phase0: Code[] = [];
  for (let j = 0; j < k; j++) {
    phase0.push(I.get(am[j]), I.get(b), I.i32(2), I.shl, I.add, I.f32Load(), I.set(a[j]));
    phase0.push(fsplat(a[j]), I.set(av[j]));
  }
  /** Moment j's old values of the four lanes: map[code] · absmax (four codes in one word). */
  const old = (j: number): Code => {
    const entry = (l: number): Code => [
      I.get(tbl[j]),
      I.get(cw),
      l === 0 ? [I.i32(2), I.shl] : [I.i32(8 * l - 2), I.shrU],
      I.i32(0x3fc),
      I.and,
      I.add,
      I.f32Load(MAP),
    ];
    return [
      I.get(codes[j]),
      I.get(from),
      I.add,
      I.get(q.i),
      I.add,
      X.i32Load(),
      I.set(cw),
      entry(0),
      V.f32x4Splat,
      [1, 2, 3].map((l) => [entry(l), X.replace(l)]),
      I.get(av[j]),
      V.f32x4Mul,
    ];
  };
  const mul = V.f32x4Mul, add = V.f32x4Add;
  // Phase 1: the update, four lanes at a time.
  const gradient: Code = [
    at(g, from, q.i, BYTES[spec.g]),
    load4(spec.g, t1, t2),
    I.set(vg),
    spec.l2 ? [g4(vg), g4(vp), g4(sv.l2), mul, add, I.set(vg)] : [],
  ];
  const update: Code = spec.kind === "adam"
    ? [
      // m = m̂·b1 + g·(1 − b1); v = v̂·b2 + g²·(1 − b2); ok = |v| < Inf
      old(0),
      g4(sv.b1),
      mul,
      g4(vg),
      g4(sv.omb1),
      mul,
      add,
      I.set(mom[0]),
      old(1),
      g4(sv.b2),
      mul,
      g4(vg),
      g4(vg),
      mul,
      g4(sv.omb2),
      mul,
      add,
      I.set(mom[1]),
      g4(mom[1]),
      X.fAbs,
      splat(0x7f800000),
      X.fLt,
      I.set(ok),
      // p' = p − stepSize·(m / (√v + epsHat)) [· decay]
      g4(vp),
      g4(sv.stepSize),
      g4(mom[0]),
      g4(mom[1]),
      X.fSqrt,
      g4(sv.epsHat),
      add,
      X.fDiv,
      mul,
      X.fSub,
      spec.decay ? [g4(sv.decay), mul] : [],
      I.set(nx),
    ]
    : [
      // m = m̂·momentum + g; ok = |m| < Inf; p' = p − m·rate
      old(0),
      g4(sv.momentum),
      mul,
      g4(vg),
      add,
      I.set(mom[0]),
      g4(mom[0]),
      X.fAbs,
      splat(0x7f800000),
      X.fLt,
      I.set(ok),
      g4(vp),
      g4(mom[0]),
      g4(sv.rate),
      mul,
      X.fSub,
      I.set(nx),
    ];
  const phase1Body: Code[] = [
    at(p, from, q.i, BYTES[spec.p]),
    load4(spec.p, t1, t2),
    I.set(vp),
    gradient,
    update,
    // new param: ok ? p' : p, rounded once to p's dtype
    g4(nx),
    g4(vp),
    g4(ok),
    V.bitselect,
    I.set(nx),
    at(outP, from, q.i, BYTES[spec.p]),
    store4(spec.p, nx, t1, t2),
    // lanes inside the block (the last vector of the last block may reach past it)
    I.get(q.i),
    V.i32x4Splat,
    g4(lanes),
    V.i32x4Add,
    I.get(q.len),
    V.i32x4Splat,
    X.iLtS,
    I.set(inLen),
  ];
  for (let j = 0; j < k; j++) {
    // moment: ok ? m : 0 to scratch; absmax over lanes inside the block
    phase1Body.push(
      g4(mom[j]),
      g4(ok),
      V.and,
      I.set(mom[j]),
      scratchAt(j),
      g4(mom[j]),
      V.store(),
      g4(acc[j]),
      g4(mom[j]),
      X.fAbs,
      g4(inLen),
      V.and,
      X.fMax,
      I.set(acc[j]),
    );
  }
  const finish: Code[] = [];
  for (let j = 0; j < k; j++) {
    finish.push(
      // a = max of the lanes (NaN if any is NaN, stored as 0x7fc00000)
      g4(acc[j]),
      X.extract(0),
      g4(acc[j]),
      X.extract(1),
      X.f32Max,
      g4(acc[j]),
      X.extract(2),
      g4(acc[j]),
      X.extract(3),
      X.f32Max,
      X.f32Max,
      I.set(a[j]),
      I.i32(NAN_BITS),
      I.f32FromBits,
      I.get(a[j]),
      I.get(a[j]),
      I.get(a[j]),
      X.f32Ne,
      I.select,
      I.set(a[j]),
      I.get(outA[j]),
      I.get(b),
      I.i32(2),
      I.shl,
      I.add,
      I.get(a[j]),
      I.f32Store(),
      quantizeBlock(q, sc[j], a[j], tbl[j], outC[j], from, spec.steps[j], true, spec.z0[j]),
    );
  }
  const body = blocks(q, from, b, n, bs, [
    phase0,
    ...acc.map((l) => [V.zero(), I.set(l)]),
    loop(q.i, q.end4, 4, phase1Body),
    finish,
  ]);
  return wasmModule(
    [{ name: "k", params: f.params, locals: f.locals, body: [pre, body] }],
    { shared: true, minPages: 1, maxPages: 65536 },
  );
}

type Kernel = (...args: number[]) => void;
/** A compiled kernel and its module bytes (which pool workers compile from the code area). */
interface Compiled {
  readonly fn: Kernel;
  readonly bytes: Uint8Array;
}
const modules = new Map<string, Compiled | null>();

function instantiate(key: string, build: () => Uint8Array): Compiled | undefined {
  let k = modules.get(key);
  if (k === undefined) {
    try {
      const bytes = build();
      const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes as BufferSource), {
        e: { m: heapMemory() },
      });
      k = { fn: inst.exports.k as Kernel, bytes };
    } catch (e) {
      if (e instanceof WebAssembly.CompileError || e instanceof WebAssembly.LinkError) k = null;
      else throw e;
    }
    modules.set(key, k);
  }
  return k ?? undefined;
}

/** Whether this path runs here: WebAssembly on, a shared heap, whole 4-lane groups per block. */
function applies(blockSize: number): boolean {
  if (!wasmEnabled() || blockSize % 4 !== 0) return false;
  return typeof SharedArrayBuffer === "function" && heapBuffer() instanceof SharedArrayBuffer;
}

interface HeapTables {
  readonly ptr: number;
  readonly steps: number;
  /** Ascending without NaN: the number of entries < 0 (the guard is then arithmetic); else −1. */
  readonly z0: number;
}
const heapTables = new Map<string, HeapTables>();

/** The heap tables of a map (built once per distinct map; at most 8 kept). */
function tablesOf(map: ArrayLike<number>): HeapTables {
  const values = Float32Array.from(map);
  const key = values.join(",");
  let t = heapTables.get(key);
  if (t) return t;
  const { mids, start, guard, steps } = searchTables(values);
  if (heapTables.size >= 8) {
    for (const old of heapTables.values()) defaultHeap().release(old.ptr, TABLE_BYTES);
    heapTables.clear();
  }
  const ptr = defaultHeap().alloc(TABLE_BYTES);
  const buf = heapBuffer();
  new Float32Array(buf, ptr + MAP, 256).set(values);
  const m = new Float32Array(buf, ptr + MIDS, 256);
  m.set(mids);
  m[255] = Infinity; // never below y (y ≤ 1, never NaN): the search stops at 255
  new Uint8Array(buf, ptr + GUARD, 1024).set(guard);
  new Uint8Array(buf, ptr + START, 65536).set(start);
  const ascending = values.every((v, i) => v === v && (i === 0 || values[i - 1] <= v));
  const z0 = ascending ? values.filter((v) => v < 0).length : -1;
  heapTables.set(key, t = { ptr, steps, z0 });
  return t;
}

/** A buffer for the kernels: its heap address and dtype. */
export interface HeapArg {
  /** Byte address on the CPU heap. */
  readonly ptr: number;
  /** Element type. */
  readonly dtype: DType;
}

/**
 * `Backend.quantize` in WebAssembly for f32, bf16 and f16 `x`: writes `n` codes at `out`;
 * `scratch` is a heap block of at least blockSize + 4 f32. Returns false (and does
 * nothing) where this path does not apply; then the TypeScript kernel runs.
 */
export function wasmQuantize(
  x: HeapArg,
  absmax: number,
  map: ArrayLike<number>,
  n: number,
  blockSize: number,
  signGuard: boolean,
  out: number,
  scratch: number,
): boolean {
  if (!KINDS.has(x.dtype) || !applies(blockSize)) return false;
  const t = tablesOf(map);
  const kind = x.dtype as Kind;
  const k = instantiate(
    `q:${kind}:${t.steps}:${signGuard}:${t.z0}`,
    () => quantizeFn(kind, t.steps, signGuard, t.z0),
  );
  if (!k) return false;
  k.fn(x.ptr, absmax, t.ptr, n, blockSize, out, scratch);
  return true;
}

/** `Backend.dequantize` to f32 in WebAssembly; false where this path does not apply. */
export function wasmDequantize(
  codes: number,
  absmax: number,
  map: ArrayLike<number>,
  n: number,
  blockSize: number,
  out: number,
): boolean {
  if (!applies(blockSize)) return false;
  const t = tablesOf(map);
  const k = instantiate("d", dequantizeFn);
  if (!k) return false;
  k.fn(codes, absmax, t.ptr, n, blockSize, out);
  return true;
}

/**
 * Elements from which the fused update is split by whole blocks across the CPU worker pool. One
 * thread takes about 6 ns per element (adam), so 64K elements are about 0.4 ms against a pool
 * round trip of 1–18 µs (shared/PERF-NOTES.md).
 */
export const UPDATE_SPLIT_ELEMENTS = 1 << 16;

const stats = { calls: 0, splits: 0 };

/** How many fused 8-bit updates ran in WebAssembly so far, and how many were split. */
export function wasm8bitUpdateInfo(): { calls: number; splits: number } {
  return { ...stats };
}

/** The most parts an update is split in: the pool's threads (1 without a pool). */
function maxParts(): number {
  return cpuPool()?.threads ?? 1;
}

/**
 * Bytes of scratch the fused update needs: a block of each moment for each thread that may run
 * a part of it.
 */
export function updateScratchBytes(u: Blockwise8bitUpdate): number {
  return maxParts() * partScratch(u);
}

const partScratch = (u: Blockwise8bitUpdate) => (u.kind === "adam" ? 2 : 1) * 4 * (u.blockSize + 4);

/**
 * `Backend.blockwise8bitUpdate` in WebAssembly. `inputs` and `outs` as the contract orders
 * them (heap addresses), `maps` the maps' values, `scalars` the scalar inputs' values, `n`
 * elements; `scratch` of {@linkcode updateScratchBytes}. From {@link UPDATE_SPLIT_ELEMENTS}
 * elements on, whole blocks are split across the worker pool (each block is computed alone,
 * so the split never changes a bit). False where this path does not apply.
 */
export function wasmBlockwise8bitUpdate(
  u: Blockwise8bitUpdate,
  inputs: readonly HeapArg[],
  maps: readonly ArrayLike<number>[],
  scalars: readonly number[],
  outs: readonly number[],
  n: number,
  scratch: number,
): boolean {
  const [p, g] = inputs;
  if (!KINDS.has(p.dtype) || !KINDS.has(g.dtype) || !applies(u.blockSize)) return false;
  const tables = maps.map(tablesOf);
  const spec: UpdateSpec = {
    kind: u.kind,
    p: p.dtype as Kind,
    g: g.dtype as Kind,
    l2: u.l2 !== 0,
    decay: u.kind === "adam" && u.decay,
    steps: tables.map((t) => t.steps),
    z0: tables.map((t) => t.z0),
  };
  const k = instantiate(`u:${JSON.stringify(spec)}`, () => updateFn(spec));
  if (!k) return false;
  stats.calls++;
  const bits = (x: number) => f32Bits(x);
  const f = Math.fround;
  const bs = u.blockSize;
  const pb = BYTES[spec.p], gb = BYTES[spec.g];
  const stride = 4 * (bs + 4);
  // The arguments of blocks [b0, b1) on the thread with scratch `sc`.
  let args: (b0: number, b1: number, sc: number) => number[];
  if (u.kind === "adam") {
    const [, , c0, a0, , c1, a1] = inputs.map((x) => x.ptr);
    const [stepSize, epsHat, decay = 1] = scalars;
    const [oP, oC0, oA0, oC1, oA1] = outs;
    const tail = [stepSize, epsHat, decay, f(u.b1), f(1 - u.b1), f(u.b2), f(1 - u.b2), f(u.l2)]
      .map(bits);
    args = (b0, b1, sc) => {
      const e0 = b0 * bs, e = Math.min(n, b1 * bs) - e0;
      return [
        p.ptr + e0 * pb,
        g.ptr + e0 * gb,
        c0 + e0,
        a0 + 4 * b0,
        tables[0].ptr,
        c1 + e0,
        a1 + 4 * b0,
        tables[1].ptr,
        e,
        bs,
        oP + e0 * pb,
        oC0 + e0,
        oA0 + 4 * b0,
        oC1 + e0,
        oA1 + 4 * b0,
        sc,
        sc + stride,
        ...tail,
      ];
    };
  } else {
    const [, , c0, a0] = inputs.map((x) => x.ptr);
    const [rate] = scalars;
    const [oP, oC0, oA0] = outs;
    const tail = [rate, f(u.b1), f(u.l2)].map(bits);
    args = (b0, b1, sc) => {
      const e0 = b0 * bs, e = Math.min(n, b1 * bs) - e0;
      return [
        p.ptr + e0 * pb,
        g.ptr + e0 * gb,
        c0 + e0,
        a0 + 4 * b0,
        tables[0].ptr,
        e,
        bs,
        oP + e0 * pb,
        oC0 + e0,
        oA0 + 4 * b0,
        sc,
        ...tail,
      ];
    };
  }
  const blocks = Math.ceil(n / bs);
  const pool = n >= UPDATE_SPLIT_ELEMENTS ? cpuPool() : undefined;
  const parts = pool ? Math.min(pool.ready() + 1, pool.threads, blocks) : 1;
  const at = parts > 1 ? codeOffset(k.bytes) : undefined;
  if (!pool || at === undefined) {
    k.fn(...args(0, blocks, scratch));
    return true;
  }
  stats.splits++;
  const edge = (q: number) => Math.round((blocks * q) / parts);
  const ps = partScratch(u);
  pool.call(
    parts,
    at,
    k.bytes.length,
    k.fn,
    (q) => args(edge(q), edge(q + 1), scratch + q * ps),
    "blockwise8bitUpdate",
  );
  return true;
}
