/**
 * Random elementwise graphs for the jit tests (CPU and WebGPU): unary, binary, compare, where,
 * cast and scalar ops over f32, f16, bf16, f8, i32 and bool inputs with broadcasts and special
 * values, built with the public ops so the same graph runs eagerly and under `jit`.
 */
import fc from "./fc.ts";
import * as nb from "../mod.ts";
import type { Backend, Tensor } from "../mod.ts";

/** The input and cast dtypes. */
export const DTYPES = ["f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i32", "bool"] as const;
/** One of {@linkcode DTYPES}. */
export type D = (typeof DTYPES)[number];
/** Special values the graphs draw from. */
export const SPECIAL = [
  0,
  -0,
  1,
  -1,
  0.5,
  3,
  -7.25,
  1e-3,
  65504,
  1e30,
  Infinity,
  -Infinity,
  NaN,
  2 ** -20,
];
const unaries = ["neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "square", "sign"];
const binaries = ["add", "sub", "mul", "div", "maximum", "minimum", "less", "equal", "pow"];

/** One random graph: three input shapes and dtypes, ops, and the values to fill them. */
export interface GraphSpec {
  shapes: number[][];
  dtypes: D[];
  ops: { kind: string; a: number; b: number; c: number; to: D; scalar: number }[];
  values: number[];
}

/** Random graphs. */
export const specArb: fc.Arbitrary<GraphSpec> = fc.record({
  shapes: fc.constantFrom(
    [[4, 3], [3], [1]],
    [[2, 1, 3], [1, 4, 1], [3]],
    [[5], [1], [5]],
    [[3, 7], [7], [3, 1]],
  ),
  dtypes: fc.array(fc.constantFrom(...DTYPES), { minLength: 3, maxLength: 3 }),
  ops: fc.array(
    fc.record({
      kind: fc.constantFrom(...unaries, ...binaries, "where", "cast", "scalar"),
      a: fc.nat(20),
      b: fc.nat(20),
      c: fc.nat(20),
      to: fc.constantFrom(...DTYPES),
      scalar: fc.constantFrom(0, 1, -2, 0.5, 3, 1e-3),
    }),
    { minLength: 2, maxLength: 12 },
  ),
  values: fc.array(fc.oneof(fc.constantFrom(...SPECIAL), fc.double({ min: -8, max: 8 })), {
    minLength: 60,
    maxLength: 60,
  }),
});

/** The graph as a function of its three inputs (run eagerly or under jit). */
export function graphFn(spec: GraphSpec): (...xs: Tensor[]) => Tensor[] {
  return (...xs: Tensor[]): Tensor[] => {
    const vals: Tensor[] = [...xs];
    const pick = (i: number) => vals[i % vals.length];
    const floatOf = (t: Tensor) => nb.isFloating(t.dtype) ? t : nb.astype(t, "f32");
    const ops = nb as unknown as Record<string, (...a: unknown[]) => Tensor>;
    for (const op of spec.ops) {
      const a = pick(op.a);
      let r: Tensor;
      if (unaries.includes(op.kind)) r = ops[op.kind](a.dtype === "bool" ? nb.astype(a, "f32") : a);
      else if (binaries.includes(op.kind)) {
        let b = pick(op.b);
        let x = a;
        if (x.dtype === "bool") x = nb.astype(x, "f32");
        if (b.dtype === "bool") b = nb.astype(b, "f32");
        if (op.kind === "pow" || op.kind === "div") [x, b] = [floatOf(x), floatOf(b)];
        r = ops[op.kind](x, b);
      } else if (op.kind === "where") {
        const c = pick(op.c);
        r = nb.where(c.dtype === "bool" ? c : nb.greater(floatOf(c), 0), a, pick(op.b));
      } else if (op.kind === "cast") r = nb.astype(a, op.to);
      else r = nb.add(a.dtype === "bool" ? nb.astype(a, "i32") : a, op.scalar);
      vals.push(r);
    }
    return vals.slice(3);
  };
}

/** The graph's three inputs on `device`. */
export function inputsOf(spec: GraphSpec, device?: Backend): Tensor[] {
  let k = 0;
  return spec.shapes.map((shape, i) => {
    const n = shape.reduce((p, d) => p * d, 1);
    const vs = Array.from({ length: n }, () => spec.values[k++ % spec.values.length]);
    const d = spec.dtypes[i];
    const fixed = d === "i32"
      ? vs.map((v) => Number.isFinite(v) ? Math.trunc(v) % 1000 : 3)
      : d === "bool"
      ? vs.map((v) => (v > 0 ? 1 : 0))
      : vs;
    return nb.tensor(fixed, { shape, dtype: d, device });
  });
}
