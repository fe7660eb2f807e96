/**
 * Composite activations and normalisers: `softmax`, `logSoftmax`, `gelu`. Each is one op
 * declaration (so interceptors see it by name and tag) whose body is made of other ops.
 *
 * @module
 */
import { apply, expectTensor, type OpDef } from "../op.ts";
import type { Tensor } from "../tensor.ts";
import { normAxis } from "./util.ts";
import { narrowInF32 } from "./narrow.ts";
import { add, div, exp, isFinite, mul, sigmoid, stopGradient, sub, where } from "./elementwise.ts";
import { logsumexp, max, sum } from "./reduce.ts";

interface AxisAttrs {
  readonly axis: number;
}

const softmaxOp: OpDef<AxisAttrs> = {
  name: "softmax",
  tags: ["softmax"],
  compose: ([x0], a) =>
    narrowInF32(x0, (x) => {
      const m = stopGradient(max(x, a.axis, true));
      const e = exp(sub(x, where(isFinite(m), m, 0)));
      return div(e, sum(e, a.axis, true));
    }),
};

/** exp(x) / Σ exp(x) along `axis` (last by default), computed stably. @example `softmax(tensor([0, 0]))` → `[0.5, 0.5]` */
export const softmax = (x: Tensor, axis = -1): Tensor => (
  expectTensor("softmax", x, 1), apply(softmaxOp, [x], { axis: normAxis("softmax", axis, x.ndim) })
);

const logSoftmaxOp: OpDef<AxisAttrs> = {
  name: "logSoftmax",
  tags: ["softmax"],
  compose: ([x0], a) => narrowInF32(x0, (x) => sub(x, logsumexp(x, a.axis, true))),
};

/** x − logsumexp(x) along `axis` (last by default). @example `logSoftmax(tensor([0, 0]))` → `[-0.693, -0.693]` */
export const logSoftmax = (x: Tensor, axis = -1): Tensor => (
  expectTensor("logSoftmax", x, 1),
    apply(logSoftmaxOp, [x], { axis: normAxis("logSoftmax", axis, x.ndim) })
);

const geluOp: OpDef<undefined> = {
  name: "gelu",
  tags: ["elementwise", "transcendental"],
  compose: ([x0]) =>
    narrowInF32(x0, (x) => {
      // tanh approximation (JAX's default): 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³),
      // written as x·sigmoid(2u): the same function without the cancellation in 1 + tanh(u).
      const u2 = mul(add(x, mul(mul(mul(x, x), x), 0.044715)), 2 * Math.sqrt(2 / Math.PI));
      return mul(x, sigmoid(u2));
    }),
};

/** GELU, tanh approximation (as JAX's default). @example `gelu(tensor([0]))` → `[0]` */
export const gelu = (x: Tensor): Tensor => apply(geluOp, [x], undefined);
