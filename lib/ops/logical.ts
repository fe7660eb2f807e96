/**
 * Logical `and` / `or` on tensors (as `torch.logical_and` / `logical_or`): any dtype is read as
 * "nonzero is true" (NaN is true), the result is bool. `logicalNot` is in `elementwise.ts`.
 *
 * @module
 */
import { apply, expectTensor, type OpDef } from "../op.ts";
import { full, type Tensor } from "../tensor.ts";
import { notEqual, where } from "./elementwise.ts";

const truth = (x: Tensor): Tensor => (x.dtype === "bool" ? x : notEqual(x, 0));
const constant = (like: Tensor, v: boolean) =>
  full([], v ? 1 : 0, { dtype: "bool", device: like.device });

const andOp: OpDef<undefined> = {
  name: "logicalAnd",
  tags: ["elementwise", "multi-input"],
  compose: ([a, b]) => where(truth(a), truth(b), constant(a, false)),
};

const orOp: OpDef<undefined> = {
  name: "logicalOr",
  tags: ["elementwise", "multi-input"],
  compose: ([a, b]) => where(truth(a), constant(a, true), truth(b)),
};

function binary(op: OpDef<undefined>, a: Tensor, b: Tensor): Tensor {
  expectTensor(op.name, a, 1);
  expectTensor(op.name, b, 2);
  return apply(op, [a, b], undefined);
}

/**
 * Elementwise `a && b` (broadcast), a bool tensor.
 *
 * @example
 * ```ts
 * logicalAnd(greater(x, 0), less(x, 1)); // 0 < x < 1
 * ```
 */
export const logicalAnd = (a: Tensor, b: Tensor): Tensor => binary(andOp, a, b);

/**
 * Elementwise `a || b` (broadcast), a bool tensor.
 *
 * @example
 * ```ts
 * logicalOr(isNaN, isInf); // either
 * ```
 */
export const logicalOr = (a: Tensor, b: Tensor): Tensor => binary(orOp, a, b);
