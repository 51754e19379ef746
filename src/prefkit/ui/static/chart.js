// Line charts drawn as SVG by hand: no library, nothing fetched. A series is
// { label, colour, dashed, points: [[step, value or null], ...] }; null leaves a gap.

import { append, clear, fmt, h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 560;
const H = 250;
const M = { left: 56, right: 14, top: 10, bottom: 30 };
const MAX_POINTS = 1500; // per series; longer histories are thinned (every k-th point, and the last)

export const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#a16207", "#db2777"];

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// About `count` round tick values covering [lo, hi].
function ticks(lo, hi, count = 5) {
  const span = hi - lo;
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => span / s <= count) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function thin(points) {
  if (points.length <= MAX_POINTS) return points;
  const every = Math.ceil(points.length / MAX_POINTS);
  const kept = points.filter((_, i) => i % every === 0);
  if (kept[kept.length - 1] !== points[points.length - 1]) kept.push(points[points.length - 1]);
  return kept;
}

function extent(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  return [lo, hi];
}

// xMax: where the step axis ends at least (a running run's max_steps, so its curve grows into the chart).
export function lineChart(title, series, { xMax = null } = {}) {
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title));
  const drawn = series
    .map((s) => ({ ...s, points: thin(s.points.filter((p) => Number.isFinite(p[0]))) }))
    .filter((s) => s.points.some((p) => Number.isFinite(p[1])));
  if (!drawn.length) {
    figure.append(h("p", { class: "muted empty" }, "not logged"));
    return figure;
  }
  const all = drawn.flatMap((s) => s.points);
  const [x0, x1] = extent(all.map((p) => p[0]).concat(xMax ? [xMax] : []));
  const [y0, y1] = extent(all.filter((p) => Number.isFinite(p[1])).map((p) => p[1]));
  const yt = ticks(y0, y1);
  const [ylo, yhi] = [Math.min(y0, yt[0]), Math.max(y1, yt[yt.length - 1])];
  const px = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const py = (y) => H - M.bottom - ((y - ylo) / (yhi - ylo)) * (H - M.top - M.bottom);

  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
  root.setAttribute("aria-label", title);
  for (const y of yt) {
    root.append(svg("line", { x1: M.left, x2: W - M.right, y1: py(y), y2: py(y), class: "grid" }));
    root.append(svg("text", { x: M.left - 6, y: py(y) + 4, class: "tick", "text-anchor": "end" }, fmt(y)));
  }
  for (const x of ticks(x0, x1, 6).filter((x) => Number.isInteger(x))) {
    root.append(svg("line", { x1: px(x), x2: px(x), y1: M.top, y2: H - M.bottom, class: "grid" }));
    root.append(svg("text", { x: px(x), y: H - M.bottom + 16, class: "tick", "text-anchor": "middle" }, fmt(x)));
  }
  root.append(svg("text", { x: W - M.right, y: H - 4, class: "axis", "text-anchor": "end" }, "step"));
  for (const s of drawn) {
    let d = "";
    let pen = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y)) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`;
      pen = true;
    }
    const path = svg("path", { d, fill: "none", stroke: s.colour, "stroke-width": 2, class: "series" });
    if (s.dashed) path.setAttribute("stroke-dasharray", "6 4");
    path.setAttribute("data-label", s.label);
    path.setAttribute("data-points", s.points.filter((p) => Number.isFinite(p[1])).length);
    root.append(path);
    if (s.points.length <= 40) {
      for (const [x, y] of s.points) {
        if (Number.isFinite(y)) root.append(svg("circle", { cx: px(x), cy: py(y), r: 2.5, fill: s.colour }));
      }
    }
  }
  const cursor = svg("line", { y1: M.top, y2: H - M.bottom, class: "cursor", visibility: "hidden" });
  root.append(cursor);
  figure.append(root);

  const legend = h("ul", { class: "legend" });
  for (const s of drawn) {
    const swatch = h("span", { class: s.dashed ? "swatch dashed" : "swatch" });
    swatch.style.borderColor = s.colour; // CSSOM, not a style attribute: allowed by the page's CSP
    legend.append(h("li", {}, swatch, s.label));
  }
  const readout = h("p", { class: "readout muted" }, "\u00a0");
  figure.append(legend, readout);

  // Hovering shows each series' value at the nearest logged step.
  root.addEventListener("mousemove", (event) => {
    const box = root.getBoundingClientRect();
    const x = x0 + ((((event.clientX - box.left) / box.width) * W - M.left) / (W - M.left - M.right)) * (x1 - x0);
    const parts = [];
    let step = null;
    for (const s of drawn) {
      let best = null;
      for (const p of s.points) if (Number.isFinite(p[1]) && (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x))) best = p;
      if (best) {
        step = step ?? best[0];
        parts.push(`${s.label}: ${fmt(best[1])}`);
      }
    }
    if (step === null) return;
    cursor.setAttribute("x1", px(step));
    cursor.setAttribute("x2", px(step));
    cursor.setAttribute("visibility", "visible");
    clear(readout);
    append(readout, [`step ${fmt(step)} — ${parts.join(" · ")}`]);
  });
  root.addEventListener("mouseleave", () => cursor.setAttribute("visibility", "hidden"));
  return figure;
}

// The points of one metric in metrics.jsonl records: [[step, value], ...] (null where it was not finite).
export function pointsOf(records, key) {
  const out = [];
  for (const r of records) {
    if (!(key in r) || typeof r.step !== "number") continue;
    const v = r[key];
    if (typeof v === "number" || v === null) out.push([r.step, v]);
  }
  return out;
}
