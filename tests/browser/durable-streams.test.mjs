// The official Durable Streams TypeScript client (@durable-streams/client),
// in Chromium, on a page the hub serves, reads an AI answer while it is
// appended; the hub is killed (or stopped) and restarted in the middle; the
// page ends with the whole answer, nothing lost or repeated.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'esbuild';
import {
  cleanup, consoleErrors, dataDir, freePort, launchBrowser, screenshot, startHub, until,
} from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

// The page and the client module are themselves durable streams (text/html
// and text/javascript): the hub serves them from its own origin.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>answer</title>
<pre id="answer"></pre>
<script type="module">
  import { stream } from '/v1/stream/app/client.mjs';
  const out = document.getElementById('answer');
  window.chunks = 0;
  const response = await stream({
    url: new URL('/v1/stream/answers/1', location).href,
    offset: '-1',
    live: location.hash.slice(1),
    warnOnHttp: false,
    backoffOptions: { initialDelay: 50, maxDelay: 500, multiplier: 2 },
  });
  response.subscribeText((chunk) => {
    out.textContent += chunk.text;
    window.chunks += 1;
    if (chunk.streamClosed) window.answerDone = true;
  });
</script>
`;

async function put(url, contentType, body) {
  const response = await fetch(url, { method: 'PUT', headers: { 'content-type': contentType }, body });
  assert.equal(response.status, 201, `PUT ${url}`);
}

/** One producer append (retried by the caller's loop if the hub is down). */
async function produce(url, seq, text, close = false) {
  const headers = {
    'content-type': 'text/plain', 'producer-id': 'llm', 'producer-epoch': '0', 'producer-seq': String(seq),
  };
  if (close) headers['stream-closed'] = 'true';
  const response = await fetch(url, { method: 'POST', headers, body: text });
  assert.ok([200, 204].includes(response.status), `seq ${seq}: ${response.status}`);
}

// Long-poll through a kill -9; SSE through a stop (SIGTERM): the client's
// SSE mode (0.2.7) reconnects when a stream ends, but throws "network error"
// when a connection is cut in the middle of one, as a kill does.
for (const [live, signal] of [['long-poll', 'SIGKILL'], ['sse', 'SIGTERM']]) test(`the official client (${live}) reads an answer being appended, whole, through a hub restarted with ${signal}`, async () => {
  const dir = dataDir();
  const port = await freePort();
  let hub = await startHub({ port, dir });
  try {
    const bundle = await build({
      entryPoints: ['@durable-streams/client'], bundle: true, format: 'esm', platform: 'browser', write: false,
    });
    await put(`${hub.url}/v1/stream/app/client.mjs`, 'text/javascript', bundle.outputFiles[0].contents);
    await put(`${hub.url}/v1/stream/app/page.html`, 'text/html', PAGE);
    const answer = `${hub.url}/v1/stream/answers/1`;
    await put(answer, 'text/plain');
    const words = Array.from({ length: 60 }, (_, i) => `word${i}${i % 10 === 9 ? '\n' : ' '}`);

    const page = await browser.newPage();
    const errors = consoleErrors(page);
    await page.goto(`${hub.url}/v1/stream/app/page.html#${live}`);
    let seq = 0;
    for (; seq < 30; seq += 1) {
      await produce(answer, seq, words[seq]);
      if (seq === 5) {
        // Live: the page has the start before the rest is written.
        await page.waitForFunction(() => document.getElementById('answer').textContent.includes('word5'),
          null, { timeout: 10_000 });
      }
    }
    await page.waitForFunction(() => document.getElementById('answer').textContent.includes('word29'),
      null, { timeout: 10_000 });
    await screenshot(page, `durable-streams-${live}-before-restart`);

    await hub.stop(signal);
    hub = await startHub({ port, dir });
    // The writer goes on: its last append again first (a duplicate: kept
    // once), then the rest, the last one closing the stream.
    await produce(answer, seq - 1, words[seq - 1]);
    for (; seq < words.length; seq += 1) {
      await produce(answer, seq, words[seq], seq === words.length - 1);
    }
    await page.waitForFunction(() => window.answerDone === true, null, { timeout: 30_000 });
    const text = await page.textContent('#answer');
    assert.equal(text, words.join(''), 'the whole answer, once, in order');
    assert.ok(await page.evaluate(() => window.chunks) > 1, 'it arrived in pieces');
    await screenshot(page, `durable-streams-${live}-after-restart`);
    assert.deepEqual(errors.ofThePage(), []);
    // What the hub holds is the same answer.
    await until(async () => (await (await fetch(`${answer}?offset=-1`)).text()) === words.join(''),
      'the stored answer');
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});
