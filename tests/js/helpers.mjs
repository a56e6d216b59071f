// Process helpers for the client.js tests: free ports, a wsgate gateway and a
// redis-server, each started and stopped by PID, everything bounded in time.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..', '..');
export const BIN = process.env.WSGATE_BIN || path.join(ROOT, 'target', 'debug', 'wsgate');

// The test dependencies (ws, playwright-core) live in tests/browser/node_modules.
const require = createRequire(path.join(ROOT, 'tests', 'browser', 'package.json'));
export const WebSocket = require('ws');
export function requireDep(name) { return require(name); }

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves when `pred()` is truthy (polled), rejects after `timeoutMs`. */
export async function waitFor(pred, { timeoutMs = 15000, intervalMs = 25, what = 'condition' } = {}) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolves with the first event of `type` matching `pred`, rejects after `timeoutMs`. */
export function nextEvent(client, type, pred = () => true, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`timed out waiting for ${type}`)); }, timeoutMs);
    const off = client.on(type, (ev) => {
      if (pred(ev)) { clearTimeout(timer); off(); resolve(ev); }
    });
  });
}

function waitExit(proc, timeoutMs) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    proc.once('exit', () => { clearTimeout(t); resolve(true); });
  });
}

async function stopProc(proc, signal = 'SIGTERM', timeoutMs = 10000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  try { process.kill(proc.pid, signal); } catch { return; }
  if (!(await waitExit(proc, timeoutMs))) {
    try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
    await waitExit(proc, 5000);
  }
}

const live = new Set();
process.on('exit', () => { for (const p of live) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } } });

/**
 * Starts wsgate on 127.0.0.1:`port` (0: any free port); resolves once it printed
 * `wsgate listening on ADDR`. Returns {proc, port, addr, http, ws, stop()}.
 */
export function startGateway({ port = 0, redisUrl = null, args = [], timeoutMs = 20000 } = {}) {
  const argv = ['--listen', `127.0.0.1:${port}`, '--insecure-api', '--shutdown-timeout-ms', '2000', ...args];
  if (redisUrl) argv.push('--redis-url', redisUrl);
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' };
  delete env.WSGATE_JWT_SECRET;
  env.WSGATE_PRESENCE_GRACE_MS = '0';
  const proc = spawn(BIN, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
  live.add(proc);
  proc.on('exit', () => live.delete(proc));
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; if (stderr.length > 20000) stderr = stderr.slice(-10000); });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => { stopProc(proc, 'SIGKILL'); reject(new Error(`wsgate did not start: ${stderr}`)); }, timeoutMs);
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`wsgate exited (${code}): ${stderr}`)); });
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /wsgate listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        const addr = m[1];
        const p = Number(addr.split(':').pop());
        resolve({
          proc, port: p, addr,
          http: `http://${addr}`, ws: `ws://${addr}/ws`,
          stderr: () => stderr,
          stop: (signal = 'SIGTERM') => stopProc(proc, signal),
        });
      }
    });
  });
}

/** Starts a throw-away redis-server on a free port; resolves {port, url, stop()}. */
export async function startRedis({ timeoutMs = 15000, port = null } = {}) {
  port = port ?? await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  proc.on('exit', () => live.delete(proc));
  await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => { stopProc(proc, 'SIGKILL'); reject(new Error(`redis did not start: ${out}`)); }, timeoutMs);
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`redis exited (${code}): ${out}`)); });
    proc.stdout.on('data', (d) => {
      out += d;
      if (/Ready to accept connections/i.test(out)) { clearTimeout(timer); resolve(); }
    });
  });
  return { proc, port, url: `redis://127.0.0.1:${port}`, stop: (signal = 'SIGTERM') => stopProc(proc, signal) };
}

/** POSTs JSON to the gateway's HTTP API (it runs with --insecure-api). */
export async function postJson(base, p, body) {
  const res = await fetch(base + p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${p}: ${res.status} ${text}`);
  return JSON.parse(text);
}
