#!/usr/bin/env node
/**
 * The floor for one more hop, run as its own process: a UNIX socket whose every client is piped,
 * byte for byte, to a fresh connection to the upstream QMP socket. It reads nothing, so it can
 * check nothing; what it costs is what any proxy process costs on this machine before doing any work.
 *
 *   node build/bench/pipe-proxy-floor.js --listen PATH --upstream PATH
 *
 * Prints {"ready": true} once listening; exits on SIGTERM.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { listen: { type: 'string' }, upstream: { type: 'string' } } });
if (!values.listen || !values.upstream) {
  process.stderr.write('usage: pipe-proxy-floor --listen PATH --upstream PATH\n');
  process.exit(64);
}
const upstreamPath = values.upstream;
const server = net.createServer((client) => {
  const up = net.createConnection(upstreamPath);
  client.pipe(up);
  up.pipe(client);
  const end = () => {
    client.destroy();
    up.destroy();
  };
  client.on('error', end).on('close', end);
  up.on('error', end).on('close', end);
});
server.listen(values.listen, () => process.stdout.write(JSON.stringify({ ready: true }) + '\n'));
process.once('SIGTERM', () => process.exit(0));
