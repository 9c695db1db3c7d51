// Small helpers every view uses: building DOM without innerHTML (everything shown comes from
// the network: hosts, headers, SIP fields), and formatting numbers, bytes and times.

/** Create an element: h('td', {class: 'x', dataset: {testid: 'y'}, onclick}, child, ...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'testid') el.dataset.testid = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked' || k === 'disabled' || k === 'selected') el[k] = Boolean(v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** 1234567 → "1.2 MB". */
export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** 12345 → "12 345". */
export function num(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US').replace(/,/g, '\u202f');
}

/** Microseconds → "850 µs" / "12.3 ms" / "2.10 s". */
export function micros(us) {
  if (!us) return '–';
  if (us < 1000) return `${us} µs`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(us < 10_000 ? 2 : 1)} ms`;
  return `${(us / 1_000_000).toFixed(2)} s`;
}

/** Milliseconds (float) → "12.3 ms". */
export function millis(ms) {
  if (ms === null || ms === undefined) return '–';
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;
}

/** Unix ms → "14:03:07.123". */
export function clock(ts) {
  if (!ts) return '–';
  const d = new Date(ts);
  const p = (x, n = 2) => String(x).padStart(n, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Unix seconds → local date and time. */
export function dateSecs(t) {
  if (!t) return '–';
  const d = new Date(t * 1000);
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Seconds → "3d 4h", "5m 2s". */
export function duration(secs) {
  if (secs === null || secs === undefined) return '–';
  const d = Math.floor(secs / 86400);
  const hh = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const sec = Math.floor(secs % 60);
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}

/** Run `fn` once `ms` after the last call. */
export function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

/** A coloured badge for a cache result, a status or a service. */
export function badge(text, kind) {
  return h('span', { class: `badge ${kind || ''}` }, text || '–');
}

/** The CSS class for a cache result. */
export function cacheClass(c) {
  if (['hit', 'kernel_hit', 'revalidated', 'local'].includes(c)) return 'good';
  if (['stale', 'ghost', 'ghost-nearest'].includes(c)) return 'warn';
  if (c === 'miss') return 'info';
  if (c) return 'mute';
  return '';
}

/** The CSS class for an HTTP status, DNS rcode or action. */
export function statusClass(st) {
  const n = Number(st);
  if (n >= 500) return 'bad';
  if (n >= 400) return 'warn';
  if (n >= 300) return 'info';
  if (n >= 200) return 'good';
  if (['NXDOMAIN', 'SERVFAIL', 'REFUSED', 'deny'].includes(st)) return 'bad';
  if (st === 'NOERROR') return 'good';
  return 'mute';
}

/** An empty-state block. */
export function empty(text, testid) {
  return h('div', { class: 'empty', testid }, text);
}

/** A key/value grid: [[label, value, testid?], ...]. */
export function kv(rows) {
  return h(
    'dl',
    { class: 'kv' },
    rows
      .filter((r) => r)
      .map(([k, v, testid]) => [h('dt', null, k), h('dd', { testid }, v === '' || v === undefined || v === null ? '–' : v)]),
  );
}
