/**
 * End to end with the real libvirt 9 daemon and QEMU (TCG): the hook refuses a guest wider than
 * the configured host width, lets a fitting one start and tells the daemon socket about it; the
 * LibvirtExecutor reads the running guest through libvirt's monitor. libvirt's socket and hook
 * path are global, so the cases run serially. On this machine's QEMU (7.2) only, as the titles say:
 * libvirt 9.0 starts the system's emulator with paths and descriptors of the host (its monitor
 * socket, /dev), which Debian 13's QEMU, run chrooted in its own tree, would not see.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { CommandError } from '../../qmp/errors';
import { readGuestFacts } from '../../agent/facts/guest-facts';
import { listRunningDomainsWithUuid, parseUuidNames } from '../../agent/libvirt/libvirt-domains';
import { LibvirtExecutor, parseMonitorReply } from '../../agent/libvirt/libvirt-executor';
import type { LibvirtEvent } from '../../agent/libvirt/libvirt-hook';
import { classifyVirshFailure, quoteVirshArg, runVirsh, VirshError, virshErrorLine } from '../../agent/libvirt/virsh';
import {
  LIBVIRT_URI,
  libvirtUnavailable,
  startLibvirtdWithHook,
  tcgDomainXml,
  virsh,
  type LibvirtdHandle,
} from '../helpers/libvirtd';
import { HOST_QEMU } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const REPO = join(__dirname, '..', '..', '..');
const prefix = `physbits-e2e-${process.pid}`;
const WIDE = `${prefix}-wide`;
const NARROW = `${prefix}-narrow`;
const OFF = `${prefix}-off`;
const ODD = `${prefix} a;b"c\\d 'e'`;

/** Which QEMU libvirt runs the guests on, for the titles. */
const ON = `${HOST_QEMU.label}, libvirt 9.0`;
const unavailable = libvirtUnavailable();
const serial = unavailable ? test.serial.skip : test.serial;
if (unavailable) test.serial(`libvirt end-to-end tests are skipped: ${unavailable}`, (t) => t.pass());

/** The names of libvirt's running domains, as the daemon lists them. */
async function runningDomainNames(): Promise<string[]> {
  return (await listRunningDomainsWithUuid(LIBVIRT_URI)).map((domain) => domain.name);
}

// ---- virsh output and failures, without libvirt -------------------------------------------------

test.serial('virsh listings, replies and error lines are parsed exactly', (t) => {
  t.deepEqual(
    parseUuidNames('598A7ED6-b380-4a26-a23c-ecf6640f723e -x\n8d331e55-4bce-4775-949f-41fdd5fd90b2 we b;1\n\n'),
    [
      { uuid: '598a7ed6-b380-4a26-a23c-ecf6640f723e', name: '-x' },
      { uuid: '8d331e55-4bce-4775-949f-41fdd5fd90b2', name: 'we b;1' },
    ],
  );
  t.is(
    t.throws(() =>
      parseUuidNames('598a7ed6-b380-4a26-a23c-ecf6640f723e a\n8d331e55-4bce-4775-949f-41fdd5fd90b2 b\n', 1),
    )!.message,
    'libvirt lists more than 1 running domains',
  );
  t.is((t.throws(() => parseUuidNames(' Id   Name   State\n')) as VirshError).code, 'LIBVIRT_BAD_LISTING');
  t.deepEqual(parseMonitorReply('query-name', '{"return":{"name":"web1"},"id":"libvirt-412"}\n\n'), { name: 'web1' });
  const err = t.throws(
    () =>
      parseMonitorReply(
        'nope',
        '{"id":"libvirt-414","error":{"class":"CommandNotFound","desc":"The command nope has not been found"}}',
      ),
    { instanceOf: CommandError },
  );
  t.is(err!.message, 'nope: CommandNotFound: The command nope has not been found');
  t.is((t.throws(() => parseMonitorReply('x', 'garbage')) as unknown as { code: string }).code, 'QMP_PROTOCOL');
  t.is(
    (t.throws(() => parseMonitorReply('x', '{"id":"libvirt-1"}')) as unknown as { code: string }).code,
    'QMP_PROTOCOL',
  );
  t.is(quoteVirshArg(`--cmd={"a":"b\\"c"};'x'`), `"--cmd={\\"a\\":\\"b\\\\\\"c\\"};'x'"`);
  t.is(quoteVirshArg('a\nb'), null);
  const connect =
    "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n";
  t.is(
    virshErrorLine(connect),
    "failed to connect to the hypervisor: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory",
  );
  t.is(classifyVirshFailure(connect), 'LIBVIRT_UNREACHABLE');
  t.is(classifyVirshFailure("error: failed to get domain 'nosuch'\n"), 'LIBVIRT_DOMAIN_NOT_FOUND');
  t.is(
    classifyVirshFailure('error: Requested operation is not valid: domain is not running\n'),
    'LIBVIRT_DOMAIN_NOT_RUNNING',
  );
  t.is(classifyVirshFailure('error: internal error: something else\n'), 'VIRSH_FAILED');
});

test.serial('virsh that hangs, floods or is missing: killed, bounded, typed', async (t) => {
  const fake = tempDir('physbits-virsh-');
  t.teardown(() => rmSync(fake, { recursive: true, force: true }));
  const script = (name: string, body: string) => {
    const path = join(fake, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  };
  const started = Date.now();
  const hang = await t.throwsAsync(
    runVirsh('test:///default', ['list'], { virsh: script('hang', 'exec sleep 30'), timeoutMs: 300 }),
    { instanceOf: VirshError },
  );
  t.is(hang!.code, 'VIRSH_TIMEOUT');
  t.true(Date.now() - started < 5000);
  const flood = await t.throwsAsync(
    runVirsh('test:///default', ['list'], { virsh: script('flood', 'exec yes'), maxOutputBytes: 65536 }),
    { instanceOf: VirshError },
  );
  t.is(flood!.code, 'VIRSH_OUTPUT_TOO_LARGE');
  const missing = await t.throwsAsync(runVirsh('test:///default', ['list'], { virsh: join(fake, 'absent') }), {
    instanceOf: VirshError,
  });
  t.is(missing!.code, 'VIRSH_NOT_FOUND');
  // Arguments arrive as argv, untouched by any shell.
  const echo = script('echo', 'for a in "$@"; do printf "[%s]" "$a"; done');
  t.is(
    await runVirsh('qemu:///system', ['list', '--name', '$(id) `id` ;|&'], { virsh: echo }),
    '[--connect=qemu:///system][list][--name][$(id) `id` ;|&]',
  );
});

// ---- the real libvirt daemon --------------------------------------------------------------------

let dir = '';
let daemon: LibvirtdHandle | null = null;
let server: http.Server | null = null;
const events: LibvirtEvent[] = [];
let configPath = '';

async function waitForEvent(match: (e: LibvirtEvent) => boolean, ms = 10000): Promise<LibvirtEvent | undefined> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const found = events.find(match);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

test.before(async () => {
  if (unavailable) return;
  dir = tempDir('physbits-libvirt-');
  const apiSocket = join(dir, 'api.sock');
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/libvirt-events') events.push(JSON.parse(body) as LibvirtEvent);
      res.writeHead(202, { 'content-type': 'application/json' }).end('{"accepted":true}');
    });
  });
  await new Promise<void>((resolve) => server!.listen(apiSocket, resolve));
  configPath = join(dir, 'config.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      host: { physBits: 39 },
      policy: { accelerators: ['kvm', 'tcg'] },
      api: { socket: apiSocket },
      libvirtHook: { notifyTimeoutMs: 2000 },
    }),
  );
  const entry = join(REPO, 'build', 'test', 'helpers', 'libvirt-hook-entry.js');
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  daemon = await startLibvirtdWithHook(
    `#!/bin/sh\nexec ${q(process.execPath)} ${q(entry)} --config ${q(configPath)} "$@"\n`,
  );
});

test.after.always(async () => {
  if (daemon) await daemon.stop();
  server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

serial(`${ON}: virsh create of a 42-bit guest fails with the hook's message`, async (t) => {
  const xmlPath = join(dir, 'wide.xml');
  writeFileSync(xmlPath, tcgDomainXml(WIDE, "<maxphysaddr mode='emulate' bits='42'/>"));
  daemon!.createdDomains.add(WIDE);
  const r = await virsh(['create', '--paused', xmlPath]);
  t.log(r.stderr.trim());
  t.not(r.code, 0);
  t.true(
    r.stderr.includes(
      `physbits refused the start of domain '${WIDE}': GUEST_WIDER_THAN_HOST: guest phys-bits 42 is wider than this host's 39 bits (host.physBits in the config) under tcg; fix: set <maxphysaddr mode='emulate' bits='39'/> in <cpu>`,
    ),
    r.stderr,
  );
  t.false((await runningDomainNames()).includes(WIDE));
});

serial(`${ON}: a 39-bit guest starts, and the daemon socket hears "started"`, async (t) => {
  const xmlPath = join(dir, 'narrow.xml');
  writeFileSync(xmlPath, tcgDomainXml(NARROW, "<maxphysaddr mode='emulate' bits='39'/>"));
  daemon!.createdDomains.add(NARROW);
  const r = await virsh(['create', '--paused', xmlPath]);
  t.is(r.code, 0, r.stderr);
  t.true((await runningDomainNames()).includes(NARROW));
  t.deepEqual(await waitForEvent((e) => e.domain === NARROW && e.operation === 'started'), {
    domain: NARROW,
    operation: 'started',
    subOperation: 'begin',
  });
});

serial(`${ON}: LibvirtExecutor reads phys-bits 39 through qemu-monitor-command`, async (t) => {
  const q = new LibvirtExecutor(LIBVIRT_URI, NARROW);
  const cpus = await q.execute<Array<{ 'qom-path': string }>>('query-cpus-fast');
  t.is(await q.execute('qom-get', { path: cpus[0]['qom-path'], property: 'phys-bits' }), 39);
  const started = Date.now();
  const facts = await readGuestFacts(q);
  t.log(`readGuestFacts through virsh: ${Date.now() - started} ms`);
  t.like(facts, { name: NARROW, physBits: 39, hostPhysBits: false, hostPhysBitsLimit: 0, accelerator: 'tcg' });
  // QEMU's error replies arrive as CommandError, as on a direct QMP connection.
  const err = await t.throwsAsync(q.execute('qom-get', { path: cpus[0]['qom-path'], property: 'no-such-property' }), {
    instanceOf: CommandError,
  });
  t.is(err!.errorClass, 'GenericError');
});

serial(`${ON}: missing and stopped domains are typed errors`, async (t) => {
  const missing = await t.throwsAsync(new LibvirtExecutor(LIBVIRT_URI, `${prefix}-absent`).execute('query-status'), {
    instanceOf: VirshError,
  });
  t.is(missing!.code, 'LIBVIRT_DOMAIN_NOT_FOUND');
  const xmlPath = join(dir, 'off.xml');
  writeFileSync(xmlPath, tcgDomainXml(OFF, "<maxphysaddr mode='emulate' bits='39'/>"));
  daemon!.createdDomains.add(OFF);
  t.is((await virsh(['define', xmlPath])).code, 0);
  const off = await t.throwsAsync(new LibvirtExecutor(LIBVIRT_URI, OFF).execute('query-status'), {
    instanceOf: VirshError,
  });
  t.is(off!.code, 'LIBVIRT_DOMAIN_NOT_RUNNING');
  // Several commands at once share one virsh process; each learns the same reason.
  const q = new LibvirtExecutor(LIBVIRT_URI, OFF);
  const all = await Promise.allSettled([q.execute('query-status'), q.execute('query-name'), q.execute('query-kvm')]);
  t.deepEqual(
    all.map((r) => (r.status === 'rejected' ? (r.reason as VirshError).code : 'fulfilled')),
    Array(3).fill('LIBVIRT_DOMAIN_NOT_RUNNING'),
  );
});

serial(`${ON}: a domain named with digits is reached by UUID, not taken for a domain ID`, async (t) => {
  const id = (await virsh(['domid', `--domain=${NARROW}`])).stdout.trim();
  t.regex(id, /^\d+$/);
  const xmlPath = join(dir, 'digits.xml');
  writeFileSync(xmlPath, tcgDomainXml(id, "<maxphysaddr mode='emulate' bits='36'/>"));
  daemon!.createdDomains.add(id);
  t.is((await virsh(['create', '--paused', xmlPath])).code, 0);
  const q = new LibvirtExecutor(LIBVIRT_URI, id);
  t.deepEqual(await q.execute('query-name'), { name: id });
  const cpus = await q.execute<Array<{ 'qom-path': string }>>('query-cpus-fast');
  t.is(await q.execute('qom-get', { path: cpus[0]['qom-path'], property: 'phys-bits' }), 36);
});

serial(`${ON}: names and values with spaces, quotes and semicolons survive the batched command string`, async (t) => {
  const xmlPath = join(dir, 'odd.xml');
  writeFileSync(
    xmlPath,
    tcgDomainXml(ODD.replace(/&/g, '&amp;').replace(/"/g, '&quot;'), "<maxphysaddr mode='emulate' bits='37'/>"),
  );
  daemon!.createdDomains.add(ODD);
  const r = await virsh(['create', '--paused', xmlPath]);
  t.is(r.code, 0, r.stderr);
  const q = new LibvirtExecutor(LIBVIRT_URI, ODD);
  const property = `x;y"z\\w 'v'`;
  const [name, bad, facts] = await Promise.allSettled([
    q.execute('query-name'),
    q.execute('qom-get', { path: '/machine', property }),
    readGuestFacts(q),
  ]);
  t.deepEqual(name, { status: 'fulfilled', value: { name: ODD } });
  t.is(bad.status, 'rejected');
  t.is(
    ((bad as PromiseRejectedResult).reason as CommandError).desc,
    `Property 'pc-q35-7.2-machine.${property}' not found`,
  );
  t.is(facts.status === 'fulfilled' ? facts.value.physBits : null, 37);
});

serial(`${ON}: virsh list and dominfo keep working with the hook installed`, async (t) => {
  const list = await virsh(['list', '--all']);
  t.is(list.code, 0);
  t.true(list.stdout.includes(NARROW));
  const info = await virsh(['dominfo', `--domain=${NARROW}`]);
  t.is(info.code, 0, info.stderr);
  t.regex(info.stdout, new RegExp(`Name:\\s+${NARROW}`));
  t.regex(info.stdout, /State:\s+paused/);
});

serial(`${ON}: physbitsctl libvirt-hook gives the same answer as the hook libvirt ran`, (t) => {
  const xml = tcgDomainXml(WIDE, "<maxphysaddr mode='emulate' bits='42'/>");
  const cli = join(REPO, 'build', 'agent', 'bin', 'physbitsctl.js');
  const r = spawnSync(process.execPath, [cli, 'libvirt-hook', '--config', configPath, WIDE, 'prepare', 'begin', '-'], {
    input: xml,
    encoding: 'utf8',
    timeout: 30000,
  });
  t.is(r.status, 1, r.stderr);
  t.is(r.stdout, '');
  t.is(
    r.stderr.trim(),
    `physbits refused the start of domain '${WIDE}': GUEST_WIDER_THAN_HOST: guest phys-bits 42 is wider than this host's 39 bits (host.physBits in the config) under tcg; fix: set <maxphysaddr mode='emulate' bits='39'/> in <cpu>`,
  );
});

serial(
  `${ON}: physbitsd with discovery.libvirt shows the running domain in status and metrics; virsh keeps working`,
  async (t) => {
    const ddir = tempDir('physbits-libvirt-daemon-');
    const apiSocket = join(ddir, 'api.sock');
    const cfg = join(ddir, 'daemon.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        host: { physBits: 39 },
        policy: { accelerators: ['kvm', 'tcg'] },
        discovery: { libvirt: LIBVIRT_URI, libvirtPollSeconds: 1 },
        api: { socket: apiSocket },
        metrics: { listen: '127.0.0.1:0' },
        alerts: { spoolDir: join(ddir, 'spool') },
      }),
    );
    const { spawn } = await import('node:child_process');
    const proc = spawn(process.execPath, [join(REPO, 'build', 'agent', 'bin', 'physbitsd.js'), '--config', cfg], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    t.teardown(async () => {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      rmSync(ddir, { recursive: true, force: true });
    });
    const cli = join(REPO, 'build', 'agent', 'bin', 'physbitsctl.js');
    type Doc = {
      vms: Array<{
        name: string;
        mode?: string;
        guest?: { physBits: number; accelerator: string };
        verdict?: { relation: string; severity: string };
      }>;
    };
    let entry: Doc['vms'][number] | undefined;
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      const r = spawnSync(process.execPath, [cli, 'status', '--json', '--api', apiSocket], {
        encoding: 'utf8',
        timeout: 10000,
      });
      // Until the daemon answers, --json prints its error as JSON ({"error": ...}), without vms.
      if (r.stdout.trim().startsWith('{')) {
        entry = (JSON.parse(r.stdout) as Partial<Doc>).vms?.find((v) => v.name === NARROW && v.guest);
        if (entry) break;
      }
      await new Promise((res) => setTimeout(res, 200));
    }
    t.truthy(entry, log);
    t.is(entry!.mode, 'libvirt');
    t.is(entry!.guest!.physBits, 39);
    t.is(entry!.guest!.accelerator, 'tcg');
    t.deepEqual(entry!.verdict && { relation: entry!.verdict.relation, severity: entry!.verdict.severity }, {
      relation: 'equal',
      severity: 'ok',
    });
    // spawnSync above blocks this process's event loop: let the daemon's stderr be read before looking.
    const metricsLine = /metrics listening address=127\.0\.0\.1:(\d+)/;
    for (let i = 0; i < 100 && !metricsLine.test(log); i++) await new Promise((res) => setTimeout(res, 50));
    const port = metricsLine.exec(log)?.[1];
    t.truthy(port, log);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    t.regex(
      metrics,
      new RegExp(
        `physbits_guest_phys_bits\\{vm="${NARROW}",id="[0-9a-f]{12}",host="[^"]+",accelerator="[a-z]+"[^}]*\\} 39`,
      ),
    );
    // libvirt still owns the monitor: its own commands keep working while the daemon reads.
    const info = await virsh(['qemu-monitor-command', `--domain=${NARROW}`, '--cmd={"execute":"query-status"}']);
    t.is(info.code, 0, info.stderr);
    t.regex(info.stdout, /"status"/);
  },
);

serial(`${ON}: destroying the guest is reported as stopped and release`, async (t) => {
  t.is((await virsh(['destroy', `--domain=${NARROW}`])).code, 0);
  daemon!.createdDomains.delete(NARROW);
  t.deepEqual(await waitForEvent((e) => e.domain === NARROW && e.operation === 'stopped'), {
    domain: NARROW,
    operation: 'stopped',
    subOperation: 'end',
  });
  t.deepEqual(await waitForEvent((e) => e.domain === NARROW && e.operation === 'release'), {
    domain: NARROW,
    operation: 'release',
    subOperation: 'end',
  });
  t.false((await runningDomainNames()).includes(NARROW));
});
