// ssehub.mjs as a bundled TypeScript frontend imports it: its types check
// under --strict, and they are real (a wrong option is an error, so they
// are not `any`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, '..', '..', 'web');

test('the ES module and its types check in a strict TypeScript project', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ssehub-types-'));
  try {
    mkdirSync(join(dir, 'vendor'));
    for (const file of ['ssehub.js', 'ssehub.mjs', 'ssehub.d.mts']) {
      copyFileSync(join(web, file), join(dir, 'vendor', file));
    }
    writeFileSync(join(dir, 'app.ts'), `
import SSEHub, { subscribe, type State, type SubscriptionError } from './vendor/ssehub.mjs';
const sub = subscribe({
  topics: ['tasks/42'],
  clientId: 'tab-1',
  ack: true,
  on: { state: (data: string, event: MessageEvent) => console.log(JSON.parse(data), event.lastEventId) },
  onError: (e: SubscriptionError) => console.log(e.reason, e.code, e.retrying),
  onStateChange: (s: State) => console.log(s),
});
const state: State = sub.state;
if (state === 'replaced') sub.takeBack();
SSEHub.subscribe({ topics: ['x'] }).close();
// @ts-expect-error: there is no such option
subscribe({ topic: 'x' });
// @ts-expect-error: no such state
const wrong: State = 'gone';
`);
    const tsc = join(here, 'node_modules', '.bin', 'tsc');
    const run = () => execFileSync(tsc, ['--noEmit', '--strict', '--module', 'esnext', '--moduleResolution', 'bundler',
      '--target', 'es2020', '--lib', 'es2020,dom', join(dir, 'app.ts')], { encoding: 'utf8' });
    assert.doesNotThrow(run);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
