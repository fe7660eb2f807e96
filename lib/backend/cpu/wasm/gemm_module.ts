/**
 * The matmul kernels as WebAssembly bytes: a 6×8 f32 micro-kernel (12 v128 accumulators; V8
 * allocates xmm0–xmm14 only) and BLIS-style packers that widen f16/bf16 operands to f32 while
 * packing (bf16 is a shift; f16 an exact bit manipulation: the 15 low bits shifted into an f32
 * and scaled by 2^112, Inf/NaN patched), or round f32 operands to f16/bf16 values (a cast folded
 * into the product), so the micro-kernel only ever sees f32. Packers move whole vectors: rows of
 * B across all panels, contiguous lines through 4×4 shuffle transposes, A's contiguous rows.
 *
 * Packed layouts: an A panel holds 6 rows, `[kc][6]`; a B panel 8 columns, `[kc][8]`; both
 * zero-padded past the matrix edge. The micro-kernel reads `kc` steps of both panels and either
 * starts from zero (`first`) or adds into the 6×8 block of C it then stores (row stride `ldc`
 * bytes), so each output sums its products in the order p = 0, 1, …, k−1 whatever the blocking
 * or the thread split.
 *
 * @module
 */
import { type Code, type Func, I, T, V, wasmModule } from "./emit.ts";

/** An i32x4 constant splat. */
const k4 = (v: number): Code => [I.i32(v), V.i32x4Splat];

/** Micro-tile rows and columns. */
export const MR = 6;
/** Micro-tile columns. */
export const NR = 8;

/**
 * Operand element types the packers read. `f32bf16` and `f32f16` are f32 operands rounded to
 * bf16 / f16 (nearest, ties to even, as lib/dtype.ts) while they are read: the same f32 values
 * the packers make of a bf16 / f16 operand cast beforehand (a cast folded into the product).
 */
export const ELEM = { f32: 0, bf16: 1, f16: 2, f32bf16: 3, f32f16: 4 } as const;
/** An operand element type code. */
export type Elem = (typeof ELEM)[keyof typeof ELEM];
const SHIFT = [2, 1, 1, 2, 2]; // log2 of the element size

/** v128 scratch locals for rounding an f32x4 to f16/bf16 and back (see {@link roundedF32x4}). */
type Scratch = readonly [w: number, a: number, t: number];

/**
 * The f32x4 on the stack rounded to bf16 (e = 3) or f16 (e = 4) and widened back to f32x4
 * exactly, in the f32 bit domain (NaN → the quiet NaN of lib/dtype.ts with its sign, overflow →
 * ±Inf): bf16 and normal f16 results by the RNE rounding add of the dropped 16 / 13 bits, f16
 * subnormal ones by the exact f32 sum (|x| + 0.5) − 0.5 (whose rounding step, 2^−24, is the f16
 * subnormal step). The same values as rounding to bf16/f16 bits and widening them.
 */
function roundedF32x4(e: Elem, [w, a, t]: Scratch): Code {
  const sign: Code = [I.get(w), k4(0x80000000 - 2 ** 32), V.and, V.or];
  const nan = (abs: number): Code => [
    k4(0x7fc00000),
    I.get(t),
    abs < 0 ? [I.get(w), k4(0x7fffffff), V.and] : I.get(abs),
    k4(0x7f800000),
    V.i32x4GtS,
    V.bitselect,
  ];
  if (e === ELEM.f32bf16) {
    return [
      I.set(w),
      // (w + 0x7fff + ((w >>> 16) & 1)) & 0xffff0000, then NaN
      I.get(w),
      k4(0x7fff),
      V.i32x4Add,
      I.get(w),
      I.i32(16),
      V.i32x4ShrU,
      k4(1),
      V.and,
      V.i32x4Add,
      k4(-65536),
      V.and,
      k4(0x7fffffff),
      V.and,
      I.set(t),
      nan(-1),
      sign,
    ];
  }
  return [
    I.set(w),
    I.get(w),
    k4(0x7fffffff),
    V.and,
    I.set(a),
    // subnormal: (|x| + 0.5) − 0.5
    I.get(a),
    I.f32(0.5),
    V.f32x4Splat,
    V.f32x4Add,
    I.f32(0.5),
    V.f32x4Splat,
    V.f32x4Sub,
    // normal: (a + 0xfff + ((a >>> 13) & 1)) & 0xffffe000
    I.get(a),
    k4(0xfff),
    V.i32x4Add,
    I.get(a),
    I.i32(13),
    V.i32x4ShrU,
    k4(1),
    V.and,
    V.i32x4Add,
    k4(-8192),
    V.and,
    k4(0x38800000),
    I.get(a),
    V.i32x4GtS, // a < 2^−14
    V.bitselect,
    I.set(t),
    // ≥ 65520 → Inf
    k4(0x7f800000),
    I.get(t),
    I.get(a),
    k4(0x477ff000 - 1),
    V.i32x4GtS,
    V.bitselect,
    I.set(t),
    nan(a),
    sign,
  ];
}

/**
 * Byte address of a 65536-entry f32 table of every f16 value (0: none, use bit manipulation),
 * fixed while a module is built.
 */
let f16Table = 0;

/**
 * Widen the element at the address on the stack to an f32 (locals `h`, `v` are scratch i32;
 * `x`, three v128 scratch locals, are needed by the rounding element types 3 and 4).
 */
function loadScalar(e: Elem, h: number, v: number, x?: Scratch): Code {
  if (e === ELEM.f32) return I.f32Load();
  if (e === ELEM.f32bf16 || e === ELEM.f32f16) {
    if (!x) throw new Error("gemm_module: internal error, rounding loads need v128 scratch");
    return [I.f32Load(), V.f32x4Splat, roundedF32x4(e, x), V.f32x4ExtractLane(0)];
  }
  if (e === ELEM.bf16) return [I.i32Load16u(), I.i32(16), I.shl, I.f32FromBits];
  if (f16Table !== 0) return [I.i32Load16u(), I.i32(2), I.shl, I.f32Load(f16Table)];
  return [
    I.i32Load16u(),
    I.set(h),
    // bits of |x|·2^−112 placed as an f32, rescaled exactly
    I.get(h),
    I.i32(0x7fff),
    I.and,
    I.i32(13),
    I.shl,
    I.tee(v),
    I.f32FromBits,
    I.f32(2 ** 112),
    I.f32Mul,
    I.f32Bits,
    I.get(v),
    I.i32(0x7f800000),
    I.or, // Inf / NaN keep their payload
    I.get(v),
    I.i32(0x0f800000),
    I.ltU,
    I.select,
    I.get(h),
    I.i32(0x8000),
    I.and,
    I.i32(16),
    I.shl,
    I.or,
    I.f32FromBits,
  ];
}

/** Widen 4 u16 lanes (i32x4 on the stack, zero-extended) of an f16 to f32x4 bits. */
export function f16x4(h: number, t: number): Code {
  return [
    I.set(h),
    I.get(h),
    I.i32(0x7fff),
    V.i32x4Splat,
    V.and,
    I.i32(13),
    V.i32x4Shl,
    I.set(t),
    I.get(t),
    I.i32(0x7f800000),
    V.i32x4Splat,
    V.or,
    I.get(t),
    I.f32(2 ** 112),
    V.f32x4Splat,
    V.f32x4Mul,
    I.get(t),
    I.i32(0x0f800000),
    V.i32x4Splat,
    V.i32x4GeS,
    V.bitselect,
    I.get(h),
    I.i32(0x8000),
    V.i32x4Splat,
    V.and,
    I.i32(16),
    V.i32x4Shl,
    V.or,
  ];
}

/**
 * Fast half of {@link f16x8}: f16 bits in the high half of i32 lanes, finite values only;
 * `keep` masks the shifted lanes (0x8fffffff, or 0x8fffe000 to also drop what the low half's
 * bits became, so the odd lanes need no mask of their own first).
 */
const f16HighFinite = (keep: number): Code => [
  I.i32(3),
  V.i32x4ShrS, // sign smeared over bits 31..28, |h| at bits 27..13
  k4(keep - 2 ** 32),
  V.and,
  I.f32(2 ** 112),
  V.f32x4Splat,
  V.f32x4Mul, // exact: the f16 value's f32 bits, scaled by 2^-112, rescaled
];

/**
 * Eight f16 values (v128 in local `x`) widened to two f32x4: even lanes (0 2 4 6) to local `e`,
 * odd lanes (1 3 5 7) to `o`. Finite values take 3–4 operations per 4 lanes (each 16 bits moved
 * to the high half, shifted into f32 place with the sign, scaled by 2^112, exact for subnormals);
 * a vector that holds an Inf or NaN is redone by {@link f16x4}, bit for bit the same values.
 */
export function f16x8(x: number, e: number, o: number, t: number): Code {
  const special: Code = [I.get(x), k4(0x7c007c00), V.and, k4(0x7c007c00), V.i16x8Eq, V.anyTrue];
  return [
    I.get(x),
    I.i32(16),
    V.i32x4Shl,
    f16HighFinite(0x8fffffff),
    I.set(e),
    I.get(x),
    f16HighFinite(0x8fffe000),
    I.set(o),
    special,
    I.if(
      I.get(x),
      k4(0xffff),
      V.and,
      f16x4(e, t),
      I.set(e),
      I.get(x),
      I.i32(16),
      V.i32x4ShrU,
      f16x4(o, t),
      I.set(o),
    ),
  ];
}

/** Four operand values at `addr + off·size` widened to an f32x4 (`va`: v128 scratch). */
function widen4(e: Elem, addr: number, off: number, vh: number, vt: number, va: number): Code {
  if (e === ELEM.f32) return [I.get(addr), V.load(off * 4)];
  if (e === ELEM.f32bf16 || e === ELEM.f32f16) {
    return [I.get(addr), V.load(off * 4), roundedF32x4(e, [vh, va, vt])];
  }
  const lanes: Code = [I.get(addr), V.load16x4u(off * 2)];
  return e === ELEM.bf16 ? [lanes, I.i32(16), V.i32x4Shl] : [lanes, f16x4(vh, vt)];
}

/** `while (cond) body` as block/loop, with `body` at depth 1 (br 1 exits, br 0 continues). */
const whileLoop = (cond: Code, body: Code): Code =>
  I.block(I.loop(cond, I.eqz, I.brIf(1), body, I.br(0)));

/** Locals of {@link transposed4}: i32 `addr`, `stride`, `tmp`; v128 `v` (6) and scratch (3). */
interface TLocals {
  readonly addr: number;
  readonly stride: number;
  readonly tmp: number;
  readonly v: readonly number[];
  readonly x: Scratch;
}

/**
 * Four steps along q of `lines` (6 or 8) operand lines, line l at `addr + l·stride` bytes, its
 * 4 values contiguous: widened and transposed in SIMD into 4 packed rows of `lines` f32 at `dst`
 * (`4·lines` bytes apart): lines 0–3 and 4–7 as 4×4 transposes, lines 4–5 of 6 as 64-bit pairs.
 */
function transposed4(e: Elem, lines: number, dst: number, L: TLocals): Code {
  const [v0, v1, v2, v3, t0, t1] = L.v;
  const [vh, va, vt] = L.x;
  const pitch = 4 * lines;
  const load = (l: number, to: number): Code => [
    I.get(L.addr),
    I.get(L.stride),
    I.i32(l),
    I.mul,
    I.add,
    I.set(L.tmp),
    widen4(e, L.tmp, 0, vh, vt, va),
    I.set(to),
  ];
  const sh = (
    a: number,
    b: number,
    lanes: number[],
  ): Code => [I.get(a), I.get(b), V.i32x4Shuffle(lanes)];
  const lo = [0, 4, 1, 5], hi = [2, 6, 3, 7], lo2 = [0, 1, 4, 5], hi2 = [2, 3, 6, 7];
  const out: Code[] = [];
  for (let g = 0; g * 4 + 4 <= lines; g++) {
    const l0 = 4 * g;
    out.push(load(l0, v0), load(l0 + 1, v1), load(l0 + 2, v2), load(l0 + 3, v3));
    out.push(sh(v0, v1, lo), I.set(t0), sh(v0, v1, hi), I.set(t1));
    out.push(sh(v2, v3, lo), I.set(v0), sh(v2, v3, hi), I.set(v1));
    const st = (t: number, a: number, b: number, lanes: number[]): Code => [
      I.get(dst),
      sh(a, b, lanes),
      V.store(t * pitch + 16 * g),
    ];
    out.push(st(0, t0, v0, lo2), st(1, t0, v0, hi2), st(2, t1, v1, lo2), st(3, t1, v1, hi2));
  }
  if (lines % 4 === 2) {
    const l0 = lines - 2, off = 4 * l0;
    out.push(load(l0, v0), load(l0 + 1, v1));
    out.push(sh(v0, v1, lo), I.set(t0), sh(v0, v1, hi), I.set(t1));
    for (let t = 0; t < 4; t++) {
      out.push(I.get(dst), I.get(t < 2 ? t0 : t1), V.store64Lane(t * pitch + off, t % 2));
    }
  }
  return out;
}

/**
 * `packA(base, si, sq, mc, kc, dst)`: A(i, q) is at `base + (i·si + q·sq)·size`; writes
 * ⌈mc/6⌉ panels `[kc][6]`. Whole panels of contiguous rows (si = 1) take a vector path.
 */
function packA(e: Elem): Func {
  const [base, si, sq, mc, kc, dst, ir, p, r, h, v] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const x: Scratch = [11, 12, 13];
  const s = SHIFT[e];
  const elem: Code = [
    I.get(ir),
    I.get(r),
    I.add,
    I.get(mc),
    I.ltS,
    I.ifElse(
      [
        I.get(dst),
        I.get(base),
        I.get(ir),
        I.get(r),
        I.add,
        I.get(si),
        I.mul,
        I.get(p),
        I.get(sq),
        I.mul,
        I.add,
        I.i32(s),
        I.shl,
        I.add,
        loadScalar(e, h, v, x),
        I.f32Store(),
      ],
      [I.get(dst), I.f32(0), I.f32Store()],
    ),
    I.get(dst),
    I.i32(4),
    I.add,
    I.set(dst),
  ];
  const addr = 14;
  // Rows contiguous (si = 1, A stored transposed) and a whole panel: 4 values in SIMD, 2 scalar.
  const scalarAt = (r: number): Code => [
    I.get(dst),
    I.get(addr),
    I.i32(r << s),
    I.add,
    loadScalar(e, h, v, x),
    I.f32Store(4 * r),
  ];
  const vectorStep: Code = [
    I.get(dst),
    widen4(e, addr, 0, x[0], x[2], x[1]),
    V.store(0),
    scalarAt(4),
    scalarAt(5),
    I.get(dst),
    I.i32(4 * MR),
    I.add,
    I.set(dst),
    I.get(addr),
    I.get(sq),
    I.i32(s),
    I.shl,
    I.add,
    I.set(addr),
  ];
  const scalarStep: Code = [
    I.i32(0),
    I.set(r),
    whileLoop([I.get(r), I.i32(MR), I.ltS], [elem, I.get(r), I.i32(1), I.add, I.set(r)]),
  ];
  const steps = (step: Code): Code => [
    I.i32(0),
    I.set(p),
    whileLoop([I.get(p), I.get(kc), I.ltS], [step, I.get(p), I.i32(1), I.add, I.set(p)]),
  ];
  // Values contiguous along q (sq = 1, A not transposed) and a whole panel: 4 steps at a time
  // in SIMD (a 4×4 transpose and a pair), the last kc % 4 steps scalar.
  const TL: TLocals = { addr, stride: 15, tmp: 16, v: [17, 18, 19, 20, 21, 22], x };
  const transposedSteps: Code = [
    I.get(base),
    I.get(ir),
    I.get(si),
    I.mul,
    I.i32(s),
    I.shl,
    I.add,
    I.set(addr),
    I.get(si),
    I.i32(s),
    I.shl,
    I.set(TL.stride),
    I.i32(0),
    I.set(p),
    whileLoop([I.get(p), I.i32(4), I.add, I.get(kc), I.gtS, I.eqz], [
      transposed4(e, MR, dst, TL),
      I.get(dst),
      I.i32(16 * MR),
      I.add,
      I.set(dst),
      I.get(addr),
      I.i32(4 << s),
      I.add,
      I.set(addr),
      I.get(p),
      I.i32(4),
      I.add,
      I.set(p),
    ]),
    whileLoop([I.get(p), I.get(kc), I.ltS], [scalarStep, I.get(p), I.i32(1), I.add, I.set(p)]),
  ];
  return {
    name: `packA${e}`,
    params: [T.i32, T.i32, T.i32, T.i32, T.i32, T.i32],
    locals: [
      ...[T.i32, T.i32, T.i32, T.i32, T.i32, T.v128, T.v128, T.v128, T.i32, T.i32, T.i32],
      ...new Array(6).fill(T.v128),
    ],
    body: [
      I.i32(0),
      I.set(ir),
      whileLoop([I.get(ir), I.get(mc), I.ltS], [
        I.get(si),
        I.i32(1),
        I.eq,
        I.get(ir),
        I.i32(MR),
        I.add,
        I.get(mc),
        I.gtS,
        I.eqz, // ir + 6 <= mc
        I.and,
        I.ifElse(
          [I.get(base), I.get(ir), I.i32(s), I.shl, I.add, I.set(addr), steps(vectorStep)],
          [
            I.get(sq),
            I.i32(1),
            I.eq,
            I.get(ir),
            I.i32(MR),
            I.add,
            I.get(mc),
            I.gtS,
            I.eqz,
            I.and,
            I.ifElse(transposedSteps, steps(scalarStep)),
          ],
        ),
        I.get(ir),
        I.i32(MR),
        I.add,
        I.set(ir),
      ]),
    ],
  };
}

/**
 * `packB(base, sq, sj, kc, nc, dst)`: B(q, j) is at `base + (q·sq + j·sj)·size`; writes
 * ⌈nc/8⌉ panels `[kc][8]`. Rows of contiguous columns (sj = 1) take a vector path, row by
 * row across the whole panels; contiguous columns (sq = 1) are transposed in SIMD.
 */
function packB(e: Elem): Func {
  const [base, sq, sj, kc, nc, dst, jr, p, c, addr, h, v, vh, vt, va] = [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
  ];
  const s = SHIFT[e];
  const scalarElem: Code = [
    I.get(jr),
    I.get(c),
    I.add,
    I.get(nc),
    I.ltS,
    I.ifElse(
      [
        I.get(dst),
        I.get(base),
        I.get(p),
        I.get(sq),
        I.mul,
        I.get(jr),
        I.get(c),
        I.add,
        I.get(sj),
        I.mul,
        I.add,
        I.i32(s),
        I.shl,
        I.add,
        loadScalar(e, h, v, [vh, va, vt]),
        I.f32Store(),
      ],
      [I.get(dst), I.f32(0), I.f32Store()],
    ),
    I.get(dst),
    I.i32(4),
    I.add,
    I.set(dst),
  ];
  // Rows of whole panels (sj = 1): row p of every panel in turn, so B is read row by row
  // (the panel of columns jr..jr+7 starts at dst + jr·kc·4; its row p at + p·32).
  const d = 24;
  const half = (off: number): Code => [
    I.get(d),
    widen4(e, addr, off, vh, vt, va),
    V.store(off * 4),
  ];
  const vo = 15;
  // f16: 8 values in one load, widened as even and odd lanes, re-interleaved.
  const eight: Code = [
    I.get(addr),
    V.load(0),
    I.set(vh),
    f16x8(vh, va, vo, vt),
    I.get(d),
    I.get(va),
    I.get(vo),
    V.i32x4Shuffle([0, 4, 1, 5]),
    V.store(0),
    I.get(d),
    I.get(va),
    I.get(vo),
    V.i32x4Shuffle([2, 6, 3, 7]),
    V.store(16),
  ];
  const panelRows: Code = [
    I.get(nc),
    I.i32(-NR),
    I.and,
    I.set(jr), // whole panels end here
    I.i32(0),
    I.set(p),
    whileLoop([I.get(p), I.get(kc), I.ltS], [
      I.get(base),
      I.get(p),
      I.get(sq),
      I.mul,
      I.i32(s),
      I.shl,
      I.add,
      I.set(addr),
      I.get(dst),
      I.get(p),
      I.i32(4 * NR),
      I.mul,
      I.add,
      I.set(d),
      I.i32(0),
      I.set(c),
      whileLoop([I.get(c), I.get(jr), I.ltS], [
        e === ELEM.f16 ? eight : [half(0), half(4)],
        I.get(addr),
        I.i32(NR << s),
        I.add,
        I.set(addr),
        I.get(d),
        I.get(kc),
        I.i32(4 * NR),
        I.mul,
        I.add,
        I.set(d),
        I.get(c),
        I.i32(NR),
        I.add,
        I.set(c),
      ]),
      I.get(p),
      I.i32(1),
      I.add,
      I.set(p),
    ]),
    I.get(dst),
    I.get(jr),
    I.get(kc),
    I.mul,
    I.i32(4),
    I.mul,
    I.add,
    I.set(dst),
  ];
  const scalarRow: Code = [
    I.i32(0),
    I.set(c),
    whileLoop([I.get(c), I.i32(NR), I.ltS], [scalarElem, I.get(c), I.i32(1), I.add, I.set(c)]),
  ];
  const rows = (row: Code): Code => [
    I.i32(0),
    I.set(p),
    whileLoop([I.get(p), I.get(kc), I.ltS], [row, I.get(p), I.i32(1), I.add, I.set(p)]),
  ];
  // Columns contiguous along q (sq = 1, B transposed) and a whole panel: 4 steps at a time in
  // SIMD (two 4×4 transposes), the last kc % 4 steps scalar.
  const TL: TLocals = { addr, stride: 16, tmp: 17, v: [18, 19, 20, 21, 22, 23], x: [vh, va, vt] };
  const transposedRows: Code = [
    I.get(base),
    I.get(jr),
    I.get(sj),
    I.mul,
    I.i32(s),
    I.shl,
    I.add,
    I.set(addr),
    I.get(sj),
    I.i32(s),
    I.shl,
    I.set(TL.stride),
    I.i32(0),
    I.set(p),
    whileLoop([I.get(p), I.i32(4), I.add, I.get(kc), I.gtS, I.eqz], [
      transposed4(e, NR, dst, TL),
      I.get(dst),
      I.i32(16 * NR),
      I.add,
      I.set(dst),
      I.get(addr),
      I.i32(4 << s),
      I.add,
      I.set(addr),
      I.get(p),
      I.i32(4),
      I.add,
      I.set(p),
    ]),
    whileLoop([I.get(p), I.get(kc), I.ltS], [scalarRow, I.get(p), I.i32(1), I.add, I.set(p)]),
  ];
  return {
    name: `packB${e}`,
    params: [T.i32, T.i32, T.i32, T.i32, T.i32, T.i32],
    locals: [
      ...[T.i32, T.i32, T.i32, T.i32, T.i32, T.i32, T.v128, T.v128, T.v128, T.v128, T.i32, T.i32],
      ...new Array(6).fill(T.v128),
      T.i32,
    ],
    body: [
      I.i32(0),
      I.set(jr),
      I.get(sj),
      I.i32(1),
      I.eq,
      I.if(panelRows),
      whileLoop([I.get(jr), I.get(nc), I.ltS], [
        I.get(sq),
        I.i32(1),
        I.eq,
        I.get(jr),
        I.i32(NR),
        I.add,
        I.get(nc),
        I.gtS,
        I.eqz, // jr + 8 <= nc
        I.and,
        I.ifElse(transposedRows, rows(scalarRow)),
        I.get(jr),
        I.i32(NR),
        I.add,
        I.set(jr),
      ]),
    ],
  };
}

/**
 * `kern(a, b, c, kc, ldc, first)`: C[6×8] (+)= Σ_p A[p][0..6] ⊗ B[p][0..8] over packed panels,
 * with relaxed FMA (`fma`) or a separate multiply and add.
 */
function kernel(fma: boolean): Func {
  const [a, b, c, kc, ldc, first] = [0, 1, 2, 3, 4, 5];
  const acc = (r: number, h: number) => 6 + 2 * r + h;
  const [b0, b1, sp, row] = [18, 19, 20, 21];
  const rowsDo = (f: (r: number) => Code): Code => {
    const out: Code[] = [I.get(c), I.set(row)];
    for (let r = 0; r < MR; r++) {
      out.push(f(r), I.get(row), I.get(ldc), I.add, I.set(row));
    }
    return out;
  };
  /** One k step reading panel offsets `u` steps ahead of the pointers. */
  const step = (u: number): Code => {
    const out: Code[] = [
      I.get(b),
      V.load(32 * u),
      I.set(b0),
      I.get(b),
      V.load(32 * u + 16),
      I.set(b1),
    ];
    for (let r = 0; r < MR; r++) {
      out.push(I.get(a), V.load32Splat(24 * u + 4 * r), I.set(sp));
      for (const [h, bv] of [[0, b0], [1, b1]]) {
        out.push(
          fma
            ? [I.get(sp), I.get(bv), I.get(acc(r, h)), V.f32x4RelaxedMadd]
            : [I.get(acc(r, h)), I.get(sp), I.get(bv), V.f32x4Mul, V.f32x4Add],
          I.set(acc(r, h)),
        );
      }
    }
    return out;
  };
  const advance = (u: number): Code => [
    I.get(a),
    I.i32(4 * MR * u),
    I.add,
    I.set(a),
    I.get(b),
    I.i32(4 * NR * u),
    I.add,
    I.set(b),
    I.get(kc),
    I.i32(u),
    I.sub,
    I.set(kc),
  ];
  const UNROLL = 4;
  return {
    name: "kern",
    params: [T.i32, T.i32, T.i32, T.i32, T.i32, T.i32],
    locals: [...new Array(15).fill(T.v128), T.i32],
    body: [
      I.get(first),
      I.eqz,
      I.if(rowsDo((r) => [
        I.get(row),
        V.load(0),
        I.set(acc(r, 0)),
        I.get(row),
        V.load(16),
        I.set(acc(r, 1)),
      ])),
      whileLoop([I.get(kc), I.i32(UNROLL - 1), I.gtS], [
        [...Array(UNROLL).keys()].map(step),
        advance(UNROLL),
      ]),
      whileLoop([I.get(kc), I.i32(0), I.gtS], [step(0), advance(1)]),
      rowsDo((r) => [
        I.get(row),
        I.get(acc(r, 0)),
        V.store(0),
        I.get(row),
        I.get(acc(r, 1)),
        V.store(16),
      ]),
    ],
  };
}

/**
 * Blocks of 8 columns a {@link skinny} kernel for `m` rows of element type `e` computes side
 * by side: 2 for m = 2 with f32 or bf16 weights, so that 8 accumulators are independent (a
 * multiply-add waits on the previous one into the same accumulator; with 4 chains a core idles
 * on the latency). Chosen by in-process A/B runs (old and new kernel interleaved in one
 * process, K = N = 4096): 2 blocks were faster for m = 2 with bf16 weights; for m = 1, 4 blocks
 * were no faster than 1 (that kernel holds its chunk's 8 A splats in registers instead); with
 * f16 weights (whose widening needs more registers) 2 were slower.
 */
export function skinnyWidth(m: number, e: Elem): number {
  return m === 2 && (e === ELEM.f32 || e === ELEM.bf16) ? 2 : 1;
}

/**
 * `skinny{m}{e}(a, b, ldb, c, ldc, kc, blocks, first)` for m ≤ 4 rows: streams B (element type
 * `e`, rows `ldb` bytes apart) without packing, 8 columns per block, against a packed A panel
 * `[kc][6]`: C[m×8 block] (+)= Σ_p A[p][i]·B[p][0..8], for `blocks` consecutive blocks,
 * {@link skinnyWidth} blocks at a time, then one at a time. The same multiply-add sequence per
 * output as {@link kernel}, so results are identical. For bf16 and f16 (e = 1, 2: 8 values
 * loaded at once, split into even and odd lanes) each 8-column block of C is kept in the order
 * 0 2 4 6 1 3 5 7 (see {@link SKINNY_PERMUTED}).
 */
function skinny(m: number, e: Elem, fma: boolean): Func {
  const [a, b, ldb, c, ldc, kc, blocks, first] = [0, 1, 2, 3, 4, 5, 6, 7];
  const W = skinnyWidth(m, e);
  const acc = (r: number, h: number, q: number) => 8 + 2 * (q * m + r) + h;
  const v0 = 8 + 2 * m * W;
  const [b0, b1, vh, vt, va] = [v0, v0 + 1, v0 + 2, v0 + 3, v0 + 4];
  const sp = (r: number) => v0 + 5 + r; // A splats (one per row)
  const [ap, bp, p, row] = [v0 + 5 + m, v0 + 6 + m, v0 + 7 + m, v0 + 8 + m];
  /** One A splat per k step, kept in registers for m = 1 (8 of them, in locals v0 + 5 + m …). */
  const hoist = m === 1;
  const held = (u: number) => v0 + 5 + m + 4 + u;
  const rowsDo = (f: (r: number) => Code): Code => {
    const out: Code[] = [I.get(c), I.set(row)];
    for (let r = 0; r < m; r++) out.push(f(r), I.get(row), I.get(ldc), I.add, I.set(row));
    return out;
  };
  /** B of block `q` of the current step widened into `b0`, `b1`. */
  const loadB = (q: number): Code => {
    // bf16: one load of 8 values; even columns by a shift, odd ones by a mask (C blocks are
    // then held as columns 0 2 4 6 | 1 3 5 7, restored by the caller at the end).
    if (e === ELEM.f16) return [I.get(bp), V.load(16 * q), I.set(vh), f16x8(vh, b0, b1, vt)];
    if (e === ELEM.bf16) {
      return [
        I.get(bp),
        V.load(16 * q),
        I.tee(vh),
        I.i32(16),
        V.i32x4Shl,
        I.set(b0),
        I.get(vh),
        k4(-65536),
        V.and,
        I.set(b1),
      ];
    }
    return [
      widen4(e, bp, 8 * q, vh, vt, va),
      I.set(b0),
      widen4(e, bp, 8 * q + 4, vh, vt, va),
      I.set(b1),
    ];
  };
  const madd = (r: number, q: number): Code =>
    [[0, b0], [1, b1]].map(([h, bv]) => [
      fma
        ? [I.get(sp(r)), I.get(bv), I.get(acc(r, h, q)), V.f32x4RelaxedMadd]
        : [I.get(acc(r, h, q)), I.get(sp(r)), I.get(bv), V.f32x4Mul, V.f32x4Add],
      I.set(acc(r, h, q)),
    ]);
  const splat = (u: number, r: number): Code =>
    u >= 0 && hoist ? [I.get(held(u)), I.set(sp(r))] : [
      I.get(u >= 0 ? a : ap),
      V.load32Splat(4 * MR * Math.max(u, 0) + 4 * r),
      I.set(sp(r)),
    ];
  /**
   * k step `u` of a chunk over `w` blocks (`u` < 0: a generic step reading A at `ap`, which
   * then advances). One block: B, then each row's splat and multiply-adds; several: the rows'
   * splats once, then each block's B and multiply-adds.
   */
  const step = (u: number, w: number): Code => {
    const out: Code[] = [];
    if (w === 1) {
      out.push(loadB(0));
      for (let r = 0; r < m; r++) out.push(splat(u, r), madd(r, 0));
    } else {
      for (let r = 0; r < m; r++) out.push(splat(u, r));
      for (let q = 0; q < w; q++) {
        out.push(loadB(q));
        for (let r = 0; r < m; r++) out.push(madd(r, q));
      }
    }
    if (u < 0) out.push(I.get(ap), I.i32(4 * MR), I.add, I.set(ap));
    out.push(I.get(bp), I.get(ldb), I.add, I.set(bp));
    return out;
  };
  const blockLoop = (w: number, inner: Code): Code => {
    const zero: Code[] = [], load: Code[] = [], store: Code[] = [];
    for (let q = 0; q < w; q++) {
      for (let r = 0; r < m; r++) {
        zero.push(V.zero(), I.set(acc(r, 0, q)), V.zero(), I.set(acc(r, 1, q)));
      }
    }
    const cDo = (f: (r: number, q: number) => Code) =>
      rowsDo((r) => [...Array(w).keys()].map((q) => f(r, q)));
    load.push(cDo((r, q) => [
      I.get(row),
      V.load(32 * q),
      I.set(acc(r, 0, q)),
      I.get(row),
      V.load(32 * q + 16),
      I.set(acc(r, 1, q)),
    ]));
    store.push(cDo((r, q) => [
      I.get(row),
      I.get(acc(r, 0, q)),
      V.store(32 * q),
      I.get(row),
      I.get(acc(r, 1, q)),
      V.store(32 * q + 16),
    ]));
    return whileLoop([I.get(blocks), I.i32(w - 1), I.gtS], [
      I.get(first),
      I.ifElse(zero, load),
      I.get(b),
      I.set(bp),
      inner,
      store,
      I.get(b),
      I.i32((w * NR) << SHIFT[e]),
      I.add,
      I.set(b),
      I.get(c),
      I.i32(w * NR * 4),
      I.add,
      I.set(c),
      I.get(blocks),
      I.i32(w),
      I.sub,
      I.set(blocks),
    ]);
  };
  const CHUNK = skinnyChunk(m, e);
  const widths = W > 1 ? [W, 1] : [1];
  const unrolled: Code[] = [];
  if (hoist) {
    for (let u = 0; u < CHUNK; u++) {
      unrolled.push(I.get(a), V.load32Splat(4 * MR * u), I.set(held(u)));
    }
  }
  unrolled.push(widths.map((w) => blockLoop(w, [...Array(CHUNK).keys()].map((u) => step(u, w)))));
  const generic = widths.map((w) =>
    blockLoop(w, [
      I.get(a),
      I.set(ap),
      I.get(kc),
      I.set(p),
      I.loop(step(-1, w), I.get(p), I.i32(1), I.sub, I.tee(p), I.brIf(0)),
    ])
  );
  return {
    name: `skinny${m}${e}`,
    params: new Array(8).fill(T.i32),
    locals: [
      ...new Array(2 * m * W + 5 + m).fill(T.v128),
      T.i32,
      T.i32,
      T.i32,
      T.i32,
      ...new Array(hoist ? CHUNK : 0).fill(T.v128),
    ],
    // A full chunk of k steps is unrolled (static A offsets); a shorter one loops.
    body: [I.get(kc), I.i32(CHUNK), I.eq, I.ifElse(unrolled, generic)],
  };
}

/**
 * f32 bits (v128 in local `w`) rounded to nearest even as bf16 bits in i32x4 lanes: the RNE bit
 * trick of c10/util/BFloat16.h, NaN → quiet NaN 0x7FC0 with its sign (as lib/dtype.ts).
 */
function bf16Lanes(w: number): Code {
  return [
    // NaN lanes: ((w >>> 16) & 0x8000) | 0x7fc0
    I.get(w),
    I.i32(16),
    V.i32x4ShrU,
    k4(0x8000),
    V.and,
    k4(0x7fc0),
    V.or,
    // (w + 0x7fff + ((w >>> 16) & 1)) >>> 16
    I.get(w),
    k4(0x7fff),
    V.i32x4Add,
    I.get(w),
    I.i32(16),
    V.i32x4ShrU,
    k4(1),
    V.and,
    V.i32x4Add,
    I.i32(16),
    V.i32x4ShrU,
    // select NaN where |w| > 0x7f800000
    I.get(w),
    k4(0x7fffffff),
    V.and,
    k4(0x7f800000),
    V.i32x4GtS,
    V.bitselect,
  ];
}

/**
 * f32 bits (local `w`) rounded to nearest even as f16 bits in i32x4 lanes (`a` is scratch):
 * normal results by rebiasing with a rounding add, subnormal ones by the exact f32 addition of
 * 0.5 (whose ulp, 2^−24, is the f16 subnormal step), ≥ 65520 → Inf, NaN → 0x7E00; sign kept.
 */
export function f16Lanes(w: number, a: number, t: number): Code {
  return [
    I.get(w),
    k4(0x7fffffff),
    V.and,
    I.set(a),
    // normal: (a + 0xfff + ((a >>> 13) & 1) − (112 << 23)) >>> 13
    I.get(a),
    k4(0xfff - 0x38000000),
    V.i32x4Add,
    I.get(a),
    I.i32(13),
    V.i32x4ShrU,
    k4(1),
    V.and,
    V.i32x4Add,
    I.i32(13),
    V.i32x4ShrU,
    // subnormal: bits(f32(a) + 0.5) − bits(0.5)
    I.get(a),
    I.f32(0.5),
    V.f32x4Splat,
    V.f32x4Add,
    k4(0x3f000000),
    V.i32x4Sub,
    I.get(a),
    k4(0x38800000 - 1),
    V.i32x4GtS,
    V.bitselect,
    I.set(t),
    // overflow to Inf
    k4(0x7c00),
    I.get(t),
    I.get(a),
    k4(0x477ff000 - 1),
    V.i32x4GtS,
    V.bitselect,
    I.set(t),
    // NaN
    k4(0x7e00),
    I.get(t),
    I.get(a),
    k4(0x7f800000),
    V.i32x4GtS,
    V.bitselect,
    // sign
    I.get(w),
    I.i32(16),
    V.i32x4ShrU,
    k4(0x8000),
    V.and,
    V.or,
  ];
}

/**
 * `narrow{e}(src, dst, groups)`: round `8·groups` f32 values at `src` once to f16 (e = 2) or
 * bf16 (e = 1) bits at `dst`.
 */
function narrowOut(e: Elem): Func {
  const [src, dst, groups, w, a, t] = [0, 1, 2, 3, 4, 5];
  const lanes = (off: number): Code => [
    I.get(src),
    V.load(off),
    I.set(w),
    e === ELEM.bf16 ? bf16Lanes(w) : f16Lanes(w, a, t),
  ];
  return {
    name: `narrow${e}`,
    params: [T.i32, T.i32, T.i32],
    locals: [T.v128, T.v128, T.v128],
    body: whileLoop([I.get(groups), I.i32(0), I.gtS], [
      I.get(dst),
      lanes(0),
      lanes(16),
      V.i16x8NarrowU,
      V.store(0),
      I.get(src),
      I.i32(32),
      I.add,
      I.set(src),
      I.get(dst),
      I.i32(16),
      I.add,
      I.set(dst),
      I.get(groups),
      I.i32(1),
      I.sub,
      I.set(groups),
    ]),
  };
}

/**
 * `ties{e}(src, groups, list, cap) → count`: flags each group of 4 f32 values at `src` that
 * may hold a rounding tie of f16 (e = 2: 13 dropped bits = 0x1000, or below the f16 normal
 * range) or bf16 (e = 1: 16 dropped bits = 0x8000); writes the first `cap` flagged group
 * indices (i32) to `list` and returns how many groups were flagged. The caller checks flagged
 * groups exactly.
 */
function tieScan(e: Elem): Func {
  const [src, groups, list, cap, g, count, u] = [0, 1, 2, 3, 4, 5, 6];
  const flag: Code = e === ELEM.bf16 ? [I.get(u), k4(0xffff), V.and, k4(0x8000), V.i32x4Eq] : [
    I.get(u),
    k4(0x1fff),
    V.and,
    k4(0x1000),
    V.i32x4Eq,
    I.get(u),
    k4(0x7fffffff),
    V.and,
    k4(0x38800000),
    V.i32x4LtU,
    V.or,
  ];
  return {
    name: `ties${e}`,
    params: [T.i32, T.i32, T.i32, T.i32],
    results: [T.i32],
    locals: [T.i32, T.i32, T.v128],
    body: [
      whileLoop([I.get(g), I.get(groups), I.ltS], [
        I.get(src),
        V.load(0),
        I.set(u),
        flag,
        V.anyTrue,
        I.if(
          I.get(count),
          I.get(cap),
          I.ltS,
          I.if(I.get(list), I.get(count), I.i32(2), I.shl, I.add, I.get(g), I.i32Store()),
          I.get(count),
          I.i32(1),
          I.add,
          I.set(count),
        ),
        I.get(src),
        I.i32(16),
        I.add,
        I.set(src),
        I.get(g),
        I.i32(1),
        I.add,
        I.set(g),
      ]),
      I.get(count),
    ],
  };
}

/**
 * `dot{ea}{eb}(a, sa, b, sb, k) → f64`: Σ_p a[p]·b[p] in f64, p = 0, 1, …, k−1, with byte
 * strides `sa`, `sb`; products of f32 values are exact in f64, so this is the f64 sum of the
 * exact products (the TypeScript kernel's order), used to resolve narrow-output ties.
 */
function dot64(ea: Elem, eb: Elem): Func {
  const [a, sa, b, sb, k, acc, h, v] = [0, 1, 2, 3, 4, 5, 6, 7];
  const x: Scratch = [8, 9, 10];
  return {
    name: `dot${ea}${eb}`,
    params: [T.i32, T.i32, T.i32, T.i32, T.i32],
    results: [T.f64],
    locals: [T.f64, T.i32, T.i32, T.v128, T.v128, T.v128],
    body: [
      whileLoop([I.get(k), I.i32(0), I.gtS], [
        I.get(acc),
        I.get(a),
        loadScalar(ea, h, v, x),
        I.f64FromF32,
        I.get(b),
        loadScalar(eb, h, v, x),
        I.f64FromF32,
        I.f64Mul,
        I.f64Add,
        I.set(acc),
        I.get(a),
        I.get(sa),
        I.add,
        I.set(a),
        I.get(b),
        I.get(sb),
        I.add,
        I.set(b),
        I.get(k),
        I.i32(1),
        I.sub,
        I.set(k),
      ]),
      I.get(acc),
    ],
  };
}

/**
 * The k steps a {@link skinny} kernel unrolls: the rows of B it streams between loading and
 * storing its blocks of C. 16 for m = 4 with bf16 weights (half the C loads and stores per
 * multiply-add; slightly faster in in-process A/B runs at K = N = 4096), else 8 (with f16
 * weights 16 was not faster; for m = 1 the chunk's 8 A splats stay in registers).
 */
export function skinnyChunk(m: number, e: Elem): number {
  return m === 4 && e === ELEM.bf16 ? 16 : 8;
}

/** Skinny kernels of these element types leave C blocks as columns 0 2 4 6 1 3 5 7. */
export const SKINNY_PERMUTED: readonly Elem[] = [ELEM.bf16, ELEM.f16];

/** Rows up to which {@link skinny} kernels exist. */
export const SKINNY_M = 4;

/** Export names, in module order. */
export type GemmExports =
  & {
    kern(a: number, b: number, c: number, kc: number, ldc: number, first: number): void;
  }
  & Record<
    `packA${Elem}` | `packB${Elem}`,
    (base: number, s1: number, s2: number, d1: number, d2: number, dst: number) => void
  >;

/**
 * The gemm module's bytes for a memory of `maxPages` (shared when `shared`). With `f16TableAt`
 * (the byte address of 65536 f32 values, entry h = the f16 value of bits h), scalar f16 loads
 * read that table instead of converting bits (about 5 instructions instead of 25).
 */
export function gemmModuleBytes(
  fma: boolean,
  shared: boolean,
  maxPages: number,
  f16TableAt = 0,
): Uint8Array<ArrayBuffer> {
  f16Table = f16TableAt;
  const elems = [ELEM.f32, ELEM.bf16, ELEM.f16, ELEM.f32bf16, ELEM.f32f16];
  const thin = [1, 2, 3, 4].flatMap((m) => elems.map((e) => skinny(m, e, fma)));
  const narrows = [ELEM.bf16, ELEM.f16].flatMap((e) => [narrowOut(e), tieScan(e)]);
  const dots = elems.flatMap((ea) => elems.map((eb) => dot64(ea, eb)));
  return wasmModule([
    kernel(fma),
    ...elems.map(packA),
    ...elems.map(packB),
    ...thin,
    ...narrows,
    ...dots,
  ], {
    shared,
    minPages: 1,
    maxPages,
  });
}
