// Starts the real ssehub binary and a real Chromium for the browser tests.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const binary = process.env.SSEHUB_BIN || join(root, 'target', 'debug', 'ssehub');
export const artifacts = join(root, 'target', 'browser-artifacts');
mkdirSync(artifacts, { recursive: true });

/** A free TCP port on 127.0.0.1 (so a restarted hub can take the same one). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A fresh data directory, removed by `cleanup`. */
export function dataDir() {
  return mkdtempSync(join(tmpdir(), 'ssehub-browser-'));
}

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Runs `ssehub serve --dev` (or, with `dev: false`, in production mode with
 * the demos on) on 127.0.0.1:port with a durable store in dir, and resolves
 * once it prints its address.
 */
export async function startHub({ port, dir, args = [], dev = true }) {
  const child = spawn(binary, [
    'serve', ...(dev ? ['--dev'] : ['--demos', 'true']), '--listen', `127.0.0.1:${port}`,
    '--data-dir', dir, '--retry', '500ms', ...args,
  ], { env: { ...process.env, RUST_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the hub did not start in 10 s')), 10_000);
    child.once('exit', (code) => reject(new Error(`the hub exited with ${code}`)));
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(line.replace('ssehub listening on ', '').trim());
    });
  });
  return {
    url,
    child,
    /** Stops the hub with a signal and waits for it to exit. */
    stop(signal = 'SIGTERM') {
      return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill(signal);
      });
    },
  };
}

export async function stats(url) {
  const res = await fetch(`${url}/v1/stats`);
  return res.json();
}

export function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
}

/**
 * What a page logs as errors, and the errors its scripts throw. `network`
 * keeps the browser's own lines about requests that failed (a hub that
 * was stopped on purpose), which are no fault of the page.
 */
export function consoleErrors(page) {
  const errors = [];
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });
  page.on('pageerror', (error) => errors.push(`uncaught: ${error.message}`));
  return {
    all: errors,
    /** The errors other than failed requests. */
    ofThePage() {
      return errors.filter((e) => !/net::ERR_|Failed to load resource/.test(e));
    },
  };
}

/** Waits until `check()` (async) is truthy, at most `timeout` ms. */
export async function until(check, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check().catch(() => null);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

/** Reads a topic's whole history from the hub, until `complete`. */
export async function history(url, topic) {
  const res = await fetch(`${url}/.well-known/mercure?match=${encodeURIComponent(topic)}&lastEventID=earliest`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    if (text.includes('event: complete\n')) break;
  }
  reader.cancel().catch(() => {});
  return text.split('\n\n').filter((block) => block.includes('data:')).map((block) => {
    const event = { type: 'message', data: [], id: '' };
    for (const line of block.split('\n')) {
      const [field, ...rest] = line.split(':');
      const value = rest.join(':').replace(/^ /, '');
      if (field === 'event') event.type = value;
      if (field === 'data') event.data.push(value);
      if (field === 'id') event.id = value;
    }
    return { ...event, data: event.data.join('\n') };
  });
}
