// EventSource over HTTPS with HTTP/2: a page opens more streams to the hub
// than HTTP/1.1 allows per origin (six), and every one of them gets events.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, dataDir, freePort, launchBrowser, screenshot, startHub } from './harness.mjs';

let browser;
let certDir;
let cert;
let key;

before(async () => {
  // A certificate of the test's own, which this browser alone trusts (by
  // its public key's hash): no certificate error is ignored otherwise.
  certDir = dataDir();
  cert = join(certDir, 'cert.pem');
  key = join(certDir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const spki = new X509Certificate(readFileSync(cert)).publicKey.export({ type: 'spki', format: 'der' });
  const pin = createHash('sha256').update(spki).digest('base64');
  browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${pin}`]);
});
after(async () => {
  await browser?.close();
  cleanup(certDir);
});

test('over HTTPS with HTTP/2, twelve EventSources of one page all stream on one connection', async () => {
  const dir = dataDir();
  const hub = await startHub({ port: await freePort(), dir, args: ['--tls-cert', cert, '--tls-key', key] });
  try {
    assert.match(hub.url, /^https:\/\//);
    const page = await browser.newPage();
    await page.goto(`${hub.url}/healthz`);
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    assert.equal(protocol, 'h2');
    await page.evaluate(() => {
      const sources = Array.from({ length: 12 }, (_, i) => new EventSource(`/.well-known/mercure?topic=h2/${i}&topic=h2/all`));
      window.received = sources.map((source) => new Promise((resolve) => {
        source.onmessage = (event) => resolve(event.data);
      }));
      window.sources = sources;
    });
    // Every stream open (a seventh would wait forever on HTTP/1.1).
    await page.waitForFunction(() => window.sources.every((s) => s.readyState === EventSource.OPEN),
      null, { timeout: 10_000 });
    const got = await page.evaluate(async () => {
      const received = window.received;
      const published = await fetch('/.well-known/mercure', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'topic=h2/all&data=to-every-stream',
      });
      if (!published.ok) throw new Error(`publish: ${published.status}`);
      const data = await Promise.all(received);
      const metrics = await (await fetch('/metrics')).text();
      return { data, metrics };
    });
    assert.deepEqual(got.data, Array(12).fill('to-every-stream'));
    // Twelve streams, and the page's requests, on one TCP connection.
    assert.match(got.metrics, /\nssehub_streams 12\n/);
    assert.match(got.metrics, /\nssehub_connections 1\n/);
    await screenshot(page, 'https-h2');
    await page.close();
  } finally {
    await hub.stop();
    cleanup(dir);
  }
});
