import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { writeFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { PeerConfig } from '../../agent/core/config';
import { normalizeAddress, physBitsOfHostDocument } from '../../agent/peers/peer';
import type { PeerFetch } from '../../agent/peers/peer-client';
import { PeerResolver } from '../../agent/peers/peer-resolver';
import { tempDir } from '../helpers/tmp';

const TOKEN = 's3cret-token';

interface Agent {
  url: string;
  hits: () => number;
  setDoc(doc: unknown): void;
}

/** A live peer agent on 127.0.0.1, port 0: answers GET /v1/host to the right bearer token. */
async function startAgent(
  t: ExecutionContext,
  doc: unknown,
  handler?: (req: IncomingMessage, res: ServerResponse) => boolean,
): Promise<Agent> {
  let current = doc;
  let hits = 0;
  const server: Server = createServer((req, res) => {
    hits++;
    if (handler && handler(req, res)) return;
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"code":"API_UNAUTHORIZED"}}');
      return;
    }
    if (req.method !== 'GET' || req.url !== '/v1/host') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(current));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const addr = server.address() as { port: number };
  return { url: `http://127.0.0.1:${addr.port}`, hits: () => hits, setDoc: (d) => (current = d) };
}

function tokenFile(t: ExecutionContext, content = `${TOKEN}\n`): string {
  const dir = tempDir('physbits-peer-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'token');
  writeFileSync(file, content, { mode: 0o600 });
  return file;
}

function resolver(peers: PeerConfig[], clock: { now: number }, cacheSeconds = 30, timeoutMs = 2000): PeerResolver {
  return new PeerResolver({
    peers,
    readFile: (p) => readFile(p, 'utf8'),
    fetch: fetch as unknown as PeerFetch,
    clock: () => clock.now,
    cacheSeconds,
    timeoutMs,
  });
}

const hostDoc = { name: 'hv2', physBits: 46, vendor: 'GenuineIntel', physBitsSource: 'cpuinfo' };

test('findByAddress: exact, case-insensitive, brackets and a trailing dot ignored, no DNS', (t) => {
  const r = resolver(
    [
      { name: 'hv2', address: 'HV2.example.com', physBits: 46 },
      { name: 'hv3', address: '[2001:DB8::3]', physBits: 48 },
      { name: 'hv4', address: '10.0.0.4', physBits: 39 },
    ],
    { now: 0 },
  );
  t.is(r.findByAddress('hv2.example.com')?.name, 'hv2');
  t.is(r.findByAddress('hv2.EXAMPLE.com.')?.name, 'hv2');
  t.is(r.findByAddress('2001:db8::3')?.name, 'hv3');
  t.is(r.findByAddress('[2001:db8::3]')?.name, 'hv3');
  t.is(r.findByAddress('10.0.0.4')?.name, 'hv4');
  t.is(r.findByAddress('hv2'), null);
  t.is(r.findByAddress('localhost'), null);
  t.is(r.findByAddress('127.0.0.1'), null);
  t.is(r.findByAddress(''), null);
  t.is(r.findByName('hv3')?.address, '[2001:DB8::3]');
  t.is(r.findByName('HV3'), null);
  t.is(normalizeAddress(' Host.Example. '), 'host.example');
});

test('a static peer answers from the config without any request', async (t) => {
  const r = resolver([{ name: 'hv4', address: '10.0.0.4', physBits: 39 }], { now: 0 });
  t.deepEqual(await r.facts(r.findByName('hv4')!), { name: 'hv4', physBits: 39, reachable: true, source: 'static' });
});

test('a live peer is asked over HTTP with the bearer token, and its answer is cached for cacheSeconds', async (t) => {
  const agent = await startAgent(t, hostDoc);
  const clock = { now: 1_000_000 };
  const peer: PeerConfig = { name: 'hv2', address: 'hv2', url: `${agent.url}/`, tokenFile: tokenFile(t) };
  const r = resolver([peer], clock, 30);
  const first = await r.facts(peer);
  t.deepEqual(first, { name: 'hv2', physBits: 46, reachable: true, source: 'live', host: hostDoc });
  t.is(agent.hits(), 1);

  agent.setDoc({ ...hostDoc, physBits: 39 });
  clock.now += 29_999;
  t.is((await r.facts(peer)).physBits, 46, 'still cached');
  t.is(agent.hits(), 1);

  clock.now += 1;
  t.is((await r.facts(peer)).physBits, 39, 'expired after 30 s');
  t.is(agent.hits(), 2);
});

test('concurrent asks for one live peer share one request', async (t) => {
  const agent = await startAgent(t, hostDoc);
  const peer: PeerConfig = { name: 'hv2', address: 'hv2', url: agent.url, tokenFile: tokenFile(t) };
  const r = resolver([peer], { now: 0 }, 0);
  const all = await Promise.all([r.facts(peer), r.facts(peer), r.facts(peer)]);
  t.deepEqual(
    all.map((f) => f.physBits),
    [46, 46, 46],
  );
  t.is(agent.hits(), 1);
  await r.facts(peer);
  t.is(agent.hits(), 2, 'cacheSeconds 0 keeps nothing');
});

test('a wrong token is PEER_UNAUTHORIZED; the static physBits is the fallback when configured', async (t) => {
  const agent = await startAgent(t, hostDoc);
  const bad = tokenFile(t, 'wrong\n');
  const withFallback: PeerConfig = { name: 'hv2', address: 'hv2', url: agent.url, tokenFile: bad, physBits: 40 };
  const without: PeerConfig = { name: 'hv5', address: 'hv5', url: agent.url, tokenFile: bad };
  const r = resolver([withFallback, without], { now: 0 });
  const a = await r.facts(withFallback);
  t.is(a.physBits, 40);
  t.false(a.reachable);
  t.is(a.source, 'fallback');
  t.is(a.error?.code, 'PEER_UNAUTHORIZED');
  const b = await r.facts(without);
  t.is(b.physBits, null);
  t.is(b.source, 'none');
  t.is(b.error?.code, 'PEER_UNAUTHORIZED');
});

test('an unreachable live peer (closed port) is PEER_UNREACHABLE', async (t) => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const peer: PeerConfig = { name: 'hv6', address: 'hv6', url: `http://127.0.0.1:${port}`, tokenFile: tokenFile(t) };
  const f = await resolver([peer], { now: 0 }).facts(peer);
  t.deepEqual(
    { physBits: f.physBits, reachable: f.reachable, source: f.source, code: f.error?.code },
    { physBits: null, reachable: false, source: 'none', code: 'PEER_UNREACHABLE' },
  );
});

test('a live peer that never answers is PEER_TIMEOUT after timeoutMs', async (t) => {
  const agent = await startAgent(t, hostDoc, () => true /* never respond */);
  const peer: PeerConfig = { name: 'hv7', address: 'hv7', url: agent.url, tokenFile: tokenFile(t), physBits: 42 };
  const started = Date.now();
  const f = await resolver([peer], { now: 0 }, 30, 300).facts(peer);
  t.is(f.error?.code, 'PEER_TIMEOUT');
  t.is(f.physBits, 42);
  t.true(Date.now() - started < 5000);
});

test('bad answers: not JSON, no physBits, too large, HTTP 500, missing token file', async (t) => {
  const cases: Array<[string, (res: ServerResponse) => void, string]> = [
    ['notjson', (res) => res.writeHead(200).end('<html>'), 'PEER_BAD_RESPONSE'],
    ['nobits', (res) => res.writeHead(200).end('{"name":"x","physBits":"46"}'), 'PEER_BAD_RESPONSE'],
    ['huge', (res) => res.writeHead(200).end(`{"pad":"${'x'.repeat(70 * 1024)}"}`), 'PEER_BAD_RESPONSE'],
    ['status', (res) => res.writeHead(500).end('oops'), 'PEER_HTTP_STATUS'],
  ];
  for (const [name, respond, code] of cases) {
    const agent = await startAgent(t, null, (_req, res) => {
      respond(res);
      return true;
    });
    const peer: PeerConfig = { name, address: name, url: agent.url, tokenFile: tokenFile(t) };
    const f = await resolver([peer], { now: 0 }).facts(peer);
    t.is(f.error?.code, code, name);
    t.is(f.physBits, null, name);
  }
  const peer: PeerConfig = {
    name: 'notoken',
    address: 'x',
    url: 'http://127.0.0.1:9',
    tokenFile: '/nonexistent/physbits-token',
  };
  t.is((await resolver([peer], { now: 0 }).facts(peer)).error?.code, 'PEER_TOKEN_UNREADABLE');
});

test('a status document also carries the width', (t) => {
  t.is(physBitsOfHostDocument({ host: { physBits: 48 }, vms: [] }), 48);
  t.is(physBitsOfHostDocument({ physBits: 0 }), null);
  t.is(physBitsOfHostDocument({ physBits: 46.5 }), null);
  t.is(physBitsOfHostDocument(null), null);
});

test('a failed ask is remembered for failureCacheSeconds (default 2 s), not cacheSeconds: the peer is asked again once it listens', async (t) => {
  const agent = await startAgent(t, hostDoc, (_req, res) => {
    if (!up) {
      res.writeHead(503).end();
      return true;
    }
    return false;
  });
  let up = false;
  const clock = { now: 5_000_000 };
  const peer: PeerConfig = { name: 'hv2', address: 'hv2', url: agent.url, tokenFile: tokenFile(t) };
  const r = resolver([peer], clock, 30);
  const down = await r.facts(peer);
  t.like(down, { physBits: null, reachable: false, source: 'none', error: { code: 'PEER_HTTP_STATUS' } });
  up = true;
  clock.now += 1_999;
  t.like(await r.facts(peer), { reachable: false }, 'the failure still remembered at 1.999 s');
  t.is(agent.hits(), 1);
  clock.now += 1;
  t.like(await r.facts(peer), { physBits: 46, reachable: true, source: 'live' }, 'asked again at 2 s');
  t.is(agent.hits(), 2);
  clock.now += 29_999;
  t.like(await r.facts(peer), { physBits: 46 }, 'the good answer kept for cacheSeconds');
  t.is(agent.hits(), 2);

  const longer = new PeerResolver({
    peers: [peer],
    readFile: (p) => readFile(p, 'utf8'),
    clock: () => clock.now,
    cacheSeconds: 1,
    failureCacheSeconds: 10,
    timeoutMs: 2000,
  });
  up = false;
  await longer.facts(peer);
  up = true;
  clock.now += 1_000;
  t.like(await longer.facts(peer), { reachable: true }, 'a failure is never kept longer than a good answer');
});
