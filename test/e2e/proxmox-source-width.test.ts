/**
 * A `cpu: host` VM migrating between Proxmox nodes of different widths, judged by the hookscript
 * as qemu-server runs it on the target (`physbitsctl proxmox-hook 120 pre-start` with
 * PVE_MIGRATED_FROM=pve2, the config read from nodes/pve2/qemu-server/120.conf of the fixture
 * tree): with the width the guest runs with on pve2, read from pve2's live agent or from
 * Prometheus scraping it, found by the VM's name and smbios1 UUID.
 *
 * pve2 is a real physbitsd with a real QEMU guest named like VM 120 and started with its smbios1
 * UUID (`-smbios type=1,uuid=…`, as qemu-server passes it; QEMU reports it in query-uuid). Under
 * TCG, `-cpu max,host-phys-bits=on,phys-bits=46` runs at 46 bits, the width KVM gives a
 * `cpu: host` guest on a 46-bit node. The target is the hook's own config, host.physBits 39 or 46.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PHYSBITSCTL, startDaemon, vmNamed, waitUntil } from '../helpers/daemon';
import { freePort } from '../helpers/net';
import { startPrometheus } from '../helpers/prometheus';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const PVE = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'proxmox', 'pve');
const TOKEN = 'e2e-proxmox-source-width-token-0123456789';
/** smbios1 of nodes/pve2/qemu-server/120.conf. */
const UUID = '7c7d7e7f-8a8b-4c8d-9e9f-a0a1a2a3a4a5';

interface HookRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The hookscript as qemu-server runs it on a migration target. */
function hook(config: string, vmid = '120'): Promise<HookRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PHYSBITSCTL, 'proxmox-hook', '--config', config, vmid, 'pre-start'], {
      env: { ...process.env, PVE_MIGRATED_FROM: 'pve2' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

interface Source {
  root: string;
  tokenFile: string;
  apiPort: number;
  metricsPort: number;
}

/** pve2 (46 bits) with its API on loopback TCP and VM 120 ('mover') running at 46 bits. */
async function source(t: ExecutionContext): Promise<Source> {
  const root = tempDir('physbits-pve-src-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const tokenFile = join(root, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const apiPort = await freePort();
  const metricsPort = await freePort();
  const dir = join(root, 'pve2');
  const pve2 = await startDaemon({
    dir,
    config: {
      host: { physBits: 46, name: 'pve2' },
      api: { socket: join(dir, 'api.sock'), listen: `127.0.0.1:${apiPort}`, tokenFile },
      metrics: { listen: `127.0.0.1:${metricsPort}` },
      peers: [],
    },
  });
  t.teardown(() => pve2.stop());
  const guest = await startGuest({
    dir: join(dir, 'vms'),
    name: 'mover',
    model: 'max',
    cpu: 'host-phys-bits=on,phys-bits=46',
    memory: '64M',
    extraArgs: ['-smbios', `type=1,uuid=${UUID}`],
  });
  t.teardown(() => guest.kill());
  const doc = await pve2.waitForStatus((d) => vmNamed(d, 'mover')?.guest?.uuid === UUID, 'pve2 to read mover', 60000);
  t.is(vmNamed(doc, 'mover')!.guest!.physBits, 46);
  return { root, tokenFile, apiPort, metricsPort };
}

/** The target node's config: its width, the fixture tree, and how it reaches pve2. */
function target(root: string, name: string, physBits: number, extra: Record<string, unknown>): string {
  const path = join(root, `${name}.json`);
  writeFileSync(path, JSON.stringify({ host: { physBits, name }, proxmox: { configDir: PVE }, ...extra }));
  return path;
}

test.serial(
  'live peer: a 46-bit cpu: host VM is refused onto a 39-bit node and allowed onto a 46-bit one',
  async (t) => {
    const src = await source(t);
    const peers = [
      { name: 'pve2', address: '127.0.0.1', url: `http://127.0.0.1:${src.apiPort}`, tokenFile: src.tokenFile },
    ];
    const refused = await hook(target(src.root, 'pve1', 39, { peers }));
    t.is(refused.code, 1, refused.stderr);
    t.is(refused.stdout, '');
    t.is(
      refused.stderr,
      'physbits refused the incoming migration of VM 120 (mover) from pve2: GUEST_WIDER_THAN_HOST: guest phys-bits 46 ' +
        "(its width on pve2, from live peer pve2's status) is wider than this node's limit of 39 bits (host.physBits in " +
        'the config); its width follows the node it booted on and stays 46 until it is shut down; fix: migrate it to a ' +
        'node of at least 46 bits, or shut it down and start it here; to keep it movable: qm set 120 --cpu ' +
        'x86-64-v2-AES,phys-bits=39\n',
    );
    t.deepEqual(await hook(target(src.root, 'pve3', 46, { peers })), { code: 0, stdout: '', stderr: '' });
  },
);

test.serial('fleet.prometheus: the VM found in a real Prometheus scraping pve2', async (t) => {
  const src = await source(t);
  const prom = await startPrometheus({ targets: [`127.0.0.1:${src.metricsPort}`] });
  t.teardown(() => prom.stop());
  await waitUntil(
    async () => ((await prom.query(`physbits_guest_phys_bits{vm="mover"}`)).length === 1 ? true : null),
    'Prometheus to scrape mover',
    60000,
    250,
  );
  const fleet = { prometheus: prom.url };
  const refused = await hook(target(src.root, 'pve1', 39, { fleet }));
  t.is(refused.code, 1, refused.stderr);
  t.regex(
    refused.stderr,
    /^physbits refused the incoming migration of VM 120 \(mover\) from pve2: GUEST_WIDER_THAN_HOST: guest phys-bits 46 \(its width on pve2, from fleet\.prometheus's physbits_guest_phys_bits\{host="pve2"\}\) is wider than this node's limit of 39 bits/,
  );
  t.deepEqual(await hook(target(src.root, 'pve3', 46, { fleet })), { code: 0, stdout: '', stderr: '' });
});

test.serial('the source node known only by its limit, or not at all: its limit, else guard.unknownPeer', async (t) => {
  const root = tempDir('physbits-pve-unknown-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  // A static peer: pve2's limit (48) is all that is known; a guest that booted there has at most 48 bits.
  const byLimit = await hook(
    target(root, 'pve1', 46, { peers: [{ name: 'pve2', address: '10.0.0.2', physBits: 48 }] }),
  );
  t.is(byLimit.code, 1, byLimit.stderr);
  t.regex(
    byLimit.stderr,
    /guest phys-bits 48 \(at most the limit of source host pve2\) is wider than this node's limit of 46 bits/,
  );
  t.deepEqual(await hook(target(root, 'pve3', 48, { peers: [{ name: 'pve2', address: '10.0.0.2', physBits: 48 }] })), {
    code: 0,
    stdout: '',
    stderr: '',
  });

  const nothing = await hook(target(root, 'pve4', 46, {}));
  t.is(nothing.code, 3);
  t.is(
    nothing.stderr,
    'physbits refused the incoming migration of VM 120 (mover) from pve2: SOURCE_WIDTH_UNKNOWN: its width follows the ' +
      `node it booted on (cpu: host) and the width of guest 'mover' (UUID ${UUID}) at its source is unknown: no live ` +
      'peers[] and no fleet.prometheus to ask; guard.unknownPeer is refuse; fix: give node pve2 a live agent in peers[] ' +
      '(url, tokenFile) or set fleet.prometheus, so the width can be read, or set guard.unknownPeer to allow\n',
  );
  const allowed = await hook(target(root, 'pve5', 46, { guard: { unknownPeer: 'allow' } }));
  t.deepEqual(allowed, { code: 0, stdout: '', stderr: '' });
  // A fixed-width VM from the same node needs no lookup.
  const fixed = await hook(target(root, 'pve6', 46, {}), '121');
  t.deepEqual(fixed, { code: 0, stdout: '', stderr: '' });
});
