// Cache: the HTTP cache's objects, as `velocache cache ls/show/purge/warm` see them
// (`/v1/cache/list`, `/show`, `/purge`, `/warm`). Listing and showing are allowed to read-only
// sessions; purging and warming are not.
import { ApiError, canWrite, post } from './api.js';
import { badge, bytes, dateSecs, empty, h, kv, mount, num, statusClass } from './util.js';

const LIMIT = 500;
let ui = null;

function why(e) {
  return e instanceof ApiError && e.status === 403 ? 'this session is read-only' : e.message;
}

async function list() {
  const pattern = ui.pattern.value.trim();
  mount(ui.list, h('div', { class: 'loading' }, 'Loading…'));
  try {
    const r = await post('/v1/cache/list', { pattern: pattern || undefined, limit: LIMIT });
    const entries = r.entries || [];
    ui.total.textContent = `${num(entries.length)} shown of ${num(r.total)} objects`;
    if (!entries.length) {
      mount(ui.list, empty('No stored object matches.', 'cache-empty'));
      return;
    }
    mount(
      ui.list,
      h(
        'table',
        { class: 'grid compact' },
        h('thead', null, h('tr', null, ['URL', 'status', 'size', 'type', 'stored', 'fresh until', 'hits'].map((c) => h('th', null, c)))),
        h(
          'tbody',
          { testid: 'cache-rows' },
          entries.map((e) =>
            h(
              'tr',
              { testid: 'cache-row', dataset: { url: e.url }, onclick: () => show(e.url) },
              h('td', { class: 'mono ellipsis', title: e.url }, e.url),
              h('td', null, badge(String(e.status), statusClass(e.status))),
              h('td', { class: 'num' }, bytes(e.size_bytes)),
              h('td', null, e.content_type || '–'),
              h('td', null, dateSecs(e.stored_at)),
              h('td', null, dateSecs(e.fresh_until)),
              h('td', { class: 'num' }, e.hits === null || e.hits === undefined ? '–' : num(e.hits)),
            ),
          ),
        ),
      ),
    );
  } catch (e) {
    mount(ui.list, h('div', { class: 'error' }, `Cannot list the cache: ${why(e)}`));
  }
}

async function show(url) {
  try {
    const e = await post('/v1/cache/show', { url });
    mount(
      ui.detail,
      h(
        'section',
        { class: 'card', testid: 'cache-detail' },
        h('h3', null, 'Object'),
        kv([
          ['URL', h('span', { class: 'mono' }, e.url)],
          ['key', h('span', { class: 'mono' }, e.key || '–')],
          ['status', String(e.status)],
          ['size', bytes(e.size_bytes)],
          ['content type', e.content_type],
          ['stored', dateSecs(e.stored_at)],
          ['fresh until', dateSecs(e.fresh_until)],
          ['hits', e.hits === null || e.hits === undefined ? '–' : num(e.hits)],
          ...Object.entries(e.details || {}).map(([k, v]) => [k, h('span', { class: 'mono' }, v)]),
        ]),
        h('div', { class: 'toolbar' }, h('button', { class: 'danger', dataset: { mutates: '' }, disabled: !canWrite(), testid: 'cache-purge-one', onclick: () => purge(e.url) }, 'Purge this object')),
      ),
    );
  } catch (err) {
    mount(ui.detail, h('div', { class: 'error' }, `Cannot show ${url}: ${why(err)}`));
  }
}

async function purge(pattern) {
  if (!pattern) return;
  try {
    const r = await post('/v1/cache/purge', { pattern, shared: false });
    mount(ui.message, h('div', { class: 'banner good', testid: 'cache-message' }, `Purged ${num(r.purged)} object${r.purged === 1 ? '' : 's'} (${bytes(r.bytes)}) matching ${r.pattern}.`));
    mount(ui.detail);
    list();
  } catch (e) {
    mount(ui.message, h('div', { class: 'banner bad', testid: 'cache-message' }, `Purge failed: ${why(e)}`));
  }
}

async function warm() {
  const urls = ui.warm.value
    .split('\n')
    .map((x) => x.trim())
    .filter(Boolean);
  if (!urls.length) return;
  mount(ui.message, h('div', { class: 'banner', testid: 'cache-message' }, `Fetching ${urls.length} URL${urls.length === 1 ? '' : 's'}…`));
  try {
    const r = await post('/v1/cache/warm', { urls, wait: true });
    mount(
      ui.message,
      h(
        'div',
        { class: 'banner good', testid: 'cache-message' },
        `Warmed ${r.total}: `,
        (r.results || []).map((x) => h('span', { class: 'warm-result' }, badge(x.ok ? x.outcome || 'ok' : 'failed', x.ok ? 'good' : 'bad'), ` ${x.url} `)),
      ),
    );
    list();
  } catch (e) {
    mount(ui.message, h('div', { class: 'banner bad', testid: 'cache-message' }, `Warm failed: ${why(e)}`));
  }
}

export const view = {
  id: 'cache',
  title: 'Cache',
  mount(el) {
    ui = {
      pattern: h('input', { type: 'search', placeholder: 'URL or glob, e.g. */images/*', testid: 'cache-pattern', class: 'wide' }),
      total: h('span', { class: 'dim', testid: 'cache-total' }),
      list: h('div'),
      detail: h('div'),
      message: h('div'),
      warm: h('textarea', { rows: 3, placeholder: 'URLs to fetch into the cache, one per line', testid: 'cache-warm-urls', spellcheck: 'false' }),
    };
    ui.pattern.addEventListener('keydown', (e) => e.key === 'Enter' && list());
    mount(
      el,
      h(
        'div',
        { class: 'cache-view', testid: 'cache' },
        h(
          'div',
          { class: 'toolbar' },
          ui.pattern,
          h('button', { testid: 'cache-search', onclick: list }, 'List'),
          h(
            'button',
            {
              class: 'danger',
              testid: 'cache-purge',
              dataset: { mutates: '' },
              onclick: () => {
                const p = ui.pattern.value.trim();
                if (p && window.confirm(`Purge every object matching ${p}?`)) purge(p);
              },
            },
            'Purge matching',
          ),
          h('span', { class: 'spacer' }),
          ui.total,
        ),
        ui.message,
        h('div', { class: 'grid2 wide-left' }, h('section', { class: 'card' }, h('h3', null, 'Stored objects'), ui.list), h('div', null, ui.detail, h('section', { class: 'card' }, h('h3', null, 'Warm'), ui.warm, h('div', { class: 'toolbar' }, h('button', { testid: 'cache-warm', dataset: { mutates: '' }, onclick: warm }, 'Fetch into cache'))))),
      ),
    );
  },
  show() {
    list();
  },
};
