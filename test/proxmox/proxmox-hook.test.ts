import test from 'ava';
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig, type Config } from '../../agent/core/config';
import type { HostFacts } from '../../agent/core/types';
import {
  runProxmoxHook,
  runProxmoxHookEntry,
  smbiosUuid,
  type ProxmoxHookDeps,
} from '../../agent/proxmox/proxmox-hook';
import type { GuestIdentity, SourceWidth } from '../../agent/peers/source-width';
import { PHYSBITSCTL } from '../helpers/daemon';
import { hostFacts } from '../helpers/facts';
import { tempDir } from '../helpers/tmp';
import { hostQemuPath } from '../helpers/qemu-binaries';

/** The kvm binary the hook asks for its version: this machine's QEMU 7.2 (no guest-phys-bits). */
const KVM = hostQemuPath();
const NO_GPB = `no guest-phys-bits keeps it within that limit: QEMU 7.2.22 (${KVM}) has no guest-phys-bits (QEMU 9.1 and later set it)`;
const BOOTED_ON_PVE2 =
  "guest-phys-bits not predicted: it booted on node pve2, where its firmware placed memory by that host's guest-phys-bits, which is not known here";

const PVE = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'proxmox', 'pve');

/** A node of `limit` bits whose CPU (CPUID and /proc/cpuinfo) is `cpu` bits wide. */
function node(limit: number, cpu = limit): HostFacts {
  return hostFacts(limit, 'pve1', { cpuidPhysBits: cpu, cpuinfoPhysBits: cpu });
}

function config(over: Record<string, unknown> = {}): Config {
  return parseConfig({ proxmox: { configDir: PVE }, ...over });
}

async function run(
  args: string[],
  opts: Partial<Omit<ProxmoxHookDeps, 'stderr'>> = {},
): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runProxmoxHook(args, {
    config: opts.config ?? config(),
    hostFacts: opts.hostFacts ?? node(39),
    kvmBinary: KVM,
    ...opts,
    stderr: (l) => lines.push(l),
  });
  return { code, lines };
}

test('pre-start: a 42-bit VM on a 39-bit node is refused with one line naming VM, width, limit and the qm set fix', async (t) => {
  t.deepEqual(await run(['100', 'pre-start']), {
    code: 1,
    lines: [
      `physbits refused the start of VM 100 (web1): GUEST_WIDER_THAN_HOST: guest phys-bits 42 is wider than this node's limit of 39 bits (host.physBits in the config); ${NO_GPB}; fix: qm set 100 --cpu x86-64-v2-AES,phys-bits=39`,
    ],
  });
});

test('pre-start: VMs that fit start; the pending cpu and the snapshot cpu of 100 do not count', async (t) => {
  // 100's [PENDING] asks for 48 bits and its snapshot runs cpu: host; the current section is 42 bits.
  t.deepEqual(await run(['100', 'pre-start'], { hostFacts: node(42, 46) }), { code: 0, lines: [] });
  t.deepEqual(await run(['103', 'pre-start'], { hostFacts: node(40) }), { code: 0, lines: [] });
  t.deepEqual(await run(['104', 'pre-start'], { hostFacts: node(39, 48) }), { code: 0, lines: [] });
});

test('other phases exit 0 without reading anything', async (t) => {
  for (const phase of ['post-start', 'pre-stop', 'post-stop', 'something-new'])
    t.deepEqual(await run(['999', phase], { config: config({ proxmox: { configDir: '/nonexistent' } }) }), {
      code: 0,
      lines: [],
    });
});

test('a VM without cpu: runs kvm64 at 40 bits and is refused on a 39-bit node', async (t) => {
  const r = await run(['103', 'pre-start']);
  t.is(r.code, 1);
  t.regex(
    r.lines[0],
    /guest phys-bits 40 is wider than this node's limit of 39 bits.*fix: qm set 103 --cpu kvm64,phys-bits=39$/,
  );
});

test('cpu: host and phys-bits=host follow the node: refused where the CPU is wider than the limit', async (t) => {
  // A 46-bit CPU whose limit is 39 (e.g. host.physBits set for a narrower pool).
  const wide = node(39, 46);
  const host = await run(['101', 'pre-start'], { hostFacts: wide });
  t.is(host.code, 1);
  t.is(
    host.lines[0],
    "physbits refused the start of VM 101 (db1): GUEST_WIDER_THAN_HOST: guest phys-bits 46 is wider than this node's limit of 39 bits (host.physBits in the config); fix: qm set 101 --cpu x86-64-v2-AES,phys-bits=39",
  );
  const follows = await run(['102', 'pre-start'], { hostFacts: wide });
  t.is(follows.code, 1);
  t.regex(
    follows.lines[0],
    /VM 102 \(follows-host\).*guest phys-bits 46 .*fix: qm set 102 --cpu kvm64,flags=\+aes,phys-bits=39$/,
  );
  // The same guests on a node whose limit is its CPU's width start.
  t.is((await run(['101', 'pre-start'], { hostFacts: node(46) })).code, 0);
  t.is((await run(['102', 'pre-start'], { hostFacts: node(46) })).code, 0);
  // cpu: host,phys-bits=39 still gets the host's 46 bits.
  const trap = await run(['110', 'pre-start'], { hostFacts: wide });
  t.is(trap.code, 1);
  t.regex(trap.lines[0], /guest phys-bits 46 is wider/);
});

test('kvm: 0 is TCG: phys-bits=host does nothing and the default policy does not enforce TCG', async (t) => {
  t.deepEqual(await run(['109', 'pre-start'], { hostFacts: node(36, 46) }), { code: 0, lines: [] });
  const enforced = await run(['109', 'pre-start'], {
    hostFacts: node(36, 46),
    config: config({ policy: { accelerators: ['kvm', 'tcg'] } }),
  });
  t.is(enforced.code, 1);
  t.regex(enforced.lines[0], /guest phys-bits 40 is wider than this node's limit of 36 bits/);
});

test('a custom CPU model brings its phys-bits', async (t) => {
  const r = await run(['106', 'pre-start'], { hostFacts: node(40) });
  t.is(r.code, 1);
  t.regex(r.lines[0], /guest phys-bits 41 .*fix: qm set 106 --cpu custom-lab41,hidden=1,phys-bits=40$/);
});

test('a layout past the limit is refused even when the width fits; the fix is checked to fit', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmTree(dir));
  const tree = copyTree(dir);
  // 500 GiB without hot-plug: RAM ends at 502 GiB, the 32 GiB 64-bit PCI hole at 534 GiB; 478 GiB fit.
  writeFileSync(
    join(tree, 'nodes', 'pve1', 'qemu-server', '130.conf'),
    'cpu: x86-64-v2-AES,phys-bits=39\nmachine: q35\nmemory: 512000\nname: big\n',
  );
  const r = await run(['130', 'pre-start'], { config: config({ proxmox: { configDir: tree } }) });
  t.is(r.code, 1);
  t.is(
    r.lines[0],
    "physbits refused the start of VM 130 (big): LAYOUT_BEYOND_HOST_LIMIT: its memory layout reaches 534 GiB, past this node's 39-bit limit (host.physBits in the config); fix: qm set 130 --cpu x86-64-v2-AES,phys-bits=39 --memory 489472",
  );
});

function copyTree(dir: string): string {
  const tree = join(dir, 'pve');
  cpSync(PVE, tree, { recursive: true, verbatimSymlinks: true });
  return tree;
}

function rmTree(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

test('configs that cannot be read or judged refuse the start, naming the file', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmTree(dir));
  const tree = copyTree(dir);
  const qs = join(tree, 'nodes', 'pve1', 'qemu-server');
  writeFileSync(join(dir, 'outside.conf'), 'cpu: kvm64\nmemory: 512\n');
  symlinkSync(join(dir, 'outside.conf'), join(qs, '140.conf'));
  writeFileSync(join(qs, '141.conf'), `memory: 512\n${'#'.repeat(10 * 1024 * 1024)}\n`);
  writeFileSync(join(qs, '142.conf'), 'cpu: host,phys-bits=99\nmemory: 512\n');
  writeFileSync(join(qs, '143.conf'), 'cpu: kvm64\nmemory: plenty\n');
  writeFileSync(join(qs, '144.conf'), 'cpu: kvm64\nmachine: pc-i440fx-banana\n');
  mkdirSync(join(qs, '145.conf'));
  writeFileSync(join(qs, '146.conf'), 'cpu: kvm64\nargs: -m 4G\n');
  const cfg = config({ proxmox: { configDir: tree } });
  const expect: [string, string][] = [
    ['139', `${tree}/qemu-server/139.conf: does not exist`],
    ['140', `${tree}/qemu-server/140.conf: leads to ${dir}/outside.conf, outside ${tree}`],
    ['141', `${tree}/qemu-server/141.conf: is 10485773 bytes, more than the 1048576 a config may have`],
    ['142', `${tree}/qemu-server/142.conf: cpu phys-bits: 99 is not within 8-64`],
    ['143', `${tree}/qemu-server/143.conf: memory: 'plenty' is not a whole number`],
    ['144', `${tree}/qemu-server/144.conf: machine: 'pc-i440fx-banana' is not a machine type`],
    ['145', `${tree}/qemu-server/145.conf: is not a regular file`],
    ['146', `${tree}/qemu-server/146.conf: args: '-m' changes what physbits predicts; it cannot judge this VM`],
  ];
  for (const [vmid, why] of expect) {
    const code =
      why.includes('does not exist') || why.includes('leads to') || why.includes('bytes') || why.includes('regular')
        ? 'PROXMOX_CONFIG_UNREADABLE'
        : 'PROXMOX_CONFIG_INVALID';
    t.deepEqual(
      await run([vmid, 'pre-start'], { config: cfg }),
      {
        code: 1,
        lines: [
          `physbits cannot check VM ${vmid}, refusing its start: ${code}: ${why} (to start it anyway, see "Emergencies" in physbits' docs/proxmox.md)`,
        ],
      },
      vmid,
    );
  }
  t.regex(
    (await run(['12x', 'pre-start'], { config: cfg })).lines[0],
    /cannot check VM 12x, refusing its start: '12x' is not a VMID/,
  );
});

test("a migration target reads the source node's file; a fixed width is judged as configured", async (t) => {
  const r = await run(['121', 'pre-start'], { migratedFrom: 'pve2' });
  t.is(r.code, 1);
  t.is(
    r.lines[0],
    `physbits refused the incoming migration of VM 121 (fixed-mover) from pve2: GUEST_WIDER_THAN_HOST: guest phys-bits 46 is wider than this node's limit of 39 bits (host.physBits in the config); ${BOOTED_ON_PVE2}; fix: qm set 121 --cpu x86-64-v2-AES,phys-bits=39, then stop and start it before migrating`,
  );
  // Not under this node's qemu-server/: without PVE_MIGRATED_FROM the file is missing.
  t.regex((await run(['121', 'pre-start'])).lines[0], /121\.conf: does not exist/);
  t.regex(
    (await run(['121', 'pre-start'], { migratedFrom: '../../etc' })).lines[0],
    /PVE_MIGRATED_FROM '..\/..\/etc' is not a node name/,
  );
});

test('a host-following guest arriving by migration is judged with its width at the source', async (t) => {
  const asked: GuestIdentity[] = [];
  const lookup = (answer: SourceWidth) => async (q: GuestIdentity) => {
    asked.push(q);
    return answer;
  };
  // This node's CPU is 46 bits, its limit 46: its own width would fit; the guest booted at 48 on pve2.
  const r = await run(['120', 'pre-start'], {
    migratedFrom: 'pve2',
    hostFacts: node(46),
    sourceWidth: lookup({ kind: 'guest', physBits: 48, host: 'pve2', source: "live peer pve2's status" }),
  });
  t.is(r.code, 1);
  t.is(
    r.lines[0],
    `physbits refused the incoming migration of VM 120 (mover) from pve2: GUEST_WIDER_THAN_HOST: guest phys-bits 48 (its width on pve2, from live peer pve2's status) is wider than this node's limit of 46 bits (host.physBits in the config); ${BOOTED_ON_PVE2}; its width follows the node it booted on and stays 48 until it is shut down; fix: migrate it to a node of at least 48 bits, or shut it down and start it here; to keep it movable: qm set 120 --cpu x86-64-v2-AES,phys-bits=46`,
  );
  t.deepEqual(asked, [{ name: 'mover', uuid: '7c7d7e7f-8a8b-4c8d-9e9f-a0a1a2a3a4a5', sourceHost: 'pve2' }]);
  // As wide as this node: allowed.
  const same = await run(['120', 'pre-start'], {
    migratedFrom: 'pve2',
    hostFacts: node(46),
    sourceWidth: lookup({ kind: 'host', physBits: 46, host: 'pve2', source: 'the limit of source host pve2' }),
  });
  t.deepEqual(same, { code: 0, lines: [] });
  // Unknown: guard.unknownPeer decides.
  const unknown = lookup({
    kind: 'unknown',
    why: "the width of guest 'mover' at its source is unknown: nothing asked",
  });
  const refused = await run(['120', 'pre-start'], { migratedFrom: 'pve2', hostFacts: node(46), sourceWidth: unknown });
  t.deepEqual(refused, {
    code: 3,
    lines: [
      "physbits refused the incoming migration of VM 120 (mover) from pve2: SOURCE_WIDTH_UNKNOWN: its width follows the node it booted on (cpu: host) and the width of guest 'mover' at its source is unknown: nothing asked; guard.unknownPeer is refuse; fix: give node pve2 a live agent in peers[] (url, tokenFile) or set fleet.prometheus, so the width can be read, or set guard.unknownPeer to allow",
    ],
  });
  const allowed = await run(['120', 'pre-start'], {
    migratedFrom: 'pve2',
    hostFacts: node(46),
    sourceWidth: unknown,
    config: config({ guard: { unknownPeer: 'allow' } }),
  });
  t.deepEqual(allowed, { code: 0, lines: [] });
});

test('smbios1 uuid', (t) => {
  t.is(
    smbiosUuid('uuid=6F3C2A9E-1b2d-4c5e-8f70-9a1b2c3d4e5f,manufacturer=eA=='),
    '6f3c2a9e-1b2d-4c5e-8f70-9a1b2c3d4e5f',
  );
  t.is(smbiosUuid('manufacturer=x'), null);
  t.is(smbiosUuid(undefined), null);
});

test('entry: a physbits config that does not load refuses pre-start only (exit 78)', async (t) => {
  const lines: string[] = [];
  const deps = {
    loadConfig: () => {
      throw new Error('/etc/physbits/config.json: line 3: bad JSON');
    },
    stderr: (l: string) => lines.push(l),
  };
  t.is(await runProxmoxHookEntry(['100', 'pre-start'], deps), 78);
  t.deepEqual(lines, [
    'physbits: proxmox-hook: config: /etc/physbits/config.json: line 3: bad JSON; refusing the start of VM 100',
  ]);
  t.is(await runProxmoxHookEntry(['100', 'post-start'], deps), 0);
});

test('physbitsctl proxmox-hook as qemu-server runs it: exit code and the one stderr line', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmTree(dir));
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify({ host: { physBits: 39 }, proxmox: { configDir: PVE } }));
  const runCtl = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [PHYSBITSCTL, 'proxmox-hook', '--config', configFile, ...args], {
        env: { ...process.env, ...env },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  const refused = await runCtl(['100', 'pre-start']);
  t.is(refused.code, 1);
  t.is(refused.stdout, '');
  t.regex(
    refused.stderr,
    /^physbits refused the start of VM 100 \(web1\): GUEST_WIDER_THAN_HOST: guest phys-bits 42 .*\n$/,
  );
  t.is(refused.stderr.split('\n').length, 2);
  const migrated = await runCtl(['121', 'pre-start'], { PVE_MIGRATED_FROM: 'pve2' });
  t.is(migrated.code, 1);
  t.regex(migrated.stderr, /incoming migration of VM 121/);
  t.deepEqual(await runCtl(['100', 'post-stop']), { code: 0, stdout: '', stderr: '' });
  const usage = await runCtl(['100']);
  t.is(usage.code, 64);
});
