/**
 * A host-following libvirt domain migrating between hosts of different widths, judged by the hook as
 * libvirt runs it on the destination (`physbitsctl libvirt-hook DOMAIN migrate begin -`, the
 * domain's migratable XML on stdin): with the width the guest runs with at its source, read from the
 * source's live agent or from Prometheus scraping it, by UUID or name.
 *
 * The source host hvA is a real physbitsd with a real QEMU guest (TCG, `-cpu max` with
 * host-phys-bits=on and phys-bits=46: under TCG QEMU takes phys-bits from the command line, so the
 * guest runs at the 46 bits KVM on a 46-bit host would give it; the daemon reads that width and the
 * UUID over QMP). The destination is the hook's own config, host.physBits 39 or 46.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PHYSBITSCTL, startDaemon, vmNamed, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { freePort } from '../helpers/net';
import { startPrometheus } from '../helpers/prometheus';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'e2e-libvirt-source-width-token-0123456789';
const UUID = '4b2e8d7a-31c6-4f0e-9a55-0c1d2e3f4a5b';
const XML = readFileSync(
  join(__dirname, '..', '..', '..', 'test', 'fixtures', 'libvirt', 'host-passthrough-migrating.xml'),
  'utf8',
);

interface HookRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** physbitsctl libvirt-hook as libvirt runs it: arguments, the XML on stdin. */
function hook(config: string, args: string[], xml: string): Promise<HookRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PHYSBITSCTL, 'libvirt-hook', '--config', config, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(xml);
  });
}

interface Source {
  root: string;
  tokenFile: string;
  apiPort: number;
  metricsPort: number;
  hvA: DaemonProcess;
}

/** hvA (46 bits) with its API on loopback TCP and the guest big1 running at 46 bits. */
async function source(t: ExecutionContext): Promise<Source> {
  const root = tempDir('physbits-lv-src-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const tokenFile = join(root, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const apiPort = await freePort();
  const metricsPort = await freePort();
  const dir = join(root, 'hvA');
  const hvA = await startDaemon({
    dir,
    config: {
      host: { physBits: 46, name: 'hvA' },
      api: { socket: join(dir, 'api.sock'), listen: `127.0.0.1:${apiPort}`, tokenFile },
      metrics: { listen: `127.0.0.1:${metricsPort}` },
      peers: [],
    },
  });
  t.teardown(() => hvA.stop());
  const guest = await startGuest({
    dir: join(dir, 'vms'),
    name: 'big1',
    model: 'max',
    cpu: 'host-phys-bits=on,phys-bits=46',
    memory: '64M',
    extraArgs: ['-uuid', UUID],
  });
  t.teardown(() => guest.kill());
  const doc = await hvA.waitForStatus((d) => vmNamed(d, 'big1')?.guest?.uuid === UUID, 'hvA to read big1', 60000);
  t.is(vmNamed(doc, 'big1')!.guest!.physBits, 46);
  return { root, tokenFile, apiPort, metricsPort, hvA };
}

/** The destination's config: its width, and how it reaches hvA. */
function destination(src: Source, name: string, physBits: number, extra: Record<string, unknown>): string {
  const path = join(src.root, `${name}.json`);
  writeFileSync(path, JSON.stringify({ host: { physBits, name }, ...extra }));
  return path;
}

const MIGRATE = ['big1', 'migrate', 'begin', '-'];

test.serial(
  'live peer: a 46-bit host-passthrough guest is refused onto a 39-bit host and allowed onto a 46-bit one',
  async (t) => {
    const src = await source(t);
    const peers = [
      { name: 'hvA', address: '127.0.0.1', url: `http://127.0.0.1:${src.apiPort}`, tokenFile: src.tokenFile },
    ];
    const narrow = destination(src, 'hvB', 39, { peers });
    const refused = await hook(narrow, MIGRATE, XML);
    t.is(refused.code, 1, refused.stderr);
    t.is(refused.stdout, '');
    t.is(
      refused.stderr,
      "physbits refused the incoming migration of domain 'big1': GUEST_WIDER_THAN_HOST: guest phys-bits 46 " +
        "(its width on hvA, from live peer hvA's status) is wider than this host's 39 bits (host.physBits in the " +
        'config) under kvm; its width follows the host it booted on and stays 46 until it is shut down; fix: ' +
        'migrate it to a host of at least 46 bits, or shut it down and start it here; to keep it movable, use ' +
        "<cpu mode='custom'> with a named model and <maxphysaddr mode='emulate' bits='39'/>, or " +
        "<maxphysaddr mode='passthrough' limit='39'/> where libvirt supports limit=\n",
    );

    const wide = destination(src, 'hvC', 46, { peers });
    t.deepEqual(await hook(wide, MIGRATE, XML), { code: 0, stdout: '', stderr: '' });

    // Found by UUID under another name (a renamed domain), never by name alone when the UUIDs differ.
    const renamed = await hook(
      narrow,
      ['big1-renamed', 'migrate', 'begin', '-'],
      XML.replace('<name>big1</name>', '<name>big1-renamed</name>'),
    );
    t.is(renamed.code, 1, renamed.stderr);
    t.regex(renamed.stderr, /guest phys-bits 46 \(its width on hvA/);
    const otherGuest = await hook(narrow, MIGRATE, XML.replace(UUID, '4b2e8d7a-31c6-4f0e-9a55-0c1d2e3f4a5c'));
    t.is(otherGuest.code, 3, otherGuest.stderr);
    t.regex(otherGuest.stderr, /^physbits refused the incoming migration of domain 'big1': SOURCE_WIDTH_UNKNOWN: /);

    // prepare begin: libvirt passes nothing that tells an incoming migration from a start; a guest
    // its peer reports running elsewhere is arriving, and judged with that width.
    const prepare = await hook(narrow, ['big1', 'prepare', 'begin', '-'], XML);
    t.is(prepare.code, 1, prepare.stderr);
    t.regex(
      prepare.stderr,
      /^physbits refused the start of domain 'big1': GUEST_WIDER_THAN_HOST: guest phys-bits 46 \(its width on hvA/,
    );
  },
);

test.serial('fleet.prometheus: the guest found by its uuid label in a real Prometheus scraping hvA', async (t) => {
  const src = await source(t);
  const prom = await startPrometheus({ targets: [`127.0.0.1:${src.metricsPort}`] });
  t.teardown(() => prom.stop());
  await waitUntil(
    async () => ((await prom.query(`physbits_guest_phys_bits{uuid="${UUID}"}`)).length === 1 ? true : null),
    'Prometheus to scrape big1 with its uuid label',
    60000,
    250,
  );
  const fleet = { prometheus: prom.url };
  const narrow = destination(src, 'hvB', 39, { fleet });
  const refused = await hook(narrow, MIGRATE, XML);
  t.is(refused.code, 1, refused.stderr);
  t.regex(
    refused.stderr,
    /^physbits refused the incoming migration of domain 'big1': GUEST_WIDER_THAN_HOST: guest phys-bits 46 \(its width on hvA, from fleet\.prometheus's physbits_guest_phys_bits\{host="hvA"\}\) is wider than this host's 39 bits \(host\.physBits in the config\) under kvm; [^\n]*\n$/,
  );
  const wide = destination(src, 'hvC', 46, { fleet });
  t.deepEqual(await hook(wide, MIGRATE, XML), { code: 0, stdout: '', stderr: '' });
});

test.serial('source unknown: guard.unknownPeer refuses (exit 3) or allows, both ways', async (t) => {
  const root = tempDir('physbits-lv-unknown-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const tokenFile = join(root, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const deadPort = await freePort();
  const deadPeer = [{ name: 'hvA', address: '127.0.0.1', url: `http://127.0.0.1:${deadPort}`, tokenFile }];
  const write = (name: string, cfg: unknown) => {
    const p = join(root, name);
    writeFileSync(p, JSON.stringify(cfg));
    return p;
  };

  const nothing = await hook(write('none.json', { host: { physBits: 46, name: 'hvB' } }), MIGRATE, XML);
  t.is(nothing.code, 3);
  t.is(
    nothing.stderr,
    "physbits refused the incoming migration of domain 'big1': SOURCE_WIDTH_UNKNOWN: domain 'big1' follows its " +
      `host's width (<cpu mode='host-passthrough'>) and the width of guest 'big1' (UUID ${UUID}) at its source is ` +
      'unknown: no live peers[] and no fleet.prometheus to ask; the source host is not known; guard.unknownPeer is ' +
      'refuse; fix: give the source host a live agent in peers[] (url, tokenFile) or set fleet.prometheus, so the ' +
      'width can be read, or set guard.unknownPeer to allow\n',
  );

  const down = await hook(write('down.json', { host: { physBits: 46, name: 'hvB' }, peers: deadPeer }), MIGRATE, XML);
  t.is(down.code, 3);
  t.regex(down.stderr, /peer hvA did not answer \(PEER_UNREACHABLE: [^)]*ECONNREFUSED\)/);

  const allowed = await hook(
    write('allow.json', { host: { name: 'hvB' }, peers: deadPeer, guard: { unknownPeer: 'allow' } }),
    MIGRATE,
    XML,
  );
  t.is(allowed.code, 0);
  t.regex(
    allowed.stderr,
    /^physbits: SOURCE_WIDTH_UNKNOWN: .*allowing because guard\.unknownPeer is allow \(judged with this host's width\)\n$/,
  );

  // A start of the same domain (nothing reports it running elsewhere) boots with this host's width:
  // the host's own reading, not a narrower host.physBits that the CPU's width would exceed.
  t.deepEqual(
    await hook(write('start.json', { host: { name: 'hvB' }, peers: deadPeer }), ['big1', 'prepare', 'begin', '-'], XML),
    {
      code: 0,
      stdout: '',
      stderr: '',
    },
  );
});
