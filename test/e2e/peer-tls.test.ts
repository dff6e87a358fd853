/**
 * The guard and check-migration with live peers over https, end to end: the built daemon holds a
 * real QEMU guest (40 bits) and asks three peer agents (real TLS servers with throwaway CAs, and one
 * plain http server) for their width. A peer whose certificate verifies but whose configured
 * physBits is lower than its live answer is judged on the lower width; a peer whose certificate is
 * from another CA is a peer of unknown width (guard.unknownPeer: refused, on the guarded socket
 * too); a plain http peer still works.
 */
import test from 'ava';
import http from 'node:http';
import https from 'node:https';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ctl, LineClient, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { startGuest } from '../helpers/qemu';
import { makeTestPki, type TestPki } from '../helpers/tls';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'shared-peer-token-'.padEnd(40, 'z');

async function peerAgent(t: import('ava').ExecutionContext, physBits: number, pki?: TestPki): Promise<string> {
  const handler: http.RequestListener = (req, res) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401).end('{}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(req.url === '/v1/host' ? { physBits } : { host: { physBits }, vms: [] }));
  };
  const server = pki ? https.createServer({ key: pki.key, cert: pki.cert }, handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return `${pki ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('https peers: the lower of configured and live width, an untrusted certificate is an unknown peer, http still works', async (t) => {
  const dir = tempDir('physbits-peer-tls-');
  const vms = join(dir, 'vms');
  mkdirSync(vms, { recursive: true });
  const guest = await startGuest({ name: 'web1', dir: vms, memory: '32M', cpu: 'phys-bits=40' });
  let daemon: DaemonProcess | null = null;
  t.teardown(async () => {
    await daemon?.kill();
    await guest.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  const pki = makeTestPki(dir, 'fleet');
  const rogue = makeTestPki(dir, 'rogue');
  const tokenFile = join(dir, 'peer.token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const trusted = await peerAgent(t, 46, pki);
  const impostor = await peerAgent(t, 52, rogue);
  const plain = await peerAgent(t, 46);
  daemon = await startDaemon({
    dir,
    config: {
      tls: { caFile: pki.caFile },
      peers: [
        // Verified through tls.caFile; says 46, the config caps it at 39.
        { name: 'capped', address: '127.0.0.5', url: trusted, tokenFile, physBits: 39 },
        // Verified through its own caFile; says 46.
        { name: 'trusted', address: '127.0.0.6', url: trusted, tokenFile, caFile: pki.caFile },
        // A certificate from another CA, claiming 52 bits.
        { name: 'impostor', address: '127.0.0.7', url: impostor, tokenFile },
        { name: 'plain', address: '127.0.0.8', url: plain, tokenFile },
      ],
    },
  });
  const d = daemon;
  await d.waitForStatus((doc) => doc.vms.some((v) => v.name === 'web1' && v.guest), 'web1 read by the daemon');
  const check = async (peer: string) => {
    const run = await ctl(['check-migration', 'web1', '--to', peer, '--json', '--api', d.apiSocket]);
    return { code: run.code, answer: JSON.parse(run.stdout || '{}') as Record<string, unknown>, stderr: run.stderr };
  };

  const capped = await check('capped');
  t.is(capped.code, 2, capped.stderr);
  t.like(capped.answer, { allowed: false, code: 'REFUSED_MIGRATION_PEER_NARROWER', peerPhysBits: 39 });

  const trustedAnswer = await check('trusted');
  t.is(trustedAnswer.code, 0, JSON.stringify(trustedAnswer));
  t.like(trustedAnswer.answer, { allowed: true, peerPhysBits: 46 });

  const impostorAnswer = await check('impostor');
  t.is(impostorAnswer.code, 2, JSON.stringify(impostorAnswer));
  t.like(impostorAnswer.answer, { allowed: false, code: 'REFUSED_MIGRATION_UNKNOWN_PEER' });
  t.regex(String(impostorAnswer.answer.message), /PEER_TLS_UNTRUSTED/);

  const plainAnswer = await check('plain');
  t.is(plainAnswer.code, 0, JSON.stringify(plainAnswer));
  t.like(plainAnswer.answer, { allowed: true, peerPhysBits: 46 });

  // The guard itself, on the guarded socket: the impostor's address is refused as an unknown peer.
  const guarded = join(dir, 'guard', 'web1.qmp');
  await waitUntil(
    () => LineClient.negotiated(guarded).then((c) => c.client.close().then(() => true)),
    'the guarded socket',
  );
  const { client } = await LineClient.negotiated(guarded);
  t.teardown(() => client.socket.destroy());
  const reply = await client.command(
    '{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.7:4444"}, "id": "to-impostor"}',
    'to-impostor',
  );
  t.regex(
    (reply.error as { desc: string }).desc,
    /^refused by physbits guard: .*PEER_TLS_UNTRUSTED.*\[REFUSED_MIGRATION_UNKNOWN_PEER\]$/,
  );
  const capReply = await client.command(
    '{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.5:4444"}, "id": "to-capped"}',
    'to-capped',
  );
  t.regex((capReply.error as { desc: string }).desc, /\[REFUSED_MIGRATION_PEER_NARROWER\]$/);
  t.is((await d.stop()).code, 0);
});
