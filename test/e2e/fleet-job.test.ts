/**
 * No scrape target can vouch for another host: a real Prometheus scrapes hvA's and hvB's daemons in
 * job `physbits` and, in job `impostor`, a scripted target on loopback that exports
 * `physbits_host_phys_bits{host="hvB"} 52` and a host hvZ of 52 bits. hvB's own daemon says 39. hvA
 * (fleet.prometheus, no peers[]) holds a real 46-bit TCG guest: `check-migration` to hvB and a
 * `migrate` through the guard to hvB's address are refused every time (MIGRATION_PEER_NARROWER, 39
 * bits); hvZ and the impostor's address are unknown (refused); the fleet view lists hvA and hvB only.
 */
import test from 'ava';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import type { FleetDocument } from '../../agent/judge/fleet';
import { ctl, LineClient, sleep, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { freePort } from '../helpers/net';
import { startPrometheus, type PrometheusServer } from '../helpers/prometheus';
import { startGuest, type Guest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const IMPOSTOR_METRICS = [
  '# TYPE physbits_host_info gauge',
  'physbits_host_info{host="hvB"} 1',
  'physbits_host_info{host="hvZ"} 1',
  '# TYPE physbits_host_phys_bits gauge',
  'physbits_host_phys_bits{host="hvB"} 52',
  'physbits_host_phys_bits{host="hvZ"} 52',
  '',
].join('\n');

test('a target in another job claiming hvB is 52 bits (hvB says 39) or naming a host hvZ: refused every time', async (t) => {
  const root = tempDir('physbits-fleet-job-');
  const ports = {
    hvA: await freePort('127.0.0.1'),
    hvB: await freePort('127.0.0.2'),
    impostor: await freePort('127.0.0.3'),
  };
  const daemons: DaemonProcess[] = [];
  let guest: Guest | null = null;
  let prom: PrometheusServer | null = null;
  const impostor = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(IMPOSTOR_METRICS);
  });
  t.teardown(async () => {
    for (const d of daemons) await d.stop();
    await guest?.kill();
    await prom?.stop();
    impostor.closeAllConnections();
    impostor.close();
    rmSync(root, { recursive: true, force: true });
  });
  await new Promise<void>((r) => impostor.listen(ports.impostor, '127.0.0.3', r));
  prom = await startPrometheus({
    targets: [`127.0.0.1:${ports.hvA}`, `127.0.0.2:${ports.hvB}`],
    jobs: { impostor: [`127.0.0.3:${ports.impostor}`] },
  });

  const hvB = await startDaemon({
    dir: join(root, 'hvB'),
    config: { host: { name: 'hvB', physBits: 39 }, metrics: { listen: `127.0.0.2:${ports.hvB}` }, peers: [] },
  });
  daemons.push(hvB);
  const dirA = join(root, 'hvA');
  const hvA = await startDaemon({
    dir: dirA,
    config: {
      host: { name: 'hvA', physBits: 46 },
      discovery: { sockets: [join(dirA, 'vms', '*.qmp')], pollIntervalSeconds: 1 },
      metrics: { listen: `127.0.0.1:${ports.hvA}` },
      peers: [],
      fleet: { prometheus: prom.url, cacheSeconds: 1 },
    },
  });
  daemons.push(hvA);
  guest = await startGuest({ dir: join(dirA, 'vms'), name: 'web1', cpu: 'phys-bits=46' });
  await hvA.waitForStatus((doc) => doc.vms.some((v) => v.guest?.physBits === 46), 'hvA: web1 read', 60000);

  // Prometheus holds both jobs' series: the impostor's claim is there to be read.
  await waitUntil(
    async () => {
      const claims = await prom!.query('physbits_host_phys_bits{host="hvB"}');
      const jobs = new Set(claims.map((c) => c.metric.job));
      return jobs.has('physbits') && jobs.has('impostor') ? jobs : null;
    },
    'hvB described by both jobs in Prometheus',
    60000,
    500,
  );

  const guarded = join(dirA, 'guard', 'web1.qmp');
  await waitUntil(() => LineClient.negotiated(guarded).catch(() => null), 'web1 guarded socket');
  const { client } = await LineClient.negotiated(guarded);
  t.teardown(() => client.socket.destroy());

  for (let i = 0; i < 12; i++) {
    const r = await ctl(['check-migration', 'web1', '--to', 'hvB', '--json', '--api', hvA.apiSocket]);
    t.is(r.code, 2, `check-migration ${i}: ${r.stdout}${r.stderr}`);
    t.like(JSON.parse(r.stdout), {
      peerPhysBits: 39,
      allowed: false,
      code: 'REFUSED_MIGRATION_PEER_NARROWER',
      source: 'prometheus',
    });
    client.send(`{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.2:4444"}, "id": "to-hvB-${i}"}`);
    const refused = await client.next((m) => m.id === `to-hvB-${i}`);
    t.regex(
      (refused.error as { desc: string } | undefined)?.desc ?? JSON.stringify(refused),
      /^refused by physbits guard: .*peer hvB has 39-bit.*\[REFUSED_MIGRATION_PEER_NARROWER\]$/,
    );
    await sleep(400);
  }

  // hvZ exists only in the impostor's job: not a peer at all.
  const hvZ = await ctl(['check-migration', 'web1', '--to', 'hvZ', '--json', '--api', hvA.apiSocket]);
  t.is(hvZ.code, 3, hvZ.stdout + hvZ.stderr);
  t.like(JSON.parse(hvZ.stdout), { error: { code: 'PEER_NOT_FOUND' } });
  t.regex(hvZ.stderr, /no peer named 'hvZ' in the config or in fleet\.prometheus/);
  client.send('{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.3:4444"}, "id": "to-impostor"}');
  const unknown = await client.next((m) => m.id === 'to-impostor');
  t.regex((unknown.error as { desc: string }).desc, /\[REFUSED_MIGRATION_UNKNOWN_PEER\]$/);

  const fleet = await ctl(['fleet', '--json', '--api', hvA.apiSocket]);
  const doc = JSON.parse(fleet.stdout) as FleetDocument;
  t.deepEqual(
    doc.hosts.map((h) => [h.name, h.physBits, h.reachable]),
    [
      ['hvA', 46, true],
      ['hvB', 39, true],
    ],
  );
  t.regex(doc.prometheus?.queries.widths ?? '', /physbits_host_phys_bits\{job="physbits"\}/);
});
