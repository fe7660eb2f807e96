/**
 * Random broadcast chains for the jit tests (CPU and WebGPU): a short chain of unary ops and
 * casts on a row, column or scalar `b`, read through a broadcast by one or two kernels over a
 * larger `[m, n]` (optionally a matmul's product, so the readers are its epilogue). jit
 * recomputes such a chain inside its readers when it has at most `MAX_INLINE` nodes and no other
 * reader; {@linkcode inlinable} says whether a case qualifies.
 */
import fc from "./fc.ts";
import * as nb from "../mod.ts";
import type { Backend, DType, Tensor } from "../mod.ts";
import { SPECIAL } from "./elementwise_graphs.ts";
import { MAX_INLINE } from "../lib/jit/fuse.ts";

const UNARIES = ["neg", "abs", "exp", "sqrt", "tanh", "relu", "square", "sigmoid"] as const;
const FLOATS = ["f32", "f16", "bf16", "f8e4m3", "f8e5m2"] as const;

/** One case: shapes, dtypes, the chain's steps and who else reads the chain. */
export interface ChainCase {
  m: number;
  k: number;
  n: number;
  /** Dtype of the wide operand (and of the matmul). */
  d: "f32" | "f16" | "bf16";
  /** `b` is `[n]` (a bias row), `[m, 1]` (a column) or `[]` (a scalar). */
  b: "row" | "col" | "scalar";
  bDtype: (typeof FLOATS)[number];
  /** Each step: a unary op, or a cast to a float dtype (skipped when already that dtype). */
  chain: string[];
  /** A second broadcast reader. */
  twoReaders: boolean;
  /** The chain's value is also an output (so it must be computed). */
  output: boolean;
  /** The chain's value is also read element for element (so it must be computed). */
  elementwise: boolean;
  /** The wide operand is `matmul(x, w)` (the readers are its epilogue). */
  matmul: boolean;
  seed: number;
}

/** True one time in four. */
const sometimes = fc.integer({ min: 0, max: 3 }).map((i) => i === 0);

/** Random {@linkcode ChainCase}s. */
export const chainArb: fc.Arbitrary<ChainCase> = fc.record({
  m: fc.integer({ min: 2, max: 9 }),
  k: fc.integer({ min: 1, max: 12 }),
  n: fc.integer({ min: 1, max: 33 }),
  d: fc.constantFrom("f32" as const, "f16" as const, "bf16" as const),
  b: fc.constantFrom("row" as const, "col" as const, "scalar" as const),
  bDtype: fc.constantFrom(...FLOATS),
  chain: fc.array(fc.constantFrom(...UNARIES, ...FLOATS), { minLength: 1, maxLength: 5 }),
  twoReaders: fc.boolean(),
  output: sometimes,
  elementwise: sometimes,
  matmul: fc.boolean(),
  seed: fc.nat(1000),
});

/** The chain `c` applies to `b`, ending in `c.d` (the nodes it makes: casts only on a change). */
function applyChain(c: ChainCase, b: Tensor): Tensor {
  let v = b;
  for (const s of [...c.chain, c.d]) {
    if ((FLOATS as readonly string[]).includes(s)) {
      if (v.dtype !== s) v = nb.astype(v, s as DType);
    } else v = (nb[s as (typeof UNARIES)[number]] as (x: Tensor) => Tensor)(v);
  }
  return v;
}

/** How many nodes the chain of `c` makes. */
export function chainLength(c: ChainCase): number {
  let dtype: string = c.bDtype;
  let len = 0;
  for (const s of [...c.chain, c.d]) {
    if (!(FLOATS as readonly string[]).includes(s)) len++;
    else if (dtype !== s) {
      dtype = s;
      len++;
    }
  }
  return len;
}

/** Whether jit should recompute the chain of `c` inside its readers. */
export function inlinable(c: ChainCase): boolean {
  return broadcast(c) && !c.output && !c.elementwise && chainLength(c) <= MAX_INLINE;
}

/** Whether the readers read `b` through a broadcast (a column with `n = 1` is not one). */
export function broadcast(c: ChainCase): boolean {
  return chainSize(c) < c.m * c.n;
}

/** The element count of `b` (the chain's iteration space). */
export function chainSize(c: ChainCase): number {
  return c.b === "row" ? c.n : c.b === "col" ? c.m : 1;
}

/** The traced function of `c` and its inputs on `device`. */
export function chainCase(c: ChainCase, device?: Backend): {
  fn: (...xs: Tensor[]) => Tensor[];
  inputs: Tensor[];
} {
  const val = (i: number, s: number) => {
    const k = (i * 29 + s * 13 + c.seed) % 83;
    return k === 7 ? SPECIAL[(i + s) % SPECIAL.length] : (k - 41) / 16;
  };
  const mk = (shape: number[], s: number, dtype: DType) =>
    nb.tensor(Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => val(i, s)), {
      shape,
      dtype,
      device,
    });
  const bShape = c.b === "row" ? [c.n] : c.b === "col" ? [c.m, 1] : [];
  const inputs = [
    mk(c.matmul ? [c.m, c.k] : [c.m, c.n], 1, c.d),
    mk([c.k, c.n], 2, c.d),
    mk(bShape, 3, c.bDtype),
    mk([c.m, c.n], 4, c.d),
  ];
  const fn = (x: Tensor, w: Tensor, b: Tensor, y: Tensor) => {
    const wide = c.matmul ? nb.matmul(x, w) : x;
    const v = applyChain(c, b);
    const out = [nb.relu(nb.add(wide, v))];
    if (c.twoReaders) out.push(nb.mul(y, v));
    if (c.output) out.push(v);
    if (c.elementwise) out.push(nb.neg(v));
    return out;
  };
  return { fn, inputs };
}

/** Whether a schedule line (`ProgramStats.schedule`) computes `size` elements. */
export function computes(line: string, size: number): boolean {
  return line.includes(`[${size}]`) || line.startsWith(`fused ${size}:`);
}
