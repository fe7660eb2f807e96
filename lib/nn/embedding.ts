/**
 * Embedding lookup tables.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Backend } from "../backend/backend.ts";
import type { Tensor } from "../tensor.ts";
import { take } from "../ops/index.ts";
import { type Key, normal } from "../random.ts";

/** Parameters of {@linkcode embedding}: a `[vocab, dim]` table. */
export interface EmbeddingParams {
  /** One row per id: `[vocab, dim]`. */
  readonly table: Tensor;
}

/**
 * Initialise an embedding table of shape `[vocab, dim]` with N(0, 1) entries (as PyTorch).
 *
 * @example
 * ```ts
 * const emb = embeddingInit(key(0), 1000, 64);
 * ```
 */
export function embeddingInit(
  k: Key,
  vocab: number,
  dim: number,
  opts: { dtype?: DType; device?: Backend } = {},
): EmbeddingParams {
  for (const [name, v] of [["vocab", vocab], ["dim", dim]] as const) {
    if (!Number.isInteger(v) || v <= 0) {
      throw new Error(`embeddingInit: ${name} must be a positive integer, got ${v}`);
    }
  }
  return { table: normal(k, [vocab, dim], opts) };
}

/**
 * Look up rows of the table: integer `ids` of any shape give `[...ids.shape, dim]`.
 *
 * @example
 * ```ts
 * const vecs = embedding(emb, tensor([[1, 2, 3]], { dtype: "i32" })); // [1, 3, 64]
 * ```
 */
export function embedding(p: EmbeddingParams, ids: Tensor): Tensor {
  if (!p || !p.table || p.table.ndim !== 2) {
    throw new Error("embedding: params must be { table: [vocab, dim] } as made by embeddingInit");
  }
  return take(p.table, ids, 0);
}
