// The four scenarios as a person meets them: a hub that restarts, a reload,
// a second tab, another origin, a stop button, a narrow screen.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import {
  cleanup, consoleErrors, dataDir, freePort, history, launchBrowser, screenshot, startHub, stats, until,
} from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

function files(count, size) {
  return Array.from({ length: count }, (_, i) => ({
    name: `file-${i + 1}.txt`, mimeType: 'text/plain', buffer: Buffer.alloc(size, `file ${i} `),
  }));
}

const state = (page) => page.evaluate(() => window.subscription && window.subscription.state);

test('a hub killed in the middle of an upload: the task ends as failed, with its reason, also after a reload', async () => {
  const dir = dataDir();
  const port = await freePort();
  let hub = await startHub({ port, dir, args: ['--demo-pace', '80ms'] });
  try {
    const page = await browser.newPage();
    const errors = consoleErrors(page);
    await page.goto(`${hub.url}/upload`);
    await page.setInputFiles('#files', files(5, 20_000));
    assert.equal(await page.textContent('#chosen'), '5 files');
    await page.click('#start');
    await page.waitForSelector('.file[data-status="done"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('#task', 'data-outcome'), 'working');
    await screenshot(page, 'upload-working');
    await hub.stop('SIGKILL');
    await page.waitForFunction(() => window.subscription?.state === 'reconnecting', null, { timeout: 10_000 });
    assert.equal(await page.textContent('#conn'), 'reconnecting');
    await page.waitForSelector('#notice:not([hidden])', { timeout: 10_000 });
    await screenshot(page, 'upload-reconnecting');
    hub = await startHub({ port, dir, args: ['--demo-pace', '80ms'] });
    // The restarted hub cannot continue (the files were in memory): the
    // task's final state says it failed, and why.
    await page.waitForSelector('#task[data-outcome="failed"]', { timeout: 20_000 });
    assert.match(await page.textContent('#notice'), /failed: the hub restarted while this task was running/);
    assert.equal(await page.textContent('#conn'), 'failed');
    const statuses = await page.$$eval('.file', (els) => els.map((el) => el.dataset.status));
    assert.equal(statuses[0], 'done');
    assert.equal(statuses.at(-1), 'failed');
    assert.ok(!statuses.includes('hashing') && !statuses.includes('waiting'), statuses.join());
    await page.waitForFunction(() => window.subscription?.state === 'finished');
    await screenshot(page, 'upload-failed');
    // The final state is what the hub keeps: a reload shows it at once, and
    // the page does not reconnect to a task that is over.
    await page.reload();
    await page.waitForSelector('#task[data-outcome="failed"]', { timeout: 5_000 });
    await page.waitForFunction(() => window.subscription?.state === 'finished');
    const code = await page.textContent('#code');
    const stored = await history(hub.url, `tasks/${code}`);
    const last = JSON.parse(stored.filter((e) => e.type === 'state').at(-1).data);
    assert.equal(last.failed, true);
    assert.equal(last.finished, true);
    assert.deepEqual(errors.ofThePage(), []);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('upload mistakes are told on the page, not in pop-ups', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir });
  try {
    const page = await browser.newPage();
    const errors = consoleErrors(page);
    page.on('dialog', (dialog) => { errors.all.push(`dialog: ${dialog.message()}`); dialog.dismiss(); });
    await page.goto(`${hub.url}/upload`);
    await page.click('#start');
    assert.equal(await page.textContent('#form-notice'), 'Choose at least one file first.');
    await screenshot(page, 'upload-no-files');
    assert.deepEqual(errors.all, []);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('a chat page reloaded mid-answer ends with the whole answer once, and the backend reads its acknowledged position', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, args: ['--demo-pace', '40ms'] });
  try {
    const page = await browser.newPage();
    const errors = consoleErrors(page);
    await page.goto(`${hub.url}/chat`);
    const question = 'How does resume work after a reconnect?';
    await page.fill('#question', question);
    await page.click('#ask');
    await page.waitForFunction(() => parseInt(document.getElementById('meta').textContent, 10) >= 8, null, { timeout: 20_000 });
    await screenshot(page, 'chat-working');
    await page.reload();
    await page.waitForSelector('#answer[data-done="true"]', { timeout: 30_000 });
    const shown = await page.$eval('#answer', (el) => el.textContent);
    const id = (await page.evaluate(() => location.hash)).replace('#chat=', '');
    const stored = await history(hub.url, `chat/${id}`);
    assert.equal(shown, stored.filter((e) => e.type === 'fragment').map((e) => e.data).join(''));
    assert.equal(shown.split(question).length, 2, 'the answer is shown once');
    assert.ok(shown.includes('Last-Event-ID'), 'an answer on the question\'s subject');
    assert.equal(await page.textContent('#conn'), 'done');
    await screenshot(page, 'chat-finished');
    // What the page showed last is the answer's `end`; the hub has it as
    // the client's acknowledged position.
    const end = stored.find((e) => e.type === 'end');
    assert.equal(await page.evaluate(() => window.subscription.lastEventId), end.id);
    const clientId = `${await page.evaluate(() => localStorage.getItem('ssehub-demo-client'))}.${id}`;
    const ack = await until(async () => {
      const res = await fetch(`${hub.url}/v1/clients/${clientId}/ack`);
      const json = await res.json();
      return json.last_event_id === end.id && json;
    }, 'the acknowledged position');
    assert.equal(ack.client_id, clientId);
    assert.deepEqual(errors.ofThePage(), []);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('the stop button stops an answer, which ends as stopped', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, args: ['--demo-pace', '100ms'] });
  try {
    const page = await browser.newPage();
    const errors = consoleErrors(page);
    await page.goto(`${hub.url}/chat`);
    await page.fill('#question', '¿Cómo funciona la reconexión?');
    await page.click('#ask');
    await page.waitForFunction(() => parseInt(document.getElementById('meta').textContent, 10) >= 8, null, { timeout: 20_000 });
    await page.click('#stop');
    await page.waitForSelector('#answer[data-outcome="stopped"]', { timeout: 10_000 });
    assert.equal(await page.textContent('#conn'), 'stopped');
    assert.ok(await page.isHidden('#stop'));
    const shown = await page.$eval('#answer', (el) => el.textContent);
    assert.ok(shown.startsWith('Preguntaste: “¿Cómo funciona la reconexión?”\n'), shown);
    assert.ok(!shown.includes('Esa es toda la respuesta.'), 'stopped before its end');
    await screenshot(page, 'chat-stopped');
    const id = (await page.evaluate(() => location.hash)).replace('#chat=', '');
    const stored = await history(hub.url, `chat/${id}`);
    const events = stored.filter((e) => e.type !== 'complete');
    assert.equal(events.at(-1).type, 'end');
    assert.equal(events.at(-1).data, 'stopped');
    assert.deepEqual(errors.ofThePage(), []);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('two tabs with one client id: the second takes over, the first stays replaced (no flapping for 10 s) and can take it back', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, args: ['--demo-pace', '500ms'] });
  try {
    // One browser profile: both tabs share the client id in localStorage.
    const context = await browser.newContext();
    const first = await context.newPage();
    const errors = [consoleErrors(first)];
    await first.goto(`${hub.url}/chat`);
    await first.fill('#question', 'What is SSE?');
    await first.click('#ask');
    await first.waitForFunction(() => window.subscription?.state === 'open', null, { timeout: 10_000 });
    const url = first.url();
    const second = await context.newPage();
    errors.push(consoleErrors(second));
    await second.goto(url);
    await first.waitForFunction(() => window.subscription?.state === 'replaced', null, { timeout: 10_000 });
    await second.waitForFunction(() => window.subscription?.state === 'open', null, { timeout: 10_000 });
    assert.match(await first.textContent('#notice'), /open in another tab/);
    await screenshot(first, 'chat-replaced');
    // Watch for 10 s (the retry delay is 500 ms): no stream is opened again.
    // (This wait is the observation under test, not a wait for a condition.)
    const opened = (await stats(hub.url)).opened;
    await new Promise((r) => setTimeout(r, 10_000));
    const later = await stats(hub.url);
    assert.equal(later.opened, opened, 'a replaced tab reconnected');
    assert.equal(later.clients, 1);
    assert.equal(await state(first), 'replaced');
    assert.equal(await state(second), 'open');
    // Taking it back replaces the other tab, once.
    await first.click('#take-back');
    await first.waitForFunction(() => window.subscription?.state === 'open', null, { timeout: 10_000 });
    await second.waitForFunction(() => window.subscription?.state === 'replaced', null, { timeout: 10_000 });
    assert.equal((await stats(hub.url)).opened, opened + 1);
    // The answer goes on in the tab that has it, without loss or repeat.
    await first.waitForSelector('#answer[data-done="true"]', { timeout: 60_000 });
    const shown = await first.$eval('#answer', (el) => el.textContent);
    const id = url.split('#chat=')[1];
    const stored = await history(hub.url, `chat/${id}`);
    assert.equal(shown, stored.filter((e) => e.type === 'fragment').map((e) => e.data).join(''));
    for (const e of errors) assert.deepEqual(e.ofThePage(), []);
    await context.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('a plain EventSource that ignores `replaced` stops too: its reconnect is refused with a status it does not retry', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir });
  try {
    const page = await browser.newPage();
    await page.goto(`${hub.url}/`);
    await page.evaluate(() => {
      const open = () => new EventSource('/.well-known/mercure?match=plain&client_id=plain-tab');
      window.first = open();
      window.first.onopen = () => { window.second = open(); };
    });
    await page.waitForFunction(() => window.first.readyState === EventSource.CLOSED, null, { timeout: 10_000 });
    // Six retry delays of watching: nothing reconnects (the observation
    // under test).
    const opened = (await stats(hub.url)).opened;
    await new Promise((r) => setTimeout(r, 3_000));
    assert.equal((await stats(hub.url)).opened, opened);
    assert.equal(await page.evaluate(() => window.second.readyState), 1);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

/** A page on another origin that uses the hub, as a plain script or an ES module. */
async function otherOrigin(hubUrl) {
  const port = await freePort();
  const page = (body) => `<!doctype html><html><head><link rel="icon" href="data:,"></head><body>${body}</body></html>`;
  const setup = `
    window.seen = []; window.errors = []; window.states = [];
    const options = {
      hub: '${hubUrl}/.well-known/mercure', topics: ['cross'],
      on: { message: (d) => window.seen.push(d) },
      onError: (e) => window.errors.push(e), onStateChange: (s) => window.states.push(s),
    };
    window.publish = async (data) => {
      try {
        const res = await fetch('${hubUrl}/.well-known/mercure', { method: 'POST', body: new URLSearchParams({ topic: 'cross', data }) });
        return { status: res.status, body: await res.text() };
      } catch (e) { return { error: e.message }; }
    };`;
  const pages = {
    '/script': page(`<script src="${hubUrl}/ssehub.js"></script><script>${setup} window.sub = SSEHub.subscribe(options);</script>`),
    '/module': page(`<script type="module">import { subscribe } from '${hubUrl}/ssehub.mjs'; ${setup} window.sub = subscribe(options);</script>`),
  };
  const server = createServer((req, res) => {
    res.writeHead(pages[req.url] ? 200 : 404, { 'content-type': 'text/html; charset=utf-8' });
    res.end(pages[req.url] || 'not found');
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  // localhost, not 127.0.0.1: another origin than the hub's.
  return { url: `http://localhost:${port}`, close: () => new Promise((r) => server.close(r)) };
}

test('ssehub.js from another origin: with --dev it works as a script and as a module; without, the page is told it is CORS', async () => {
  for (const dev of [true, false]) {
    const dir = dataDir();
    const hub = await startHub({ port: await freePort(), dir, dev });
    const site = await otherOrigin(hub.url);
    try {
      for (const kind of ['script', 'module']) {
        const page = await browser.newPage();
        const errors = consoleErrors(page);
        await page.goto(`${site.url}/${kind}`);
        if (dev) {
          await page.waitForFunction(() => window.sub && window.sub.state === 'open', null, { timeout: 10_000 });
          // A publish from that page is answered to it, and delivered.
          const published = await page.evaluate(() => window.publish(`from the ${document.location.pathname} page`));
          assert.equal(published.status, 200, JSON.stringify(published));
          await page.waitForFunction(() => window.seen.length === 1, null, { timeout: 10_000 });
          assert.equal(await page.evaluate(() => window.seen[0]), `from the /${kind} page`);
          assert.deepEqual(errors.all, []);
        } else {
          await page.waitForFunction(() => window.sub && window.sub.state === 'failed', null, { timeout: 10_000 });
          const [error] = await page.evaluate(() => window.errors);
          assert.equal(error.reason, 'cors', JSON.stringify(error));
          assert.equal(error.retrying, false);
          assert.match(error.message, /--cors-origin http:\/\/localhost:\d+/);
          // (It starts as 'connecting'.) It never claimed to be open.
          assert.deepEqual(await page.evaluate(() => window.states), ['failed']);
          await screenshot(page, `cross-origin-${kind}-refused`);
        }
        await page.close();
      }
    } finally {
      await site.close();
      await hub.stop();
      cleanup(dir);
    }
  }
});

test('every page loads without console errors, has a favicon, and holds at 390 px', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir });
  try {
    const icon = await fetch(`${hub.url}/favicon.ico`);
    assert.equal(icon.status, 200);
    assert.equal(icon.headers.get('content-type'), 'image/svg+xml');
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    for (const name of ['', 'upload', 'chat', 'live']) {
      const page = await context.newPage();
      const errors = consoleErrors(page);
      await page.goto(`${hub.url}/${name}`);
      if (name) await page.waitForFunction(() => window.subscription === undefined || window.subscription?.state === 'open' || !!window.subscription, null, { timeout: 10_000 });
      if (name === 'live') await page.waitForFunction(() => window.subscription?.state === 'open', null, { timeout: 10_000 });
      const overflow = await page.evaluate(() => {
        const links = [...document.querySelectorAll('header a')];
        const right = Math.max(...links.map((a) => a.getBoundingClientRect().right));
        return { right, width: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth };
      });
      assert.ok(overflow.right <= overflow.width - 12, `${name}: header link at ${overflow.right} of ${overflow.width}`);
      assert.ok(overflow.scroll <= overflow.width, `${name}: the page scrolls sideways`);
      await screenshot(page, `narrow-${name || 'home'}`);
      assert.deepEqual(errors.all, [], `${name || 'home'}`);
      await page.close();
    }
    await context.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('chat: a model that cannot be reached ends the answer as failed, said plainly', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, args: ['--llm-url', 'http://127.0.0.1:9/v1'] });
  try {
    const page = await browser.newPage();
    const errors = consoleErrors(page);
    await page.goto(`${hub.url}/chat`);
    await page.fill('#question', 'anyone there?');
    await page.click('#ask');
    await page.waitForSelector('#answer[data-outcome="failed"]', { timeout: 20_000 });
    assert.equal(await page.textContent('#conn'), 'failed');
    assert.match(await page.textContent('#notice'), /^The answer failed: the model did not answer/);
    assert.ok(await page.isHidden('#stop'));
    await screenshot(page, 'chat-failed');
    assert.deepEqual(errors.ofThePage(), []);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('live: through a hub restart the page says reconnecting, then goes on; log lines stay in order', async () => {
  const dir = dataDir();
  const port = await freePort();
  let hub = await startHub({ port, dir });
  try {
    const page = await browser.newPage();
    const errors = consoleErrors(page);
    await page.goto(`${hub.url}/live`);
    await page.waitForFunction(() => document.querySelectorAll('#logs div').length >= 2, null, { timeout: 10_000 });
    await hub.stop('SIGKILL');
    await page.waitForFunction(() => window.subscription?.state === 'reconnecting', null, { timeout: 10_000 });
    assert.equal(await page.textContent('#conn'), 'reconnecting');
    await screenshot(page, 'live-reconnecting');
    const before = await page.$$eval('#logs div', (els) => els.length);
    hub = await startHub({ port, dir });
    await page.waitForFunction((n) => document.querySelectorAll('#logs div').length >= n + 2, before, { timeout: 15_000 });
    assert.equal(await page.textContent('#conn'), 'open');
    // Newest first; the order numbers keep falling down the list.
    const orders = await page.$$eval('#logs div', (els) => els.map((el) => Number(el.textContent.match(/order #(\d+)/)[1])));
    assert.deepEqual(orders, [...orders].sort((a, b) => b - a), orders.join());
    assert.equal(new Set(orders).size, orders.length, 'no line shown twice');
    // The clock shows the hub's time now, not a value from before.
    const shown = await page.textContent('#clock');
    assert.notEqual(shown, '--:--:--');
    await screenshot(page, 'live-after-restart');
    assert.deepEqual(errors.ofThePage(), []);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('two tabs of one browser on two different answers do not replace each other', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, args: ['--demo-pace', '300ms'] });
  try {
    const context = await browser.newContext();
    const tabs = [await context.newPage(), await context.newPage()];
    for (const [i, tab] of tabs.entries()) {
      await tab.goto(`${hub.url}/chat`);
      await tab.fill('#question', `question ${i}: what is SSE?`);
      await tab.click('#ask');
      await tab.waitForFunction(() => window.subscription?.state === 'open', null, { timeout: 10_000 });
    }
    await until(async () => (await stats(hub.url)).clients === 2, 'two clients');
    for (const tab of tabs) assert.equal(await state(tab), 'open');
    await context.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('what a publisher sends is shown as text, never run as markup', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir });
  try {
    const hostile = '"><img src=x onerror="window.pwned=1">';
    const publish = (fields) => fetch(`${hub.url}/.well-known/mercure`, { method: 'POST', body: new URLSearchParams(fields) });
    const task = {
      code: 'evil', step: hostile, finished: false, failed: false,
      files: [{ name: hostile, size: 1, status: hostile, progress: 0.5 }],
    };
    assert.equal((await publish({ topic: 'tasks/evil', type: 'state', retain: 'on', data: JSON.stringify(task) })).status, 200);
    const page = await browser.newPage();
    await page.goto(`${hub.url}/upload#task=evil`);
    await page.waitForSelector('.file', { timeout: 10_000 });
    assert.ok((await page.textContent('.file .name')).startsWith(hostile));
    await page.goto(`${hub.url}/live`);
    await page.waitForFunction(() => window.subscription?.state === 'open', null, { timeout: 10_000 });
    // The demo's ticker replaces the prices every 500 ms: publish until the
    // hostile row is seen before it is replaced.
    await until(async () => {
      assert.equal((await publish({ topic: 'live/prices', type: 'prices', data: JSON.stringify([{ symbol: hostile, price: 1 }]) })).status, 200);
      return page.waitForFunction((text) => [...document.querySelectorAll('#prices td')].some((td) => td.textContent === text),
        hostile, { timeout: 300 }).then(() => true, () => false);
    }, 'the hostile price row shown as text');
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.equal(await page.$$eval('img', (imgs) => imgs.length), 0);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('in production mode the chat works without client ids, and says nothing alarming', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, dev: false, args: ['--demo-pace', '20ms'] });
  try {
    const page = await browser.newPage();
    await page.goto(`${hub.url}/chat`);
    for (const question of ['first?', 'second?']) {
      await page.fill('#question', question);
      await page.click('#ask');
      await page.waitForFunction((q) => document.getElementById('asked').textContent === q
        && document.getElementById('answer').dataset.done === 'true', question, { timeout: 30_000 });
      assert.equal(await page.textContent('#conn'), 'done');
      assert.ok(await page.isHidden('#notice'));
    }
    // Refused once, remembered for the tab.
    assert.equal(await page.evaluate(() => sessionStorage.getItem('ssehub-demo-no-client-ids')), '1');
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('chat: asking while the hub is down is told on the page, and the status line never reads "error: undefined"', async () => {
  const dir = dataDir();
  const port = await freePort();
  let hub = await startHub({ port, dir, args: ['--demo-pace', '50ms'] });
  try {
    const page = await browser.newPage();
    const dialogs = [];
    page.on('dialog', (dialog) => { dialogs.push(dialog.message()); dialog.dismiss(); });
    await page.goto(`${hub.url}/chat`);
    await page.fill('#question', 'what is SSE?');
    await page.click('#ask');
    await page.waitForFunction(() => parseInt(document.getElementById('meta').textContent, 10) >= 3, null, { timeout: 20_000 });
    await hub.stop('SIGKILL');
    await page.waitForFunction(() => window.subscription?.state === 'reconnecting', null, { timeout: 10_000 });
    await page.waitForSelector('#notice:not([hidden])', { timeout: 10_000 });
    assert.doesNotMatch(await page.textContent('#meta'), /error|undefined/);
    assert.equal(await page.textContent('#conn'), 'reconnecting');
    await screenshot(page, 'chat-reconnecting');
    await page.fill('#question', 'and now?');
    await page.click('#ask');
    await page.waitForSelector('#form-notice:not([hidden])', { timeout: 10_000 });
    assert.equal(await page.textContent('#form-notice'), 'Asking failed: the hub cannot be reached; try again in a moment');
    hub = await startHub({ port, dir, args: ['--demo-pace', '50ms'] });
    await page.waitForSelector('#answer[data-done="true"]', { timeout: 30_000 });
    assert.equal(await page.textContent('#conn'), 'done');
    assert.deepEqual(dialogs, []);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});
