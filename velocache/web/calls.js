// Calls: SIP calls in progress and recent ones (`/v1/calls`); for the chosen call a sngrep-like
// ladder of every message (`/v1/calls/show`), per-direction RTP figures, and an on-demand
// capture of its SIP and RTP to pcap (the XDP fast path copies a call's packets to userspace
// only while it is being captured).
import { ApiError, canWrite, get, post } from './api.js';
import { badge, bytes, clock, empty, h, kv, mount, num, s } from './util.js';

const POLL_MS = 3000;
let ui = null;
let timer = null;
let chosen = null;

function fmt(v, digits, unit) {
  return v === null || v === undefined ? '–' : `${Number(v).toFixed(digits)}${unit || ''}`;
}

function callRow(c) {
  return h(
    'tr',
    {
      testid: 'call-row',
      dataset: { callId: c.call_id },
      class: c.call_id === chosen ? 'selected' : '',
      onclick: () => {
        location.hash = `#/calls/${encodeURIComponent(c.call_id)}`;
      },
    },
    h('td', { class: 'mono ellipsis', title: c.call_id }, c.call_id),
    h('td', { class: 'mono' }, c.from),
    h('td', { class: 'mono' }, c.to),
    h('td', null, badge(c.state, c.state === 'confirmed' || c.state === 'active' ? 'good' : 'mute')),
    h('td', { class: 'num' }, c.duration_ms ? `${(c.duration_ms / 1000).toFixed(1)} s` : '–'),
    h('td', { class: 'num' }, fmt((c.media || []).map((m) => m.mos).filter((m) => m !== null && m !== undefined).sort()[0], 2)),
  );
}

async function refreshList() {
  let r;
  try {
    r = await get('/v1/calls');
  } catch (e) {
    mount(ui.list, h('div', { class: 'error' }, `Cannot list calls: ${e.message}`));
    return;
  }
  const calls = [...(r.active || []), ...(r.recent || [])];
  if (!calls.length) {
    mount(ui.list, empty('No calls seen yet: SIP calls through the gateway appear here.', 'calls-empty'));
    return;
  }
  mount(
    ui.list,
    h(
      'table',
      { class: 'grid compact calls' },
      h('thead', null, h('tr', null, ['Call-ID', 'from', 'to', 'state', 'duration', 'MOS'].map((c) => h('th', null, c)))),
      h('tbody', { testid: 'call-rows' }, calls.map(callRow)),
    ),
  );
}

/** The ladder: one column per endpoint, one arrow per message, times on the left. */
function ladder(messages) {
  const cols = [];
  for (const m of messages) {
    for (const a of [m.src, m.dst]) if (!cols.includes(a)) cols.push(a);
  }
  const colW = 230;
  const left = 110;
  const top = 46;
  const rowH = 30;
  const W = left + Math.max(cols.length, 2) * colW;
  const H = top + messages.length * rowH + 20;
  const x = (a) => left + cols.indexOf(a) * colW + colW / 2;
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'ladder', width: W, height: H, 'data-testid': 'call-ladder' });
  svg.append(
    s('defs', null, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0L10,5L0,10z', class: 'arrowhead' }))),
  );
  cols.forEach((a) => {
    svg.append(
      s('rect', { x: x(a) - 95, y: 6, width: 190, height: 24, rx: 4, class: 'endpoint' }),
      s('text', { x: x(a), y: 22, 'text-anchor': 'middle', class: 'endpoint-label' }, a),
      s('line', { x1: x(a), x2: x(a), y1: 30, y2: H - 6, class: 'lifeline' }),
    );
  });
  const t0 = messages.length ? messages[0].ts_ms : 0;
  messages.forEach((m, i) => {
    const y = top + i * rowH + 14;
    const resp = /^\d/.test(m.label);
    const code = resp ? Number(m.label.slice(0, 3)) : 0;
    const cls = !resp ? 'req' : code >= 400 ? 'fail' : code >= 200 ? 'ok' : 'prov';
    const x1 = x(m.src);
    const x2 = x(m.dst);
    const g = s('g', { class: `msg ${cls}`, 'data-testid': 'ladder-message', 'data-label': m.label });
    g.append(
      s('text', { x: 6, y: y + 4, class: 'ts' }, `+${((m.ts_ms - t0) / 1000).toFixed(3)}s`),
      s('line', { x1, x2: x2 + (x2 > x1 ? -2 : 2), y1: y, y2: y, 'marker-end': 'url(#arrow)' }),
      s('text', { x: (x1 + x2) / 2, y: y - 5, 'text-anchor': 'middle', class: 'label' }, `${m.label}${m.cseq ? `  (${m.cseq})` : ''}`),
      s('title', null, `${clock(m.ts_ms)} ${m.transport} ${m.src} → ${m.dst}, ${m.bytes} bytes`),
    );
    svg.append(g);
  });
  return h('div', { class: 'ladder-wrap' }, svg);
}

function streams(list) {
  if (!list || !list.length) return empty('No RTP seen for this call.', 'call-streams');
  return h(
    'table',
    { class: 'grid compact', testid: 'call-streams' },
    h(
      'thead',
      null,
      h('tr', null, ['direction', 'kind', 'from', 'to', 'codec', 'packets', 'by XDP', 'bytes', 'lost', 'jitter', 'MOS'].map((c) => h('th', null, c))),
    ),
    h(
      'tbody',
      null,
      list.map((st) =>
        h(
          'tr',
          { testid: 'call-stream' },
          h('td', null, (st.direction || '').replace('->', ' → ')),
          h('td', null, st.kind || '–'),
          h('td', { class: 'mono' }, st.src),
          h('td', { class: 'mono' }, st.dst),
          h('td', null, st.codec || '–'),
          h('td', { class: 'num' }, num(st.packets)),
          h('td', { class: 'num' }, st.fast_path_packets === undefined ? '–' : num(st.fast_path_packets)),
          h('td', { class: 'num' }, st.bytes === undefined ? '–' : bytes(st.bytes)),
          h('td', { class: 'num' }, `${num(st.lost)}${st.loss_pct ? ` (${fmt(st.loss_pct, 1, ' %')})` : ''}`),
          h('td', { class: 'num' }, fmt(st.jitter_ms, 2, ' ms')),
          h('td', { class: 'num' }, fmt(st.mos, 2)),
        ),
      ),
    ),
  );
}

function captureText(cap) {
  if (!cap) return 'not captured';
  const what = `${num(cap.packets)} packets${cap.rtp_packets ? ` (${num(cap.rtp_packets)} RTP)` : ''}, ${bytes(cap.bytes)}`;
  if (cap.active) return `capture running: ${what}`;
  return `capture stopped${cap.stopped && cap.stopped !== 'stopped' ? ` (${cap.stopped})` : ''}: ${what}`;
}

async function capture(path, callId) {
  try {
    await post(path, { call_id: callId });
    await showCall(callId);
  } catch (e) {
    const why = e instanceof ApiError && e.status === 403 ? 'this session is read-only' : e.message;
    mount(ui.note, h('div', { class: 'banner bad', testid: 'call-message' }, `Capture: ${why}`));
  }
}

async function showCall(callId) {
  let c;
  try {
    c = await get(`/v1/calls/show?call_id=${encodeURIComponent(callId)}`);
  } catch (e) {
    mount(ui.detail, h('div', { class: 'error', testid: 'call-detail' }, `Cannot show call ${callId}: ${e.message}`));
    return;
  }
  const cap = c.capture;
  const active = Boolean(cap && cap.active);
  const write = canWrite();
  mount(
    ui.detail,
    h(
      'div',
      { testid: 'call-detail', dataset: { callId: c.call_id } },
      h('div', { class: 'inspect-head' }, badge('sip', 'svc-sip'), h('span', { class: 'mono big' }, c.call_id), badge(c.state, 'info')),
      kv([
        ['from', c.from],
        ['to', c.to],
        ['messages', `${(c.messages || []).length}${c.omitted ? ` (${num(c.omitted)} older ones no longer kept)` : ''}`],
      ]),
      h(
        'div',
        { class: 'toolbar' },
        h('span', { testid: 'capture-state' }, captureText(cap)),
        h('span', { class: 'spacer' }),
        h('button', { testid: 'capture-start', dataset: { mutates: '' }, disabled: active || !write, onclick: () => capture('/v1/calls/capture', c.call_id) }, '● Start capture'),
        h('button', { testid: 'capture-stop', dataset: { mutates: '' }, disabled: !active || !write, onclick: () => capture('/v1/calls/capture/stop', c.call_id) }, '■ Stop'),
        h('a', { class: 'button', testid: 'pcap-download', href: `/v1/calls/pcap?call_id=${encodeURIComponent(c.call_id)}`, download: `${c.call_id.replace(/[^A-Za-z0-9._-]/g, '_')}.pcap` }, '⤓ Download pcap'),
      ),
      ui.note,
      h('section', { class: 'card' }, h('h3', null, 'Ladder'), (c.messages || []).length ? ladder(c.messages) : empty('No messages kept for this call.')),
      h('section', { class: 'card' }, h('h3', null, 'RTP per direction'), streams(c.streams)),
    ),
  );
}

export const view = {
  id: 'calls',
  title: 'Calls',
  mount(el) {
    ui = {
      list: h('div', { class: 'calls-list' }),
      detail: h('div', { class: 'calls-detail' }, empty('Pick a call to see its ladder.')),
      note: h('div'),
    };
    mount(el, h('div', { class: 'calls-view', testid: 'calls' }, h('section', { class: 'card' }, h('h3', null, 'Calls'), ui.list), ui.detail));
  },
  show(arg) {
    chosen = arg ? decodeURIComponent(arg) : null;
    mount(ui.note);
    refreshList();
    if (chosen) showCall(chosen);
    clearInterval(timer);
    timer = setInterval(() => {
      refreshList();
      if (chosen) showCall(chosen);
    }, POLL_MS);
  },
  hide() {
    clearInterval(timer);
    timer = null;
  },
};
