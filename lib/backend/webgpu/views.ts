/**
 * Strided views prepared for elementwise kernels: dims of size 1 dropped, adjacent dims merged
 * wherever every view allows it, and each view classified as contiguous, scalar or strided, so
 * that the common cases compile to the simplest WGSL indexing.
 *
 * @example
 * ```ts
 * const g = coalesce([2, 3], [{ strides: [3, 1], offset: 0 }, { strides: [0, 1], offset: 0 }]);
 * // g.shape [2, 3]; g.modes ["contig", "strided"]
 * ```
 *
 * @module
 */

/** How a view is indexed in a kernel. */
export type Mode = "contig" | "scalar" | "strided";

/** Output shape and per-view strides after coalescing. */
export interface Coalesced {
  readonly shape: readonly number[];
  readonly strides: readonly (readonly number[])[];
  readonly offsets: readonly number[];
  readonly modes: readonly Mode[];
}

/**
 * Merge dims of `shape` across all views; see the module doc.
 *
 * @example
 * ```ts
 * coalesce([2, 3], [{ strides: [3, 1], offset: 0 }]); // shape [6], mode "contig"
 * ```
 */
export function coalesce(
  shape: readonly number[],
  views: readonly { readonly strides: readonly number[]; readonly offset: number }[],
): Coalesced {
  const dims: number[] = [];
  const strides: number[][] = views.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = dims.length - 1;
    const mergeable = last >= 0 &&
      views.every((v, k) => strides[k][last] === v.strides[d] * shape[d]);
    if (mergeable) {
      dims[last] *= shape[d];
      views.forEach((v, k) => (strides[k][last] = v.strides[d]));
    } else {
      dims.push(shape[d]);
      views.forEach((v, k) => strides[k].push(v.strides[d]));
    }
  }
  const modes = strides.map((s): Mode => {
    if (s.every((x) => x === 0)) return "scalar";
    if (s.length === 1 && s[0] === 1) return "contig";
    return "strided";
  });
  return { shape: dims, strides, offsets: views.map((v) => v.offset), modes };
}
