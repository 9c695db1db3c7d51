// Rules: the rules file in an editor with line numbers. As you type, `/v1/rules/check` (the
// same checker as `velocache rules check`) marks errors at their line and key; Dry run shows
// which of the latest records each rule would match; Apply writes the file atomically and
// reloads (a file with errors is never written); Undo restores the previous file. The file on
// disk stays the source of truth: the editor loads it and sends its hash back with Apply, so a
// change made meanwhile by someone else is refused rather than overwritten.
import { ApiError, canWrite, get, post } from './api.js';
import { badge, debounce, h, kv, mount, num } from './util.js';

const CHECK_DELAY_MS = 300;
const DRY_RUN_LIMIT = 2000;

const st = { loaded: null, errors: [], checking: false, lastChecked: null, seq: 0 };
let ui = null;

function lineCount(text) {
  return text.split('\n').length;
}

function drawGutter() {
  const text = ui.text.value;
  const bad = new Map();
  for (const e of st.errors) {
    if (e.line > 0) bad.set(e.line, `${bad.has(e.line) ? `${bad.get(e.line)}\n` : ''}${e.key ? `${e.key}: ` : ''}${e.message}`);
  }
  const n = lineCount(text);
  const lines = [];
  for (let i = 1; i <= n; i += 1) {
    lines.push(
      h(
        'div',
        { class: bad.has(i) ? 'ln err' : 'ln', dataset: { line: i }, testid: bad.has(i) ? 'gutter-error' : undefined, title: bad.get(i) },
        String(i),
      ),
    );
  }
  mount(ui.gutter, lines);
  ui.gutter.scrollTop = ui.text.scrollTop;
}

function goToLine(line) {
  const lines = ui.text.value.split('\n');
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i += 1) pos += lines[i].length + 1;
  ui.text.focus();
  ui.text.setSelectionRange(pos, pos + (lines[line - 1] || '').length);
  const lh = parseFloat(getComputedStyle(ui.text).lineHeight) || 18;
  ui.text.scrollTop = Math.max(0, (line - 4) * lh);
}

function drawErrors() {
  if (!st.errors.length) {
    mount(ui.errors);
    return;
  }
  mount(
    ui.errors,
    h('h4', null, `${st.errors.length} error${st.errors.length > 1 ? 's' : ''}`),
    h(
      'ul',
      { class: 'errors' },
      st.errors.map((e) =>
        h(
          'li',
          { testid: 'rules-error', dataset: { line: e.line, key: e.key || '' }, onclick: () => e.line && goToLine(e.line) },
          h('span', { class: 'where' }, e.line ? `line ${e.line}` : 'file'),
          e.key ? h('code', null, e.key) : null,
          h('span', null, e.message),
        ),
      ),
    ),
  );
}

function setStatus(text, cls) {
  ui.status.textContent = text;
  ui.status.className = `check ${cls || ''}`;
}

const check = debounce(async () => {
  const seq = (st.seq += 1);
  const text = ui.text.value;
  setStatus('checking…', 'busy');
  try {
    const r = await post('/v1/rules/check', { text });
    if (seq !== st.seq) return;
    st.errors = r.errors || [];
    st.lastChecked = text;
    setStatus(r.ok ? `✓ ${r.rules} rule${r.rules === 1 ? '' : 's'}, no errors` : `✗ ${st.errors.length} error${st.errors.length === 1 ? '' : 's'}`, r.ok ? 'ok' : 'bad');
    ui.root.dataset.checked = r.ok ? 'ok' : 'errors';
  } catch (e) {
    if (seq !== st.seq) return;
    setStatus(`cannot check: ${e.message}`, 'bad');
  }
  drawGutter();
  drawErrors();
}, CHECK_DELAY_MS);

function message(text, cls) {
  mount(ui.message, text ? h('div', { class: `banner ${cls}`, testid: 'rules-message' }, text) : null);
}

function reportView(r) {
  // `reload` is the rules reload's report ({file, rules, error}); absent when nothing was
  // written (the text had errors).
  const reload = r.reload || null;
  return h(
    'section',
    { class: 'card', testid: 'rules-report' },
    h('h3', null, 'Reload report ', badge(r.applied ? 'applied' : 'refused', r.applied ? 'good' : 'bad'), r.restored ? badge('previous file restored', 'warn') : null),
    kv([
      ['file', h('span', { class: 'mono' }, r.file || '–')],
      ['hash now', h('span', { class: 'mono' }, (r.hash || '').slice(0, 16))],
      ['written and reloaded', reload ? 'yes' : 'no: the text has errors, the file was not touched'],
      reload ? ['rules in force', String(reload.rules)] : null,
      reload && reload.error ? ['reload error', reload.error] : null,
      ['undo available', r.undo_available ? 'yes' : 'no'],
    ]),
  );
}

async function load() {
  try {
    st.loaded = await get('/v1/rules/source');
  } catch (e) {
    mount(ui.body, h('div', { class: 'error', testid: 'rules-unavailable' }, `Cannot load the rules file: ${e.message}`));
    return;
  }
  ui.text.value = st.loaded.text || '';
  ui.file.textContent = st.loaded.file || '(no rules file configured: rules come from the configuration)';
  ui.hash.textContent = (st.loaded.hash || '').slice(0, 16);
  ui.undo.disabled = !canWrite() || !st.loaded.undo_available;
  st.errors = [];
  drawGutter();
  drawErrors();
  check();
}

async function dryRun() {
  message('');
  mount(ui.result, h('div', { class: 'loading' }, 'Running the rules over the latest records…'));
  try {
    const r = await post('/v1/rules/dry-run', { text: ui.text.value, limit: DRY_RUN_LIMIT });
    if (!r.ok) {
      st.errors = r.errors || [];
      drawGutter();
      drawErrors();
      mount(ui.result, h('div', { class: 'banner bad', testid: 'dry-run' }, 'The file has errors: fix them to see what it would match.'));
      return;
    }
    mount(
      ui.result,
      h(
        'section',
        { class: 'card', testid: 'dry-run' },
        h('h3', null, `Dry run over the latest ${num(r.sampled)} records`),
        h(
          'table',
          { class: 'grid compact' },
          h('thead', null, h('tr', null, ['rule', 'line', 'action', 'matches', 'examples'].map((c) => h('th', null, c)))),
          h(
            'tbody',
            null,
            (r.rules || []).map((x) =>
              h(
                'tr',
                { testid: 'dry-run-rule', dataset: { rule: x.name } },
                h('td', null, x.name),
                h('td', { class: 'num' }, String(x.line)),
                h('td', null, badge(x.action, 'info')),
                h('td', { class: 'num', dataset: { col: 'count' } }, num(x.count)),
                h(
                  'td',
                  null,
                  (x.matches || []).length
                    ? h(
                        'details',
                        null,
                        h('summary', null, `${x.matches.length} shown`),
                        h('ul', { class: 'matches' }, x.matches.map((m) => h('li', { class: 'mono' }, `#${m.seq} ${m.service} ${m.client} ${m.host} ${m.what}`))),
                      )
                    : '–',
                ),
              ),
            ),
            h('tr', { class: 'dim' }, h('td', null, '(no rule)'), h('td'), h('td'), h('td', { class: 'num' }, num(r.unmatched)), h('td')),
          ),
        ),
      ),
    );
  } catch (e) {
    mount(ui.result, h('div', { class: 'banner bad', testid: 'dry-run' }, `Dry run failed: ${e.message}`));
  }
}

async function change(path, body, verb) {
  message('');
  try {
    const r = await post(path, body);
    if (!r.applied) {
      st.errors = r.errors || [];
      drawGutter();
      drawErrors();
      message(`${verb} refused: the file has errors and was not written.`, 'bad');
      mount(ui.result, reportView(r));
      return;
    }
    message(`${verb} done: the gateway reloaded its rules.`, 'good');
    await load();
    mount(ui.result, reportView(r));
  } catch (e) {
    const why = e instanceof ApiError && e.status === 403 ? 'this session is read-only: rules cannot be changed' : e.message;
    message(`${verb} failed: ${why}`, 'bad');
  }
}

export const view = {
  id: 'rules',
  title: 'Rules',
  mount(el) {
    const text = h('textarea', { spellcheck: 'false', testid: 'rules-text', wrap: 'off', 'aria-label': 'rules file' });
    const gutter = h('div', { class: 'gutter', testid: 'rules-gutter', 'aria-hidden': 'true' });
    text.addEventListener('input', () => {
      drawGutter();
      check();
    });
    text.addEventListener('scroll', () => {
      gutter.scrollTop = text.scrollTop;
    });
    text.addEventListener('keydown', (e) => {
      if (e.key === 'Tab') {
        e.preventDefault();
        text.setRangeText('  ', text.selectionStart, text.selectionEnd, 'end');
        text.dispatchEvent(new Event('input'));
      }
    });
    const undo = h('button', { testid: 'rules-undo', class: 'ghost', dataset: { mutates: '' }, onclick: () => change('/v1/rules/undo', {}, 'Undo') }, '↶ Undo last apply');
    ui = {
      root: h('div', { class: 'rules', testid: 'rules' }),
      text,
      gutter,
      undo,
      status: h('span', { class: 'check', testid: 'rules-check' }),
      errors: h('div', { testid: 'rules-errors' }),
      message: h('div'),
      result: h('div'),
      file: h('span', { class: 'mono', testid: 'rules-file' }),
      hash: h('span', { class: 'mono dim' }),
      body: null,
    };
    ui.body = h(
      'div',
      { class: 'rules-body' },
      h(
        'div',
        { class: 'toolbar' },
        h('span', null, 'file ', ui.file, ' ', ui.hash),
        h('span', { class: 'spacer' }),
        ui.status,
        h('button', { class: 'ghost', testid: 'rules-revert', onclick: () => load() }, 'Revert'),
        h('button', { testid: 'rules-dry-run', onclick: dryRun }, 'Dry run'),
        h(
          'button',
          {
            class: 'primary',
            testid: 'rules-apply',
            dataset: { mutates: '' },
            onclick: () => change('/v1/rules/apply', { text: ui.text.value, base_hash: st.loaded ? st.loaded.hash : undefined }, 'Apply'),
          },
          'Apply',
        ),
        undo,
      ),
      ui.message,
      h('div', { class: 'editor' }, gutter, text),
      ui.errors,
      ui.result,
    );
    mount(ui.root, ui.body);
    mount(el, ui.root);
  },
  show() {
    if (!st.loaded) load();
  },
};

