/**
 * The host's limit end to end, on fixture host trees (host.procRoot/sysRoot/devRoot) and real TCG
 * guests: two live daemons that each read a tree, publish their limit to the other over the peer
 * API, and guard their guests.
 *
 * - Two identical SME EPYC hosts (raw CPUID 48, /proc/cpuinfo 43, npt on): the limit is 48 on both,
 *   a DIMM at 2^44 is plugged through the guard, `check-migration` to the other host is allowed, and
 *   the guest migrates through the guard over loopback.
 * - A 52-bit AMD host booted without 5-level paging (no la57) and one booted with it: the limit is
 *   48 on the first, so its phys-bits=52 guest is critical and a migration to it is refused; 52 on
 *   the second.
 * - A nested (L1) host: the status document carries the note about its CPUID.
 *
 * On both QEMUs (this machine's 7.2 and Debian 13's 10.0).
 */
import test from 'ava';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostFacts } from '../../agent/core/types';
import {
  ctl,
  LineClient,
  startDaemon,
  vmNamed,
  waitUntil,
  type DaemonProcess,
  type JsonObject,
} from '../helpers/daemon';
import { hostTree } from '../helpers/host-tree';
import { freePort } from '../helpers/net';
import { QEMUS, startGuest, startMigrationTarget, type Qemu } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'e2e-limit-token-0123456789abcdef';

interface Node {
  name: string;
  dir: string;
  port: number;
  daemon: DaemonProcess;
}

/** A daemon on fixture tree `tree` (no host.physBits: the limit is detected), its API on loopback TCP. */
async function startNode(
  t: { teardown(fn: () => void | Promise<void>): void },
  opts: { qemu: Qemu; name: string; tree: string; tokenFile: string; port: number; peers: JsonObject[] },
): Promise<Node> {
  const dir = opts.qemu.tempDir(`physbits-limit-${opts.name}-`);
  const roots = hostTree(t, opts.tree);
  const daemon = await startDaemon({
    dir,
    config: {
      host: { physBits: undefined, name: opts.name, ...roots },
      api: { socket: join(dir, 'api.sock'), listen: `127.0.0.1:${opts.port}`, tokenFile: opts.tokenFile },
      peers: opts.peers,
    },
  });
  t.teardown(async () => {
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { name: opts.name, dir, port: opts.port, daemon };
}

function sharedToken(t: { teardown(fn: () => void): void }): string {
  const dir = tempDir('physbits-limit-token-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'token');
  writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
  return file;
}

async function hostDocument(node: Node): Promise<HostFacts> {
  const res = await fetch(`http://127.0.0.1:${node.port}/v1/host`, { headers: { authorization: `Bearer ${TOKEN}` } });
  return (await res.json()) as HostFacts;
}

const GiB = 2 ** 30;

for (const qemu of QEMUS) {
  test(`${qemu.label}: identical SME hosts (raw 48, cpuinfo 43): DIMM at 2^44 plugged, migration allowed and completed`, async (t) => {
    const tokenFile = sharedToken(t);
    const [portA, portB] = [await freePort(), await freePort()];
    const b = await startNode(t, {
      qemu,
      name: 'epyc-b',
      tree: 'amd-sme-48',
      tokenFile,
      port: portB,
      peers: [],
    });
    const a = await startNode(t, {
      qemu,
      name: 'epyc-a',
      tree: 'amd-sme-48',
      tokenFile,
      port: portA,
      peers: [{ name: 'epyc-b', address: '127.0.0.3', url: `http://127.0.0.1:${portB}`, tokenFile }],
    });

    // Both publish the raw width as their limit, with the readings and the reasoning beside it.
    for (const node of [a, b]) {
      const host = await hostDocument(node);
      t.is(host.physBits, 48);
      t.is(host.physBitsSource, 'cpuid');
      t.is(host.cpuinfoPhysBits, 43);
      t.is(host.cpuidPhysBits, 48);
      t.regex(
        host.reasoning.join('; '),
        /Linux uses 43 because memory encryption \(sme, sev, sev_es, sev_snp\) takes 5/,
      );
      t.deepEqual(host.limit.problems, []);
    }

    const memory = '64M,slots=2,maxmem=20T';
    const guest = await startGuest({ name: 'mover', dir: join(a.dir, 'vms'), cpu: 'phys-bits=48', memory, qemu });
    t.teardown(() => guest.kill());
    const doc = await a.daemon.waitForStatus((d) => !!vmNamed(d, 'mover')?.verdict, 'the guest on epyc-a judged');
    t.is(doc.host.physBits, 48);
    // Within the raw width on an encrypting host with nested paging: info, the reason says why.
    t.is(vmNamed(doc, 'mover')!.verdict!.severity, 'info');
    t.deepEqual(
      vmNamed(doc, 'mover')!.verdict!.reasons.map((r) => r.code),
      ['GUEST_WIDER_BY_MEMORY_ENCRYPTION', 'GUEST_EQUALS_HOST'],
    );

    const guarded = join(a.dir, 'guard', 'mover.qmp');
    const { client } = await waitUntil(() => LineClient.negotiated(guarded).catch(() => null), 'the guarded socket');
    t.teardown(() => client.socket.destroy());
    const obj = await client.command(
      '{"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "m1", "size": 134217728}, "id": "obj"}',
      'obj',
    );
    t.deepEqual(obj.return, {});
    // 2^44 is above the reported 43 bits but within the 48 KVM maps: allowed.
    const dimm = await client.command(
      `{"execute": "device_add", "arguments": {"driver": "pc-dimm", "id": "d1", "memdev": "m1", "addr": ${2 ** 44}}, "id": "dimm"}`,
      'dimm',
    );
    t.deepEqual(dimm, { return: {}, id: 'dimm' });
    // Past 2^48 it is refused, naming the limit.
    await client.command(
      '{"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "m2", "size": 134217728}, "id": "obj2"}',
      'obj2',
    );
    const high = await client.command(
      `{"execute": "device_add", "arguments": {"driver": "pc-dimm", "id": "d2", "memdev": "m2", "addr": ${2 ** 48}}, "id": "high"}`,
      'high',
    );
    t.regex((high.error as { desc: string }).desc, /48-bit physical addresses.*\[REFUSED_MEMORY_ABOVE_HOST_LIMIT\]$/);
    // The unused backend would be RAM the destination does not have.
    t.deepEqual(
      (await client.command('{"execute": "object-del", "arguments": {"id": "m2"}, "id": "del"}', 'del')).return,
      {},
    );

    const check = await ctl(['check-migration', 'mover', '--to', 'epyc-b', '--json', '--api', a.daemon.apiSocket]);
    t.is(check.code, 0, check.stdout + check.stderr);
    t.regex(check.stdout, /peer epyc-b has 48 bits, enough for mover \(phys-bits=48\)/);

    // The real migration, through the guard, to a QEMU on 127.0.0.3 that epyc-b watches.
    const port = await freePort('127.0.0.3');
    const dest = await startMigrationTarget({
      qemu,
      name: 'mover',
      dir: join(b.dir, 'vms'),
      cpu: 'phys-bits=48',
      memory,
      extraArgs: [
        '-object',
        'memory-backend-ram,id=m1,size=128M',
        '-device',
        `pc-dimm,id=d1,memdev=m1,addr=${2 ** 44}`,
      ],
      ip: '127.0.0.3',
      port,
    });
    t.teardown(() => dest.kill());
    await b.daemon.waitForStatus((d) => !!vmNamed(d, 'mover'), 'epyc-b to see the incoming QEMU', 30000);
    const mig = await client.command(
      `{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.3:${port}"}, "id": "mig"}`,
      'mig',
      20000,
    );
    t.deepEqual(mig, { return: {}, id: 'mig' });
    const done = await waitUntil(
      async () => {
        const r = await client.command('{"execute": "query-migrate", "id": "q"}', 'q');
        const info = r.return as { status?: string; 'error-desc'?: string };
        const status = info.status;
        return status === 'completed' || status === 'failed'
          ? `${status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`
          : null;
      },
      'the migration to epyc-b to finish',
      60000,
    );
    t.is(done, 'completed', `dest exit ${dest.process.exitCode ?? dest.process.signalCode}`);
    // epyc-b sees the arrived guest with its DIMM at 2^44, within its own 48-bit limit.
    const arrived = await b.daemon.waitForStatus(
      (d) => (vmNamed(d, 'mover')?.guest?.layout?.memoryDevices.length ?? 0) === 1,
      'the migrated guest on epyc-b with its DIMM',
      60000,
    );
    const moved = vmNamed(arrived, 'mover')!;
    t.is(moved.guest!.layout!.memoryDevices[0].addr, 2 ** 44);
    t.false(moved.verdict!.reasons.some((r) => r.code === 'LAYOUT_BEYOND_HOST_LIMIT'));
    t.true(moved.guest!.layout!.usedEnd > 16 * 1024 * GiB);
  });

  test(`${qemu.label}: 52-bit AMD without la57 caps the limit at 48: a phys-bits=52 guest is critical there and cannot move there`, async (t) => {
    const tokenFile = sharedToken(t);
    const [portCapped, portWide] = [await freePort(), await freePort()];
    const capped = await startNode(t, {
      qemu,
      name: 'zen4-4level',
      tree: 'amd-52-4level',
      tokenFile,
      port: portCapped,
      peers: [],
    });
    const wide = await startNode(t, {
      qemu,
      name: 'zen4-la57',
      tree: 'amd-52-la57',
      tokenFile,
      port: portWide,
      peers: [{ name: 'zen4-4level', address: '127.0.0.4', url: `http://127.0.0.1:${portCapped}`, tokenFile }],
    });

    const cappedHost = await hostDocument(capped);
    t.is(cappedHost.physBits, 48);
    t.is(cappedHost.physBitsSource, 'tdp-levels');
    t.is(cappedHost.cpuidPhysBits, 52);
    t.is(cappedHost.limit.tdpLevels, 4);
    t.regex(cappedHost.reasoning.join('; '), /no la57 flag.*capped at 48/);
    t.is((await hostDocument(wide)).physBits, 52);

    const g1 = await startGuest({ name: 'big', dir: join(capped.dir, 'vms'), cpu: 'phys-bits=52', qemu });
    t.teardown(() => g1.kill());
    const g2 = await startGuest({ name: 'big', dir: join(wide.dir, 'vms'), cpu: 'phys-bits=52', qemu });
    t.teardown(() => g2.kill());

    const onCapped = vmNamed(
      await capped.daemon.waitForStatus((d) => !!vmNamed(d, 'big')?.verdict, 'the guest on the capped host'),
      'big',
    )!;
    t.is(onCapped.verdict!.severity, 'critical');
    t.is(onCapped.verdict!.relation, 'wider');
    t.is(onCapped.verdict!.reasons[0].code, 'GUEST_WIDER_THAN_HOST');
    t.regex(
      onCapped.verdict!.reasons[0].message,
      /without 5-level nested paging KVM maps guest-physical addresses below 2\^48 only/,
    );

    const onWide = vmNamed(
      await wide.daemon.waitForStatus((d) => !!vmNamed(d, 'big')?.verdict, 'the guest on the la57 host'),
      'big',
    )!;
    t.is(onWide.verdict!.relation, 'equal');
    t.false(onWide.verdict!.reasons.some((r) => r.code === 'GUEST_WIDER_THAN_HOST'));

    const check = await ctl([
      'check-migration',
      'big',
      '--to',
      'zen4-4level',
      '--json',
      '--api',
      wide.daemon.apiSocket,
    ]);
    t.is(check.code, 2, check.stdout + check.stderr);
    t.regex(check.stdout, /REFUSED_MIGRATION_PEER_NARROWER/);
    t.regex(check.stdout, /peer zen4-4level has 48-bit physical addresses/);
  });

  test(`${qemu.label}: a nested (L1) host: the status document notes that its CPUID may claim more than the machine has`, async (t) => {
    const dir = qemu.tempDir('physbits-limit-l1-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'vms'));
    const roots = hostTree(t, 'nested-l1');
    const guest = await startGuest({ name: 'inner', dir: join(dir, 'vms'), cpu: 'phys-bits=46', qemu });
    t.teardown(() => guest.kill());
    const cfg = join(dir, 'cfg.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        host: { name: 'l1', ...roots },
        discovery: { sockets: [join(dir, 'vms', '*.qmp')] },
        policy: { accelerators: ['kvm', 'tcg'] },
      }),
    );
    const scan = await ctl(['scan', '--json', '--config', cfg]);
    t.is(scan.code, 0, scan.stderr);
    const doc = JSON.parse(scan.stdout) as { host: HostFacts };
    t.is(doc.host.physBits, 46);
    t.true(doc.host.paging.hypervisor);
    t.regex(doc.host.limit.notes.join(' '), /this host is itself a guest \(the hypervisor flag\)/);
  });
}
