// The live dashboard in headless Chromium: what arrives in the system room is data and
// is shown as text, never run as markup (a back end may publish there too).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startGateway, postJson, requireDep } from '../js/helpers.mjs';

const { chromium } = requireDep('playwright-core');
const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) { try { await c(); } catch { /* best effort */ } } });

test('published stats with markup are shown as text, never run', { timeout: 60000 }, async () => {
  const gw = await startGateway();
  cleanups.push(() => gw.stop());
  const profile = mkdtempSync(path.join(tmpdir(), 'wsgate-chromium-'));
  cleanups.push(() => rmSync(profile, { recursive: true, force: true }));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60000,
  });
  cleanups.push(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${gw.http}/dashboard`);
  const evil = '<img src=x onerror="window.__xss=1">';
  const deadline = Date.now() + 20000;
  let shown = null;
  while (Date.now() < deadline && shown === null) {
    await postJson(gw.http, '/api/publish', {
      room: 'system:stats',
      data: { node_id: evil, connections: 1, capacity: 2, rooms: 3, messages_in_per_s: 0,
        deliveries_per_s: 0, slow_consumer_closes: 0, uptime_s: 5, broker: 'memory' },
    });
    await new Promise((r) => setTimeout(r, 300));
    shown = await page.$$eval('#nodes tr', (rows, v) => {
      const row = rows.find((r) => r.dataset.node === v);
      return row ? row.cells[0].textContent : null;
    }, evil);
  }
  assert.equal(shown, evil, 'the node id is shown as its text');
  assert.equal(await page.$$eval('#nodes img', (imgs) => imgs.length), 0, 'no element was made from it');
  assert.equal(await page.evaluate(() => window.__xss), undefined, 'nothing ran');
});
