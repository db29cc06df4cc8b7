// A real browser (Debian's Chromium, driven by playwright-core) follows Tributary with a
// plain `new EventSource(...)`, as a web page would, and resumes by itself after the
// server is killed and restarted: every event exactly once, in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.TRIBUTARY_BIN ?? join(root, 'target', 'debug', 'tributary');
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function startOnce(dataDir, addr) {
  return new Promise((resolve, reject) => {
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('TRIBUTARY_')),
    );
    const proc = spawn(BIN, ['serve', '--addr', addr, '--data', dataDir], {
      env: { ...env, RUST_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('no listening line')); }, 20000);
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}`)); });
    const lines = createInterface({ input: proc.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      const url = line.replace('tributary listening on ', '').trim();
      resolve({ proc, url, addr: url.replace('http://', '') });
    });
  });
}

/** Starts `tributary serve`; retries while a just-killed server's port is still taken. */
async function startServer(dataDir, addr = '127.0.0.1:0') {
  for (let attempt = 0; ; attempt++) {
    try {
      return await startOnce(dataDir, addr);
    } catch (e) {
      if (attempt >= 50) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function kill9(server) {
  return new Promise((resolve) => {
    server.proc.removeAllListeners('exit');
    server.proc.once('exit', resolve);
    server.proc.kill('SIGKILL');
  });
}

async function publish(url, events) {
  const resp = await fetch(`${url}/api/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ events }),
  });
  assert.equal(resp.status, 201, await resp.text());
}

const batch = (from, to) =>
  Array.from({ length: to - from + 1 }, (_, i) => ({
    topic: 'browser.orders', name: 'v1.OrderPlaced', args: { n: from + i },
  }));

test('EventSource follows live and resumes across kill -9 with no gap or duplicate', { timeout: 90000 }, async () => {
  const data = mkdtempSync(join(tmpdir(), 'tributary-browser-'));
  let server = await startServer(data);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
  try {
    await publish(server.url, batch(1, 5));
    // Not matched by the page's filter: must never show up.
    const other = await fetch(`${server.url}/api/v1/events`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ topic: 'elsewhere', name: 'v1.Noise', args: {} }),
    });
    assert.equal(other.status, 201);

    const page = await browser.newPage();
    // Any page of the server's origin will do: the EventSource is same-origin.
    await page.goto(`${server.url}/healthz`);
    await page.evaluate(() => {
      window.received = [];
      window.opens = 0;
      window.caughtUp = 0;
      const es = new EventSource('/api/v1/events/stream?topic=browser.>');
      es.onopen = () => { window.opens += 1; };
      es.onmessage = (e) => {
        window.received.push({ id: Number(e.lastEventId), event: JSON.parse(e.data) });
      };
      es.addEventListener('caught-up', () => { window.caughtUp += 1; });
    });
    const waitFor = (n) => page.waitForFunction((k) => window.received.length >= k, n, { timeout: 20000 });

    await waitFor(5);
    await publish(server.url, batch(6, 10));
    await waitFor(10);

    // Crash the server under the open stream, bring it back on the same port, and
    // publish while the browser is still reconnecting on its own.
    const addr = server.addr;
    await kill9(server);
    server = await startServer(data, addr);
    await publish(server.url, batch(11, 15));
    await waitFor(15);
    // Give any stray duplicate a moment to show.
    await new Promise((r) => setTimeout(r, 500));

    const got = await page.evaluate(() => ({
      received: window.received, opens: window.opens, caughtUp: window.caughtUp,
    }));
    const ns = got.received.map((r) => r.event.args.n);
    assert.deepEqual(ns, Array.from({ length: 15 }, (_, i) => i + 1), 'every event once, in order');
    const ids = got.received.map((r) => r.id);
    assert.deepEqual(ids, [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], 'ids are positions');
    for (const r of got.received) {
      assert.equal(r.event.position, r.id);
      assert.equal(r.event.topic, 'browser.orders');
      assert.equal(r.event.name, 'v1.OrderPlaced');
    }
    assert.ok(got.opens >= 2, `the browser reconnected by itself (${got.opens} opens)`);
    assert.equal(got.caughtUp, got.opens, 'each connection marks where live begins');
  } finally {
    await browser.close();
    await kill9(server);
    rmSync(data, { recursive: true, force: true });
  }
});
