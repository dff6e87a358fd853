import test from 'ava';
import { readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { parseConfig, type Config } from '../agent/core/config';
import { runLibvirtHook, type LibvirtEvent, type LibvirtHookDeps } from '../agent/libvirt/libvirt-hook';
import type { HostFacts } from '../agent/core/types';
import { hostFacts } from './helpers/facts';
import { tempDir } from './helpers/tmp';

const FIXTURES = join(__dirname, '..', '..', 'test', 'fixtures', 'libvirt');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');

function host(physBits: number, over: Partial<HostFacts> = {}): HostFacts {
  return hostFacts(physBits, 'hv1', {
    physBitsSource: 'cpuinfo',
    vendor: 'AuthenticAMD',
    cpuidPhysBits: physBits,
    kvm: { module: 'kvm_amd', ept: null, npt: true },
    sources: {},
    ...over,
  });
}

interface Run {
  code: number;
  lines: string[];
  events: LibvirtEvent[];
}

async function run(
  args: string[],
  xml: string,
  opts: { config?: unknown; host?: HostFacts | (() => HostFacts); notify?: LibvirtHookDeps['notify'] } = {},
): Promise<Run> {
  const lines: string[] = [];
  const events: LibvirtEvent[] = [];
  const config: Config = parseConfig(opts.config ?? { policy: { accelerators: ['kvm', 'tcg'] } });
  const code = await runLibvirtHook(args, xml, {
    config,
    hostFacts: opts.host ?? host(39),
    notify: opts.notify ?? (async (e) => void events.push(e)),
    stderr: (l) => lines.push(l),
  });
  return { code, lines, events };
}

test('prepare begin: a 42-bit guest on a 39-bit host is refused with one line', async (t) => {
  const r = await run(['web1', 'prepare', 'begin', '-'], fixture('live-emulate-42.xml'));
  t.is(r.code, 1);
  t.deepEqual(r.lines, [
    "physbits refused the start of domain 'web1': GUEST_WIDER_THAN_HOST: guest phys-bits 42 is wider than " +
      "this host's 39 bits under tcg; fix: set <maxphysaddr mode='emulate' bits='39'/> in <cpu>",
  ]);
  t.deepEqual(r.events, []);
});

test('migrate begin: refused on the destination, worded as a migration', async (t) => {
  const r = await run(['web1', 'migrate', 'begin', '-'], fixture('live-emulate-42.xml'), {
    host: host(39, { physBitsSource: 'config', cpuinfoPhysBits: 48, cpuidPhysBits: 48 }),
  });
  t.is(r.code, 1);
  t.is(r.lines.length, 1);
  t.true(
    r.lines[0].startsWith(
      "physbits refused the incoming migration of domain 'web1': GUEST_WIDER_THAN_HOST: guest phys-bits 42 is wider than this host's 39 bits (host.physBits in the config) under tcg",
    ),
  );
});

test('allowed: equal, narrower, and wider under an accelerator the policy does not enforce', async (t) => {
  const xml = fixture('live-emulate-42.xml');
  t.deepEqual(await run(['web1', 'prepare', 'begin', '-'], xml, { host: host(42) }), {
    code: 0,
    lines: [],
    events: [],
  });
  t.deepEqual(await run(['web1', 'prepare', 'begin', '-'], xml, { host: host(48) }), {
    code: 0,
    lines: [],
    events: [],
  });
  // Default policy: only kvm is enforced, and this guest is TCG.
  t.deepEqual(await run(['web1', 'prepare', 'begin', '-'], xml, { config: {} }), { code: 0, lines: [], events: [] });
});

test('host-phys-bits guests follow the host CPU, so an override narrower than the CPU refuses them', async (t) => {
  const xml = fixture('passthrough.xml');
  t.is((await run(['db1', 'prepare', 'begin', '-'], xml, { host: host(46) })).code, 0);
  const r = await run(['db1', 'prepare', 'begin', '-'], xml, {
    host: host(39, { physBitsSource: 'config', cpuinfoPhysBits: 46, cpuidPhysBits: 46 }),
  });
  t.is(r.code, 1);
  t.regex(
    r.lines[0],
    /guest phys-bits 46 is wider than this host's 39 bits \(host\.physBits in the config\) under kvm; fix: use <cpu mode='custom'> with a named model and <maxphysaddr mode='emulate' bits='39'\/>/,
  );
  // A limit of 39 makes it fit.
  t.is(
    (
      await run(['db2', 'prepare', 'begin', '-'], fixture('passthrough-limit.xml'), {
        host: host(39, { physBitsSource: 'config', cpuinfoPhysBits: 46, cpuidPhysBits: 46 }),
      })
    ).code,
    0,
  );
});

test('a layout past the host limit is refused even when the width fits', async (t) => {
  // 39-bit guest, but maxMemory 600 GiB: RAM + hot-plug region end beyond 512 GiB.
  const xml = fixture('hotplug-slots.xml').replace(
    "<maxMemory slots='4' unit='GiB'>64</maxMemory>",
    "<maxMemory slots='4' unit='GiB'>600</maxMemory>",
  );
  const r = await run(['elastic1', 'prepare', 'begin', '-'], xml);
  t.is(r.code, 1);
  t.deepEqual(r.lines, [
    "physbits refused the start of domain 'elastic1': LAYOUT_BEYOND_HOST_LIMIT: its memory layout reaches past " +
      "this host's 39-bit limit; fix: lower <maxMemory> (or <pcihole64>) so the layout ends below 512 GiB",
  ]);
  t.is((await run(['elastic1', 'prepare', 'begin', '-'], fixture('hotplug-slots.xml'))).code, 0);
});

test('other operations and sub-operations pass without reading the XML', async (t) => {
  for (const args of [
    ['web1', 'prepare', 'end', '-'],
    ['web1', 'start', 'begin', '-'],
    ['web1', 'migrate', 'end', '-'],
    ['web1', 'restore', 'begin', '-'],
  ]) {
    t.deepEqual(
      await run(args, 'not xml at all', {
        host: () => {
          throw new Error('must not be read');
        },
      }),
      { code: 0, lines: [], events: [] },
      args.join(' '),
    );
  }
});

test('started, stopped, release and reconnect are passed to the daemon', async (t) => {
  const ops: Array<[string, string]> = [
    ['started', 'begin'],
    ['stopped', 'end'],
    ['release', 'end'],
    ['reconnect', 'begin'],
  ];
  for (const [op, sub] of ops) {
    const r = await run(['web1', op, sub, '-'], '');
    t.deepEqual(r, { code: 0, lines: [], events: [{ domain: 'web1', operation: op, subOperation: sub }] });
  }
});

test('a failing or hanging daemon never changes the exit code', async (t) => {
  const failed = await run(['web1', 'started', 'begin', '-'], '', {
    notify: async () => {
      throw new Error('HTTP 500');
    },
  });
  t.deepEqual(failed, {
    code: 0,
    lines: ["physbits: could not tell the daemon about 'web1' started: HTTP 500"],
    events: [],
  });
  const started = Date.now();
  const hung = await run(['web1', 'release', 'end', '-'], '', {
    config: { libvirtHook: { notifyTimeoutMs: 50 } },
    notify: () => new Promise(() => {}),
  });
  t.deepEqual(hung, {
    code: 0,
    lines: ["physbits: daemon did not take the 'release' event of 'web1' within 50 ms"],
    events: [],
  });
  t.true(Date.now() - started < 2000);
});

test('physbits broken: allow and say why, or refuse with failClosed', async (t) => {
  const bad = await run(['broken', 'prepare', 'begin', '-'], fixture('malformed.xml'));
  t.is(bad.code, 0);
  t.is(bad.lines.length, 1);
  t.regex(
    bad.lines[0],
    /^physbits cannot check domain 'broken' \(DOMAIN_XML_MALFORMED: domain XML is not well-formed: .*\); allowing$/,
  );

  const noHost = await run(['web1', 'prepare', 'begin', '-'], fixture('live-emulate-42.xml'), {
    host: () => {
      throw Object.assign(new Error('no physical address width found'), { code: 'HOST_FACTS_UNAVAILABLE' });
    },
  });
  t.deepEqual(noHost.lines, [
    "physbits cannot check domain 'web1' (HOST_FACTS_UNAVAILABLE: no physical address width found); allowing",
  ]);
  t.is(noHost.code, 0);

  const closed = await run(['broken', 'prepare', 'begin', '-'], fixture('malformed.xml'), {
    config: { libvirtHook: { failClosed: true } },
  });
  t.is(closed.code, 1);
  t.regex(closed.lines[0], /refusing because libvirtHook\.failClosed is set$/);

  const tooFew = await run(['web1'], '');
  t.deepEqual(tooFew, {
    code: 0,
    lines: [
      "physbits cannot check domain 'web1' (expected DOMAIN OPERATION SUB-OPERATION EXTRA, got 1 arguments); allowing",
    ],
    events: [],
  });
});

test('default host facts: read through the config roots, with host.physBits applied', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { mkdirSync, writeFileSync } = await import('node:fs');
  mkdirSync(join(dir, 'proc'));
  writeFileSync(
    join(dir, 'proc', 'cpuinfo'),
    'processor\t: 0\nvendor_id\t: GenuineIntel\naddress sizes\t: 46 bits physical, 48 bits virtual\n\n',
  );
  const lines: string[] = [];
  const base = {
    host: { procRoot: join(dir, 'proc'), sysRoot: join(dir, 'sys'), devRoot: join(dir, 'dev') },
    policy: { accelerators: ['tcg'] },
  };
  const deps = (cfg: unknown): LibvirtHookDeps => ({
    config: parseConfig(cfg),
    stderr: (l) => lines.push(l),
    notify: async () => {},
  });
  t.is(await runLibvirtHook(['web1', 'prepare', 'begin', '-'], fixture('live-emulate-42.xml'), deps(base)), 0);
  t.deepEqual(lines, []);
  t.is(
    await runLibvirtHook(
      ['web1', 'prepare', 'begin', '-'],
      fixture('live-emulate-42.xml'),
      deps({ ...base, host: { ...base.host, physBits: 40 } }),
    ),
    1,
  );
  t.regex(lines[0], /wider than this host's 40 bits \(host\.physBits in the config\)/);
});

test('default notify: POST /v1/libvirt-events on api.socket; no daemon is not an error', async (t) => {
  const dir = tempDir();
  const socket = join(dir, 'api.sock');
  const received: Array<{ method?: string; url?: string; body: string }> = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push({ method: req.method, url: req.url, body });
      res.writeHead(202, { 'content-type': 'application/json' }).end('{"accepted":true}');
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  t.teardown(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const lines: string[] = [];
  const config = parseConfig({ api: { socket } });
  t.is(
    await runLibvirtHook(['web1', 'started', 'begin', '-'], '<domain/>', {
      config,
      hostFacts: host(39),
      stderr: (l) => lines.push(l),
    }),
    0,
  );
  t.deepEqual(received, [
    {
      method: 'POST',
      url: '/v1/libvirt-events',
      body: '{"domain":"web1","operation":"started","subOperation":"begin"}',
    },
  ]);
  t.deepEqual(lines, []);

  const missing = parseConfig({ api: { socket: join(dir, 'absent.sock') } });
  t.is(
    await runLibvirtHook(['web1', 'stopped', 'end', '-'], '', {
      config: missing,
      hostFacts: host(39),
      stderr: (l) => lines.push(l),
    }),
    0,
  );
  t.deepEqual(lines, []);
});
