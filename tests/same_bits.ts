/**
 * Bitwise comparison of tensor trees for the jit tests: the raw storage of every leaf.
 */
import assert from "node:assert/strict";
import { tree } from "../mod.ts";

/** The bits of every tensor leaf of a tree (raw storage, read in one batch). */
export async function bitsOf(x: unknown): Promise<number[][]> {
  return await Promise.all(tree.leaves(x).map(async (t) => Array.from(await t.bits())));
}

/** Throw naming the first leaf and element whose bits differ between eager `a` and jit `b`. */
export function assertSameBits(a: number[][], b: number[][], what: string): void {
  assert.equal(a.length, b.length, `${what}: leaf count`);
  a.forEach((x, i) => {
    assert.equal(x.length, b[i].length, `${what}: leaf ${i} size`);
    for (let j = 0; j < x.length; j++) {
      if (!Object.is(x[j], b[i][j])) {
        throw new Error(`${what}: leaf ${i} element ${j}: eager ${x[j]} vs jit ${b[i][j]}`);
      }
    }
  });
}
