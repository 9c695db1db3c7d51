// Inspector: one record in depth. An HTTP(S) request is fetched from `/v1/live/inspect?id=` (the
// daemon keeps the latest exchanges): both sides' heads, the cache's decision and why, timing
// and where the bytes came from. DNS, TLS and SIP records show what the record carries.
import { ApiError, get } from './api.js';
import { recordBySeq, select } from './live.js';
import { badge, bytes, cacheClass, clock, empty, h, kv, micros, millis, mount, statusClass } from './util.js';

let root = null;

function headers(title, line, list, testid) {
  return h(
    'div',
    { class: 'headers', testid },
    h('h4', null, title),
    line ? h('div', { class: 'startline mono' }, line) : h('div', { class: 'startline dim' }, 'nothing sent'),
    list && list.length
      ? h(
          'table',
          { class: 'hdrs' },
          h(
            'tbody',
            null,
            list.map(([k, v]) => h('tr', null, h('th', { class: 'mono' }, k), h('td', { class: 'mono' }, v))),
          ),
        )
      : null,
  );
}

function side(title, head, testid) {
  return h(
    'section',
    { class: 'card', testid },
    h('h3', null, title),
    h(
      'div',
      { class: 'two' },
      headers('Request', head.request_line, head.request_headers, `${testid}-request`),
      headers('Response', head.status_line, head.response_headers, `${testid}-response`),
    ),
  );
}

function yesno(b) {
  return b ? 'yes' : 'no';
}

function cacheCard(c) {
  return h(
    'section',
    { class: 'card', testid: 'inspector-cache' },
    h('h3', null, 'Cache decision ', badge(c.status, cacheClass(c.status))),
    h('p', { class: 'explain', testid: 'inspector-cache-explanation' }, c.explanation || 'No explanation recorded.'),
    kv([
      ['result', c.status, 'inspector-cache-status'],
      ['rule', c.rule ? `${c.rule}${c.action ? ` (${c.action})` : ''}` : 'none matched', 'inspector-cache-rule'],
      ['key', h('span', { class: 'mono' }, c.key || '–'), 'inspector-cache-key'],
      ['freshness lifetime', c.freshness_lifetime_secs === null || c.freshness_lifetime_secs === undefined ? '–' : `${c.freshness_lifetime_secs} s`],
      ['age', c.age_secs === null || c.age_secs === undefined ? '–' : `${c.age_secs} s`],
      ['revalidated', yesno(c.revalidated)],
      ['collapsed into a download', yesno(c.collapsed)],
      ['stale because the origin failed', yesno(c.stale_if_error)],
      c.not_stored ? ['not stored because', c.not_stored, 'inspector-cache-not-stored'] : null,
    ]),
  );
}

function timingCard(t) {
  const total = Math.max(t.total_ms || 0, 0.001);
  const marks = [
    ['request sent to origin', t.upstream_sent_ms, 'origin'],
    ['first byte from origin (TTFB)', t.origin_ttfb_ms, 'origin'],
    ['head sent to client', t.client_ttfb_ms, 'client'],
    ['done', t.total_ms, 'done'],
  ];
  const bar = h(
    'div',
    { class: 'waterfall' },
    marks
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([label, v, k]) => {
        const el = h('div', { class: `mark ${k}`, title: `${label}: ${millis(v)}` });
        el.style.left = `${Math.min(100, (v / total) * 100)}%`;
        return el;
      }),
  );
  const fromCache = t.bytes_from_cache || 0;
  const fromOrigin = t.bytes_from_origin || 0;
  const all = Math.max(fromCache + fromOrigin, 1);
  const split = h(
    'div',
    { class: 'split' },
    (() => {
      const a = h('div', { class: 'cache' });
      a.style.width = `${(fromCache / all) * 100}%`;
      return a;
    })(),
    (() => {
      const b = h('div', { class: 'origin' });
      b.style.width = `${(fromOrigin / all) * 100}%`;
      return b;
    })(),
  );
  return h(
    'section',
    { class: 'card', testid: 'inspector-timing' },
    h('h3', null, 'Timing and bytes'),
    bar,
    kv([
      ['started', clock(t.started_ms)],
      ['sent to origin after', millis(t.upstream_sent_ms)],
      ['TTFB from origin', millis(t.origin_ttfb_ms), 'inspector-origin-ttfb'],
      ['TTFB to client', millis(t.client_ttfb_ms)],
      ['total', millis(t.total_ms), 'inspector-total'],
    ]),
    split,
    kv([
      ['bytes from cache', bytes(fromCache), 'inspector-bytes-cache'],
      ['bytes from origin', bytes(fromOrigin), 'inspector-bytes-origin'],
    ]),
  );
}

function exchange(x, r) {
  return [
    h(
      'div',
      { class: 'inspect-head' },
      badge(x.service, `svc-${x.service}`),
      h('span', { class: 'mono big', testid: 'inspector-request' }, x.client_side.request_line || (r && r.what) || ''),
      badge(String(x.status || ''), statusClass(x.status)),
      badge(x.cache.status, cacheClass(x.cache.status)),
      x.complete ? null : badge('incomplete', 'bad'),
    ),
    kv([
      ['host', x.host],
      ['client', x.client],
      ['original destination', x.orig_dst],
      ['trace id', h('span', { class: 'mono' }, x.id), 'inspector-id'],
      x.error ? ['error', x.error] : null,
    ]),
    h('div', { class: 'cards' }, cacheCard(x.cache), timingCard(x.timing)),
    side('Client ↔ gateway', x.client_side, 'inspector-client-side'),
    x.origin_side && (x.origin_side.request_line || x.origin_side.status_line)
      ? side('Gateway ↔ origin', x.origin_side, 'inspector-origin-side')
      : h('section', { class: 'card', testid: 'inspector-origin-side' }, h('h3', null, 'Gateway ↔ origin'), empty('The origin was not asked: the answer came from the cache or the gateway.')),
  ];
}

function recordOnly(r, note) {
  const detail = r.detail || [];
  const title = {
    dns: 'DNS query',
    tls: 'TLS flow',
    sip: 'SIP message',
    http: 'HTTP request',
    https: 'HTTPS request',
  }[r.service] || r.service;
  const labels = {
    dns: ['name', 'type', 'rcode'],
    tls: ['server name (SNI)', 'ALPN', 'action'],
    sip: ['Call-ID', 'message', 'status'],
  }[r.service] || ['host', 'what', 'status'];
  return [
    h(
      'div',
      { class: 'inspect-head' },
      badge(r.service, `svc-${r.service}`),
      h('span', { class: 'mono big', testid: 'inspector-request' }, `${r.what} ${r.host}`),
      badge(r.status, statusClass(r.status)),
      r.cache ? badge(r.cache, cacheClass(r.cache)) : null,
    ),
    note ? h('p', { class: 'note' }, note) : null,
    h(
      'div',
      { class: 'cards' },
      h(
        'section',
        { class: 'card', testid: 'inspector-record' },
        h('h3', null, title),
        kv([
          [labels[0], h('span', { class: 'mono' }, r.host)],
          [labels[1], r.what],
          [labels[2], r.status],
          r.cache ? ['cache', r.cache, 'inspector-cache-status'] : null,
          ['client', r.client],
          r.direction ? ['direction', r.direction] : null,
          ['when', clock(r.ts_ms)],
          ['duration', micros(r.duration_us)],
          ['bytes', bytes(r.bytes)],
          r.count > 1 ? ['queries summarised', String(r.count)] : null,
          r.rule ? ['rule', r.rule] : null,
        ]),
      ),
      h(
        'section',
        { class: 'card', testid: 'inspector-detail' },
        h('h3', null, r.service === 'dns' ? 'Answers' : 'Detail'),
        detail.length
          ? h(
              'table',
              { class: 'hdrs' },
              h('tbody', null, detail.map(([k, v]) => h('tr', null, h('th', { class: 'mono' }, k), h('td', { class: 'mono' }, v)))),
            )
          : empty(r.service === 'dns' ? 'No answer records.' : 'Nothing more recorded.'),
        r.service === 'sip' && r.host ? h('p', null, h('a', { href: `#/calls/${encodeURIComponent(r.host)}`, testid: 'inspector-open-call' }, 'Open this call’s ladder →')) : null,
      ),
    ),
  ];
}

async function showSeq(seq) {
  const r = recordBySeq(seq);
  if (!r) {
    mount(root, empty('That record is no longer kept by this page. Pick a row in Live.', 'inspector-empty'));
    return;
  }
  select(r.seq);
  if ((r.service === 'http' || r.service === 'https') && r.id) {
    mount(root, h('div', { class: 'loading' }, 'Loading…'));
    try {
      const x = await get(`/v1/live/inspect?id=${encodeURIComponent(r.id)}`);
      mount(root, h('div', { testid: 'inspector-exchange' }, exchange(x, r)));
    } catch (e) {
      const why = e instanceof ApiError && e.status === 404 ? 'The gateway no longer keeps this exchange; the record is all there is.' : `Cannot load the exchange: ${e.message}`;
      mount(root, h('div', null, recordOnly(r, why)));
    }
    return;
  }
  mount(root, h('div', null, recordOnly(r)));
}

export const view = {
  id: 'inspector',
  title: 'Inspector',
  mount(el) {
    root = h('div', { class: 'inspector', testid: 'inspector' });
    mount(el, root);
    mount(root, empty('Pick a row in Live to see it here.', 'inspector-empty'));
  },
  show(arg) {
    if (arg) showSeq(arg);
  },
};
