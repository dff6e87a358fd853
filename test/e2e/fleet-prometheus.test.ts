/**
 * The fleet on a real Prometheus: Debian's prometheus scrapes three physbitsd daemons that play hosts
 * of 46, 39 and 44 bits, each with a real paused TCG guest (policy.accelerators includes tcg). Only
 * hvA lists the others as peers. `physbitsctl fleet --prometheus` (no daemon asked) gives the same
 * matrix as hvA's peer mesh; hvC, which lists no peer, refuses through its guard a migration to hvB
 * (39 bits), a host it knows only from Prometheus; hvB's daemon stopped turns it unreachable and
 * unknown; Prometheus stopped leaves hvC's guard answering "unknown", never hanging.
 */
import test from 'ava';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FleetDocument } from '../../agent/judge/fleet';
import type { AdviceDocument } from '../../agent/judge/advise';
import { ctl, LineClient, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { freePort } from '../helpers/net';
import { startPrometheus, type PrometheusServer } from '../helpers/prometheus';
import { startGuest, type Guest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'e2e-fleet-prometheus-token-0123456789';

interface Plan {
  name: string;
  physBits: number;
  guestBits: number;
  /** The loopback address its /metrics listens on: the `instance` Prometheus labels it with. */
  ip: string;
}

const PLANS: Plan[] = [
  { name: 'hvA', physBits: 46, guestBits: 46, ip: '127.0.0.1' },
  { name: 'hvB', physBits: 39, guestBits: 39, ip: '127.0.0.2' },
  { name: 'hvC', physBits: 44, guestBits: 44, ip: '127.0.0.3' },
];

/** The contract's fields of a fleet document, in name order, for comparing two sources. */
function comparable(doc: FleetDocument) {
  const byName =
    <T>(key: (x: T) => string) =>
    (a: T, b: T) =>
      key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
  return {
    hosts: doc.hosts
      .map((h) => ({ name: h.name, physBits: h.physBits, reachable: h.reachable }))
      .sort(byName((h) => h.name)),
    guests: doc.guests
      .map((g) => ({
        host: g.host,
        vm: g.vm,
        physBits: g.physBits,
        accelerator: g.accelerator,
        bound: g.bound,
        highestAddress: g.highestAddress,
        fits: g.fits,
        why: g.why,
        state: g.state,
      }))
      .sort(byName((g) => `${g.host}/${g.vm}`)),
    summary: doc.summary,
  };
}

test('fleet from Prometheus equals the peer mesh; the guard refuses a host known only from Prometheus; a stopped daemon is unreachable', async (t) => {
  const root = tempDir('physbits-fleet-prom-');
  const tokenFile = join(root, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const metricsPorts = new Map<string, number>();
  const apiPorts = new Map<string, number>();
  for (const p of PLANS) {
    metricsPorts.set(p.name, await freePort(p.ip));
    apiPorts.set(p.name, await freePort());
  }
  const daemons = new Map<string, DaemonProcess>();
  const guests: Guest[] = [];
  let prom: PrometheusServer | null = null;
  t.teardown(async () => {
    for (const d of daemons.values()) await d.stop();
    for (const g of guests) await g.kill();
    await prom?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  prom = await startPrometheus({ targets: PLANS.map((p) => `${p.ip}:${metricsPorts.get(p.name)}`) });
  const promUrl = prom.url;

  for (const p of PLANS) {
    const dir = join(root, p.name);
    const others = PLANS.filter((o) => o.name !== p.name);
    const d = await startDaemon({
      dir,
      config: {
        host: { name: p.name, physBits: p.physBits },
        discovery: { sockets: [join(dir, 'vms', '*.qmp')], pollIntervalSeconds: 1 },
        metrics: { listen: `${p.ip}:${metricsPorts.get(p.name)}` },
        api: { socket: join(dir, 'api.sock'), listen: `127.0.0.1:${apiPorts.get(p.name)}`, tokenFile },
        // Only hvA has a peer list; hvC knows the fleet from Prometheus alone.
        peers:
          p.name === 'hvA'
            ? others.map((o) => ({
                name: o.name,
                address: o.ip,
                url: `http://127.0.0.1:${apiPorts.get(o.name)}`,
                tokenFile,
              }))
            : [],
        ...(p.name === 'hvC' ? { fleet: { prometheus: promUrl, cacheSeconds: 1 } } : {}),
        log: { level: 'info', format: 'text' },
      },
    });
    daemons.set(p.name, d);
    guests.push(await startGuest({ dir: join(dir, 'vms'), name: `${p.name}-vm`, cpu: `phys-bits=${p.guestBits}` }));
    await d.waitForStatus(
      (doc) => doc.vms.some((v) => v.guest?.physBits === p.guestBits),
      `${p.name}: its guest read`,
      60000,
    );
  }
  const hvA = daemons.get('hvA')!;
  const hvC = daemons.get('hvC')!;

  // The CLI's own config: only the policy (no peers, no daemon).
  const cliConfig = join(root, 'cli.json');
  writeFileSync(cliConfig, JSON.stringify({ policy: { accelerators: ['kvm', 'tcg'] } }));
  const fromPrometheus = async () => {
    const r = await ctl(['fleet', '--json', '--prometheus', promUrl, '--config', cliConfig]);
    return { code: r.code, stderr: r.stderr, doc: JSON.parse(r.stdout || 'null') as FleetDocument | null };
  };

  const prom3 = await waitUntil(
    async () => {
      const r = await fromPrometheus();
      return r.doc && r.doc.hosts.filter((h) => h.reachable).length === 3 && r.doc.guests.length === 3 ? r : null;
    },
    'three reachable hosts and three guests in fleet --prometheus',
    60000,
    500,
  );
  const peers = await ctl(['fleet', '--json', '--api', hvA.apiSocket]);
  const meshDoc = JSON.parse(peers.stdout) as FleetDocument;
  t.deepEqual(comparable(prom3.doc!), comparable(meshDoc));
  t.is(prom3.code, peers.code);
  t.is(prom3.code, 2, 'hvA-vm (46 bits) and hvC-vm (44 bits) do not fit hvB (39 bits)');
  const g = prom3.doc!.guests.find((x) => x.vm === 'hvC-vm')!;
  t.deepEqual(g.fits, { hvA: true, hvB: false, hvC: true });
  t.true(prom3.doc!.hosts.every((h) => h.source === 'prometheus'));
  // The queries and their time are in the document.
  t.is(prom3.doc!.prometheus?.url, promUrl);
  t.regex(prom3.doc!.prometheus?.time ?? '', /^\d{4}-\d\d-\d\dT/);
  t.is(prom3.doc!.prometheus?.queries.guests, 'physbits_guest_phys_bits{job="physbits"}');

  const advice = await ctl(['advise', 'hvA/hvA-vm', '--json', '--prometheus', promUrl, '--config', cliConfig]);
  const adviceDoc = JSON.parse(advice.stdout) as AdviceDocument;
  t.is(advice.code, 1, advice.stderr);
  t.is(adviceDoc.poolBits, 39);
  t.is(adviceDoc.guests[0].settings?.qemu, '-cpu MODEL,phys-bits=39');

  // hvC lists no peer: hvB and hvA are known from Prometheus only.
  const narrow = await ctl(['check-migration', 'hvC-vm', '--to', 'hvB', '--json', '--api', hvC.apiSocket]);
  t.is(narrow.code, 2, narrow.stdout + narrow.stderr);
  t.like(JSON.parse(narrow.stdout), { peerPhysBits: 39, source: 'prometheus', allowed: false });
  const wide = await ctl(['check-migration', 'hvC-vm', '--to', 'hvA', '--json', '--api', hvC.apiSocket]);
  t.is(wide.code, 0, wide.stdout + wide.stderr);
  t.like(JSON.parse(wide.stdout), { peerPhysBits: 46, allowed: true });

  // Through the guard: `migrate` to hvB's address (the instance Prometheus scrapes).
  const guarded = join(root, 'hvC', 'guard', 'hvC-vm.qmp');
  await waitUntil(() => LineClient.negotiated(guarded).catch(() => null), 'hvC-vm guarded socket');
  const { client } = await LineClient.negotiated(guarded);
  t.teardown(() => client.socket.destroy());
  client.send('{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.2:4444"}, "id": "to-hvB"}');
  const refused = await client.next((m) => m.id === 'to-hvB');
  t.regex(
    (refused.error as { desc: string }).desc,
    /^refused by physbits guard: .*hvB.*39.*\[REFUSED_MIGRATION_PEER_NARROWER\]$/,
  );

  // hvB's daemon stops: its host turns unreachable in Prometheus, its guests leave the view.
  await daemons.get('hvB')!.stop();
  daemons.delete('hvB');
  const down = await waitUntil(
    async () => {
      const r = await fromPrometheus();
      return r.doc?.hosts.find((h) => h.name === 'hvB')?.reachable === false ? r : null;
    },
    'hvB unreachable in fleet --prometheus',
    30000,
    500,
  );
  const hvB = down.doc!.hosts.find((h) => h.name === 'hvB')!;
  t.regex(hvB.error ?? '', /^PROM_TARGET_DOWN: up\{job="physbits",instance="127\.0\.0\.2:\d+"\} is 0/);
  t.is(hvB.physBits, 39, 'the last width seen');
  t.deepEqual(down.doc!.guests.map((x) => x.vm).sort(), ['hvA-vm', 'hvC-vm']);
  t.is(down.code, 2);

  // The guard no longer knows hvB's width: guard.unknownPeer (refuse).
  const unknown = await waitUntil(
    async () => {
      const r = await ctl(['check-migration', 'hvC-vm', '--to', 'hvB', '--json', '--api', hvC.apiSocket]);
      const a = JSON.parse(r.stdout) as { code?: string; message: string };
      return a.code === 'REFUSED_MIGRATION_UNKNOWN_PEER' ? a : null;
    },
    'hvB unknown to hvC',
    30000,
    500,
  );
  t.regex(unknown.message, /Prometheus has no current width for hvB \(PROM_TARGET_DOWN/);
  client.send('{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.2:4444"}, "id": "to-hvB-down"}');
  const refusedDown = await client.next((m) => m.id === 'to-hvB-down');
  t.regex((refusedDown.error as { desc: string }).desc, /\[REFUSED_MIGRATION_UNKNOWN_PEER\]$/);

  // Prometheus stops: peers known only from it are unknown; the guard answers, the daemon lives.
  await prom.stop();
  prom = null;
  const noProm = await waitUntil(
    async () => {
      const r = await ctl(['check-migration', 'hvC-vm', '--to', 'hvA', '--json', '--api', hvC.apiSocket]);
      const a = JSON.parse(r.stdout) as { code?: string; message: string };
      return r.code === 2 && a.code === 'REFUSED_MIGRATION_UNKNOWN_PEER' ? a : null;
    },
    'hvA unknown to hvC once Prometheus is gone',
    30000,
    500,
  );
  t.regex(noProm.message, /the width of peer hvA is unknown: Prometheus cannot be asked \(PROM_UNREACHABLE: /);
  client.send('{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.1:4444"}, "id": "to-hvA-noprom"}');
  const refusedNoProm = await client.next((m) => m.id === 'to-hvA-noprom');
  t.regex((refusedNoProm.error as { desc: string }).desc, /\[REFUSED_MIGRATION_UNKNOWN_PEER\]$/);
  const gone = await ctl(['fleet', '--json', '--prometheus', promUrl, '--config', cliConfig]);
  t.is(gone.code, 3);
  t.regex(gone.stderr, /^physbitsctl: PROM_UNREACHABLE: http:\/\/127\.0\.0\.1:\d+\/api\/v1\/query: ECONNREFUSED\n$/);
  t.truthy((await hvC.status()).host, 'hvC still answers');
});
