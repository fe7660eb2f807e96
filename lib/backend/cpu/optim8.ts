/**
 * The fused 8-bit optimizer update (`Backend.blockwise8bitUpdate`, contract in
 * `lib/backend/optim8.ts`) as a TypeScript loop: each element's update in f32 (`Math.fround`
 * after every operation, as the composed ops round), then the block absmax and the codes by
 * {@linkcode quantizeKernel}. It runs where the WebAssembly kernel does not (WebAssembly off,
 * a block size that is not a multiple of 4), with the same bits.
 *
 * @module
 */
import type { Blockwise8bitUpdate } from "../optim8.ts";
import { quantizeKernel } from "./quantize.ts";

/** One moment's state: codes, block absmax and map. */
export interface MomentArrays {
  /** u8 codes, one per element. */
  readonly codes: ArrayLike<number>;
  /** f32 absmax per block. */
  readonly absmax: ArrayLike<number>;
  /** The 256-entry map. */
  readonly map: ArrayLike<number>;
}

/**
 * Update `n` elements: `p` and `g` widened to f32, `moments` (adam: m then v; sgd: momentum),
 * `scalars` (adam: stepSize, epsHat[, decay]; sgd: rate). Writes the new param (f32 values) to
 * `outP` and each moment's codes and absmax to `outCodes[j]` / `outAbsmax[j]`.
 *
 * @example
 * ```ts
 * blockwise8bitUpdateKernel(u, p, g, [m, v], [stepSize, epsHat], outP, codes, absmax);
 * ```
 */
export function blockwise8bitUpdateKernel(
  u: Blockwise8bitUpdate,
  p: ArrayLike<number>,
  g: ArrayLike<number>,
  moments: readonly MomentArrays[],
  scalars: readonly number[],
  outP: Float32Array,
  outCodes: readonly Uint8Array[],
  outAbsmax: readonly Float32Array[],
): void {
  const f = Math.fround;
  const n = outP.length;
  const bs = u.blockSize;
  const l2 = f(u.l2);
  const xs = moments.map(() => new Float32Array(n));
  const old = (j: number, i: number) => {
    const s = moments[j];
    return f(s.map[s.codes[i]] * s.absmax[Math.floor(i / bs)]);
  };
  if (u.kind === "adam") {
    const b1 = f(u.b1), omb1 = f(1 - u.b1), b2 = f(u.b2), omb2 = f(1 - u.b2);
    const [stepSize, epsHat, decay] = scalars;
    const [m, v] = xs;
    for (let i = 0; i < n; i++) {
      const pc = p[i];
      const gi = l2 !== 0 ? f(g[i] + f(pc * l2)) : g[i];
      const mi = f(f(old(0, i) * b1) + f(gi * omb1));
      const vi = f(f(old(1, i) * b2) + f(f(gi * gi) * omb2));
      const ok = Math.abs(vi) < Infinity;
      let next = f(pc - f(stepSize * f(mi / f(f(Math.sqrt(vi)) + epsHat))));
      if (u.decay) next = f(next * decay);
      outP[i] = ok ? next : pc;
      m[i] = ok ? mi : 0;
      v[i] = ok ? vi : 0;
    }
  } else {
    const momentum = f(u.b1);
    const [rate] = scalars;
    const [m] = xs;
    for (let i = 0; i < n; i++) {
      const pc = p[i];
      const gi = l2 !== 0 ? f(g[i] + f(pc * l2)) : g[i];
      const mi = f(f(old(0, i) * momentum) + gi);
      const ok = Math.abs(mi) < Infinity;
      outP[i] = ok ? f(pc - f(mi * rate)) : pc;
      m[i] = ok ? mi : 0;
    }
  }
  const y = new Float32Array(n);
  xs.forEach((x, j) => {
    const absmax = outAbsmax[j];
    for (let b = 0, from = 0; from < n; b++, from += bs) {
      // max |x| over the block, NaN if any is NaN (as the max reduction).
      let a = -Infinity;
      for (let i = from, to = Math.min(n, from + bs); i < to; i++) {
        const ax = Math.abs(x[i]);
        if (ax !== ax || a !== a) a = NaN;
        else if (ax > a) a = ax;
      }
      absmax[b] = a;
    }
    quantizeKernel(x, absmax, moments[j].map, bs, true, n, outCodes[j], y);
  });
}
