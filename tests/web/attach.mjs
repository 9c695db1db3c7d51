// A browser on the Live view, for `cargo xtask bench web`: headless chromium signs in, opens
// Live and stays there receiving the feed. Prints `attached` once the WebSocket is connected,
// then once a second a JSON line with the page's own counters ({"received", "dropped",
// "kept"}). Runs until killed.
//
// Environment: VC_URL (the dashboard), VC_ADMIN_TOKEN, and optionally VC_VIEW (a tab to stay
// on instead of Live, e.g. `analytics`: the feed without the table).
import { chromium } from 'playwright-core';

const url = process.env.VC_URL;
const token = process.env.VC_ADMIN_TOKEN;
if (!url || !token) {
  console.error('VC_URL and VC_ADMIN_TOKEN must be set');
  process.exit(2);
}

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
const stop = async () => {
  await browser.close().catch(() => {});
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
await page.goto(url);
await page.fill('[data-testid=login-token]', token);
await page.click('[data-testid=login-submit]');
await page.waitForSelector('[data-testid=live-connection]:text-is("connected")', { timeout: 20_000 });
// VC_VIEW=analytics: the feed still arrives (and is kept), but the Live table is not drawn.
if (process.env.VC_VIEW && process.env.VC_VIEW !== 'live') await page.evaluate((v) => (location.hash = `#/${v}`), process.env.VC_VIEW);
console.log('attached');

const number = (t) => Number(String(t).replace(/\D/g, '')) || 0;
for (;;) {
  await new Promise((r) => setTimeout(r, 1000));
  const counters = await page.evaluate(() => ({
    received: document.querySelector('[data-testid=live-received]').textContent,
    dropped: document.querySelector('[data-testid=live-dropped]').textContent,
    kept: document.querySelector('[data-testid=live-kept]').textContent,
  }));
  console.log(JSON.stringify({ received: number(counters.received), dropped: number(counters.dropped), kept: number(counters.kept) }));
}
