// Analytics: `/v1/analytics` every 5 s while the tab is open — the last hour as 5-second points
// the daemon keeps in a ring (hit ratio, bytes from the cache and from origins, DNS, calls,
// kernel counters), plus top hosts and clients summed over it.
import { get } from './api.js';
import { barList, histogram, timeChart } from './charts.js';
import { bytes, empty, h, mount, num } from './util.js';

const POLL_MS = 5000;
let root = null;
let timer = null;
let last = null;

function tile(label, value, testid, sub) {
  return h('div', { class: 'tile', testid }, h('div', { class: 'tile-label' }, label), h('div', { class: 'tile-value' }, value), sub ? h('div', { class: 'tile-sub' }, sub) : null);
}

function card(title, body, cls) {
  return h('section', { class: `card ${cls || ''}` }, h('h3', null, title), body);
}

function usLabel(us) {
  if (us < 1000) return `${us}µs`;
  if (us < 1_000_000) return `${us / 1000}ms`;
  return `${us / 1_000_000}s`;
}

function render(a) {
  const pts = a.points || [];
  const iv = a.interval_secs || 5;
  const lastPt = pts[pts.length - 1] || {};
  const prevPt = pts[pts.length - 2] || null;
  const requests = pts.reduce((x, p) => x + p.requests, 0);
  const activeCalls = lastPt.extra ? lastPt.extra.active_calls : 0;
  const mos = lastPt.extra ? lastPt.extra.mos : null;
  const dnsRate = lastPt.dns_queries ? lastPt.dns_queries / iv : 0;
  const series = (f) => pts.map((p) => [p.ts_ms, f(p)]);
  const buckets = a.dns_buckets_us || [];
  const histLabels = [...buckets.map((b) => `≤${usLabel(b)}`), `>${usLabel(buckets[buckets.length - 1] || 0)}`];
  const kernel = (lastPt.extra && lastPt.extra.kernel) || [];
  const prevKernel = new Map((prevPt && prevPt.extra && prevPt.extra.kernel) || []);
  mount(
    root,
    h(
      'div',
      { class: 'tiles' },
      tile('hit ratio (last hour)', `${(a.hit_ratio * 100).toFixed(1)} %`, 'analytics-hit-ratio', `${num(requests)} requests`),
      tile('bytes saved', bytes(a.bytes_saved), 'analytics-bytes-saved', 'sent from the cache'),
      tile('DNS queries/s', dnsRate.toFixed(1), 'analytics-dns-rate', 'last interval'),
      tile('active calls', num(activeCalls), 'analytics-active-calls'),
      tile('mean MOS', mos === null || mos === undefined ? '–' : mos.toFixed(2), 'analytics-mos', 'calls in progress'),
    ),
    h(
      'div',
      { class: 'grid2' },
      card(
        'Hit ratio',
        timeChart([{ name: 'hit ratio', cls: 's1', fill: true, points: series((p) => (p.requests ? (p.hits / p.requests) * 100 : 0)) }], {
          yMax: 100,
          yFormat: (v) => `${v}%`,
          testid: 'chart-hit-ratio',
        }),
      ),
      card(
        'Bytes per second: from cache (saved) and from origins',
        timeChart(
          [
            { name: 'from cache', cls: 's1', fill: true, points: series((p) => p.bytes_cache / iv) },
            { name: 'from origins', cls: 's2', points: series((p) => p.bytes_origin / iv) },
          ],
          { yFormat: (v) => `${bytes(v)}`, testid: 'chart-bytes' },
        ),
      ),
      card(
        'DNS queries per second',
        timeChart(
          [
            { name: 'queries', cls: 's3', fill: true, points: series((p) => p.dns_queries / iv) },
            { name: 'from cache', cls: 's1', points: series((p) => p.dns_hits / iv) },
          ],
          { yFormat: (v) => v.toFixed(v < 10 ? 1 : 0), testid: 'chart-dns' },
        ),
      ),
      card('DNS latency (last hour)', histogram(histLabels, a.dns_latency || [], { testid: 'chart-dns-latency' })),
      card(
        'Calls in progress and MOS',
        h(
          'div',
          null,
          timeChart([{ name: 'active calls', cls: 's4', fill: true, points: series((p) => (p.extra ? p.extra.active_calls : 0)) }], {
            height: 110,
            integer: true,
            testid: 'chart-calls',
          }),
          timeChart(
            [{ name: 'MOS', cls: 's2', points: pts.filter((p) => p.extra && p.extra.mos !== null && p.extra.mos !== undefined).map((p) => [p.ts_ms, p.extra.mos]) }],
            { height: 110, yMax: 5, yFormat: (v) => v.toFixed(1), testid: 'chart-mos' },
          ),
        ),
      ),
      card(
        'Kernel counters',
        kernel.length
          ? h(
              'table',
              { class: 'grid compact', testid: 'analytics-kernel' },
              h('thead', null, h('tr', null, h('th', null, 'counter'), h('th', { class: 'num' }, 'total'), h('th', { class: 'num' }, 'per second'))),
              h(
                'tbody',
                null,
                kernel.map(([k, v]) => {
                  const before = prevKernel.get(k);
                  const rate = before === undefined ? null : Math.max(0, v - before) / iv;
                  return h('tr', null, h('td', { class: 'mono' }, k), h('td', { class: 'num' }, num(v)), h('td', { class: 'num' }, rate === null ? '–' : rate.toFixed(1)));
                }),
              ),
            )
          : empty('No kernel counters yet.', 'analytics-kernel'),
      ),
      card('Top hosts by bytes', barList(a.top_hosts || [], bytes, 'analytics-top-hosts')),
      card('Top clients by bytes', barList(a.top_clients || [], bytes, 'analytics-top-clients')),
    ),
  );
}

async function poll() {
  try {
    last = await get('/v1/analytics');
    render(last);
  } catch (e) {
    mount(root, h('div', { class: 'error' }, `Cannot load analytics: ${e.message}`));
  }
}

export const view = {
  id: 'analytics',
  title: 'Analytics',
  mount(el) {
    root = h('div', { class: 'analytics', testid: 'analytics' });
    mount(el, root);
    mount(root, h('div', { class: 'loading' }, 'Loading…'));
  },
  show() {
    if (last) render(last);
    poll();
    clearInterval(timer);
    timer = setInterval(poll, POLL_MS);
  },
  hide() {
    clearInterval(timer);
    timer = null;
  },
};
