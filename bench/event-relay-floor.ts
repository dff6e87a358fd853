#!/usr/bin/env node
/**
 * The floor for event → alert, run as its own process: holds one QMP monitor of a guest and, for
 * every MIGRATION event whose status is "setup", POSTs one small JSON document to a URL over a
 * kept-alive HTTP connection. No judging, no spool, no retry: the least any relay can do.
 *
 *   node build/bench/event-relay-floor.js --socket PATH --url http://127.0.0.1:PORT/relay
 *
 * Prints {"ready": true} once negotiated; exits on SIGTERM.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { WireClient } from './qmp-wire';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { socket: { type: 'string' }, url: { type: 'string' } } });
  if (!values.socket || !values.url) throw new Error('usage: event-relay-floor --socket PATH --url URL');
  const url = new URL(values.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const c = await WireClient.connect(values.socket);
  c.onEvent = (ev) => {
    if (ev.event !== 'MIGRATION' || ev.data?.status !== 'setup') return;
    const body = JSON.stringify({ event: ev.event, status: ev.data.status, timestamp: ev.timestamp });
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => res.resume(),
    );
    req.on('error', (err) => process.stderr.write(`relay: ${err.message}\n`));
    req.end(body);
  };
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  process.once('SIGTERM', () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`event-relay-floor: ${(err as Error).message}\n`);
  process.exit(1);
});
