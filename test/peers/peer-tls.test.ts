/**
 * Live peers over https, against a real TLS server with throwaway CAs (test/helpers/tls.ts): the
 * peer's certificate is verified against its CA file, a certificate from another CA, for another
 * name, or checked against the system's roots is PEER_TLS_UNTRUSTED and the token never leaves;
 * plain http peers still work. The resolver takes the lower of a configured and a live width.
 */
import test from 'ava';
import http from 'node:http';
import https from 'node:https';
import { rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { getPeerJson, PeerError } from '../../agent/peers/peer-client';
import { fetchPeerStatus } from '../../agent/peers/peer-status';
import { PeerResolver } from '../../agent/peers/peer-resolver';
import { readFile } from 'node:fs/promises';
import { makeTestPki, type TestPki } from '../helpers/tls';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'peer-token-'.padEnd(40, 'x');

interface Served {
  url: string;
  /** Authorization headers the server received, in order. */
  seen: string[];
}

/** A peer agent's answers on /v1/host and /v1/status, over https with `pki` or plain http without. */
async function peerServer(t: import('ava').ExecutionContext, physBits: number, pki?: TestPki): Promise<Served> {
  const seen: string[] = [];
  const handler: http.RequestListener = (req, res) => {
    seen.push(req.headers.authorization ?? '');
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401).end('{}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify(
        req.url === '/v1/host' ? { name: 'hvtls', physBits } : { host: { name: 'hvtls', physBits }, vms: [] },
      ),
    );
  };
  const server = pki ? https.createServer({ key: pki.key, cert: pki.cert }, handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return { url: `${pki ? 'https' : 'http'}://127.0.0.1:${port}`, seen };
}

function setup(t: import('ava').ExecutionContext) {
  const dir = tempDir('physbits-tls-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  return { dir, tokenFile };
}

const opts = { timeoutMs: 10000, maxBytes: 65536, readFile: (p: string) => readFile(p, 'utf8') };

async function peerError(p: Promise<unknown>): Promise<PeerError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof PeerError) return err;
    throw err;
  }
  throw new Error('expected a PeerError');
}

test('https peer: verified against its CA file, the token is sent and the document read', async (t) => {
  const { dir, tokenFile } = setup(t);
  const pki = makeTestPki(dir, 'good');
  const peer = await peerServer(t, 46, pki);
  const doc = await getPeerJson({ url: peer.url, tokenFile, caFile: pki.caFile }, 'v1/host', opts);
  t.deepEqual(doc, { name: 'hvtls', physBits: 46 });
  t.deepEqual(peer.seen, [`Bearer ${TOKEN}`]);
  const status = await fetchPeerStatus({ url: peer.url, tokenFile, caFile: pki.caFile }, { timeoutMs: 10000 });
  t.is(status.host.physBits, 46);
});

test('https peer: another CA, no CA file (system roots) or a certificate for another name are PEER_TLS_UNTRUSTED; no token sent', async (t) => {
  const { dir, tokenFile } = setup(t);
  const pki = makeTestPki(dir, 'good');
  const other = makeTestPki(dir, 'other');
  const misnamed = makeTestPki(dir, 'misnamed', ['DNS:peer.test']);
  const peer = await peerServer(t, 46, pki);
  const wrongCa = await peerError(getPeerJson({ url: peer.url, tokenFile, caFile: other.caFile }, 'v1/host', opts));
  t.is(wrongCa.code, 'PEER_TLS_UNTRUSTED');
  t.regex(wrongCa.message, /^https:\/\/127\.0\.0\.1:\d+\/v1\/host: the peer's certificate does not verify \(\w+\)/);
  const noCa = await peerError(getPeerJson({ url: peer.url, tokenFile }, 'v1/host', opts));
  t.is(noCa.code, 'PEER_TLS_UNTRUSTED');
  const wrongName = await peerServer(t, 46, misnamed);
  const name = await peerError(
    getPeerJson({ url: wrongName.url, tokenFile, caFile: misnamed.caFile }, 'v1/host', opts),
  );
  t.is(name.code, 'PEER_TLS_UNTRUSTED');
  t.regex(name.message, /ERR_TLS_CERT_ALTNAME_INVALID/);
  t.deepEqual(peer.seen, [], 'the peer with an untrusted certificate never saw a request');
  t.deepEqual(wrongName.seen, []);
});

test('a CA file that cannot be read or holds no certificate is PEER_CA_UNREADABLE', async (t) => {
  const { dir, tokenFile } = setup(t);
  const pki = makeTestPki(dir, 'good');
  const peer = await peerServer(t, 46, pki);
  const missing = await peerError(
    getPeerJson({ url: peer.url, tokenFile, caFile: join(dir, 'nope.pem') }, 'v1/host', opts),
  );
  t.is(missing.code, 'PEER_CA_UNREADABLE');
  t.regex(missing.message, /nope\.pem: cannot read the CA file: ENOENT$/);
  const junk = join(dir, 'junk.pem');
  writeFileSync(junk, 'not a certificate\n');
  t.is(
    (await peerError(getPeerJson({ url: peer.url, tokenFile, caFile: junk }, 'v1/host', opts))).code,
    'PEER_CA_UNREADABLE',
  );
});

test('plain http peers still work with the same client', async (t) => {
  const { tokenFile } = setup(t);
  const peer = await peerServer(t, 44);
  t.deepEqual(await getPeerJson({ url: peer.url, tokenFile }, 'v1/host', opts), { name: 'hvtls', physBits: 44 });
});

test('resolver: the lower of the configured and the live width; a peer whose certificate fails falls back to the configured one or is unknown', async (t) => {
  const { dir, tokenFile } = setup(t);
  const pki = makeTestPki(dir, 'good');
  const other = makeTestPki(dir, 'other');
  const wide = await peerServer(t, 46, pki);
  const narrow = await peerServer(t, 39, pki);
  const resolver = new PeerResolver({
    peers: [
      { name: 'capped', address: 'a', url: wide.url, tokenFile, caFile: pki.caFile, physBits: 42 },
      { name: 'lower-live', address: 'b', url: narrow.url, tokenFile, caFile: pki.caFile, physBits: 42 },
      { name: 'live-only', address: 'c', url: wide.url, tokenFile, caFile: pki.caFile },
      { name: 'untrusted', address: 'd', url: wide.url, tokenFile, caFile: other.caFile },
      { name: 'untrusted-fallback', address: 'e', url: wide.url, tokenFile, caFile: other.caFile, physBits: 40 },
    ],
    readFile: (p) => readFile(p, 'utf8'),
    clock: () => 0,
    cacheSeconds: 0,
    timeoutMs: 10000,
  });
  const facts = async (name: string) => resolver.facts(resolver.findByName(name)!);
  t.like(await facts('capped'), { physBits: 42, source: 'live', reachable: true });
  t.like(await facts('lower-live'), { physBits: 39, source: 'live', reachable: true });
  t.like(await facts('live-only'), { physBits: 46, source: 'live', reachable: true });
  const untrusted = await facts('untrusted');
  t.like(untrusted, { physBits: null, source: 'none', reachable: false });
  t.is(untrusted.error?.code, 'PEER_TLS_UNTRUSTED');
  t.like(await facts('untrusted-fallback'), { physBits: 40, source: 'fallback', reachable: false });
});
