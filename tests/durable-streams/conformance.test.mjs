// The official Durable Streams server conformance suite, against the hub
// that run-conformance.mjs started (CONFORMANCE_TEST_URL).
import { runConformanceTests } from '@durable-streams/server-conformance-tests';

const baseUrl = process.env.CONFORMANCE_TEST_URL;
if (!baseUrl) throw new Error('CONFORMANCE_TEST_URL is not set: run `node run-conformance.mjs`');
runConformanceTests({ baseUrl });
