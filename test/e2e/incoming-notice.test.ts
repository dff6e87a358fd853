/**
 * POST /v1/incoming on the built daemon's TCP API (SECURITY.md promise 13): the shared token is not
 * enough; a notice is taken only from the address of the peer it names, and over the local socket.
 * Requests come from different loopback addresses, as different hosts would.
 */
import test from 'ava';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'incoming-notice-e2e-token-0123456789abcdef';

function post(
  target: { host: string; port: number; localAddress?: string } | { socketPath: string },
  body: unknown,
): Promise<{ status: number; json: { error?: { code: string; message: string } } }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        ...target,
        method: 'POST',
        path: '/v1/incoming',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as never }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

test('a notice with the shared token from another address, or naming no peer, is refused; the peer itself is heard', async (t) => {
  const dir = tempDir('physbits-notice-');
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  const d = await startDaemon({
    dir,
    config: {
      api: { listen: '127.0.0.1:0', tokenFile },
      peers: [{ name: 'hv1', address: '127.0.0.3', physBits: 46 }],
    },
  });
  t.teardown(() => d.kill());
  const [host, port] = d
    .lines()
    .find((l) => l.message === 'peer API listening')!
    .fields.address.split(':');
  const tcp = (localAddress: string) => ({ host, port: Number(port), localAddress });
  const forged = { vm: 'mover', port: '4444', physBits: 52, from: 'hv1' };

  const fromElsewhere = await post(tcp('127.0.0.9'), forged);
  t.is(fromElsewhere.status, 403);
  t.deepEqual(fromElsewhere.json.error, {
    code: 'API_NOTICE_REFUSED',
    message: "incoming notice refused: peer 'hv1' (127.0.0.3) does not have the address 127.0.0.9",
  });
  const unnamed = await post(tcp('127.0.0.3'), { ...forged, from: undefined });
  t.is(unnamed.status, 403);
  t.regex(unnamed.json.error!.message, /does not name the host it comes from/);
  const stranger = await post(tcp('127.0.0.3'), { ...forged, from: 'hv7' });
  t.is(stranger.status, 403);
  t.regex(stranger.json.error!.message, /no peer named 'hv7'/);
  await d.waitForLog((l) => l.message === 'incoming migration notice refused' && l.fields.address === '127.0.0.9');
  t.false(
    d.lines().some((l) => l.message === 'incoming migration notice'),
    'no forged notice was kept',
  );

  const fromPeer = await post(tcp('127.0.0.3'), { ...forged, physBits: 46 });
  t.is(fromPeer.status, 202);
  const local = await post({ socketPath: d.apiSocket }, { vm: 'other', physBits: 40, from: 'anyone' });
  t.is(local.status, 202);
  await d.waitForLog((l) => l.message === 'incoming migration notice' && l.fields.vm === 'other');
  const kept = d.lines().filter((l) => l.message === 'incoming migration notice');
  t.deepEqual(
    kept.map((l) => [l.fields.vm, l.fields.physBits, l.fields.from]),
    [
      ['mover', '46', 'hv1'],
      ['other', '40', 'anyone'],
    ],
  );
});
