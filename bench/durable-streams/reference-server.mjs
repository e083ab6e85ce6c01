// The Durable Streams reference server (@durable-streams/server), on a port
// the system picks; prints "reference server on HOST:PORT" once it listens.
// With DATA_DIR set, its file-backed store.
import { DurableStreamTestServer } from '@durable-streams/server';

// The bench reads the announcement only: the server's own logging goes
// nowhere (it would come first, or into a closed pipe).
const announce = (line) => process.stdout.write(`${line}\n`);
process.stdout.on('error', () => {});
for (const level of ['log', 'info', 'debug', 'warn']) console[level] = () => {};

const server = new DurableStreamTestServer({
  port: 0,
  host: '127.0.0.1',
  dataDir: process.env.DATA_DIR || undefined,
});
const url = await server.start();
announce(`reference server on ${new URL(url).host}`);
// Its stop() waits for every keep-alive connection to close: exit at once.
process.on('SIGTERM', () => process.exit(0));
