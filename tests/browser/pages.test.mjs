// The demo pages in a real Chromium against the real hub.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cleanup, dataDir, freePort, history, launchBrowser, screenshot, startHub, stats } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

function files(count, size) {
  return Array.from({ length: count }, (_, i) => {
    const buffer = Buffer.alloc(size, `file ${i} · 文件 🎉 `);
    return { name: `报告-${i + 1} 🎉.txt`, mimeType: 'text/plain', buffer };
  });
}

const sha256 = (buffer) => createHash('sha256').update(buffer).digest('hex');

test('the upload flow completes for 3 files, and complete stops reconnection', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, args: ['--demo-pace', '20ms'] });
  try {
    const page = await browser.newPage();
    await page.goto(`${hub.url}/upload`);
    const upload = files(3, 50_000);
    await page.setInputFiles('#files', upload);
    await page.click('#start');
    await page.waitForSelector('#task[data-finished="true"]', { timeout: 30_000 });
    const rows = await page.$$eval('.file', (els) => els.map((el) => ({
      status: el.dataset.status,
      name: el.querySelector('.name').textContent,
      hash: el.querySelector('.hash').textContent,
      width: el.querySelector('.bar > div').style.width,
    })));
    assert.equal(rows.length, 3);
    rows.forEach((row, i) => {
      assert.equal(row.status, 'done');
      assert.equal(row.width, '100%');
      assert.ok(row.name.startsWith(upload[i].name), row.name);
      assert.equal(row.hash, `sha256 ${sha256(upload[i].buffer)}`);
    });
    await screenshot(page, 'upload-complete');

    // After `complete` the page has closed its EventSource: no stream is
    // open and none is opened again, though the retry hint is 500 ms.
    await page.waitForFunction(() => window.subscription?.state === 'finished');
    assert.equal(await page.textContent('#conn'), 'done');
    const opened = (await stats(hub.url)).opened;
    await new Promise((r) => setTimeout(r, 2500));
    const later = await stats(hub.url);
    assert.equal(later.opened, opened, 'the page reconnected after complete');
    assert.equal(later.connections, 0);
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('a reload in the middle of an upload shows the current state at once and continues', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, args: ['--demo-pace', '60ms'] });
  try {
    const page = await browser.newPage();
    await page.goto(`${hub.url}/upload`);
    await page.setInputFiles('#files', files(3, 20_000));
    await page.click('#start');
    await page.waitForSelector('.file[data-status="done"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('#task', 'data-finished'), 'false');
    const code = await page.textContent('#code');
    await page.reload();
    // The retained state arrives with the first bytes: at least one file done.
    await page.waitForSelector('.file[data-status="done"]', { timeout: 3_000 });
    assert.equal(await page.textContent('#code'), code);
    await screenshot(page, 'upload-after-reload');
    await page.waitForSelector('#task[data-finished="true"]', { timeout: 30_000 });
    assert.equal(await page.$$eval('.file[data-status="done"]', (els) => els.length), 3);
    await screenshot(page, 'upload-reload-complete');
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('a hub restart in the middle of an answer ends with the whole answer shown exactly once', async () => {
  const dir = dataDir();
  const port = await freePort();
  let hub = await startHub({ port, dir, args: ['--demo-pace', '60ms'] });
  try {
    const page = await browser.newPage();
    await page.goto(`${hub.url}/chat`);
    const question = 'Does it survive a restart? 会断吗？🤔';
    await page.fill('#question', question);
    await page.click('#ask');
    await page.waitForFunction(() => /^(\d+) fragments/.test(document.getElementById('meta').textContent)
      && parseInt(document.getElementById('meta').textContent, 10) >= 10, null, { timeout: 20_000 });
    // Kill the hub hard mid-answer, then start it again on the same port
    // and data directory: the page's EventSource reconnects by itself.
    await hub.stop('SIGKILL');
    await screenshot(page, 'chat-hub-down');
    hub = await startHub({ port, dir, args: ['--demo-pace', '60ms'] });
    await page.waitForSelector('#answer[data-done="true"]', { timeout: 30_000 });
    const shown = await page.$eval('#answer', (el) => el.textContent);
    const id = (await page.evaluate(() => location.hash)).replace('#chat=', '');
    const stored = await history(hub.url, `chat/${id}`);
    const answer = stored.filter((e) => e.type === 'fragment').map((e) => e.data).join('');
    assert.equal(shown, answer);
    // A question in Chinese about restarts gets its answer in Chinese.
    assert.ok(shown.startsWith(`你的问题是：“${question}”\n`), shown);
    assert.ok(shown.endsWith('回答会接着继续。'), shown);
    assert.equal(shown.split(question).length, 2, 'the answer is shown once');
    // Each fragment is stored once: ids strictly increase, texts add up.
    const ids = stored.filter((e) => e.id).map((e) => Number(e.id.replace(/^#/, '')));
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
    assert.equal(new Set(ids).size, ids.length);
    await screenshot(page, 'chat-after-restart');
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});

test('the live page shows the clock, prices, logs and hub figures on one connection', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir });
  try {
    const page = await browser.newPage();
    await page.goto(`${hub.url}/live`);
    await page.waitForFunction(() => document.getElementById('clock').textContent !== '--:--:--', null, { timeout: 10_000 });
    await page.waitForSelector('#prices tr', { timeout: 10_000 });
    await page.waitForSelector('#logs div', { timeout: 10_000 });
    await page.waitForFunction(() => document.getElementById('connections').textContent !== '–', null, { timeout: 10_000 });
    assert.equal(await page.textContent('#connections'), '1', 'one connection carries the four topics');
    await new Promise((r) => setTimeout(r, 2000));
    await screenshot(page, 'live');
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});
