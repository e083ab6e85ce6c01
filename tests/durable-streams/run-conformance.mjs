// Runs the Durable Streams conformance suite against the real ssehub
// binary, once on the memory store and once on the durable store, each hub
// on a port the system picks. Exits non-zero if any test fails.
//
//   node run-conformance.mjs            (SSEHUB_BIN picks the binary)
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.SSEHUB_BIN || join(here, '..', '..', 'target', 'debug', 'ssehub');

/** Starts a hub; resolves with its origin and a stop function. */
async function startHub(args) {
  const child = spawn(binary, ['serve', '--dev', '--listen', '127.0.0.1:0', ...args], {
    env: { ...process.env, RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const origin = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the hub did not start in 10 s')), 10_000);
    child.once('exit', (code) => reject(new Error(`the hub exited with ${code}`)));
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(new URL(line.replace('ssehub listening on ', '').trim()).origin);
    });
  });
  const stop = () => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
  return { origin, stop };
}

/** Runs vitest on the suite; resolves with its exit code. */
function runSuite(origin) {
  return new Promise((resolve) => {
    const vitest = spawn(join(here, 'node_modules', '.bin', 'vitest'),
      ['run', '--config', join(here, 'vitest.config.mjs'), '--reporter=dot'],
      { cwd: here, stdio: 'inherit', env: { ...process.env, CONFORMANCE_TEST_URL: origin } });
    vitest.once('exit', (code) => resolve(code ?? 1));
    vitest.once('error', (error) => {
      console.error(`vitest did not start: ${error.message} (npm ci in tests/durable-streams)`);
      resolve(1);
    });
  });
}

let failed = 0;
for (const store of ['memory', 'durable']) {
  const dir = mkdtempSync(join(tmpdir(), 'ssehub-conformance-'));
  // Long-polls answer 204 after a second, so the suite's timeouts are short.
  const hub = await startHub(['--store', store, '--data-dir', dir, '--stream-long-poll', '1s']);
  console.log(`\n==> Durable Streams conformance suite, ${store} store, ${hub.origin}`);
  let code = 1;
  try {
    code = await runSuite(hub.origin);
  } finally {
    // Never left running: the test command waits on its output.
    await hub.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  if (code !== 0) failed += 1;
}
process.exit(failed ? 1 : 0);
