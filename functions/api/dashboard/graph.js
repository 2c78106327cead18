// A workflow's steps as a picture: a layered drawing of the dependency graph (left to right,
// each step one column after its last dependency), arrows from each dependency to the step,
// and each box coloured by the step's status (a run) or kind (a definition).
//
// The picture is an SVG with role="img" and a label that says the same in words; the step
// table beside it is the accessible, complete version.

import {s} from './dom.js';

const NODE_W = 176;
const NODE_H = 58;
const GAP_X = 60;
const GAP_Y = 20;
const PAD = 14;

let markers = 0;

/**
 * Columns for `steps` (`[{id, depends_on}]`): a step's column is one more than its deepest
 * dependency's; within a column steps are ordered by where their dependencies are (fewer
 * crossing arrows), then by definition order.
 */
export function layout(steps) {
  const byId = new Map(steps.map((st, index) => [st.id, {deps: st.depends_on || [], index}]));
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0; // a cycle (refused by validation anyway): do not loop
    visiting.add(id);
    let d = 0;
    for (const dep of byId.get(id).deps) {
      if (byId.has(dep)) d = Math.max(d, depthOf(dep) + 1);
    }
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const columns = [];
  for (const st of steps) {
    const d = depthOf(st.id);
    (columns[d] ||= []).push(st.id);
  }
  const row = new Map();
  const centre = (id) => {
    const deps = byId.get(id).deps.filter((dep) => row.has(dep));
    if (!deps.length) return byId.get(id).index;
    return deps.reduce((sum, dep) => sum + row.get(dep), 0) / deps.length;
  };
  columns.forEach((column, c) => {
    if (c > 0) column.sort((a, b) => centre(a) - centre(b) || byId.get(a).index - byId.get(b).index);
    column.forEach((id, r) => row.set(id, r));
  });
  const tallest = Math.max(1, ...columns.map((col) => col.length));
  const at = new Map();
  columns.forEach((column, c) => {
    const offset = ((tallest - column.length) * (NODE_H + GAP_Y)) / 2;
    column.forEach((id, r) => {
      at.set(id, {x: PAD + c * (NODE_W + GAP_X), y: PAD + offset + r * (NODE_H + GAP_Y)});
    });
  });
  return {
    at,
    width: PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * GAP_X,
    height: PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y,
  };
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * The SVG. `steps`: `[{id, depends_on, cls, line, progress}]` where `cls` is the box's class
 * (`n-<status>` or `k-<kind>`), `line` the small text under the id, and `progress` a 0..1
 * fraction for a bar inside the box (agent turns), or null. `label` names the picture.
 */
export function drawGraph(steps, label) {
  const {at, width, height} = layout(steps);
  const marker = `arrow-${++markers}`;
  const edges = [];
  for (const st of steps) {
    const to = at.get(st.id);
    for (const dep of st.depends_on || []) {
      const from = at.get(dep);
      if (!from) continue;
      const x1 = from.x + NODE_W;
      const y1 = from.y + NODE_H / 2;
      const x2 = to.x - 2;
      const y2 = to.y + NODE_H / 2;
      const bend = Math.max(20, (x2 - x1) / 2);
      edges.push(s('path', {
        class: 'edge',
        d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
        'marker-end': `url(#${marker})`,
        'data-edge': `${dep}->${st.id}`,
      }));
    }
  }
  const nodes = steps.map((st) => {
    const {x, y} = at.get(st.id);
    const parts = [
      s('title', {}, `${st.id}: ${st.line}`),
      s('rect', {x, y, width: NODE_W, height: NODE_H, rx: 8, ry: 8}),
      s('text', {x: x + 10, y: y + 20}, shorten(st.id, 21)),
      s('text', {x: x + 10, y: y + 37, class: 'sub'}, shorten(st.line, 26)),
    ];
    if (st.progress !== null && st.progress !== undefined) {
      const inner = NODE_W - 20;
      parts.push(s('rect', {class: 'progress-track', x: x + 10, y: y + NODE_H - 12, width: inner, height: 5, rx: 2}));
      parts.push(s('rect', {
        class: 'progress-fill', x: x + 10, y: y + NODE_H - 12,
        width: Math.max(0, Math.min(1, st.progress)) * inner, height: 5, rx: 2,
      }));
    }
    return s('g', {class: `node ${st.cls}`, 'data-step': st.id}, parts);
  });
  return s('svg', {
    class: 'graph',
    role: 'img',
    'aria-label': label,
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
  },
  s('defs', {},
    s('marker', {
      id: marker, viewBox: '0 0 10 10', refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
    }, s('path', {class: 'arrow', d: 'M0,0 L10,5 L0,10 z'}))),
  s('g', {class: 'edges'}, edges),
  s('g', {class: 'nodes'}, nodes));
}

/** The words for a graph: each step and what it waits for. */
export function describeGraph(steps, state) {
  return steps.map((st) => {
    const deps = st.depends_on && st.depends_on.length ? ` after ${st.depends_on.join(', ')}` : '';
    return `${st.id} (${state(st)})${deps}`;
  }).join('; ');
}
