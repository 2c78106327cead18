// Charts as SVG: horizontal bars (one row per workflow, stacked or grouped series) and columns
// over time. Each chart is a <figure> with a caption, a legend in text, and an SVG whose
// label says the numbers in words; the analytics table under the charts has them all.

import {h, s} from './dom.js';

const LABEL_W = 190;
const BAR_AREA = 350;
const VALUE_W = 180;

function legend(series) {
  return h('ul', {class: 'legend'}, series.map((se) =>
    h('li', {}, h('span', {class: `swatch sw-c-${se.cls}`, 'aria-hidden': 'true'}), se.name)));
}

function figure(title, svg, series) {
  return h('figure', {class: 'chart'}, h('figcaption', {}, title), svg, legend(series));
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Horizontal bars. `rows`: `[{label, values: {key: number|null}}]`; `series`: `[{key, name,
 * cls}]`; `stacked`: one bar per row made of the series, else one thin bar per series;
 * `format(value)` writes a value.
 */
export function barChart({title, rows, series, stacked = false, format = String}) {
  const barH = stacked ? 20 : 13;
  const rowH = stacked ? 30 : series.length * (barH + 3) + 12;
  const height = Math.max(1, rows.length) * rowH + 8;
  const width = LABEL_W + BAR_AREA + VALUE_W;
  const max = Math.max(1e-9, ...rows.map((r) => (stacked
    ? series.reduce((sum, se) => sum + (r.values[se.key] || 0), 0)
    : Math.max(0, ...series.map((se) => r.values[se.key] || 0)))));
  const scale = (v) => (v / max) * BAR_AREA;
  const marks = [];
  const words = [];
  rows.forEach((r, i) => {
    const top = 4 + i * rowH;
    marks.push(s('text', {x: 0, y: top + (stacked ? 15 : rowH / 2), 'data-row': r.label}, shorten(r.label, 28)));
    if (stacked) {
      let x = LABEL_W;
      let total = 0;
      for (const se of series) {
        const v = r.values[se.key] || 0;
        total += v;
        if (v > 0) {
          marks.push(s('rect', {class: `c-${se.cls}`, x, y: top, width: scale(v), height: barH},
            s('title', {}, `${r.label}: ${se.name} ${format(v)}`)));
          x += scale(v);
        }
      }
      marks.push(s('text', {x: x + 6, y: top + 15}, r.note ?? format(total)));
      words.push(`${r.label}: ${series.map((se) => `${se.name} ${format(r.values[se.key] || 0)}`).join(', ')}${r.note ? ` (${r.note})` : ''}`);
    } else {
      series.forEach((se, j) => {
        const v = r.values[se.key];
        const y = top + j * (barH + 3);
        if (v !== null && v !== undefined) {
          marks.push(s('rect', {class: `c-${se.cls}`, x: LABEL_W, y, width: Math.max(1, scale(v)), height: barH},
            s('title', {}, `${r.label}: ${se.name} ${format(v)}`)));
        }
        marks.push(s('text', {x: LABEL_W + (v ? scale(v) : 0) + 6, y: y + barH - 2}, `${se.name} ${v === null || v === undefined ? '—' : format(v)}`));
      });
      words.push(`${r.label}: ${series.map((se) => `${se.name} ${r.values[se.key] == null ? 'none' : format(r.values[se.key])}`).join(', ')}`);
    }
  });
  if (!rows.length) marks.push(s('text', {x: 0, y: 20, class: 'axis'}, 'No runs in this window'));
  const svg = s('svg', {
    class: 'chart-svg', role: 'img', viewBox: `0 0 ${width} ${height}`,
    'aria-label': `${title}. ${rows.length ? words.join('; ') : 'No runs in this window'}.`,
  },
  s('line', {class: 'axis-line', x1: LABEL_W, x2: LABEL_W, y1: 0, y2: height}),
  marks);
  return figure(title, svg, series);
}

/** Round `max` up to 1, 2 or 5 times a power of ten, for axis ticks. */
function niceMax(max) {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) {
    if (m * power >= max) return m * power;
  }
  return 10 * power;
}

/**
 * Stacked columns over time. `buckets`: `[{start, ...values}]`; `series` as for bars;
 * `tick(start)` labels a bucket on the x axis.
 */
export function columnChart({title, buckets, series, tick}) {
  const width = 680;
  const height = 230;
  const left = 40;
  const bottom = 28;
  const plotW = width - left - 8;
  const plotH = height - bottom - 10;
  const totals = buckets.map((b) => series.reduce((sum, se) => sum + (b[se.key] || 0), 0));
  const top = niceMax(Math.max(0, ...totals));
  const colW = plotW / Math.max(1, buckets.length);
  const y = (v) => 10 + plotH - (v / top) * plotH;
  const marks = [];
  for (const v of [0, top / 2, top]) {
    marks.push(s('line', {class: 'grid', x1: left, x2: width - 8, y1: y(v), y2: y(v)}));
    marks.push(s('text', {class: 'axis', x: left - 6, y: y(v) + 4, 'text-anchor': 'end'}, Number.isInteger(v) ? v : v.toFixed(1)));
  }
  const every = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((b, i) => {
    const x = left + i * colW;
    let base = 0;
    for (const se of series) {
      const v = b[se.key] || 0;
      if (v > 0) {
        marks.push(s('rect', {
          class: `c-${se.cls}`, x: x + colW * 0.12, y: y(base + v), width: colW * 0.76,
          height: y(base) - y(base + v),
        }, s('title', {}, `${tick(b.start)}: ${se.name} ${v}`)));
        base += v;
      }
    }
    if (i % every === 0) {
      marks.push(s('text', {class: 'axis', x: x + colW / 2, y: height - 8, 'text-anchor': 'middle'}, tick(b.start)));
    }
  });
  marks.push(s('line', {class: 'axis-line', x1: left, x2: width - 8, y1: y(0), y2: y(0)}));
  const busy = buckets.filter((b, i) => totals[i] > 0)
    .map((b) => `${tick(b.start)}: ${series.filter((se) => b[se.key]).map((se) => `${b[se.key]} ${se.name}`).join(', ')}`);
  const svg = s('svg', {
    class: 'chart-svg', role: 'img', viewBox: `0 0 ${width} ${height}`,
    'aria-label': `${title}. ${busy.length ? busy.join('; ') : 'No runs in this window'}.`,
  }, marks);
  return figure(title, svg, series);
}
