// A real browser (headless Chromium through playwright-core) against real gateways:
// two chat pages talk, type and see each other; the first page's gateway is restarted
// (SIGTERM, then again on the same port) while the other page sends; the first page
// reconnects by itself and shows every missed message once; /feed (EventSource)
// survives the same restart and shows every event once.
//
// Two gateways share one redis-server, so history survives the restart and the other
// page stays connected (through the second gateway) while the first one is down.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startGateway, startRedis, postJson, requireDep, ROOT, WebSocket } from '../js/helpers.mjs';
import { Client } from '../../crates/gateway/static/client.js';

const { chromium } = requireDep('playwright-core');
const SHOTS = path.join(ROOT, 'target', 'screenshots');
const WAIT = 20000;

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) { try { await c(); } catch { /* best effort */ } } });

async function launch() {
  const profile = mkdtempSync(path.join(tmpdir(), 'wsgate-chromium-'));
  cleanups.push(() => rmSync(profile, { recursive: true, force: true }));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 700 },
    timeout: 60000,
  });
  cleanups.push(() => ctx.close());
  return ctx;
}

const texts = (page) => page.$$eval('#messages .msg .content', (els) => els.map((e) => e.textContent));
const state = (page) => page.$eval('#status', (e) => e.dataset.state);
const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`) });

test('two chat pages, a gateway restart, and the SSE feed', { timeout: 150000 }, async () => {
  const pages = {};
  try { await scenario(pages); } catch (e) {
    // keep what the pages looked like when it failed
    for (const [name, p] of Object.entries(pages)) { try { await shot(p, `failed-${name}`); } catch { /* closed */ } }
    throw e;
  }
});

async function scenario(pages) {
  mkdirSync(SHOTS, { recursive: true });
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  let g1 = await startGateway({ redisUrl: redis.url });
  const g2 = await startGateway({ redisUrl: redis.url });
  cleanups.push(() => g1.stop(), () => g2.stop());

  const ctx = await launch();
  const errors = [];
  const a = await ctx.newPage();
  const b = await ctx.newPage();
  const feed = await ctx.newPage();
  Object.assign(pages, { alice: a, bob: b, feed });
  for (const p of [a, b, feed]) p.on('pageerror', (e) => errors.push(String(e)));

  await a.goto(`${g1.http}/?name=Alice&rooms=lobby`);
  await b.goto(`${g2.http}/?name=Bob&rooms=lobby`);
  await feed.goto(`${g1.http}/feed?room=lobby`);
  for (const p of [a, b]) {
    await p.waitForSelector('#status[data-state=open]', { timeout: WAIT });
    // each sees both in the member list
    await p.waitForFunction(() => ['alice', 'bob'].every((u) => document.querySelector(`#members li[data-user="${u}"]`)), null, { timeout: WAIT });
  }
  await feed.waitForSelector('#status[data-state=open]', { timeout: WAIT });

  // typing indicator
  await b.fill('#text', 'hel');
  await b.type('#text', 'lo');
  await a.waitForFunction(() => document.querySelector('#typing').textContent.includes('Bob is typing'), null, { timeout: WAIT });

  // exchange messages
  await a.fill('#text', 'Hi Bob, how are you?');
  await a.press('#text', 'Enter');
  await b.waitForFunction(() => [...document.querySelectorAll('#messages .content')].some((e) => e.textContent === 'Hi Bob, how are you?'), null, { timeout: WAIT });
  await b.fill('#text', 'Great, thanks Alice!');
  await b.press('#text', 'Enter');
  await a.waitForFunction(() => [...document.querySelectorAll('#messages .content')].some((e) => e.textContent === 'Great, thanks Alice!'), null, { timeout: WAIT });
  await a.waitForFunction(() => document.querySelector('#typing').textContent === '', null, { timeout: WAIT });
  assert.deepEqual(await texts(a), ['Hi Bob, how are you?', 'Great, thanks Alice!']);
  await shot(a, '1-alice-chat');
  await shot(b, '1-bob-chat');

  // the notification bell
  await postJson(g2.http, '/api/notifications', { user_id: 'alice', kind: 'success', title: 'Welcome!', body: 'Your account is ready.' });
  await a.waitForFunction(() => !document.querySelector('#badge').hidden && document.querySelector('#badge').textContent === '1', null, { timeout: WAIT });
  await a.click('#bell');
  await a.waitForSelector('#notif-list li.unread', { timeout: WAIT });
  await shot(a, '2-alice-notifications');
  await a.click('#notif-list li.unread');
  await a.waitForFunction(() => document.querySelector('#badge').hidden, null, { timeout: WAIT });
  await a.click('#bell');

  // restart Alice's gateway while Bob (on the other gateway) keeps talking
  await g1.stop('SIGTERM');
  await a.waitForSelector('#status[data-state=reconnecting]', { timeout: WAIT });
  const missed = ['missed one', 'missed two', 'missed three'];
  for (const m of missed) {
    await b.fill('#text', m);
    await b.press('#text', 'Enter');
    await b.waitForFunction((m) => [...document.querySelectorAll('#messages .msg:not(.pending) .content')].some((e) => e.textContent === m), m, { timeout: WAIT });
  }
  await a.waitForSelector('#status[data-state=reconnecting]', { timeout: WAIT });
  await shot(a, '3-alice-reconnecting');
  assert.ok(!(await texts(a)).includes('missed one'));

  g1 = await startGateway({ port: g1.port, redisUrl: redis.url });
  cleanups.push(() => g1.stop());
  await a.waitForSelector('#status[data-state=open]', { timeout: 40000 });
  await a.waitForFunction((n) => document.querySelectorAll('#messages .msg').length >= n, 5, { timeout: WAIT });
  // one more live message after the reconnect
  await b.fill('#text', 'welcome back');
  await b.press('#text', 'Enter');
  await a.waitForFunction(() => [...document.querySelectorAll('#messages .content')].some((e) => e.textContent === 'welcome back'), null, { timeout: WAIT });
  assert.deepEqual(await texts(a), ['Hi Bob, how are you?', 'Great, thanks Alice!', ...missed, 'welcome back']);
  await shot(a, '4-alice-after-restart');

  // the feed resumed over the restart (EventSource + Last-Event-ID): each event once
  const all = ['Hi Bob, how are you?', 'Great, thanks Alice!', ...missed, 'welcome back'];
  await feed.waitForFunction((n) => document.querySelectorAll('#events li.ev.message').length >= n, all.length, { timeout: 40000 });
  const feedTexts = await feed.$$eval('#events li.ev.message .content', (els) => els.map((e) => e.textContent.replace(/^[^:]*: /, '')));
  assert.deepEqual(feedTexts, all);
  assert.equal(await feed.evaluate(() => document.body.dataset.duplicates || '0'), '0');
  assert.equal(await state(feed), 'open');
  await shot(feed, '5-feed');
  assert.deepEqual(errors, []);
}

/** `n` Node clients (user ids `${prefix}000`…) in `room`. */
async function crowd(url, room, n, prefix) {
  const cs = Array.from({ length: n }, (_, i) => new Client(url, { WebSocket, userId: `${prefix}${String(i).padStart(3, '0')}`, username: `${prefix.toUpperCase()} ${i}`, pingIntervalMs: 0 }));
  cleanups.push(() => { for (const c of cs) c.close(); });
  for (let i = 0; i < n; i += 25) await Promise.all(cs.slice(i, i + 25).map((c) => c.join(room)));
  return cs;
}

test('members panel: the count, the list paged in by scrolling, count mode', { timeout: 120000 }, async () => {
  mkdirSync(SHOTS, { recursive: true });
  const gw = await startGateway({ args: ['--joined-members', '20'] });
  cleanups.push(() => gw.stop());
  await crowd(gw.ws, 'big', 120, 'u');
  const ctx = await launch();
  const errors = [];
  const page = await ctx.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${gw.http}/?name=Zed&rooms=big`);
  await page.waitForSelector('#status[data-state=open]', { timeout: WAIT });
  await page.waitForFunction(() => document.querySelector('#members-count').textContent === '· 121', null, { timeout: WAIT });
  const listed = () => page.$$eval('#members li[data-user]', (els) => els.map((e) => e.dataset.user));
  // joined listed 20 (and this page's own join may have come as presence): no paging yet
  await page.waitForTimeout(500);
  const first = await listed();
  assert.ok(first.length >= 20 && first.length <= 21, `first ${first.length}`);
  assert.equal(await page.$eval('#members', (e) => e.dataset.complete), 'false');
  await shot(page, '6-members-first');
  // scrolling to the bottom pages in more, cursor by cursor, until the list is whole
  for (let i = 0; i < 20 && (await page.$eval('#members', (e) => e.dataset.complete)) !== 'true'; i++) {
    const before = (await listed()).length;
    await page.$eval('#members', (e) => { e.scrollTop = e.scrollHeight; e.dispatchEvent(new Event('scroll')); });
    await page.waitForFunction((n) => document.querySelectorAll('#members li[data-user]').length > n
      || document.querySelector('#members').dataset.complete === 'true', before, { timeout: WAIT });
  }
  const all = await listed();
  assert.equal(all.length, 121);
  assert.equal(new Set(all).size, 121);
  assert.ok(all.includes('zed') && all.includes('u119'));
  assert.equal(await page.$eval('#members', (e) => e.dataset.complete), 'true');
  assert.equal(await page.$$eval('#members li.more', (els) => els.length), 0);
  await shot(page, '7-members-all');

  // a count-mode room: the count and a note, no list
  const gc = await startGateway({ args: ['--presence', 'count'] });
  cleanups.push(() => gc.stop());
  await crowd(gc.ws, 'live', 2, 'v');
  const live = await ctx.newPage();
  live.on('pageerror', (e) => errors.push(String(e)));
  await live.goto(`${gc.http}/?name=Zed&rooms=live`);
  await live.waitForSelector('#status[data-state=open]', { timeout: WAIT });
  await live.waitForFunction(() => document.querySelector('#members-count').textContent === '· 3', null, { timeout: WAIT });
  assert.equal(await live.$eval('#members-note', (e) => e.hidden), false);
  assert.match(await live.$eval('#members-note', (e) => e.textContent), /only the number.*\(3\)/);
  assert.equal(await live.$$eval('#members li', (els) => els.length), 0);
  await crowd(gc.ws, 'live', 1, 'w');
  await live.waitForFunction(() => document.querySelector('#members-count').textContent === '· 4', null, { timeout: 5000 });
  await shot(live, '8-members-count-mode');
  assert.deepEqual(errors, []);
});
