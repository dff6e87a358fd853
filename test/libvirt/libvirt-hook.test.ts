import test from 'ava';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { ConfigError, parseConfig, type Config } from '../../agent/core/config';
import {
  FAIL_CLOSED_DEFAULT,
  failClosedOf,
  runHookEntry,
  runLibvirtHook,
  type LibvirtEvent,
  type LibvirtHookDeps,
} from '../../agent/libvirt/libvirt-hook';
import type { HostFacts } from '../../agent/core/types';
import { PHYSBITSCTL } from '../helpers/daemon';
import { hostFacts } from '../helpers/facts';
import { tempDir } from '../helpers/tmp';
import { hostTree, writeMsrDevice } from '../helpers/host-tree';
import { MSR_IA32_VMX_EPT_VPID_CAP } from '../../agent/facts/host-facts';

const FIXTURES = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'libvirt');
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
  opts: {
    config?: unknown;
    host?: HostFacts | (() => HostFacts);
    notify?: LibvirtHookDeps['notify'];
    sourceWidth?: LibvirtHookDeps['sourceWidth'];
  } = {},
): Promise<Run> {
  const lines: string[] = [];
  const events: LibvirtEvent[] = [];
  const config: Config = parseConfig(opts.config ?? { policy: { accelerators: ['kvm', 'tcg'] } });
  const code = await runLibvirtHook(args, xml, {
    config,
    hostFacts: opts.host ?? host(39),
    notify: opts.notify ?? (async (e) => void events.push(e)),
    ...(opts.sourceWidth ? { sourceWidth: opts.sourceWidth } : {}),
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
  // notify never settles: the hook returning at all, with this line, is the timeout having fired
  // (a wall-clock bound here only measured the machine's load).
  const hung = await run(['web1', 'release', 'end', '-'], '', {
    config: { libvirtHook: { notifyTimeoutMs: 50 } },
    notify: () => new Promise(() => {}),
  });
  t.deepEqual(hung, {
    code: 0,
    lines: ["physbits: daemon did not take the 'release' event of 'web1' within 50 ms"],
    events: [],
  });
});

test('physbits cannot judge: refuse and say why by default, allow with failClosed false', async (t) => {
  const bad = await run(['broken', 'prepare', 'begin', '-'], fixture('malformed.xml'));
  t.is(bad.code, 1);
  t.is(bad.lines.length, 1);
  t.regex(
    bad.lines[0],
    /^physbits cannot check domain 'broken' \(DOMAIN_XML_MALFORMED: domain XML is not well-formed: .*\); refusing because libvirtHook\.failClosed is on$/,
  );
  const noHostWidth = () => {
    throw Object.assign(new Error('no physical address width found'), { code: 'HOST_FACTS_UNAVAILABLE' });
  };
  const noHost = await run(['web1', 'migrate', 'begin', '-'], fixture('live-emulate-42.xml'), { host: noHostWidth });
  t.deepEqual(noHost.lines, [
    "physbits cannot check domain 'web1' (HOST_FACTS_UNAVAILABLE: no physical address width found); refusing because libvirtHook.failClosed is on",
  ]);
  t.is(noHost.code, 1);

  const open = { policy: { accelerators: ['kvm', 'tcg'] }, libvirtHook: { failClosed: false } };
  const allowed = await run(['broken', 'prepare', 'begin', '-'], fixture('malformed.xml'), { config: open });
  t.is(allowed.code, 0);
  t.regex(allowed.lines[0], /\); allowing because libvirtHook\.failClosed is false$/);
  const allowedNoHost = await run(['web1', 'prepare', 'begin', '-'], fixture('live-emulate-42.xml'), {
    config: open,
    host: noHostWidth,
  });
  t.is(allowedNoHost.code, 0);
  t.is(allowedNoHost.lines.length, 1);

  const tooFew = await run(['web1'], '', { config: open });
  t.deepEqual(tooFew, {
    code: 0,
    lines: [
      "physbits cannot check domain 'web1' (expected DOMAIN OPERATION SUB-OPERATION EXTRA, got 1 arguments); allowing because libvirtHook.failClosed is false",
    ],
    events: [],
  });
});

test('a too-wide guest whose XML carries __proto__, constructor, toString... elements is judged and refused', async (t) => {
  const wide = fixture('live-emulate-42.xml');
  for (const name of ['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString']) {
    const xml = wide.replace(
      '</domain>',
      `<metadata><${name}><${name}/></${name}></metadata><${name} ${name}='1'/></domain>`,
    );
    const r = await run(['web1', 'prepare', 'begin', '-'], xml, {
      config: { policy: { accelerators: ['tcg'] }, libvirtHook: { failClosed: false } },
    });
    t.is(r.code, 1, name);
    t.regex(r.lines[0], /^physbits refused the start of domain 'web1': GUEST_WIDER_THAN_HOST: /, name);
    const narrow = await run(['web1', 'migrate', 'begin', '-'], xml.replace("bits='42'", "bits='39'"));
    t.deepEqual(narrow, { code: 0, lines: [], events: [] }, name);
  }
});

/** runHookEntry with a config `text` at /etc/physbits/test.json that fails to load. */
async function entryWithBrokenConfig(args: string[], text: string | null) {
  const lines: string[] = [];
  const code = await runHookEntry(args, fixture('live-emulate-42.xml'), {
    configPath: '/etc/physbits/test.json',
    loadConfig: (path) => {
      if (text === null) throw new ConfigError(`${path}: cannot read: ENOENT`);
      return parseConfig(JSON.parse(text), path);
    },
    readText: () => text,
    hostFacts: host(48),
    notify: async () => {},
    stderr: (l) => lines.push(l),
  });
  return { code, lines };
}

test('a config that cannot be loaded: prepare and migrate begin follow libvirtHook.failClosed as the file says, else refuse; one line naming the problem', async (t) => {
  const badKey = '{"host": {"physBits": "wide"}}';
  const badKeyOpen = '{"host": {"physBits": "wide"}, "libvirtHook": {"failClosed": false}}';
  const badKeyClosed = '{"host": {"physBits": "wide"}, "libvirtHook": {"failClosed": true}}';
  const table: Array<[string[], string | null, number, RegExp]> = [
    [
      ['web1', 'prepare', 'begin', '-'],
      badKey,
      78,
      /^physbits: hook: config: \/etc\/physbits\/test\.json: host\.physBits: .*; refusing the start of domain 'web1' because libvirtHook\.failClosed is on$/,
    ],
    [
      ['web1', 'migrate', 'begin', '-'],
      null,
      78,
      /^physbits: hook: config: \/etc\/physbits\/test\.json: cannot read: ENOENT; refusing the incoming migration of domain 'web1' because libvirtHook\.failClosed is on$/,
    ],
    [['web1', 'prepare', 'begin', '-'], badKeyClosed, 78, /refusing the start of domain 'web1'/],
    [
      ['web1', 'prepare', 'begin', '-'],
      badKeyOpen,
      0,
      /^physbits: hook: config: .*host\.physBits: .*; allowing the start of domain 'web1' because libvirtHook\.failClosed is false$/,
    ],
    [['web1', 'started', 'begin', '-'], badKey, 0, /^physbits: hook: config: .*; allowing 'started' of domain 'web1'$/],
    [['web1', 'prepare', 'end', '-'], badKey, 0, /; allowing 'prepare' of domain 'web1'$/],
  ];
  for (const [args, text, code, line] of table) {
    const r = await entryWithBrokenConfig(args, text);
    t.is(r.code, code, `${args.join(' ')} with ${text}`);
    t.is(r.lines.length, 1, r.lines.join('\n'));
    t.regex(r.lines[0], line);
  }
  // Not JSON at all: the default (refuse).
  t.is(failClosedOf('{"libvirtHook": '), true);
  t.is(failClosedOf('{"libvirtHook": {"failClosed": "no"}}'), true);
  t.is(failClosedOf('{"libvirtHook": {"failClosed": false, "$comment": "x"}, "bad": 1}'), false);
  t.is(failClosedOf(null), FAIL_CLOSED_DEFAULT);
  t.is(parseConfig({}).libvirtHook.failClosed, FAIL_CLOSED_DEFAULT);
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
  // The default 500 ms is for libvirt's sake; here the notice must arrive whatever the machine's load.
  const config = parseConfig({ api: { socket }, libvirtHook: { notifyTimeoutMs: 10000 } });
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

/** Runs a hook program as libvirt does: arguments, the XML on stdin; its exit code and stderr. */
function runHookProcess(argv: string[], xml: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(xml);
  });
}

const HOOK_PROGRAMS: Array<[string, string[]]> = [
  ['test/helpers/libvirt-hook-entry.js', [join(__dirname, '..', 'helpers', 'libvirt-hook-entry.js')]],
  ['physbitsctl libvirt-hook', [PHYSBITSCTL, 'libvirt-hook']],
];

for (const [label, program] of HOOK_PROGRAMS) {
  test(`${label}: a broken config refuses prepare begin in one line (78); __proto__ and constructor elements are judged; XML it cannot judge refuses`, async (t) => {
    const dir = tempDir();
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify({ host: { physBits: 39 }, policy: { accelerators: ['tcg'] } }));
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, JSON.stringify({ host: { physBits: 'wide' }, policy: { accelerators: ['tcg'] } }));
    const wide = fixture('live-emulate-42.xml').replace(
      '</domain>',
      '<metadata><__proto__><constructor>x</constructor></__proto__><toString/></metadata></domain>',
    );
    const args = (config: string, op: string) => [...program, '--config', config, 'web1', op, 'begin', '-'];

    const configFailed = await runHookProcess(args(broken, 'prepare'), wide);
    t.is(configFailed.code, 78, configFailed.stderr);
    t.is(configFailed.stdout, '');
    t.regex(
      configFailed.stderr,
      /^physbits: hook: config: \S+broken\.json: host\.physBits: [^\n]*; refusing the start of domain 'web1' because libvirtHook\.failClosed is on\n$/,
    );

    const refused = await runHookProcess(args(good, 'prepare'), wide);
    t.is(refused.code, 1, refused.stderr);
    t.is(refused.stdout, '');
    t.regex(refused.stderr, /^physbits refused the start of domain 'web1': GUEST_WIDER_THAN_HOST: [^\n]*\n$/);

    const fits = await runHookProcess(args(good, 'migrate'), wide.replace("bits='42'", "bits='39'"));
    t.deepEqual(fits, { code: 0, stdout: '', stderr: '' });

    const cannotJudge = await runHookProcess(args(good, 'migrate'), wide.replace("mode='emulate'", "mode='sideways'"));
    t.is(cannotJudge.code, 1, cannotJudge.stderr);
    t.regex(
      cannotJudge.stderr,
      /^physbits cannot check domain 'web1' \(DOMAIN_XML_INVALID: [^\n]*\); refusing because libvirtHook\.failClosed is on\n$/,
    );
  });
}

const BIG1_UUID = '4b2e8d7a-31c6-4f0e-9a55-0c1d2e3f4a5b';
const big1 = () =>
  fixture('host-passthrough.xml').replace(
    '<name>big1</name>',
    `<name>big1</name><uuid>${BIG1_UUID.toUpperCase()}</uuid>`,
  );

test('migrate begin: a host-passthrough guest is judged with its width at the source, asked by name and UUID', async (t) => {
  const asked: unknown[] = [];
  const sourceWidth: LibvirtHookDeps['sourceWidth'] = async (g) => {
    asked.push(g);
    return { kind: 'guest', physBits: 46, host: 'hvA', source: "live peer hvA's status" };
  };
  const narrow = await run(['big1', 'migrate', 'begin', '-'], big1(), { host: host(39), sourceWidth });
  t.is(narrow.code, 1);
  t.deepEqual(narrow.lines, [
    "physbits refused the incoming migration of domain 'big1': GUEST_WIDER_THAN_HOST: guest phys-bits 46 " +
      "(its width on hvA, from live peer hvA's status) is wider than this host's 39 bits under kvm; guest-phys-bits " +
      "not predicted: it booted on its source host, where its firmware placed memory by that host's guest-phys-bits, " +
      'which is not known here; its width ' +
      'follows the host it booted on and stays 46 until it is shut down; fix: migrate it to a host of at least ' +
      "46 bits, or shut it down and start it here; to keep it movable, use <cpu mode='custom'> with a named " +
      "model and <maxphysaddr mode='emulate' bits='39'/>, or <maxphysaddr mode='passthrough' limit='39'/> where libvirt supports limit=",
  ]);
  t.deepEqual(asked, [{ name: 'big1', uuid: BIG1_UUID }]);
  t.deepEqual(await run(['big1', 'migrate', 'begin', '-'], big1(), { host: host(46), sourceWidth }), {
    code: 0,
    lines: [],
    events: [],
  });
  // Before, the destination's own width was used: a 39-bit host let the 46-bit guest in.
  t.is(
    (
      await run(['big1', 'migrate', 'begin', '-'], big1(), {
        host: host(39),
        sourceWidth: async () => ({ kind: 'guest', physBits: 39, host: 'hvA', source: 'x' }),
      })
    ).code,
    0,
  );
});

test("migrate begin: the source host's limit when only that is known; a <maxphysaddr limit> caps it", async (t) => {
  const sourceWidth: LibvirtHookDeps['sourceWidth'] = async () => ({
    kind: 'host',
    physBits: 46,
    host: 'hvA',
    source: 'the limit of source host hvA',
  });
  const r = await run(['big1', 'migrate', 'begin', '-'], big1(), { host: host(39), sourceWidth });
  t.is(r.code, 1);
  t.regex(r.lines[0], /guest phys-bits 46 \(the limit of its source host hvA, from the limit of source host hvA\)/);
  const limited = await run(['db2', 'migrate', 'begin', '-'], fixture('passthrough-limit.xml'), {
    host: host(39),
    sourceWidth,
  });
  t.deepEqual(limited, { code: 0, lines: [], events: [] });
});

test('migrate begin: the source unknown: guard.unknownPeer refuses (exit 3, SOURCE_WIDTH_UNKNOWN) or allows with a line', async (t) => {
  const sourceWidth: LibvirtHookDeps['sourceWidth'] = async () => ({
    kind: 'unknown',
    why: "the width of guest 'big1' at its source is unknown: no live peers[] and no fleet.prometheus to ask",
  });
  const refused = await run(['big1', 'migrate', 'begin', '-'], big1(), { host: host(46), sourceWidth });
  t.is(refused.code, 3);
  t.deepEqual(refused.lines, [
    "physbits refused the incoming migration of domain 'big1': SOURCE_WIDTH_UNKNOWN: domain 'big1' follows its " +
      "host's width (<cpu mode='host-passthrough'>) and the width of guest 'big1' at its source is unknown: no live " +
      'peers[] and no fleet.prometheus to ask; guard.unknownPeer is refuse; fix: give the source host a live agent in ' +
      'peers[] (url, tokenFile) or set fleet.prometheus, so the width can be read, or set guard.unknownPeer to allow',
  ]);
  const allowed = await run(['big1', 'migrate', 'begin', '-'], big1(), {
    host: host(46),
    sourceWidth,
    config: { guard: { unknownPeer: 'allow' } },
  });
  t.is(allowed.code, 0);
  t.is(allowed.lines.length, 1);
  t.regex(allowed.lines[0], /^physbits: SOURCE_WIDTH_UNKNOWN: .*allowing because guard\.unknownPeer is allow/);
  // A lookup that throws counts as unknown, never as a pass.
  const thrown = await run(['big1', 'migrate', 'begin', '-'], big1(), {
    host: host(46),
    sourceWidth: () => Promise.reject(new Error('boom')),
  });
  t.is(thrown.code, 3);
  t.regex(thrown.lines[0], /the source's width could not be read: boom/);
});

test("prepare begin: a guest a peer reports running elsewhere is judged with that width; otherwise it boots with this host's", async (t) => {
  const elsewhere: LibvirtHookDeps['sourceWidth'] = async () => ({
    kind: 'guest',
    physBits: 46,
    host: 'hvA',
    source: "live peer hvA's status",
  });
  const r = await run(['big1', 'prepare', 'begin', '-'], big1(), { host: host(39), sourceWidth: elsewhere });
  t.is(r.code, 1);
  t.true(
    r.lines[0].startsWith(
      "physbits refused the start of domain 'big1': GUEST_WIDER_THAN_HOST: guest phys-bits 46 (its width on hvA",
    ),
  );
  const nowhere: LibvirtHookDeps['sourceWidth'] = async () => ({ kind: 'unknown', why: 'x' });
  t.deepEqual(await run(['big1', 'prepare', 'begin', '-'], big1(), { host: host(39), sourceWidth: nowhere }), {
    code: 0,
    lines: [],
    events: [],
  });
});

test('a guest whose width the XML fixes is never looked up at its source', async (t) => {
  const sourceWidth: LibvirtHookDeps['sourceWidth'] = () => Promise.reject(new Error('asked'));
  t.is(
    (await run(['web1', 'migrate', 'begin', '-'], fixture('live-emulate-42.xml'), { host: host(42), sourceWidth }))
      .code,
    0,
  );
  t.is(
    (await run(['n1', 'migrate', 'begin', '-'], fixture('named-model.xml'), { host: host(42), sourceWidth })).code,
    0,
  );
});

test('Intel on Linux 6.1 (no ept_5level flag yet): a host-passthrough guest is not refused while the EPT depth is not known; refused once the MSR says 4 levels', async (t) => {
  const roots = hostTree(t, 'intel-52-linux61');
  const lines: string[] = [];
  const deps = (): LibvirtHookDeps => ({
    config: parseConfig({ host: roots, policy: { accelerators: ['kvm'] } }),
    stderr: (l) => lines.push(l),
    notify: async () => {},
  });
  const xml = fixture('passthrough.xml');
  // 52 bits (the CPU's raw width) on a host known to map 48, perhaps 52: a warning, not a refusal.
  t.is(await runLibvirtHook(['db1', 'prepare', 'begin', '-'], xml, deps()), 0);
  t.deepEqual(lines, []);
  // IA32_VMX_EPT_VPID_CAP bit 7 clear: 4-level EPT, known; the 52-bit guest is refused.
  writeMsrDevice(roots.devRoot, MSR_IA32_VMX_EPT_VPID_CAP, 0x0f0106734141n & ~(1n << 7n));
  t.is(await runLibvirtHook(['db1', 'prepare', 'begin', '-'], xml, deps()), 1);
  t.regex(lines[0], /GUEST_WIDER_THAN_HOST: guest phys-bits 52 is wider than this host's 48 bits under kvm/);
});
