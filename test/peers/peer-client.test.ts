import test from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { getPeerJson, PeerError, peerUrl, readPeerToken, type PeerFetch } from '../../agent/peers/peer-client';
import { AgentError } from '../../agent/core/errors';

const peer = { url: 'http://peer.test:9740/', tokenFile: '/etc/physbits/peer-token' };
const token = () => 'sekret-token\n';

function body(text: string): { stream: ReadableStream<Uint8Array>; pulls: () => number } {
  let pulls = 0;
  const bytes = new TextEncoder().encode(text);
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(c) {
        pulls++;
        c.enqueue(bytes);
        c.close();
      },
    },
    { highWaterMark: 0 },
  );
  return { stream, pulls: () => pulls };
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; message: string; isPeerError: boolean }> {
  try {
    await p;
  } catch (err) {
    const e = err as PeerError;
    return { code: e.code, message: e.message, isPeerError: e instanceof PeerError && e instanceof AgentError };
  }
  throw new Error('expected a rejection');
}

test('peerUrl joins with exactly one slash', (t) => {
  t.is(peerUrl('http://a:1//', '/v1/host'), 'http://a:1/v1/host');
  t.is(peerUrl('http://a:1', 'v1/status'), 'http://a:1/v1/status');
});

test('readPeerToken: one trimmed line from a sync or async reader; anything else is PEER_TOKEN_UNREADABLE', async (t) => {
  t.is(await readPeerToken('/t', () => '  abc \n'), 'abc');
  t.is(await readPeerToken('/t', async () => 'abc\n'), 'abc');
  for (const text of ['', ' \n', 'abc\ndef\n', 'x'.repeat(4097)]) {
    const e = await codeOf(readPeerToken('/t', () => text));
    t.deepEqual(e, {
      code: 'PEER_TOKEN_UNREADABLE',
      message: '/t: the token file must hold one non-empty line',
      isPeerError: true,
    });
  }
  const missing = await codeOf(
    readPeerToken('/t', () => {
      throw Object.assign(new Error('gone'), { code: 'ENOENT' });
    }),
  );
  t.deepEqual(missing, {
    code: 'PEER_TOKEN_UNREADABLE',
    message: '/t: cannot read the token file: ENOENT',
    isPeerError: true,
  });
});

test('getPeerJson sends the token, never follows redirects, and returns the parsed document', async (t) => {
  const seen: Array<{ url: string; headers: Record<string, string>; redirect: string }> = [];
  const fetch: PeerFetch = async (url, init) => {
    seen.push({ url, headers: init.headers, redirect: init.redirect });
    return { status: 200, body: body('{"physBits":46}').stream };
  };
  const doc = await getPeerJson(peer, 'v1/host', { timeoutMs: 5000, maxBytes: 1024, readFile: token, fetch });
  t.deepEqual(doc, { physBits: 46 });
  t.deepEqual(seen, [
    {
      url: 'http://peer.test:9740/v1/host',
      headers: { authorization: 'Bearer sekret-token', accept: 'application/json' },
      redirect: 'manual',
    },
  ]);
});

test('getPeerJson refuses a declared length past the bound without reading the body', async (t) => {
  const b = body('{}');
  const fetch: PeerFetch = async () => ({
    status: 200,
    headers: { get: (n) => (n === 'content-length' ? '2048' : null) },
    body: b.stream,
  });
  const e = await codeOf(getPeerJson(peer, 'v1/host', { timeoutMs: 5000, maxBytes: 1024, readFile: token, fetch }));
  t.deepEqual(e, {
    code: 'PEER_RESPONSE_TOO_LARGE',
    message: 'http://peer.test:9740/v1/host: response of 2048 bytes exceeds 1024',
    isPeerError: true,
  });
  t.is(b.pulls(), 0);
});

test('getPeerJson: a body that is not JSON is PEER_BAD_RESPONSE', async (t) => {
  const fetch: PeerFetch = async () => ({ status: 200, body: body('<html>').stream });
  const e = await codeOf(getPeerJson(peer, 'v1/host', { timeoutMs: 5000, maxBytes: 1024, readFile: token, fetch }));
  t.is(e.code, 'PEER_BAD_RESPONSE');
  t.true(e.message.startsWith('http://peer.test:9740/v1/host: not JSON: '), e.message);
});

test('a redirect from a real peer is PEER_HTTP_STATUS and its target is never asked', async (t) => {
  let targetHits = 0;
  const target = http.createServer((_req, res) => {
    targetHits++;
    res.end('{"physBits":52}');
  });
  const source = http.createServer((_req, res) => {
    res.writeHead(307, { location: `http://127.0.0.1:${(target.address() as AddressInfo).port}/v1/host` }).end();
  });
  for (const s of [target, source]) {
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => s.close(() => resolve())));
  }
  const url = `http://127.0.0.1:${(source.address() as AddressInfo).port}`;
  const e = await codeOf(
    getPeerJson({ url, tokenFile: '/t' }, 'v1/host', { timeoutMs: 5000, maxBytes: 1024, readFile: token, fetch }),
  );
  t.deepEqual(e, { code: 'PEER_HTTP_STATUS', message: `${url}/v1/host: HTTP 307`, isPeerError: true });
  t.is(targetHits, 0);
});
