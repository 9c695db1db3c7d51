// The dashboard's entry point: sign-in, the tab bar and the hash router (`#/live`,
// `#/inspector/<seq>`, `#/analytics`, `#/rules`, `#/calls/<call-id>`, `#/cache`). Each view is a
// module exporting `{id, title, mount(el), show(arg), hide()}`; views are mounted once and kept,
// so switching tabs keeps their state (a half-edited rules file, a paused live list).
import { canWrite, get, login, logout, resume, session, whenLoggedOut } from './api.js';
import * as analytics from './analytics.js';
import * as cache from './cache.js';
import * as calls from './calls.js';
import * as inspector from './inspector.js';
import * as live from './live.js';
import * as rules from './rules.js';
import { duration, h } from './util.js';

const VIEWS = [live.view, inspector.view, analytics.view, rules.view, calls.view, cache.view];
const $ = (id) => document.getElementById(id);

let current = null;
let mounted = false;
let statusTimer = null;

function mountViews() {
  if (mounted) return;
  mounted = true;
  const main = $('views');
  const tabs = $('tabs');
  for (const v of VIEWS) {
    const el = h('section', { class: 'view', id: `view-${v.id}`, testid: `view-${v.id}`, hidden: true });
    main.append(el);
    v.mount(el);
    tabs.append(h('a', { href: `#/${v.id}`, class: 'tab', testid: `tab-${v.id}`, dataset: { view: v.id } }, v.title));
  }
  // Read-only sessions: every control that would change something is disabled, whatever view
  // draws it and whenever (the API refuses such requests anyway).
  new MutationObserver(lockMutating).observe(main, { childList: true, subtree: true });
}

function lockMutating() {
  if (canWrite()) return;
  for (const el of document.querySelectorAll('[data-mutates]')) {
    if (!el.disabled) {
      el.disabled = true;
      el.title = 'read-only session';
    }
  }
}

function route() {
  const [, id, ...rest] = (location.hash || '#/live').split('/');
  const view = VIEWS.find((v) => v.id === id) || live.view;
  const arg = rest.length ? rest.join('/') : undefined;
  if (current && current !== view && current.hide) current.hide();
  for (const v of VIEWS) $(`view-${v.id}`).hidden = v !== view;
  for (const t of document.querySelectorAll('.tab')) t.classList.toggle('active', t.dataset.view === view.id);
  current = view;
  view.show(arg);
  lockMutating();
}

async function refreshStatus() {
  try {
    const st = await get('/v1/status');
    $('daemon').textContent = `v${st.version} · up ${duration(st.uptime_secs)} · ${st.active_sessions} active flows`;
  } catch {
    $('daemon').textContent = '';
  }
}

function enter() {
  $('login').hidden = true;
  $('app').hidden = false;
  document.body.dataset.role = session.role;
  const role = $('role');
  role.textContent = session.role === 'admin' ? 'admin' : 'read-only';
  role.className = `role ${session.role}`;
  mountViews();
  live.start();
  route();
  refreshStatus();
  clearInterval(statusTimer);
  statusTimer = setInterval(refreshStatus, 10_000);
}

function leave(message) {
  live.stop();
  clearInterval(statusTimer);
  if (current && current.hide) current.hide();
  document.body.dataset.role = '';
  $('app').hidden = true;
  $('login').hidden = false;
  const err = $('login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('login-token').value = '';
  $('login-token').focus();
}

async function onSubmit(e) {
  e.preventDefault();
  const token = $('login-token').value.trim();
  const err = $('login-error');
  err.hidden = true;
  try {
    await login(token);
    // A fresh page state for a new sign-in (another role may see other buttons).
    location.hash = location.hash || '#/live';
    enter();
  } catch (ex) {
    err.hidden = false;
    err.textContent = ex.status === 401 ? 'That token is not valid for this gateway.' : ex.message;
  }
}

async function boot() {
  $('login-form').addEventListener('submit', onSubmit);
  $('logout').addEventListener('click', async () => {
    await logout().catch(() => {});
    leave();
  });
  window.addEventListener('hashchange', () => session.role && route());
  whenLoggedOut(() => leave('Your session ended: sign in again.'));
  if (await resume()) enter();
  else leave();
}

boot();
