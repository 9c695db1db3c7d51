// Charts drawn as plain SVG: time series (lines, optionally filled), a histogram, and bar lists.
// No library: each chart is a viewBox the CSS scales to its card's width.
import { h, s } from './util.js';

const W = 600;
const PAD = { l: 52, r: 16, t: 10, b: 22 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function hhmm(ts) {
  const d = new Date(ts);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/**
 * A time-series chart.
 * series: [{name, cls, points: [[ts_ms, value], ...], fill}]; opts: {height, yFormat, yMax}.
 */
export function timeChart(series, opts = {}) {
  const H = opts.height || 160;
  const fmt = opts.yFormat || ((v) => String(Math.round(v)));
  const all = series.flatMap((x) => x.points);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': opts.label || '' });
  if (all.length < 2) {
    svg.append(s('text', { x: W / 2, y: H / 2, class: 'nodata', 'text-anchor': 'middle' }, 'collecting data…'));
    return h('div', { class: 'chart-box', testid: opts.testid }, svg);
  }
  const x0 = Math.min(...all.map((p) => p[0]));
  const x1 = Math.max(...all.map((p) => p[0]));
  // Counts (calls, queries) below 4 would label the grid 0, 0, 1, 1, 1: start integer axes at 4.
  const top = Math.max(...all.map((p) => p[1]));
  const yMax = opts.yMax || niceMax(opts.integer ? Math.max(4, top) : top);
  const sx = (t) => PAD.l + ((t - x0) / Math.max(x1 - x0, 1)) * (W - PAD.l - PAD.r);
  const sy = (v) => H - PAD.b - (v / yMax) * (H - PAD.t - PAD.b);
  for (let i = 0; i <= 4; i += 1) {
    const v = (yMax * i) / 4;
    svg.append(
      s('line', { x1: PAD.l, x2: W - PAD.r, y1: sy(v), y2: sy(v), class: 'grid' }),
      s('text', { x: PAD.l - 6, y: sy(v) + 4, 'text-anchor': 'end', class: 'axis' }, fmt(v)),
    );
  }
  for (const [t, anchor] of [[x0, 'start'], [(x0 + x1) / 2, 'middle'], [x1, 'end']]) {
    svg.append(s('text', { x: sx(t), y: H - 6, 'text-anchor': anchor, class: 'axis' }, hhmm(t)));
  }
  for (const ser of series) {
    if (!ser.points.length) continue;
    const d = ser.points.map((p, i) => `${i ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('');
    if (ser.fill) {
      const first = ser.points[0];
      const last = ser.points[ser.points.length - 1];
      svg.append(s('path', { d: `${d}L${sx(last[0]).toFixed(1)},${sy(0)}L${sx(first[0]).toFixed(1)},${sy(0)}Z`, class: `area ${ser.cls}` }));
    }
    svg.append(s('path', { d, class: `line ${ser.cls}` }));
  }
  const legend = h(
    'div',
    { class: 'legend' },
    series.map((x) => h('span', null, h('i', { class: `swatch ${x.cls}` }), x.name)),
  );
  return h('div', { class: 'chart-box', testid: opts.testid }, svg, series.length > 1 ? legend : null);
}

/** A histogram: labels under bars. */
export function histogram(labels, values, opts = {}) {
  const H = opts.height || 160;
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': opts.label || '' });
  const max = niceMax(Math.max(4, ...values));
  const n = values.length || 1;
  const bw = (W - PAD.l - PAD.r) / n;
  const sy = (v) => H - PAD.b - (v / max) * (H - PAD.t - PAD.b);
  for (let i = 0; i <= 4; i += 1) {
    const v = (max * i) / 4;
    svg.append(
      s('line', { x1: PAD.l, x2: W - PAD.r, y1: sy(v), y2: sy(v), class: 'grid' }),
      s('text', { x: PAD.l - 6, y: sy(v) + 4, 'text-anchor': 'end', class: 'axis' }, String(Math.round(v))),
    );
  }
  values.forEach((v, i) => {
    const x = PAD.l + i * bw;
    svg.append(
      s('rect', { x: x + 2, y: sy(v), width: Math.max(bw - 4, 1), height: Math.max(sy(0) - sy(v), 0), class: 'bar' }, s('title', null, `${labels[i]}: ${v}`)),
      s('text', { x: x + bw / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis small' }, labels[i]),
    );
  });
  return h('div', { class: 'chart-box', testid: opts.testid }, svg);
}

/** Horizontal bars: [[label, value], ...] with a formatter. */
export function barList(items, fmt, testid) {
  if (!items.length) return h('div', { class: 'empty small', testid }, 'nothing yet');
  const max = Math.max(...items.map((x) => x[1]), 1);
  return h(
    'ol',
    { class: 'barlist', testid },
    items.map(([label, v]) => {
      const fill = h('span', { class: 'fill' });
      fill.style.width = `${(v / max) * 100}%`;
      return h('li', { title: label }, fill, h('span', { class: 'label mono' }, label), h('span', { class: 'val' }, fmt(v)));
    }),
  );
}
