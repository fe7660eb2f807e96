/**
 * A small hand-written SVG line chart (no dependencies): one polyline per series, axes with
 * ticks, a legend. Used for the compare script's loss curves.
 *
 * @example
 * ```ts
 * const svg = lineChart([{ name: "32-true", points: [[25, 1.2], [50, 0.6]] }], {
 *   title: "training loss",
 *   xLabel: "step",
 *   yLabel: "loss",
 * });
 * await Deno.writeTextFile("out/loss.svg", svg);
 * ```
 *
 * @module
 */

/** One curve: a name for the legend and `[x, y]` points. */
export interface Series {
  readonly name: string;
  readonly points: readonly (readonly [number, number])[];
}

/** Options of {@linkcode lineChart}. */
export interface ChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Plot y on a log10 scale (positive values only; default false). */
  logY?: boolean;
  width?: number;
  height?: number;
}

const COLORS = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#ff7f0e",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** About `n` round tick values covering `[lo, hi]`. */
function ticks(lo: number, hi: number, n: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** Ticks at 1, 2 and 5 × 10^k inside `[10^lo, 10^hi]` (fewer when the range is wide). */
function logTicks(lo: number, hi: number): number[] {
  const steps = hi - lo > 3 ? [1] : [1, 2, 5];
  const out: number[] = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const m of steps) {
      const v = m * 10 ** e;
      const l = Math.log10(v);
      if (l >= lo - 1e-9 && l <= hi + 1e-9) out.push(Number(v.toPrecision(6)));
    }
  }
  return out;
}

const fmt = (v: number) =>
  (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3))
    ? v.toExponential(0)
    : String(Number(v.toPrecision(3)));

/**
 * An SVG document plotting `series`. Non-finite points (and non-positive ones with `logY`) are
 * left out.
 *
 * @example
 * ```ts
 * lineChart([{ name: "a", points: [[0, 1], [1, 0.5]] }]).startsWith("<svg"); // true
 * ```
 */
export function lineChart(series: readonly Series[], opts: ChartOptions = {}): string {
  const { width = 800, height = 480, logY = false } = opts;
  const m = { left: 70, right: 170, top: 40, bottom: 50 };
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const ty = (y: number) => (logY ? Math.log10(y) : y);
  const usable = series.map((s) => ({
    name: s.name,
    points: s.points.filter(([x, y]) =>
      Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0)
    ),
  }));
  const xs = usable.flatMap((s) => s.points.map((p) => p[0]));
  const ys = usable.flatMap((s) => s.points.map((p) => ty(p[1])));
  let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = [y0 - 1, y1 + 1];
  const px = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const py = (y: number) => m.top + (1 - (ty(y) - y0) / (y1 - y0)) * ph;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
  ];
  if (opts.title) {
    out.push(
      `<text x="${m.left + pw / 2}" y="22" text-anchor="middle" font-size="15">${
        esc(opts.title)
      }</text>`,
    );
  }
  for (const t of ticks(x0, x1, 8)) {
    const x = px(t).toFixed(1);
    out.push(
      `<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="#eee"/>`,
      `<text x="${x}" y="${m.top + ph + 16}" text-anchor="middle">${fmt(t)}</text>`,
    );
  }
  const yTicks = logY ? logTicks(y0, y1) : ticks(y0, y1, 6);
  for (const t of yTicks) {
    const y = py(t).toFixed(1);
    out.push(
      `<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#eee"/>`,
      `<text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${
        fmt(t)
      }</text>`,
    );
  }
  out.push(
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`,
  );
  if (opts.xLabel) {
    out.push(
      `<text x="${m.left + pw / 2}" y="${height - 12}" text-anchor="middle">${
        esc(opts.xLabel)
      }</text>`,
    );
  }
  if (opts.yLabel) {
    out.push(
      `<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${
        esc(opts.yLabel + (logY ? " (log scale)" : ""))
      }</text>`,
    );
  }
  usable.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
    if (s.points.length) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts}"/>`);
    }
    const ly = m.top + 10 + i * 20;
    const lx = m.left + pw + 15;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${color}" stroke-width="3"/>`,
      `<text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${esc(s.name)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
