/**
 * WGSL of the block-wise 8-bit kernels (bitsandbytes), with the CPU kernels' exact semantics
 * (lib/backend/cpu/quantize.ts):
 *
 * - quantize: one invocation per output word (four u8 codes). Each workgroup first writes the
 *   255 midpoints `(map[j] + map[j+1]) · 0.5` of the map to workgroup memory as order keys
 *   (f32 bits mapped to u32 so that unsigned order is float order, −0 = +0), then each code is
 *   an 8-step branch-free binary search: the count of midpoints below `y`, so ties go to the
 *   lower index. `y = x / absmax` is correctly rounded by integer long division (`div_rne`),
 *   clamped to [−1, 1] by bit tests, 0 for NaN or when absmax is not > 0; the sign guard
 *   decides signs by bit tests too. Nothing depends on how the GPU treats subnormals except
 *   the midpoints, which are exact when every map entry and midpoint is 0 or a normal f32
 *   (true of `dynamicMap` and of any map in [−1, 1] whose entries are ≥ 2^-125 apart).
 * - dequantize: the generic one-invocation-per-word kernel; `map[code] · absmax` is rounded
 *   once to f32 by an exact integer product (`mul_rne`, subnormals included), then once more to
 *   the output dtype, as the CPU does.
 *
 * @example
 * ```ts
 * const k = quantizeKernel("bf16"); // Kernel: inputs x, absmax, map; params [n, blockSize, guard]
 * dequantizeKernel("f16").key; // "dequant:f16"
 * ```
 *
 * @module
 */
import type { DType } from "../../../dtype.ts";
import { bindings, type Kernel } from "../runtime.ts";
import { helpers, rawLoad, storeF32, toF32Bits } from "./dtype.ts";
import { WG, wordKernel } from "./map.ts";

/** Codes per output word of the quantize kernel (u8, four per u32). */
const PER_WORD = 4;

// f32 bits -> u32 whose unsigned order is the float order of non-NaN values (−0 maps to +0).
const ORDER_KEY = `
fn order_key(b: u32) -> u32 {
  let c = select(b, 0u, b == 0x80000000u);
  return select(c | 0x80000000u, ~c, (c >> 31u) == 1u);
}`;

// a · b rounded once to f32 (ties to even) from the exact 48-bit product of the significands,
// so subnormal inputs and results are exact whatever the GPU's float mode.
const MUL_RNE = `
fn mul_rne(a: f32, b: f32) -> f32 {
  let ua = bitcast<u32>(a);
  let ub = bitcast<u32>(b);
  let s = (ua ^ ub) & 0x80000000u;
  let xa = ua & 0x7fffffffu;
  let xb = ub & 0x7fffffffu;
  if (xa > 0x7f800000u || xb > 0x7f800000u) { return qnan(a); }
  if (xa == 0x7f800000u || xb == 0x7f800000u) {
    if (xa == 0u || xb == 0u) { return qnan(a); }
    return bitcast<f32>(s | 0x7f800000u);
  }
  if (xa == 0u || xb == 0u) { return bitcast<f32>(s); }
  let na = norm_f32(xa);
  let nb = norm_f32(xb);
  let ma = na.y >> 8u;
  let mb = nb.y >> 8u;
  let a1 = ma >> 16u;
  let a0 = ma & 0xffffu;
  let b1 = mb >> 16u;
  let b0 = mb & 0xffffu;
  let mid = a1 * b0 + a0 * b1;
  let lo0 = a0 * b0;
  let lo = lo0 + (mid << 16u);
  let hi = a1 * b1 + (mid >> 16u) + select(0u, 1u, lo < lo0);
  var e = bitcast<i32>(na.x) + bitcast<i32>(nb.x);
  var sig = (hi << 17u) | (lo >> 15u);
  var sticky = lo & 0x7fffu;
  if (hi >= 0x8000u) {
    e = e + 1;
    sig = (hi << 16u) | (lo >> 16u);
    sticky = lo & 0xffffu;
  }
  return bitcast<f32>(s | round_mag(e, sig, sticky, 23u, -126, 0x7f7fffffu, 0x7f800000u));
}`;

/** Binary search steps: after them `c` is the number of midpoint keys below `v`. */
function searchSteps(): string {
  const lines = ["  var c = select(0u, 128u, K[127u] < v);"];
  for (let bit = 64; bit >= 1; bit >>= 1) {
    lines.push(`  c = c + select(0u, ${bit}u, K[c + ${bit - 1}u] < v);`);
  }
  return lines.join("\n");
}

/**
 * The quantize kernel for input dtype `x` (a float dtype). Bindings: `x`, `absmax` (f32),
 * `map` (256 f32), output u8; parameters `[n, blockSize, signGuard ? 1 : 0]`.
 *
 * @example
 * ```ts
 * dispatch(ctx, quantizeKernel("f32"), [x, absmax, map], out, [n, 256, 1], mapGroups(n, "u8"));
 * ```
 */
export function quantizeKernel(x: DType): Kernel {
  const k = { inputs: 3, params: 3 };
  return { ...k, key: `quant:${x}`, code: () => quantizeCode(x, k) };
}

function quantizeCode(x: DType, k: { inputs: number; params: number }): string {
  const load = toF32Bits(x, rawLoad("I0", x, "e"));
  const pack: string[] = [];
  for (let l = 1; l < PER_WORD; l++) {
    pack.push(`  if (e0 + ${l}u < n) { w = w | (code(e0 + ${l}u) << ${8 * l}u); }`);
  }
  return `${bindings(k)}
${helpers(["div_rne", ...load.deps])}
${ORDER_KEY}
var<workgroup> K: array<u32, 256>;
fn code(e: u32) -> u32 {
  let xb = ${load.expr};
  let ab = I1[e / p(1u)];
  var yb = 0u;
  if ((ab >> 31u) == 0u && ab != 0u && ab <= 0x7f800000u) {
    yb = bitcast<u32>(div_rne(bitcast<f32>(xb), bitcast<f32>(ab)));
    let ya = yb & 0x7fffffffu;
    if (ya > 0x7f800000u) {
      yb = 0u;
    } else if (ya > 0x3f800000u) {
      yb = (yb & 0x80000000u) | 0x3f800000u;
    }
  }
  let v = order_key(yb);
${searchSteps()}
  let xa = xb & 0x7fffffffu;
  if (p(2u) != 0u && xa != 0u && xa <= 0x7f800000u) {
    let mb = I2[c];
    let mnan = (mb & 0x7fffffffu) > 0x7f800000u;
    let mneg = !mnan && (mb >> 31u) == 1u && (mb & 0x7fffffffu) != 0u;
    if ((xb >> 31u) == 1u) {
      if (!mnan && !mneg && c > 0u) { c = c - 1u; }
    } else if (mneg && c < 255u) {
      c = c + 1u;
    }
  }
  return c;
}
@compute @workgroup_size(${WG})
fn main(
  @builtin(global_invocation_id) g: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(num_workgroups) nw: vec3<u32>,
) {
  if (li < 255u) {
    let m = (bitcast<f32>(I2[li]) + bitcast<f32>(I2[li + 1u])) * 0.5;
    K[li] = order_key(bitcast<u32>(m));
  }
  workgroupBarrier();
  let wi = g.x + g.y * nw.x * ${WG}u;
  let n = p(0u);
  let e0 = wi * ${PER_WORD}u;
  if (e0 >= n) { return; }
  var w = code(e0);
${pack.join("\n")}
  O[wi] = w;
}`;
}

/**
 * The dequantize kernel writing dtype `out` (a float dtype). Bindings: `codes` (u8),
 * `absmax` (f32), `map` (256 f32), output; parameters `[n, blockSize]`.
 *
 * @example
 * ```ts
 * dispatch(ctx, dequantizeKernel("bf16"), [codes, absmax, map], out, [n, 256], mapGroups(n, "bf16"));
 * ```
 */
export function dequantizeKernel(out: DType): Kernel {
  const k = { inputs: 3, params: 2 };
  return {
    ...k,
    key: `dequant:${out}`,
    code: () => {
      const s = storeF32(out, "y");
      return wordKernel({
        ...k,
        out,
        module: `${helpers(["qnan", "norm_f32", "round_mag", ...s.deps])}\n${MUL_RNE}`,
        lane: `  let c = ${rawLoad("I0", "u8", "e")};
  let y = mul_rne(bitcast<f32>(I2[c]), bitcast<f32>(I1[e / p(1u)]));
  return ${s.expr};`,
      });
    },
  };
}
