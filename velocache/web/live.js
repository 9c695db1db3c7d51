// Live: every request, query, SIP message and TLS flow as it happens. The WebSocket
// (`/v1/live/ws`) sends one record per frame, or `{"dropped": n}` when this browser fell behind
// (the daemon never waits for it). The page keeps the last MAX_RECORDS records and draws the
// newest matching rows a few times a second, so a feed of tens of thousands of records a
// second costs the browser one JSON.parse each and nothing more.
import { get } from './api.js';
import { badge, bytes, cacheClass, clock, h, micros, mount, num, statusClass } from './util.js';

/** Records the page keeps (the daemon's history holds its own, `[admin] live_history`). */
export const MAX_RECORDS = 5000;
/** Rows drawn at once (the newest matching ones): more than a screen, few enough that a redraw
 * stays cheap on a gateway's own cores. */
const MAX_ROWS = 100;
/** How often the table is redrawn while records arrive, ms. */
const DRAW_EVERY = 250;

const SERVICES = ['http', 'https', 'dns', 'sip', 'tls'];
const CACHE_RESULTS = ['hit', 'miss', 'revalidated', 'stale', 'bypass', 'ghost', 'kernel_hit', 'local'];

const state = {
  records: [],
  bySeq: new Map(),
  received: 0,
  dropped: 0,
  droppedBase: 0,
  paused: false,
  pendingWhilePaused: 0,
  filters: { service: '', client: '', host: '', status: '', cache: '' },
  selected: null,
  dirty: false,
  connected: false,
  ws: null,
  wanted: false,
  retry: 500,
  timer: null,
};

let ui = null;

/** The record with this `seq`, if the page still keeps it. */
export function recordBySeq(seq) {
  return state.bySeq.get(Number(seq)) || null;
}

/** Mark a row as the one the inspector shows. */
export function select(seq) {
  state.selected = seq;
  state.dirty = true;
}

function keep(r) {
  if (state.bySeq.has(r.seq)) return;
  state.records.push(r);
  state.bySeq.set(r.seq, r);
  state.received += 1;
  if (state.paused) state.pendingWhilePaused += 1;
  // Trim in batches: one splice per 10 % over the bound.
  if (state.records.length > MAX_RECORDS * 1.1) {
    const gone = state.records.splice(0, state.records.length - MAX_RECORDS);
    for (const g of gone) state.bySeq.delete(g.seq);
  }
  state.dirty = true;
}

function onMessage(ev) {
  let m;
  try {
    m = JSON.parse(ev.data);
  } catch {
    return;
  }
  if (m && typeof m.dropped === 'number' && m.seq === undefined) {
    state.dropped = state.droppedBase + m.dropped;
    state.dirty = true;
    return;
  }
  if (state.seeding) state.seeding.push(m);
  else keep(m);
}

/** Open the feed: connect the WebSocket first (queueing), then seed from the history. */
export function start() {
  state.wanted = true;
  if (state.ws) return;
  connect();
  if (!state.timer) state.timer = setInterval(draw, DRAW_EVERY);
}

/** Close the feed (logout). */
export function stop() {
  state.wanted = false;
  if (state.ws) state.ws.close();
  state.ws = null;
  clearInterval(state.timer);
  state.timer = null;
}

function connect() {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/live/ws`;
  const ws = new WebSocket(url);
  state.ws = ws;
  state.seeding = [];
  ws.onmessage = onMessage;
  ws.onopen = async () => {
    state.connected = true;
    state.retry = 500;
    state.dirty = true;
    try {
      const hist = await get(`/v1/live/history?limit=${MAX_RECORDS}`);
      for (const r of hist.records || []) keep(r);
    } catch {
      // The feed still works without its history.
    }
    const queued = state.seeding || [];
    state.seeding = null;
    for (const r of queued) keep(r);
  };
  ws.onclose = () => {
    state.connected = false;
    state.dirty = true;
    state.seeding = null;
    state.droppedBase = state.dropped;
    if (state.ws === ws) state.ws = null;
    if (state.wanted) {
      setTimeout(() => state.wanted && !state.ws && connect(), state.retry);
      state.retry = Math.min(state.retry * 2, 10_000);
    }
  };
}

function matches(r, f) {
  if (f.service && r.service !== f.service) return false;
  if (f.cache && r.cache !== f.cache) return false;
  if (f.client && !(r.client || '').includes(f.client)) return false;
  if (f.host && !(r.host || '').toLowerCase().includes(f.host.toLowerCase())) return false;
  if (f.status && !String(r.status || '').toLowerCase().startsWith(f.status.toLowerCase())) return false;
  return true;
}

/** Rows already built, by seq: a redraw moves them instead of building new ones, so a click
 * that lands while the list redraws still reaches its row. */
const rowCache = new Map();
let drawnSeqs = '';

function row(r) {
  const cached = rowCache.get(r.seq);
  if (cached) return cached;
  const what = r.count > 1 ? `${r.what} ×${r.count}` : r.what;
  const tr = h(
    'tr',
    {
      testid: 'live-row',
      dataset: { seq: r.seq, service: r.service, id: r.id || '' },
      onclick: () => {
        select(r.seq);
        location.hash = `#/inspector/${r.seq}`;
      },
    },
    h('td', { class: 'mono dim' }, clock(r.ts_ms)),
    h('td', null, badge(r.service, `svc-${r.service}`)),
    h('td', { class: 'mono', dataset: { col: 'client' } }, r.client),
    h('td', { class: 'host', dataset: { col: 'host' }, title: r.host }, r.host),
    h('td', { class: 'what mono', dataset: { col: 'what' }, title: r.what }, what),
    h('td', { dataset: { col: 'status' } }, badge(r.status, statusClass(r.status))),
    h('td', { dataset: { col: 'cache' } }, r.cache ? badge(r.cache, cacheClass(r.cache)) : ''),
    h('td', { class: 'num' }, r.bytes ? bytes(r.bytes) : ''),
    h('td', { class: 'num' }, micros(r.duration_us)),
    h('td', { class: 'dim', dataset: { col: 'rule' } }, r.rule),
  );
  rowCache.set(r.seq, tr);
  return tr;
}

let lastDraw = { at: 0, received: 0 };

function draw() {
  if (!ui || !state.dirty) return;
  // A busy feed (more than 20 new records since the last draw) is drawn once a second, not four
  // times: the rows move too fast to read anyway, and every redraw is layout and paint on the
  // machine that may be the gateway itself (`cargo xtask bench web`).
  const now = Date.now();
  if (state.received - lastDraw.received > 20 && now - lastDraw.at < 4 * DRAW_EVERY) return;
  lastDraw = { at: now, received: state.received };
  state.dirty = false;
  ui.status.textContent = state.connected ? 'connected' : 'reconnecting…';
  ui.status.className = `conn ${state.connected ? 'on' : 'off'}`;
  ui.kept.textContent = num(state.records.length);
  ui.received.textContent = num(state.received);
  ui.dropped.textContent = num(state.dropped);
  ui.dropped.parentElement.classList.toggle('alert', state.dropped > 0);
  ui.pending.textContent = state.paused && state.pendingWhilePaused ? `${num(state.pendingWhilePaused)} new while paused` : '';
  if (state.paused) return;
  const f = state.filters;
  const shown = [];
  let matched = 0;
  for (let i = state.records.length - 1; i >= 0; i -= 1) {
    const r = state.records[i];
    if (!matches(r, f)) continue;
    matched += 1;
    if (shown.length < MAX_ROWS) shown.push(r);
  }
  ui.shown.textContent = num(matched);
  ui.none.hidden = shown.length > 0;
  const seqs = shown.map((r) => r.seq).join(',');
  if (seqs !== drawnSeqs) {
    drawnSeqs = seqs;
    const rows = shown.map(row);
    const keep = new Set(shown.map((r) => r.seq));
    for (const seq of rowCache.keys()) if (!keep.has(seq)) rowCache.delete(seq);
    mount(ui.body, rows);
  }
  for (const [seq, tr] of rowCache) tr.classList.toggle('selected', seq === state.selected);
}

function filterInput(key, placeholder) {
  return h('input', {
    type: 'search',
    placeholder,
    testid: `live-filter-${key}`,
    oninput: (e) => {
      state.filters[key] = e.target.value.trim();
      state.dirty = true;
    },
  });
}

function filterSelect(key, label, options) {
  return h(
    'select',
    {
      testid: `live-filter-${key}`,
      title: label,
      onchange: (e) => {
        state.filters[key] = e.target.value;
        state.dirty = true;
      },
    },
    h('option', { value: '' }, `${label}: all`),
    options.map((o) => h('option', { value: o }, o)),
  );
}

function togglePause(btn) {
  state.paused = !state.paused;
  state.pendingWhilePaused = 0;
  btn.textContent = state.paused ? 'Resume' : 'Pause';
  btn.classList.toggle('active', state.paused);
  btn.dataset.paused = String(state.paused);
  state.dirty = true;
}

export const view = {
  id: 'live',
  title: 'Live',
  mount(root) {
    const pause = h('button', { testid: 'live-pause', dataset: { paused: 'false' } }, 'Pause');
    pause.addEventListener('click', () => togglePause(pause));
    const clear = h(
      'button',
      {
        testid: 'live-clear',
        class: 'ghost',
        onclick: () => {
          state.records = [];
          state.bySeq.clear();
          rowCache.clear();
          drawnSeqs = '';
          state.dirty = true;
        },
      },
      'Clear',
    );
    ui = {
      status: h('span', { class: 'conn', testid: 'live-connection' }, '…'),
      kept: h('b', { testid: 'live-kept' }, '0'),
      received: h('b', { testid: 'live-received' }, '0'),
      shown: h('b', { testid: 'live-shown' }, '0'),
      dropped: h('b', { testid: 'live-dropped' }, '0'),
      pending: h('span', { class: 'pending' }),
      body: h('tbody', { testid: 'live-rows' }),
      none: h('div', { class: 'empty' }, 'No records yet: traffic through the gateway appears here as it happens.'),
    };
    mount(
      root,
      h(
        'div',
        { class: 'toolbar' },
        filterSelect('service', 'service', SERVICES),
        filterInput('client', 'client'),
        filterInput('host', 'host / name / Call-ID'),
        filterInput('status', 'status'),
        filterSelect('cache', 'cache', CACHE_RESULTS),
        h('span', { class: 'spacer' }),
        ui.pending,
        pause,
        clear,
      ),
      h(
        'div',
        { class: 'counters' },
        ui.status,
        h('span', null, 'matching ', ui.shown),
        h('span', null, 'kept ', ui.kept, ` (of at most ${num(MAX_RECORDS)})`),
        h('span', null, 'received ', ui.received),
        h('span', { title: 'records the gateway skipped for this browser because it read too slowly' }, 'dropped ', ui.dropped),
      ),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'grid live' },
          h(
            'thead',
            null,
            h(
              'tr',
              null,
              ['time', 'service', 'client', 'host', 'what', 'status', 'cache', 'bytes', 'duration', 'rule'].map((c) =>
                h('th', { class: ['bytes', 'duration'].includes(c) ? 'num' : '' }, c),
              ),
            ),
          ),
          ui.body,
        ),
        ui.none,
      ),
    );
    state.dirty = true;
  },
  show() {
    state.dirty = true;
    draw();
  },
};
