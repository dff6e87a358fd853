/**
 * host-phys-bits=on guests after a real migration over loopback, between two TCG QEMUs, with live
 * daemons playing the hosts (host.physBits). Under TCG QEMU accepts host-phys-bits=on and reports it
 * (qom-get), but takes phys-bits from the command line (target/i386/host-cpu.c host_cpu_realizefn,
 * which sets it from the host, runs for KVM only): each QEMU is given the width KVM on its host
 * would give it, so the source guest "booted" with the source host's width and the destination
 * QEMU reports the destination's.
 *
 * - Through hv1's guard to hv2 (a live peer): hv1's guard tells hv2's agent the booted width
 *   (POST /v1/incoming), and hv2 judges the guest by it, until the guest is reset.
 * - Started outside any guard, from a 48-bit source to a 46-bit destination: hv2's QEMU reports 46,
 *   which alone would read as "equal, fine"; hv2 reports the width as unverified instead.
 */
import test from 'ava';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LineClient, startDaemon, vmNamed, waitUntil, type DaemonProcess, type JsonObject } from '../helpers/daemon';
import { freePort } from '../helpers/net';
import { QEMUS, startGuest, type Guest, type Qemu } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'e2e-migrated-width-token-0123456789';

type Teardown = { teardown(fn: () => void | Promise<void>): void };

async function node(
  t: Teardown,
  qemu: Qemu,
  name: string,
  physBits: number,
  extra: JsonObject = {},
): Promise<DaemonProcess> {
  // Inside the QEMU's tree when it runs chrooted: the daemon reaches the sockets QEMU creates there.
  const dir = qemu.tempDir(`physbits-${name}-`);
  const daemon = await startDaemon({ dir, config: { host: { physBits, name }, peers: [], ...extra } });
  t.teardown(async () => {
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return daemon;
}

/** A guest waiting for the migration stream on 127.0.0.3:port, in `daemon`'s discovery glob. */
async function incomingGuest(
  t: Teardown,
  qemu: Qemu,
  daemon: DaemonProcess,
  physBits: number,
  port: number,
): Promise<Guest> {
  const guest = await startGuest({
    qemu,
    name: 'mover',
    dir: join(daemon.dir, 'vms'),
    cpu: `host-phys-bits=on,phys-bits=${physBits}`,
    memory: '32M',
    extraArgs: ['-incoming', `tcp:127.0.0.3:${port}`],
  });
  t.teardown(() => guest.kill());
  return guest;
}

async function migrate(client: LineClient, port: number): Promise<string> {
  const started = await client.command(
    `{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.3:${port}"}, "id": "mig"}`,
    'mig',
    20000,
  );
  if (!('return' in started)) return JSON.stringify(started);
  return waitUntil(
    async () => {
      const r = await client.command('{"execute": "query-migrate", "id": "q"}', 'q');
      const status = (r.return as { status?: string }).status;
      return status === 'completed' || status === 'failed' ? status : null;
    },
    'the migration to finish',
    60000,
  );
}

for (const qemu of QEMUS) {
  test.serial(
    `${qemu.label}: through the guard: the destination agent is told the booted width and judges the guest by it until a reset`,
    async (t) => {
      const tokenDir = tempDir('physbits-token-');
      t.teardown(() => rmSync(tokenDir, { recursive: true, force: true }));
      const tokenFile = join(tokenDir, 'token');
      writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
      const apiPort = await freePort();
      // hv2 takes a notice only from the peer it names, at that peer's address: hv1 reaches it from
      // 127.0.0.1 (its configured width, 48, keeps it from adding peer reasons to the verdicts).
      const hv2 = await node(t, qemu, 'hv2', 48, {
        api: { listen: `127.0.0.1:${apiPort}`, tokenFile },
        peers: [{ name: 'hv1', address: '127.0.0.1', physBits: 48 }],
      });
      const hv1 = await node(t, qemu, 'hv1', 46, {
        peers: [{ name: 'hv2', address: '127.0.0.3', url: `http://127.0.0.1:${apiPort}`, tokenFile }],
      });

      const source = await startGuest({
        qemu,
        name: 'mover',
        dir: join(hv1.dir, 'vms'),
        cpu: 'host-phys-bits=on,phys-bits=46',
        memory: '32M',
      });
      t.teardown(() => source.kill());
      const port = await freePort('127.0.0.3');
      await incomingGuest(t, qemu, hv2, 48, port);

      const before = await hv2.waitForStatus(
        (d) => !!vmNamed(d, 'mover')?.guest?.incoming,
        'hv2 to read the QEMU waiting for the stream',
        30000,
      );
      t.deepEqual(vmNamed(before, 'mover')!.guest!.incoming, { state: 'pending', port: String(port) });
      await hv1.waitForStatus((d) => !!vmNamed(d, 'mover')?.verdict, 'hv1 to judge the source guest', 30000);

      const guarded = join(hv1.dir, 'guard', 'mover.qmp');
      const { client } = await waitUntil(() => LineClient.negotiated(guarded).catch(() => null), 'the guarded socket');
      t.teardown(() => client.socket.destroy());
      t.is(await migrate(client, port), 'completed');
      await hv1.waitForLog(/told the destination the booted width/);

      const after = await hv2.waitForStatus(
        (d) => vmNamed(d, 'mover')?.guest?.incoming?.state === 'completed',
        'hv2 to read the arrived guest',
        30000,
      );
      const vm = vmNamed(after, 'mover')!;
      t.is(vm.guest!.incoming!.state, 'completed');
      t.deepEqual(vm.guest!.migratedIn, { bootedPhysBits: 46, qemuPhysBits: 48, from: 'hv1' });
      t.is(vm.guest!.physBits, 46);
      t.is(vm.verdict!.relation, 'narrower');
      t.is(vm.verdict!.severity, 'info');
      t.deepEqual(
        vm.verdict!.reasons.map((r) => r.code),
        ['MIGRATED_WIDTH_NOTIFIED', 'GUEST_NARROWER_THAN_HOST'],
      );
      t.regex(
        vm.verdict!.reasons[0].message,
        /from hv1: it keeps the 46 bits it booted with .* not the 48 bits QEMU here reports/,
      );
      const metrics = await fetch(`http://${hv2.metricsAddress()}/metrics`).then((r) => r.text());
      t.regex(metrics, /^physbits_guest_phys_bits\{vm="mover"[^}]*\} 46$/m);

      // A reset: the guest reads CPUID again and now uses the 48 bits QEMU here gives it.
      const dest = await waitUntil(
        () => LineClient.negotiated(join(hv2.dir, 'guard', 'mover.qmp')).catch(() => null),
        "hv2's guarded socket",
      );
      t.teardown(() => dest.client.socket.destroy());
      t.deepEqual((await dest.client.command('{"execute": "system_reset", "id": "r"}', 'r')).return, {});
      const reset = await hv2.waitForStatus(
        (d) => vmNamed(d, 'mover')?.guest?.physBits === 48,
        'hv2 to judge the reset guest by the width QEMU reports',
        30000,
      );
      t.is(vmNamed(reset, 'mover')!.guest!.migratedIn, undefined);
      t.deepEqual(
        vmNamed(reset, 'mover')!.verdict!.reasons.map((r) => r.code),
        ['GUEST_EQUALS_HOST'],
      );
    },
  );

  test.serial(
    `${qemu.label}: no notice, a live peer runs it: the destination judges the width it has there from the moment it waits for the stream`,
    async (t) => {
      const tokenDir = tempDir('physbits-token-');
      t.teardown(() => rmSync(tokenDir, { recursive: true, force: true }));
      const tokenFile = join(tokenDir, 'token');
      writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
      const apiPort = await freePort();
      // hv1 polls its guests (no guard, so no notice) and serves its status to peers.
      const hv1 = await node(t, qemu, 'hv1', 46, {
        api: { listen: `127.0.0.1:${apiPort}`, tokenFile },
        discovery: { defaultMode: 'poll', pollIntervalSeconds: 600 },
      });
      const hv2 = await node(t, qemu, 'hv2', 44, {
        peers: [{ name: 'hv1', address: '127.0.0.1', url: `http://127.0.0.1:${apiPort}`, tokenFile }],
      });
      const uuid = '6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b';
      const source = await startGuest({
        qemu,
        name: 'mover',
        dir: join(hv1.dir, 'vms'),
        cpu: 'host-phys-bits=on,phys-bits=46',
        memory: '32M',
        extraArgs: ['-uuid', uuid],
      });
      t.teardown(() => source.kill());
      await hv1.waitForStatus((d) => vmNamed(d, 'mover')?.guest?.physBits === 46, 'hv1 to read the source', 30000);

      const port = await freePort('127.0.0.3');
      const dest = await startGuest({
        qemu,
        name: 'mover',
        dir: join(hv2.dir, 'vms'),
        cpu: 'host-phys-bits=on,phys-bits=44',
        memory: '32M',
        extraArgs: ['-uuid', uuid, '-incoming', `tcp:127.0.0.3:${port}`],
      });
      t.teardown(() => dest.kill());
      const waiting = await hv2.waitForStatus(
        (d) => vmNamed(d, 'mover')?.guest?.migratedIn?.bootedPhysBits === 46,
        "hv2 to judge the waiting guest by hv1's width",
        30000,
      );
      const before = vmNamed(waiting, 'mover')!;
      t.deepEqual(before.guest!.incoming, { state: 'pending', port: String(port) });
      t.is(before.guest!.physBits, 46);
      t.is(before.verdict!.severity, 'critical');
      t.deepEqual(
        before.verdict!.reasons.map((r) => r.code),
        ['GUEST_WIDER_THAN_HOST', 'MIGRATED_WIDTH_NOTIFIED'],
      );
      t.regex(
        before.verdict!.reasons[1].message,
        /from hv1: it keeps the 46 bits it booted with \(read from live peer hv1's status\), not the 44 bits QEMU here reports/,
      );
      await hv2.waitForLog(/width of a migrated guest at its source .*physBits=46/);

      const { client } = await LineClient.negotiated(source.socket);
      t.teardown(() => client.socket.destroy());
      t.is(await migrate(client, port), 'completed');
      const after = await hv2.waitForStatus(
        (d) => vmNamed(d, 'mover')?.guest?.incoming?.state === 'completed',
        'hv2 to read the arrived guest',
        30000,
      );
      const vm = vmNamed(after, 'mover')!;
      t.deepEqual(vm.guest!.migratedIn, { bootedPhysBits: 46, qemuPhysBits: 44, from: 'hv1' });
      t.is(vm.verdict!.severity, 'critical');
      t.is(vm.verdict!.relation, 'wider');
    },
  );

  test.serial(
    `${qemu.label}: outside the guard: a guest booted with 48 bits arriving on a 46-bit host is reported unverified, not equal`,
    async (t) => {
      const hv2 = await node(t, qemu, 'hv2', 46);
      // The source: on no daemon's watch, its QMP reached directly.
      const source = await startGuest({ qemu, name: 'mover', cpu: 'host-phys-bits=on,phys-bits=48', memory: '32M' });
      t.teardown(() => source.kill());
      const port = await freePort('127.0.0.3');
      await incomingGuest(t, qemu, hv2, 46, port);
      await hv2.waitForStatus((d) => !!vmNamed(d, 'mover')?.guest?.incoming, 'hv2 to read the waiting QEMU', 30000);
      const { client } = await LineClient.negotiated(source.socket);
      t.teardown(() => client.socket.destroy());
      t.is(await migrate(client, port), 'completed');

      const after = await hv2.waitForStatus(
        (d) => vmNamed(d, 'mover')?.guest?.incoming?.state === 'completed',
        'hv2 to read the arrived guest',
        30000,
      );
      const vm = vmNamed(after, 'mover')!;
      t.is(vm.guest!.physBits, 46);
      t.deepEqual(vm.guest!.migratedIn, { bootedPhysBits: null, qemuPhysBits: 46, from: null });
      t.is(vm.verdict!.severity, 'warning');
      t.deepEqual(
        vm.verdict!.reasons.map((r) => r.code),
        ['MIGRATED_WIDTH_UNVERIFIED', 'GUEST_EQUALS_HOST'],
      );
      t.regex(vm.verdict!.reasons[0].message, /QEMU here does not report \(it reports 46 bits, this host's width\)/);
      // hv2 asked where it could (nowhere: no live peer, no fleet.prometheus) and says so.
      t.regex(
        vm.verdict!.reasons[0].message,
        /the width of guest 'mover' at its source is unknown: no live peers\[\] and no fleet\.prometheus to ask; /,
      );
    },
  );
}
