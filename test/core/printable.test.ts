/**
 * Control characters from VMs and peers (names, error messages, refusal reasons) never reach a
 * terminal raw: every physbitsctl output path shows them as \uXXXX, like `status` and `watch`.
 */
import test from 'ava';
import http from 'node:http';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { printable, printableLines } from '../../agent/core/printable';
import { renderAdvice, renderFleet } from '../../agent/cli/render-fleet';
import { runCli } from '../../agent/cli/run-cli';
import { terminalText, type CliIo } from '../../agent/cli/cli-io';
import { buildFleet } from '../../agent/judge/fleet';
import { advise } from '../../agent/judge/advise';
import type { PeerFacts, StatusDocument, VmStatus } from '../../agent/core/types';
import { guestFacts, hostFacts } from '../helpers/facts';
import { ctl } from '../helpers/daemon';
import { tempDir } from '../helpers/tmp';

/** A clear-screen, an OSC title with BEL, a C1 CSI, NEL, a line separator and a paragraph separator. */
const HOSTILE = 'ev\u001b[2Jil\u001b]0;pwned\u0007\u009b31m\u0085x\u2028y\u2029z';
const HOSTILE_SHOWN = 'ev\\u001b[2Jil\\u001b]0;pwned\\u0007\\u009b31m\\u0085x\\u2028y\\u2029z';

/** Any character a terminal acts on, except the newline between lines. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/;

function vm(name: string, physBits: number): VmStatus {
  const guest = guestFacts({ name, qemuVersion: '7.2.22', accelerator: 'kvm', physBits, runState: 'paused' });
  return {
    socket: `/run/qemu/${name}.qmp`,
    name,
    accelerator: 'kvm',
    guest: { ...guest, cpuModel: 'Skylake-Server' },
    verdict: { relation: 'equal', severity: 'ok', reasons: [] },
  };
}

function status(host: string, bits: number, vms: VmStatus[]): StatusDocument {
  return { host: hostFacts(bits, host, { sources: {} }), vms };
}

function hostileFleet() {
  const broken: VmStatus = {
    socket: '/s/x.qmp',
    name: `dead${HOSTILE}`,
    error: { code: 'QMP_TIMEOUT', message: HOSTILE },
  };
  const peers: PeerFacts[] = [
    { name: `hv2${HOSTILE}`, physBits: 39, reachable: true, status: status('x', 39, [vm(`db${HOSTILE}`, 39)]) },
    { name: 'hv3', physBits: 40, reachable: false, error: { code: 'PEER_BAD_RESPONSE', message: HOSTILE } },
  ];
  return {
    local: status('hv1', 46, [vm(`web${HOSTILE}`, 46), broken]),
    localName: 'hv1',
    peers,
    policy: { accelerators: ['kvm'] },
  };
}

test('printable escapes the bidirectional controls like C0: U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069', (t) => {
  const bidi = [0x061c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069];
  for (const code of bidi) {
    const c = String.fromCharCode(code);
    const shown = `\\u${code.toString(16).padStart(4, '0')}`;
    t.is(printable(`a${c}b`), `a${shown}b`, shown);
    t.is(printableLines(`a${c}b\nc`), `a${shown}b\nc`, shown);
  }
  // Their neighbours are ordinary text: U+200D (zero-width joiner, emoji), U+2065, U+206A.
  t.is(printable('a\u200db\u2065c\u206a'), 'a\u200db\u2065c\u206a');
  t.is(printable(printable('invoice\u202egpj.exe')), 'invoice\\u202egpj.exe');
});

test('printable escapes C0, DEL, C1 and U+2028/2029; printableLines keeps the newlines; both are idempotent', (t) => {
  t.is(printable(HOSTILE), HOSTILE_SHOWN);
  t.is(printable('a\nb\tc\u007f'), 'a\\u000ab\\u0009c\\u007f');
  t.is(printableLines(`a\n${HOSTILE}\n`), `a\n${HOSTILE_SHOWN}\n`);
  t.is(printable(printable(HOSTILE)), HOSTILE_SHOWN);
  t.is(printable('web1 → hv2: ✓ Ä'), 'web1 → hv2: ✓ Ä');
});

test('renderFleet: hostile VM, host and peer texts are escaped in the hosts, the matrix and the misfits', (t) => {
  const text = renderFleet(buildFleet(hostileFleet()));
  t.false(RAW_CONTROL.test(text), JSON.stringify(text));
  const lines = text.split('\n');
  t.true(lines.includes(`  hv2${HOSTILE_SHOWN}: 39 bits`), text);
  t.true(lines.includes(`  hv3: 40 bits, configured, UNREACHABLE (PEER_BAD_RESPONSE: ${HOSTILE_SHOWN})`), text);
  t.true(lines.includes(`  hv1/web${HOSTILE_SHOWN} → hv2${HOSTILE_SHOWN}: guest 46 bits > host 39 bits`), text);
  // The matrix is measured on the escaped text: every row's marks start in the header's columns.
  const header = lines.find((l) => l.startsWith('GUEST'))!;
  const row = lines.find((l) => l.startsWith(`hv1/web${HOSTILE_SHOWN}`))!;
  t.truthy(row, text);
  t.is(row.indexOf('✓'), header.indexOf('hv1'));
  t.is(row.indexOf('✗'), header.indexOf(`hv2${HOSTILE_SHOWN}`));
  t.true(lines.some((l) => l.startsWith(`hv1/dead${HOSTILE_SHOWN}`) && l.endsWith(`QMP_TIMEOUT: ${HOSTILE_SHOWN}`)));
  t.false(RAW_CONTROL.test(renderFleet(buildFleet(hostileFleet()), { ascii: true })));
});

test('renderAdvice: hostile VM names, peer names and messages are escaped', (t) => {
  const doc = advise(hostileFleet());
  const text = renderAdvice(doc);
  t.false(RAW_CONTROL.test(text), JSON.stringify(text));
  t.true(
    text.includes(`hv1/web${HOSTILE_SHOWN}: phys-bits=46 (kvm), pool hv1, hv2${HOSTILE_SHOWN}, hv3 → 39 bits`),
    text,
  );
  t.true(text.includes(`hv1/dead${HOSTILE_SHOWN}: unknown: QMP_TIMEOUT: ${HOSTILE_SHOWN}`), text);
  t.true(text.includes('unreachable: hv3 (the pool may be narrower than shown)'), text);
});

test('terminalText: every control but the newline escaped; JSON stays JSON and decodes to the same text', (t) => {
  const json = JSON.stringify({ vm: HOSTILE, n: 1 }, null, 2);
  const shown = terminalText(json);
  t.false(RAW_CONTROL.test(shown));
  t.true(shown.endsWith('}\n'));
  t.deepEqual(JSON.parse(shown), { vm: HOSTILE, n: 1 });
  t.is(terminalText('a\nb'), 'a\nb\n');
});

/** A stand-in daemon API on a UNIX socket whose every answer carries hostile text. */
async function hostileApi(t: import('ava').ExecutionContext): Promise<string> {
  const dir = tempDir();
  const socket = join(dir, 'api.sock');
  const fleet = hostileFleet();
  const server = http.createServer((req, res) => {
    const send = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.url === '/v1/check-migration')
      send(200, { vm: `web${HOSTILE}`, peer: `hv2${HOSTILE}`, allowed: false, code: 'GUEST_WIDER', message: HOSTILE });
    else if (req.url === '/v1/fleet') send(200, buildFleet(fleet));
    else if (req.url?.startsWith('/v1/advise')) send(200, advise(fleet));
    else send(404, { error: { code: 'VM_NOT_FOUND', message: `no VM named ${HOSTILE}` } });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  t.teardown(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return socket;
}

function captureIo(): { io: CliIo; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { stdout: (s) => out.push(s), stderr: (s) => err.push(s), env: {} }, out, err };
}

test('check-migration, fleet and advise print hostile answers escaped', async (t) => {
  const socket = await hostileApi(t);
  const check = captureIo();
  t.is(await runCli(['check-migration', `web${HOSTILE}`, '--to', 'hv2', '--api', socket], check.io), 2);
  t.deepEqual(check.out, [`refused: web${HOSTILE_SHOWN} → hv2${HOSTILE_SHOWN}: ${HOSTILE_SHOWN}`]);
  for (const command of ['fleet', 'advise']) {
    const run = captureIo();
    await runCli([command, '--api', socket], run.io);
    t.is(run.out.length, 1, command);
    t.false(RAW_CONTROL.test(run.out[0]), `${command}: ${JSON.stringify(run.out[0])}`);
    t.true(run.out[0].includes(`web${HOSTILE_SHOWN}`), command);
  }
});

test('physbitsctl as a process: a daemon error naming a hostile VM and --json output reach the terminal escaped', async (t) => {
  const socket = await hostileApi(t);
  const notFound = await ctl(['status', '--api', socket]);
  // An unknown VM is an unknown (exit 3), like every other unknown.
  t.is(notFound.code, 3, notFound.stderr);
  t.is(notFound.stderr, `physbitsctl: no VM named ${HOSTILE_SHOWN}\n`);
  const json = await ctl(['check-migration', 'web1', '--to', 'hv2', '--json', '--api', socket]);
  t.is(json.code, 2, json.stderr);
  t.false(RAW_CONTROL.test(json.stdout), JSON.stringify(json.stdout));
  t.like(JSON.parse(json.stdout), { vm: `web${HOSTILE}`, message: HOSTILE });
  const fleet = await ctl(['fleet', '--api', socket]);
  t.false(RAW_CONTROL.test(fleet.stdout), JSON.stringify(fleet.stdout));
  t.true(fleet.stdout.includes(`hv1/web${HOSTILE_SHOWN} → hv2${HOSTILE_SHOWN}`), fleet.stdout);
});
