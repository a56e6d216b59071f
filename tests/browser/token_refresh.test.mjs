// The demo chat on short-lived tokens, in a real headless Chromium: a gateway with
// --jwt-secret and --refresh-notice-s 2, the page opened as /?token_url=… (a token
// endpoint of the test's own, on another origin with CORS, handing out 3-second
// tokens). The page takes a fresh token before each one expires and keeps its one
// session: the same session id past the first token's expiry, no close, still sending.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startGateway, requireDep, waitFor, ROOT } from '../js/helpers.mjs';

const { chromium } = requireDep('playwright-core');
const SHOTS = path.join(ROOT, 'target', 'screenshots');
const SECRET = 'browser-token-refresh-secret-0123456789abcdef';
const WAIT = 20000;

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) { try { await c(); } catch { /* best effort */ } } });

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

/** The application's token endpoint: GET /token?sub=U → a 3-second token for U. */
async function tokenServer() {
  const issued = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname !== '/token') { res.writeHead(404).end(); return; }
    const exp = Math.floor(Date.now() / 1000) + 3;
    issued.push(exp);
    res.writeHead(200, { 'content-type': 'text/plain', 'access-control-allow-origin': '*', 'cache-control': 'no-store' });
    res.end(jwt({ sub: url.searchParams.get('sub'), name: 'Alice', exp }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return { url: `http://127.0.0.1:${server.address().port}/token`, issued };
}

test('the demo chat refreshes its token without reconnecting', { timeout: 90000 }, async () => {
  mkdirSync(SHOTS, { recursive: true });
  const gw = await startGateway({ args: ['--jwt-secret', SECRET, '--refresh-notice-s', '2'] });
  cleanups.push(() => gw.stop());
  const tokens = await tokenServer();

  const profile = mkdtempSync(path.join(tmpdir(), 'wsgate-chromium-'));
  cleanups.push(() => rmSync(profile, { recursive: true, force: true }));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60000,
  });
  cleanups.push(() => ctx.close());
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    await page.goto(`${gw.http}/?rooms=lobby&token_url=${encodeURIComponent(`${tokens.url}?sub=alice`)}`);
    await page.waitForSelector('#status[data-state=open]', { timeout: WAIT });
    // The identity is the token's, shown once `welcome` came.
    await page.waitForFunction(() => document.querySelector('#me').textContent === 'Alice (@alice)', null, { timeout: WAIT });
    const session = await page.evaluate(() => {
      window.closes = [];
      window.wsgateClient.on('close', (e) => window.closes.push(e.code));
      return window.wsgateClient.welcome.session_id;
    });
    const firstExp = tokens.issued[0];
    // Two refreshes, and past the first token's expiry.
    await waitFor(() => tokens.issued.length >= 3 && Date.now() / 1000 > firstExp + 0.5, { timeoutMs: WAIT, what: 'two refreshes past the first exp' });
    await page.waitForFunction(() => document.querySelector('#me').title.startsWith('token valid until'), null, { timeout: WAIT });
    const after = await page.evaluate(() => ({ session: window.wsgateClient.welcome.session_id, closes: window.closes, state: window.wsgateClient.state }));
    assert.deepEqual(after, { session, closes: [], state: 'open' });
    // Still talking on that session.
    await page.fill('#text', 'on a fresh token');
    await page.press('#text', 'Enter');
    await page.waitForFunction(() => [...document.querySelectorAll('#messages .msg:not(.pending) .content')].some((e) => e.textContent === 'on a fresh token'), null, { timeout: WAIT });
    assert.equal(await page.evaluate(() => window.wsgateClient.welcome.session_id), session);
    assert.deepEqual(errors, []);
    await page.screenshot({ path: path.join(SHOTS, 'token-refresh.png') });
  } catch (e) {
    try { await page.screenshot({ path: path.join(SHOTS, 'failed-token-refresh.png') }); } catch { /* closed */ }
    throw e;
  }
});
