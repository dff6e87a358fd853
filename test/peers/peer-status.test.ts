import test from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { collectPeers, fetchPeerStatus, parseStatusDocument } from '../../agent/peers/peer-status';
import { status, vm } from '../helpers/fleet-docs';
import { tempDir } from '../helpers/tmp';

test('parseStatusDocument accepts a status document and rejects other shapes with PEER_BAD_RESPONSE', (t) => {
  const good = status('hv2', 39, [vm('db1', 39), { socket: '/s', name: 'x', error: { code: 'E', message: 'm' } }]);
  t.deepEqual(parseStatusDocument(JSON.stringify(good)), good);
  const bad: Array<[string, string]> = [
    ['not json', 'peer: not JSON: '],
    ['[]', 'peer: not a status document (host and vms expected)'],
    ['{"host":{"physBits":"46"},"vms":[]}', 'peer: host.physBits is not a width'],
    ['{"host":{"physBits":46},"vms":[{"name":"a"}]}', 'peer: vms[0] has neither guest facts nor an error'],
    [
      '{"host":{"physBits":46},"vms":[{"name":"a","guest":{"physBits":"x"}}]}',
      'peer: vms[0] has neither guest facts nor an error',
    ],
    ['{"host":{"physBits":99},"vms":[]}', 'peer: host.physBits is not a width'],
  ];
  for (const [text, message] of bad) {
    const err = t.throws(() => parseStatusDocument(text), { instanceOf: Error });
    t.is((err as { code?: string }).code, 'PEER_BAD_RESPONSE');
    t.true(err!.message.startsWith(message), err!.message);
  }
});

// ---- fetchPeerStatus on a real loopback HTTP server ----------------------------------------------

interface Served {
  url: string;
  seen: Array<{ url?: string; auth?: string }>;
  close(): Promise<void>;
}

async function serve(handler: http.RequestListener): Promise<Served> {
  const seen: Served['seen'] = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: req.url, auth: req.headers.authorization });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function tokenFile(t: { teardown(fn: () => void): void }, content = 'sekret-token\n'): string {
  const dir = tempDir('physbits-fleet-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'token');
  writeFileSync(file, content);
  return file;
}

async function peerError(
  t: import('ava').ExecutionContext,
  p: Promise<unknown>,
): Promise<{ code: string; message: string }> {
  const err = await t.throwsAsync(p);
  return err as unknown as { code: string; message: string };
}

test('fetchPeerStatus sends the bearer token to /v1/status and returns the document', async (t) => {
  const doc = status('hv2', 39, [vm('db1', 39)]);
  const s = await serve((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(doc));
  });
  t.teardown(() => s.close());
  const got = await fetchPeerStatus({ url: `${s.url}/`, tokenFile: tokenFile(t) }, { timeoutMs: 5000 });
  t.deepEqual(got, doc);
  t.deepEqual(s.seen, [{ url: '/v1/status', auth: 'Bearer sekret-token' }]);
});

test('fetchPeerStatus: refused token, other statuses and redirects are typed errors', async (t) => {
  const s = await serve((req, res) => {
    if (req.url !== '/v1/status') return void res.end();
    const code = Number(s.seen.length === 1 ? 401 : s.seen.length === 2 ? 500 : 302);
    if (code === 302) res.setHeader('location', 'http://127.0.0.1:9/v1/status');
    res.statusCode = code;
    res.end('{}');
  });
  t.teardown(() => s.close());
  const peer = { url: s.url, tokenFile: tokenFile(t) };
  const e401 = await peerError(t, fetchPeerStatus(peer, { timeoutMs: 5000 }));
  t.is(e401.code, 'PEER_UNAUTHORIZED');
  t.is(e401.message, `${s.url}/v1/status: HTTP 401: the peer refused the token`);
  const e500 = await peerError(t, fetchPeerStatus(peer, { timeoutMs: 5000 }));
  t.is(e500.code, 'PEER_HTTP_STATUS');
  t.is(e500.message, `${s.url}/v1/status: HTTP 500`);
  const e302 = await peerError(t, fetchPeerStatus(peer, { timeoutMs: 5000 }));
  t.is(e302.code, 'PEER_HTTP_STATUS');
  t.is(s.seen.length, 3);
});

test('fetchPeerStatus bounds the response size, declared or streamed', async (t) => {
  const big = 'x'.repeat(4096);
  const s = await serve((req, res) => {
    if (s.seen.length === 1) {
      res.setHeader('content-length', String(big.length));
      res.end(big);
      return;
    }
    res.write(big.slice(0, 2000));
    res.end(big.slice(2000));
  });
  t.teardown(() => s.close());
  const peer = { url: s.url, tokenFile: tokenFile(t) };
  const declared = await peerError(t, fetchPeerStatus(peer, { timeoutMs: 5000, maxBytes: 1024 }));
  t.is(declared.code, 'PEER_RESPONSE_TOO_LARGE');
  t.is(declared.message, `${s.url}/v1/status: response of 4096 bytes exceeds 1024`);
  const streamed = await peerError(t, fetchPeerStatus(peer, { timeoutMs: 5000, maxBytes: 3000 }));
  t.is(streamed.code, 'PEER_RESPONSE_TOO_LARGE');
});

test('fetchPeerStatus times out on a peer that never answers', async (t) => {
  const s = await serve(() => undefined);
  t.teardown(() => s.close());
  const started = Date.now();
  const err = await peerError(t, fetchPeerStatus({ url: s.url, tokenFile: tokenFile(t) }, { timeoutMs: 300 }));
  t.is(err.code, 'PEER_TIMEOUT');
  t.is(err.message, `${s.url}/v1/status: no answer within 300 ms`);
  t.true(Date.now() - started < 5000);
});

test('fetchPeerStatus times out on a body that stalls', async (t) => {
  const s = await serve((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.write('{"host":');
  });
  t.teardown(() => s.close());
  // Long enough for the headers to arrive on a loaded machine: the stall is in the body.
  const err = await peerError(t, fetchPeerStatus({ url: s.url, tokenFile: tokenFile(t) }, { timeoutMs: 3000 }));
  t.is(err.code, 'PEER_TIMEOUT');
  t.is(err.message, `${s.url}/v1/status: response not complete within 3000 ms`);
});

test('fetchPeerStatus: closed port, unreadable or empty token, bad JSON', async (t) => {
  const s = await serve((_req, res) => res.end('<html>'));
  const closedUrl = s.url;
  await s.close();
  const down = await peerError(t, fetchPeerStatus({ url: closedUrl, tokenFile: tokenFile(t) }, { timeoutMs: 5000 }));
  t.is(down.code, 'PEER_UNREACHABLE');
  t.is(down.message, `${closedUrl}/v1/status: ECONNREFUSED`);

  const missing = await peerError(
    t,
    fetchPeerStatus({ url: closedUrl, tokenFile: '/nonexistent/physbits/token' }, { timeoutMs: 5000 }),
  );
  t.is(missing.code, 'PEER_TOKEN_UNREADABLE');
  t.is(missing.message, '/nonexistent/physbits/token: cannot read the token file: ENOENT');
  const empty = await peerError(
    t,
    fetchPeerStatus({ url: closedUrl, tokenFile: tokenFile(t, ' \n') }, { timeoutMs: 5000 }),
  );
  t.is(empty.code, 'PEER_TOKEN_UNREADABLE');

  const html = await serve((_req, res) => res.end('<html>'));
  t.teardown(() => html.close());
  const bad = await peerError(t, fetchPeerStatus({ url: html.url, tokenFile: tokenFile(t) }, { timeoutMs: 5000 }));
  t.is(bad.code, 'PEER_BAD_RESPONSE');
});

test('collectPeers: static peers as configured, live ones asked, failures become unreachable entries', async (t) => {
  const doc = status('hv2', 39, [vm('db1', 39)]);
  const s = await serve((_req, res) => res.end(JSON.stringify(doc)));
  t.teardown(() => s.close());
  const gone = await serve((_req, res) => res.end());
  const closedUrl = gone.url;
  await gone.close();
  const tf = tokenFile(t);
  const peers = await collectPeers(
    [
      { name: 'static', address: '10.0.0.9', physBits: 44 },
      { name: 'hv2', address: '127.0.0.1', url: s.url, tokenFile: tf },
      { name: 'hv3', address: '127.0.0.1', url: closedUrl, tokenFile: tf, physBits: 42 },
      { name: 'hv4', address: '127.0.0.1', url: closedUrl, tokenFile: '/nonexistent/token' },
    ],
    { timeoutMs: 5000 },
  );
  t.deepEqual(peers[0], { name: 'static', physBits: 44, reachable: true, source: 'static' });
  t.deepEqual(peers[1], { name: 'hv2', physBits: 39, reachable: true, source: 'live', status: doc });
  t.deepEqual(peers[2], {
    name: 'hv3',
    physBits: 42,
    reachable: false,
    source: 'fallback',
    error: { code: 'PEER_UNREACHABLE', message: `${closedUrl}/v1/status: ECONNREFUSED` },
  });
  t.deepEqual(peers[3], {
    name: 'hv4',
    physBits: null,
    reachable: false,
    source: 'none',
    error: { code: 'PEER_TOKEN_UNREADABLE', message: '/nonexistent/token: cannot read the token file: ENOENT' },
  });
});
