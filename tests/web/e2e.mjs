// The dashboard end to end, in Debian's chromium driven by playwright-core, against a daemon in
// the lab. Run by tests/tests/integration/web.rs inside the lab's client namespace, so the
// browser is a LAN host and `curl`, `dig` and `sipp` started from here are real client traffic
// through the gateway. Every step prints a line; the first that fails prints why, saves a
// screenshot next to the pcap (VC_WORK/failure.png) and exits 1.
//
// Environment (set by web.rs):
//   VC_URL              the dashboard, e.g. http://10.77.1.1:9182
//   VC_ADMIN_TOKEN      the admin token;  VC_READONLY_TOKEN  the read-only one
//   VC_ORIGIN           the origin's address (HTTP on 80, DNS on 53, SIP UAS on 5060)
//   VC_CLIENT           the client's address (sipp binds it)
//   VC_SIP_SCENARIO     the sipp UAC scenario file
//   VC_SCREENSHOTS      where each view's screenshot goes (<view>.png)
//   VC_WORK             a scratch directory (downloads, failure screenshot)
//   VC_DEV_ASSETS       (development only) serve the page from this directory instead of the
//                       files built into the daemon, to try a change without rebuilding it
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const run = promisify(execFile);

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set (run by tests/tests/integration/web.rs)`);
  return v;
}

const BASE = env('VC_URL');
const ADMIN = env('VC_ADMIN_TOKEN');
const READONLY = env('VC_READONLY_TOKEN');
const ORIGIN = env('VC_ORIGIN');
const CLIENT = env('VC_CLIENT');
const SCENARIO = env('VC_SIP_SCENARIO');
const SHOTS = env('VC_SCREENSHOTS');
const WORK = env('VC_WORK');
const WAIT = 20_000;
const VIEWPORT = { width: 1440, height: 900 };

let step = 'start';
function say(text) {
  step = text;
  console.log(`[e2e] ${text}`);
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

/** curl from this (the client) namespace; returns {status, body}. */
async function curl(pathname) {
  const { stdout } = await run('curl', ['-sS', '--max-time', '20', '-o', '/dev/null', '-w', '%{http_code}', `http://${ORIGIN}${pathname}`]);
  return Number(stdout.trim());
}

async function dig(name) {
  const { stdout } = await run('dig', ['+time=2', '+tries=2', `@${ORIGIN}`, name, 'A']);
  return stdout;
}

/** Poll `fn` until it returns a truthy value or `ms` pass. */
async function until(what, fn, ms = WAIT) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
}

async function shot(page, view) {
  const file = path.join(SHOTS, `${view}.png`);
  // No focus ring on whatever the script typed into last.
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.screenshot({ path: file, fullPage: false });
  console.log(`[e2e] screenshot ${file}`);
}

async function tab(page, view) {
  await page.click(`[data-testid=tab-${view}]`);
  await page.waitForSelector(`[data-testid=view-${view}]:not([hidden])`, { timeout: WAIT });
}

async function login(page, token, role) {
  await page.goto(BASE);
  await page.waitForSelector('[data-testid=login-form]', { state: 'visible', timeout: WAIT });
  await page.fill('[data-testid=login-token]', token);
  await page.click('[data-testid=login-submit]');
  await page.waitForSelector(`[data-testid=role]:text-is("${role}")`, { timeout: WAIT });
}

/** Set the Live filters (empty string: any). */
async function filter(page, { service = '', host = '', status = '', cache = '', client = '' }) {
  await page.selectOption('[data-testid=live-filter-service]', service);
  await page.selectOption('[data-testid=live-filter-cache]', cache);
  await page.fill('[data-testid=live-filter-host]', host);
  await page.fill('[data-testid=live-filter-status]', status);
  await page.fill('[data-testid=live-filter-client]', client);
  // The table redraws four times a second: let it catch up with the filters.
  await page.waitForTimeout(400);
}

/** Rows of the Live table as plain objects. */
async function rows(page) {
  return page.$$eval('[data-testid=live-row]', (trs) =>
    trs.map((tr) => {
      const col = (c) => (tr.querySelector(`[data-col=${c}]`) || {}).textContent || '';
      return { seq: tr.dataset.seq, service: tr.dataset.service, host: col('host'), what: col('what'), status: col('status'), cache: col('cache'), rule: col('rule'), client: col('client') };
    }),
  );
}

/** Serve `/assets/*` from `dir` (VC_DEV_ASSETS): the page's code as edited, daemon unchanged.
 * The document itself still comes from the daemon (a routed document would lose its address
 * space, and chromium would refuse its requests to the gateway's private address). */
async function devAssets(context, dir) {
  const types = { '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };
  await context.route(
    (u) => u.pathname.startsWith('/assets/'),
    (route) => {
      const p = new URL(route.request().url()).pathname;
      const file = path.join(dir, p.slice('/assets/'.length));
      route.fulfill({ path: file, contentType: types[path.extname(file)] || 'application/octet-stream' });
    },
  );
  console.log(`[e2e] page served from ${dir} (VC_DEV_ASSETS)`);
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  fs.mkdirSync(WORK, { recursive: true });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: VIEWPORT, acceptDownloads: true });
  if (process.env.VC_DEV_ASSETS) await devAssets(context, process.env.VC_DEV_ASSETS);
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/401|403|404/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
  });
  try {
    say('a wrong token is refused');
    await page.goto(BASE);
    await page.waitForSelector('[data-testid=login-form]', { state: 'visible', timeout: WAIT });
    await page.fill('[data-testid=login-token]', 'not-the-token');
    await page.click('[data-testid=login-submit]');
    await page.waitForSelector('[data-testid=login-error]:visible', { timeout: WAIT });

    say('log in as admin');
    await login(page, ADMIN, 'admin');
    await page.waitForSelector('[data-testid=live-connection]:text-is("connected")', { timeout: WAIT });

    say('a change without the CSRF header is refused (403)');
    const noCsrf = await page.evaluate(async () => {
      const r = await fetch('/v1/cache/purge', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ pattern: '*', shared: false }) });
      return { status: r.status, body: await r.json().catch(() => null) };
    });
    check(noCsrf.status === 403 && noCsrf.body && noCsrf.body.kind === 'forbidden', `POST without X-CSRF-Token: ${JSON.stringify(noCsrf)}`);

    say('HTTP: a miss then a hit from the client namespace appear in Live');
    check((await curl('/a.bin')) === 200, 'first GET /a.bin did not answer 200');
    check((await curl('/a.bin')) === 200, 'second GET /a.bin did not answer 200');
    await filter(page, { host: ORIGIN, service: 'http' });
    const hit = await until('a hit row for GET /a.bin', async () => (await rows(page)).find((r) => r.what.includes('/a.bin') && r.cache === 'hit'));
    const miss = (await rows(page)).find((r) => r.what.includes('/a.bin') && r.cache === 'miss');
    check(miss, 'no miss row for the first GET /a.bin');

    say('the filters narrow the list (cache = miss)');
    await filter(page, { host: ORIGIN, service: 'http', cache: 'miss' });
    await until('only miss rows', async () => {
      const rs = await rows(page);
      return rs.length > 0 && rs.every((r) => r.cache === 'miss');
    });

    say('pause freezes the list, resume catches up');
    await filter(page, { host: ORIGIN, service: 'http' });
    await page.click('[data-testid=live-pause]');
    const before = (await rows(page)).length;
    check((await curl('/a.bin')) === 200, 'third GET /a.bin');
    await page.waitForTimeout(1200);
    check((await rows(page)).length === before, 'rows changed while paused');
    await page.waitForSelector('.pending:not(:empty)', { timeout: WAIT });
    await page.click('[data-testid=live-pause]');
    await until('the paused request after resume', async () => (await rows(page)).length > before);

    say('the inspector shows why the hit came from the cache');
    await page.click(`[data-testid=live-row][data-seq="${hit.seq}"]`);
    await page.waitForSelector('[data-testid=inspector-exchange]', { timeout: WAIT });
    const status = (await page.textContent('[data-testid=inspector-cache-status]')).trim();
    const explanation = (await page.textContent('[data-testid=inspector-cache-explanation]')).trim();
    console.log(`[e2e] hit: cache status "${status}", explanation "${explanation}"`);
    check(status === 'hit', `inspector cache status is "${status}", not hit`);
    check(explanation.length > 10 && explanation !== 'No explanation recorded.', `no cache explanation: "${explanation}"`);
    const key = (await page.textContent('[data-testid=inspector-cache-key]')).trim();
    check(key.includes('/a.bin'), `cache key "${key}" does not name /a.bin`);
    const fromCache = (await page.textContent('[data-testid=inspector-bytes-cache]')).trim();
    check(fromCache !== '0 B', `a hit with no bytes from the cache: ${fromCache}`);
    await shot(page, 'inspector');

    say('the miss shows the origin side and its TTFB');
    await tab(page, 'live');
    await page.click(`[data-testid=live-row][data-seq="${miss.seq}"]`);
    await page.waitForSelector('[data-testid=inspector-exchange]', { timeout: WAIT });
    const missStatus = (await page.textContent('[data-testid=inspector-cache-status]')).trim();
    check(missStatus === 'miss', `the first request's cache status is "${missStatus}"`);
    const ttfb = (await page.textContent('[data-testid=inspector-origin-ttfb]')).trim();
    check(ttfb !== '–', 'no TTFB from the origin on a miss');
    const originReq = await page.textContent('[data-testid=inspector-origin-side]');
    check(originReq.includes('GET /a.bin'), `the origin side does not show the request: ${originReq.slice(0, 200)}`);

    say('DNS: queries from the client namespace appear with their name, rcode, cache state and upstream');
    const answer = await dig('www.test.lab');
    check(answer.includes('10.9.9.9'), `dig answered:\n${answer}`);
    await dig('www.test.lab');
    await tab(page, 'live');
    await filter(page, { service: 'dns', host: 'www.test.lab' });
    const dnsRow = await until('a DNS row for www.test.lab', async () => (await rows(page)).find((r) => r.service === 'dns' && r.host.includes('www.test.lab')));
    await page.click(`[data-testid=live-row][data-seq="${dnsRow.seq}"]`);
    await page.waitForSelector('[data-testid=inspector-detail]', { timeout: WAIT });
    const dnsRecord = await page.textContent('[data-testid=inspector-record]');
    check(/www\.test\.lab/.test(dnsRecord) && /NOERROR/.test(dnsRecord), `the DNS record: ${dnsRecord}`);
    const dnsCache = (await page.textContent('[data-testid=inspector-cache-status]')).trim();
    check(['miss', 'hit', 'kernel_hit', 'local', 'stale'].includes(dnsCache), `the DNS record's cache state is "${dnsCache}"`);
    const dnsDetail = await page.textContent('[data-testid=inspector-detail]');
    check(dnsDetail.includes(`${ORIGIN}:53`), `the DNS record's detail lacks its upstream: ${dnsDetail}`);

    say('rules: an error is flagged at its line and key as you type');
    await tab(page, 'rules');
    await page.waitForSelector('[data-testid=rules-check]:text-matches("✓|✗")', { timeout: WAIT });
    const original = await page.inputValue('[data-testid=rules-text]');
    const base = original.replace(/\s*$/, '');
    const prefix = base ? `${base}\n\n` : '';
    const firstLine = prefix.split('\n').length; // 1-based line of "[[rule]]"
    const actionLine = firstLine + 3;
    const broken = `${prefix}[[rule]]\nname = "block-private"\nmatch_path = "/private/*"\naction = "dney"\n`;
    await page.fill('[data-testid=rules-text]', broken);
    const err = await page.waitForSelector('[data-testid=rules-error]', { timeout: WAIT });
    const errLine = Number(await err.getAttribute('data-line'));
    const errKey = await err.getAttribute('data-key');
    console.log(`[e2e] rules error at line ${errLine}, key "${errKey}": ${(await err.textContent()).trim()}`);
    check(errLine === actionLine, `the error is at line ${errLine}, the bad action is on line ${actionLine}`);
    check(/action/.test(errKey), `the error's key "${errKey}" does not name the action`);
    await page.waitForSelector(`[data-testid=gutter-error][data-line="${actionLine}"]`, { timeout: WAIT });
    check(await page.isEnabled('[data-testid=rules-apply]'), 'Apply is disabled for admin');
    await shot(page, 'rules');

    say('a file with errors is refused by Apply');
    await page.click('[data-testid=rules-apply]');
    await page.waitForSelector('[data-testid=rules-message]', { timeout: WAIT });
    const refused = await page.textContent('[data-testid=rules-message]');
    check(/refused|failed/.test(refused), `Apply of a broken file said: ${refused}`);
    check((await curl('/private/x.bin')) === 200, 'the broken rule was applied anyway');

    say('fixed, dry-run, applied: the next request follows the rule');
    await page.fill('[data-testid=rules-text]', broken.replace('"dney"', '"deny"'));
    await page.waitForSelector('[data-testid=rules-check]:text-matches("no errors")', { timeout: WAIT });
    check((await page.$$('[data-testid=rules-error]')).length === 0, 'errors still listed after the fix');
    await page.click('[data-testid=rules-dry-run]');
    await page.waitForSelector('[data-testid=dry-run-rule][data-rule="block-private"]', { timeout: WAIT });
    const dryCount = Number((await page.textContent('[data-testid=dry-run-rule][data-rule="block-private"] [data-col=count]')).replace(/\D/g, ''));
    check(dryCount >= 1, `the dry run says block-private would have matched ${dryCount} of the latest records (GET /private/x.bin was one)`);
    await page.click('[data-testid=rules-apply]');
    await page.waitForSelector('[data-testid=rules-message]:text-matches("done")', { timeout: WAIT });
    await page.waitForSelector('[data-testid=rules-report]', { timeout: WAIT });
    const denied = await curl('/private/y.bin');
    check(denied === 403, `GET /private/y.bin after applying the deny rule answered ${denied}`);
    await tab(page, 'live');
    await filter(page, { service: 'http', host: ORIGIN });
    await until('a Live row for /private/y.bin decided by block-private', async () =>
      (await rows(page)).find((r) => r.what.includes('/private/y.bin') && r.rule.includes('block-private') && r.status.startsWith('403')),
    );

    say('analytics: the charts fill from /v1/analytics');
    await tab(page, 'analytics');
    await until(
      'a hit ratio above 0 on the Analytics tab',
      async () => {
        const t = await page.textContent('[data-testid=analytics-hit-ratio] .tile-value');
        return t && parseFloat(t) > 0;
      },
      30_000,
    );
    await page.waitForSelector('[data-testid=analytics-top-hosts] li', { timeout: WAIT });
    await shot(page, 'analytics');

    say('cache: the stored object is listed and shown');
    await tab(page, 'cache');
    await page.fill('[data-testid=cache-pattern]', '*/a.bin');
    await page.click('[data-testid=cache-search]');
    const cacheRow = await page.waitForSelector('[data-testid=cache-row]', { timeout: WAIT });
    await cacheRow.click();
    await page.waitForSelector('[data-testid=cache-detail]', { timeout: WAIT });
    await shot(page, 'cache');

    say('calls: a SIP call from the client namespace, its ladder, a capture and its pcap');
    const uac = spawn('sipp', [
      `${ORIGIN}:5060`, '-sf', SCENARIO, '-i', CLIENT, '-p', '5061', '-t', 'u1', '-mi', CLIENT, '-mp', '6000',
      '-m', '1', '-nostdin', '-timeout', '60s', '-timeout_error', '-s', 'service',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let uacOut = '';
    uac.stdout.on('data', (d) => (uacOut += d));
    uac.stderr.on('data', (d) => (uacOut += d));
    const uacDone = new Promise((resolve) => uac.on('exit', (code) => resolve(code)));
    await tab(page, 'calls');
    const callRow = await until(
      'the call in the Calls list',
      async () => {
        await tab(page, 'live');
        await tab(page, 'calls');
        return page.waitForSelector('[data-testid=call-row]', { timeout: 1500 });
      },
      15_000,
    );
    const callId = await callRow.getAttribute('data-call-id');
    console.log(`[e2e] call ${callId}`);
    await callRow.click();
    await page.waitForSelector(`[data-testid=call-detail][data-call-id="${callId}"]`, { timeout: WAIT });
    await page.click('[data-testid=capture-start]');
    await page.waitForSelector('[data-testid=capture-state]:text-matches("running")', { timeout: WAIT });
    await until('captured packets', async () => /running: [1-9]/.test(await page.textContent('[data-testid=capture-state]')), WAIT);
    const code = await uacDone;
    check(code === 0, `sipp UAC failed (${code}):\n${uacOut}`);
    await page.waitForSelector('[data-testid=ladder-message][data-label="BYE"]', { timeout: WAIT });
    if (await page.isEnabled('[data-testid=capture-stop]')) await page.click('[data-testid=capture-stop]');
    await page.waitForSelector('[data-testid=capture-state]:text-matches("stopped")', { timeout: WAIT });
    const labels = await page.$$eval('[data-testid=ladder-message]', (gs) => gs.map((g) => g.dataset.label));
    console.log(`[e2e] ladder: ${labels.join(', ')}`);
    for (const want of ['INVITE', 'ACK', 'BYE']) check(labels.includes(want), `the ladder lacks ${want}: ${labels}`);
    check(labels.some((l) => l.startsWith('200')), `the ladder lacks a 200: ${labels}`);
    await page.waitForSelector('[data-testid=call-stream]', { timeout: WAIT });
    await shot(page, 'calls');
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: WAIT }), page.click('[data-testid=pcap-download]')]);
    const pcap = path.join(WORK, 'call.pcap');
    await download.saveAs(pcap);
    const sip = await run('tshark', ['-r', pcap, '-Y', 'sip', '-T', 'fields', '-e', 'sip.Call-ID']);
    const sipIds = sip.stdout.split('\n').filter(Boolean);
    check(sipIds.length > 0 && sipIds.every((id) => id === callId), `SIP packets in the pcap: ${JSON.stringify(sipIds)}`);
    const rtp = await run('tshark', ['-r', pcap, '-o', 'rtp.heuristic_rtp:TRUE', '-Y', 'rtp', '-T', 'fields', '-e', 'rtp.seq']);
    const rtpCount = rtp.stdout.split('\n').filter(Boolean).length;
    console.log(`[e2e] pcap: ${sipIds.length} SIP packets, ${rtpCount} RTP packets`);
    check(rtpCount > 0, 'no RTP packets in the pcap');

    say('the Live view with everything above');
    await tab(page, 'live');
    await filter(page, {});
    await shot(page, 'live');

    say('read-only: sees everything, cannot apply a rule (the API refuses it too)');
    const ro = await browser.newContext({ viewport: VIEWPORT });
    const roPage = await ro.newPage();
    await login(roPage, READONLY, 'read-only');
    await tab(roPage, 'rules');
    await roPage.waitForSelector('[data-testid=rules-check]:text-matches("✓|✗")', { timeout: WAIT });
    check(!(await roPage.isEnabled('[data-testid=rules-apply]')), 'Apply is enabled for a read-only session');
    check(!(await roPage.isEnabled('[data-testid=rules-undo]')), 'Undo is enabled for a read-only session');
    const direct = await roPage.evaluate(async () => {
      const s = await (await fetch('/web/session')).json();
      const text = await (await fetch('/v1/rules/source')).json();
      const r = await fetch('/v1/rules/apply', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf }, body: JSON.stringify({ text: '', base_hash: text.hash }) });
      const purge = await fetch('/v1/cache/purge', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf }, body: JSON.stringify({ pattern: '*', shared: false }) });
      const check = await fetch('/v1/rules/check', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf }, body: JSON.stringify({ text: text.text }) });
      return { role: s.role, apply: r.status, kind: (await r.json()).kind, purge: purge.status, check: check.status };
    });
    console.log(`[e2e] read-only direct calls: ${JSON.stringify(direct)}`);
    check(direct.role === 'readonly', `session role ${direct.role}`);
    check(direct.apply === 403 && direct.kind === 'forbidden', `read-only POST /v1/rules/apply answered ${direct.apply} ${direct.kind}`);
    check(direct.purge === 403, `read-only POST /v1/cache/purge answered ${direct.purge}`);
    check(direct.check === 200, `read-only POST /v1/rules/check answered ${direct.check}`);
    check((await curl('/private/z.bin')) === 403, 'the rule in force changed after the read-only attempt');
    await ro.close();

    say('sign out ends the session');
    await page.click('[data-testid=logout]');
    await page.waitForSelector('[data-testid=login-form]', { state: 'visible', timeout: WAIT });
    const after = await page.evaluate(async () => (await fetch('/v1/status')).status);
    check(after === 401, `GET /v1/status after sign-out answered ${after}`);

    check(pageErrors.length === 0, `the page reported errors:\n${pageErrors.join('\n')}`);
    console.log('[e2e] PASS');
  } catch (e) {
    console.error(`[e2e] FAILED at "${step}": ${e.stack || e}`);
    if (pageErrors.length) console.error(`[e2e] page errors:\n${pageErrors.join('\n')}`);
    await page.screenshot({ path: path.join(WORK, 'failure.png'), fullPage: true }).catch(() => {});
    await browser.close();
    process.exit(1);
  }
  await browser.close();
}

main().catch((e) => {
  console.error(`[e2e] FAILED at "${step}": ${e.stack || e}`);
  process.exit(1);
});
