// Small DOM helpers. Every page is built with these: elements and text nodes only, never
// HTML strings, so text from the API (messages, errors, agent output) can never become markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.setAttribute('class', value);
    else if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'value' && 'value' in el && !(el instanceof SVGElement)) {
      el.value = value;
    } else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: `h('a', {href: '#/runs'}, 'Runs')`. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/**
 * Replace `container`'s children, keeping keyboard focus: when the focused element carries a
 * `data-key`, the new element with the same key gets the focus back. Pages refresh on a timer,
 * and a refresh must never throw a keyboard user's place away.
 */
export function replaceChildren(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.getAttribute('data-key') : null;
  container.replaceChildren();
  append(container, children);
  if (key) {
    const again = [...container.querySelectorAll('[data-key]')].find((e) => e.getAttribute('data-key') === key);
    if (again) again.focus();
  }
}

/** A status badge: the word, coloured by status. */
export function badge(status) {
  return h('span', {class: `badge s-${status}`}, status.replace('_', ' '));
}

function pad(n) {
  return String(n).padStart(2, '0');
}

/** `2026-11-02 14:03:09` in the browser's time zone. */
export function time(ms) {
  if (ms === undefined || ms === null) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `14:03:09`. */
export function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `1h 4m`, `3m 20s`, `12.4s`, `850ms`. */
export function duration(ms) {
  if (ms === undefined || ms === null) return '—';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const secs = ms / 1000;
  if (secs < 60) return `${secs.toFixed(secs < 10 ? 1 : 0)}s`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins}m ${Math.round(secs % 60)}s`;
  const hours = Math.floor(mins / 60);
  if (hours < 48) return `${hours}h ${mins % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

/** `$0.0123`, `$12.50`. */
export function money(usd) {
  if (usd === undefined || usd === null) return '—';
  return usd < 1 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

/** `75%`, or a dash when there is no rate. */
export function percent(rate) {
  if (rate === undefined || rate === null) return '—';
  return `${Math.round(rate * 1000) / 10}%`;
}

/** A table with a caption, header cells with scope, and rows of cells; `scroll` for wide
 * tables without links (see below). */
export function table(caption, headers, rows, {captionHidden = false, scroll = false} = {}) {
  // A wide table scrolls sideways on a narrow screen; a scrolling region without links in it
  // must be focusable, or keyboard users cannot scroll it.
  const wrap = scroll
    ? {class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': `${caption} (table)`, 'data-key': `table:${caption}`}
    : {class: 'table-wrap'};
  return h('div', wrap,
    h('table', {},
      h('caption', {class: captionHidden ? 'visually-hidden' : null}, caption),
      h('thead', {}, h('tr', {}, headers.map((hd) =>
        h('th', {scope: 'col', class: hd.num ? 'num' : null}, hd.label ?? hd)))),
      h('tbody', {}, rows)));
}
