/**
 * The BLIS loop nest that one thread runs over its part of a matmul job. It is self-contained
 * (no references outside its body) because the worker pool ships its source text to workers:
 * every thread runs exactly this code on the same kernel bytes.
 *
 * @module
 */

/** Job parameter slots (i32 words from the slot's base). */
export const P = {
  m: 0,
  k: 1,
  n: 2,
  transA: 3,
  transB: 4,
  aElem: 5,
  bElem: 6,
  /** Byte address of the batch table: (a, b, c) byte addresses per batch, u32. */
  table: 7,
  b0: 8,
  b1: 9,
  i0: 10,
  i1: 11,
  j0: 12,
  j1: 13,
  packA: 14,
  packB: 15,
  tile: 16,
  /** 1: a skinny product (m ≤ 4, B not transposed, one batch) streamed without packing B. */
  skinny: 17,
  /** Byte address of A packed once as `[k][6]` f32 (skinny products). */
  aPacked: 18,
  /**
   * Pages of the shared memory when the job was posted. Another thread sees a `memory.grow`
   * only once it handles V8's grow interrupt: until then its `memory.buffer` is the old, shorter
   * one (typed arrays on it read `undefined` and drop writes past its end), so a region waits
   * for its view to reach this size before it reads the job's addresses.
   */
  pages: 19,
  /**
   * The output element code: 0 for f32 (C is the output), else 1 bf16 or 2 f16: each thread
   * rounds the f32 outputs it finished (still in cache) once into the 16-bit output at `out`
   * (outputs on a rounding tie are then resolved by the caller).
   */
  narrow: 20,
  /** Byte address of batch 0's 16-bit output (batch `bt` at `out + 2·bt·m·n`). */
  out: 21,
  /** Skinny products: rows of B streamed per kernel call (`skinnyChunk` of gemm_module.ts). */
  chunk: 24,
  /** The job sequence number this slot was assigned (workers run only their own jobs). */
  seq: 31,
  /** Words per slot. */
  size: 32,
} as const;

/** The kernel exports a region uses. */
export type RegionExports = Record<string, (...args: number[]) => void>;

/**
 * Compute rows `[i0, i1)` × columns `[j0, j1)` of batches `[b0, b1)` into the f32 C of each
 * batch, with blocking MC, KC, NC = 48, 512, 1024 and the 6×8 micro-kernel. KC blocks start at
 * multiples of 512 from 0 whatever the region, so every output is computed identically. With a
 * 16-bit output (`P.narrow`), each block of rows is rounded once it is final, while it is hot.
 */
export function runRegion(
  ex: RegionExports,
  memory: WebAssembly.Memory,
  J: Int32Array,
  o: number,
): void {
  const MC = 48, KC = 512, NC = 1024, MR = 6, NR = 8;
  const m = J[o], k = J[o + 1], n = J[o + 2], ta = J[o + 3], tb = J[o + 4];
  const packA = ex["packA" + J[o + 5]], packB = ex["packB" + J[o + 6]];
  // Element codes 0, 3, 4 read f32 (3, 4: rounded to bf16 / f16 while packed), 1, 2 16 bits.
  const sa = J[o + 5] === 1 || J[o + 5] === 2 ? 2 : 4,
    sb = J[o + 6] === 1 || J[o + 6] === 2 ? 2 : 4;
  const need = J[o + 19] * 65536;
  let buf = memory.buffer;
  for (let spin = 0; buf.byteLength < need; spin++) {
    if (spin > 1e6) throw new Error("matmul: the shared memory's growth never reached a worker");
    buf = memory.buffer;
  }
  const H = new Uint32Array(buf);
  const F = new Float32Array(buf);
  const U = new Uint16Array(buf);
  const tab = J[o + 7] >>> 2, pa = J[o + 14], pb = J[o + 15], tile = J[o + 16];
  const narrow = J[o + 20] === 0 ? undefined : ex["narrow" + J[o + 20]];
  /**
   * Round row `i` of a batch's C at `cP`, columns [j, to), into its output at `oP`: whole
   * groups of 8 in place, the rest (at the matrix edge) through the scratch tile.
   */
  const round = (cP: number, oP: number, i: number, j: number, to: number) => {
    const groups = (to - j) >>> 3, x = i * n + j + 8 * groups, rest = to - j - 8 * groups;
    if (groups > 0) narrow!(cP + (i * n + j) * 4, oP + (i * n + j) * 2, groups);
    if (rest === 0) return;
    const c = cP / 4 + x, t = tile / 4, u = oP / 2 + x;
    for (let q = 0; q < 8; q++) F[t + q] = q < rest ? F[c + q] : 0;
    narrow!(tile, tile + 32, 1);
    for (let q = 0; q < rest; q++) U[u + q] = U[tile / 2 + 16 + q];
  };
  const i0 = J[o + 10], i1 = J[o + 11], j0 = J[o + 12], j1 = J[o + 13];
  // A(i, q) and B(q, j) element strides for the stored layouts.
  const si = ta ? 1 : k, sqa = ta ? m : 1;
  const sqb = tb ? 1 : n, sj = tb ? k : 1;
  const ldc = n * 4, t0 = tile >>> 2;
  if (J[o + 17] === 1) {
    // Skinny: B streamed row by row, `ch` rows (8 or 16) at a time across all columns (`ch`
    // sequential streams; C, m rows, is loaded and stored once per `ch` rows), A packed by the
    // caller. Column panels short enough for C to stay in L1 were slower (short streams).
    const sk = ex["skinny" + m + J[o + 6]], sk32 = ex["skinny" + m + "0"];
    const aPk = J[o + 18], bP = H[tab + 1], cP = H[tab + 2];
    const blocks = Math.floor((j1 - j0) / NR), tail = j1 - j0 - blocks * NR;
    const jt = j0 + blocks * NR, c0 = (cP >>> 2) + jt;
    const ch = J[o + 24];
    for (let pc = 0; pc < k; pc += ch) {
      const kc = Math.min(ch, k - pc), first = pc === 0 ? 1 : 0, ap = aPk + pc * MR * 4;
      if (blocks > 0) sk(ap, bP + (pc * n + j0) * sb, n * sb, cP + j0 * 4, ldc, kc, blocks, first);
      if (tail === 0) continue;
      packB(bP + (pc * n + jt) * sb, n, 1, kc, tail, pb);
      if (!first) {
        for (let r = 0; r < m; r++) {
          for (let c = 0; c < tail; c++) F[t0 + r * NR + c] = F[c0 + r * n + c];
        }
      }
      sk32(ap, pb, NR * 4, tile, NR * 4, kc, 1, first);
      for (let r = 0; r < m; r++) {
        for (let c = 0; c < tail; c++) F[c0 + r * n + c] = F[t0 + r * NR + c];
      }
    }
    if (J[o + 6] === 1 || J[o + 6] === 2) {
      // bf16 and f16 blocks were accumulated as columns 0 2 4 6 1 3 5 7: restore the order.
      const t = new Float32Array(8);
      for (let r = 0; r < m; r++) {
        for (let x = (cP >>> 2) + r * n + j0, end = x + blocks * NR; x < end; x += NR) {
          for (let c = 0; c < 4; c++) t[2 * c] = F[x + c], t[2 * c + 1] = F[x + 4 + c];
          for (let c = 0; c < 8; c++) F[x + c] = t[c];
        }
      }
    }
    if (narrow) { for (let r = 0; r < m; r++) round(cP, J[o + 21], r, j0, j1); }
    return;
  }
  for (let bt = J[o + 8]; bt < J[o + 9]; bt++) {
    const aP = H[tab + 3 * bt], bP = H[tab + 3 * bt + 1], cP = H[tab + 3 * bt + 2];
    const oP = J[o + 21] + bt * m * n * 2;
    for (let jc = j0; jc < j1; jc += NC) {
      const nc = Math.min(NC, j1 - jc);
      for (let pc = 0; pc < k; pc += KC) {
        const kc = Math.min(KC, k - pc);
        const first = pc === 0 ? 1 : 0;
        packB(bP + (pc * sqb + jc * sj) * sb, sqb, sj, kc, nc, pb);
        for (let ic = i0; ic < i1; ic += MC) {
          const mc = Math.min(MC, i1 - ic);
          packA(aP + (ic * si + pc * sqa) * sa, si, sqa, mc, kc, pa);
          for (let jr = 0; jr < nc; jr += NR) {
            const cols = Math.min(NR, nc - jr);
            const bp = pb + jr * kc * 4;
            for (let ir = 0; ir < mc; ir += MR) {
              const rows = Math.min(MR, mc - ir);
              const cAddr = cP + ((ic + ir) * n + jc + jr) * 4;
              const ap = pa + ir * kc * 4;
              if (rows === MR && cols === NR) {
                ex.kern(ap, bp, cAddr, kc, ldc, first);
                continue;
              }
              // Edge tile: run the full micro-kernel on a 6×8 scratch tile, copy the valid part.
              const c0 = cAddr >>> 2;
              if (!first) {
                for (let r = 0; r < rows; r++) {
                  for (let c = 0; c < cols; c++) F[t0 + r * NR + c] = F[c0 + r * n + c];
                }
              }
              ex.kern(ap, bp, tile, kc, NR * 4, first);
              for (let r = 0; r < rows; r++) {
                for (let c = 0; c < cols; c++) F[c0 + r * n + c] = F[t0 + r * NR + c];
              }
            }
          }
          if (narrow && pc + kc === k) {
            for (let i = ic; i < ic + mc; i++) round(cP, oP, i, jc, jc + nc);
          }
        }
      }
    }
  }
}
