// The status page at /admin/ in a real Chromium: behind the admin token
// (asked for as HTTP Basic), its charts move while a test publishes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { cleanup, dataDir, freePort, launchBrowser, screenshot, startHub, until } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const ADMIN = 'admin-token-of-the-status-test';
const KEY = 'publisher-key-of-the-status-test';

/** An HS256 publisher token for any topic. */
function publisherToken() {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ mercure: { publish: ['*'] } })}`;
  return `${unsigned}.${createHmac('sha256', KEY).update(unsigned).digest('base64url')}`;
}

test('the status page asks for the admin token, then its rates move while a test publishes', async () => {
  const dir = dataDir();
  const hub = await startHub({
    port: await freePort(), dir, dev: false,
    args: ['--admin-token', ADMIN, '--publisher-jwt-key', KEY],
  });
  const subscriber = new AbortController();
  let publishing = true;
  try {
    // Without the token: refused, with the challenge that makes a browser ask.
    const refused = await fetch(`${hub.url}/admin/`);
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('www-authenticate'), /^Basic realm="ssehub admin"/);
    assert.equal((await refused.json()).error, 'unauthorized');
    const wrong = await fetch(`${hub.url}/admin/events`, {
      headers: { authorization: `Basic ${Buffer.from('x:wrong').toString('base64')}` },
    });
    assert.equal(wrong.status, 401);

    // A subscriber, so that deliveries move too.
    const stream = await fetch(`${hub.url}/.well-known/mercure?topic=status/test`, { signal: subscriber.signal });
    assert.equal(stream.status, 200);
    stream.body.getReader().read().catch(() => {});

    const context = await browser.newContext({ httpCredentials: { username: 'operator', password: ADMIN } });
    const page = await context.newPage();
    await page.goto(`${hub.url}/admin/`);
    await page.waitForFunction(() => document.getElementById('state').textContent === 'ready', null, { timeout: 10_000 });
    const value = (key) => page.$eval(`[data-key="${key}"]`, (el) => Number(el.dataset.value ?? 'NaN'));
    assert.equal(await value('streams'), 1);

    const token = publisherToken();
    const publisher = (async () => {
      for (let i = 0; publishing && i < 20_000; i++) {
        await fetch(`${hub.url}/.well-known/mercure`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
          body: `topic=status/test&data=${i}`,
        });
        // One refused publish in ten (no token).
        if (i % 10 === 0) await fetch(`${hub.url}/.well-known/mercure`, { method: 'POST', body: 'topic=x&data=y' });
      }
    })();
    await until(async () => (await value('published')) > 5, 'a publish rate on the page');
    await until(async () => (await value('delivered')) > 5, 'a delivery rate on the page');
    await until(async () => (await value('rejected')) > 0, 'refusals on the page');
    // A few seconds of the rate drawn, for the screenshot.
    await until(async () => (await page.$eval('[data-key="published"]', (el) => Number(el.dataset.points))) >= 6,
      'six seconds of publishing drawn');
    await screenshot(page, 'status-page');
    publishing = false;
    await publisher;
    // Once publishing stops, the rate falls back to zero.
    await until(async () => (await value('published')) === 0, 'the publish rate back at zero');
    await context.close();
  } finally {
    publishing = false;
    subscriber.abort();
    await hub.stop();
    cleanup(dir);
  }
});
