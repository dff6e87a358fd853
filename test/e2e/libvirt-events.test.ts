/**
 * libvirt's events acted on at once, on the real libvirt 9.0 daemon and QEMU (TCG), with
 * `discovery.libvirtPollSeconds` at ten minutes so that nothing but an event can explain a change
 * seen within seconds: a DIMM attached with `virsh attach-device --live`, a domain started and one
 * destroyed after the daemon, each in `physbitsctl status` within 5 s; then libvirtd restarted
 * under the daemon, and the same again. On this machine's QEMU (7.2) only, as in libvirt.test.ts.
 */
import test from 'ava';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ctl, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import {
  LIBVIRT_URI,
  libvirtUnavailable,
  startLibvirtdWithHook,
  virsh,
  type LibvirtdHandle,
} from '../helpers/libvirtd';
import { HOST_QEMU } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const prefix = `physbits-ev-${process.pid}`;
const FIRST = `${prefix}-first`;
const LATER = `${prefix}-later`;
const AFTER = `${prefix}-after-restart`;
const SAVED = `${prefix}-saved`;
const ON = `${HOST_QEMU.label}, libvirt 9.0`;
/** What the issue asks: seen within 5 s while the poll interval is ten minutes. */
const WITHIN_MS = 5000;

const unavailable = libvirtUnavailable();
const serial = unavailable ? test.serial.skip : test.serial;
if (unavailable) test.serial(`libvirt event tests are skipped: ${unavailable}`, (t) => t.pass());

/** A TCG q35 domain without disks that can take DIMMs: ACPI, a NUMA node, slots and maxMemory. */
function hotplugDomainXml(name: string, maxphysaddr = ''): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <maxMemory slots='4' unit='MiB'>1024</maxMemory>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'>
    <model fallback='forbid'>qemu64</model>${maxphysaddr}
    <numa><cell id='0' cpus='0' memory='128' unit='MiB'/></numa>
  </cpu>
  <devices><memballoon model='none'/></devices>
</domain>
`;
}

const DIMM = `<memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target></memory>`;

interface StatusVm {
  name: string;
  mode?: string;
  guest?: {
    physBits: number;
    hostPhysBits: boolean;
    incoming?: unknown;
    migratedIn?: unknown;
    layout?: { memoryDevices: Array<{ type: string; id: string | null; size: number }> };
  };
  verdict?: { severity: string; reasons: Array<{ code: string }> };
}

let dir = '';
let libvirtd: LibvirtdHandle | null = null;
let daemon: DaemonProcess | null = null;

/** The VMs `physbitsctl status --json` shows. */
async function statusVms(): Promise<StatusVm[]> {
  const r = await ctl(['status', '--json', '--api', daemon!.apiSocket]);
  if (!r.stdout.trim().startsWith('{')) throw new Error(`physbitsctl status: ${r.code} ${r.stderr.trim()}`);
  return (JSON.parse(r.stdout) as { vms: StatusVm[] }).vms;
}

/** Polls `physbitsctl status` until `pred` holds; resolves with the milliseconds it took. */
async function seenWithin(what: string, pred: (vms: StatusVm[]) => boolean, ms = WITHIN_MS): Promise<number> {
  const started = Date.now();
  await waitUntil(async () => pred(await statusVms()), `${what} in physbitsctl status`, ms, 100);
  return Date.now() - started;
}

const dimms = (vms: StatusVm[], name: string) =>
  vms.find((vm) => vm.name === name)?.guest?.layout?.memoryDevices.filter((d) => d.type === 'dimm').length ?? -1;

async function createDomain(name: string, maxphysaddr = ''): Promise<void> {
  const xmlPath = join(dir, `${name}.xml`);
  writeFileSync(xmlPath, hotplugDomainXml(name, maxphysaddr));
  libvirtd!.createdDomains.add(name);
  const r = await virsh(['create', xmlPath]);
  if (r.code !== 0) throw new Error(`virsh create ${name}: ${r.stderr.trim()}`);
}

async function attachDimm(name: string): Promise<void> {
  const xmlPath = join(dir, 'dimm.xml');
  writeFileSync(xmlPath, DIMM);
  const r = await virsh(['attach-device', `--domain=${name}`, `--file=${xmlPath}`, '--live']);
  if (r.code !== 0) throw new Error(`virsh attach-device ${name}: ${r.stderr.trim()}`);
}

test.before(async () => {
  if (unavailable) return;
  dir = tempDir('physbits-libvirt-events-');
  libvirtd = await startLibvirtdWithHook('#!/bin/sh\nexit 0\n');
  await createDomain(FIRST);
  daemon = await startDaemon({
    dir,
    config: {
      host: { physBits: 40 },
      peers: [],
      discovery: { libvirt: LIBVIRT_URI, libvirtPollSeconds: 600 },
    },
  });
});

test.after.always(async () => {
  await daemon?.stop();
  await libvirtd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

serial(`${ON}: the daemon starts following libvirt's events and reads the running domain`, async (t) => {
  await seenWithin('the first domain', (vms) => dimms(vms, FIRST) === 0, 30000);
  const vm = (await statusVms()).find((v) => v.name === FIRST)!;
  t.is(vm.mode, 'libvirt');
  t.is(vm.guest!.physBits, 40);
  t.is(vm.verdict!.severity, 'ok');
});

serial(`${ON}: a DIMM attached with virsh attach-device --live is in physbitsctl status within 5 s`, async (t) => {
  await attachDimm(FIRST);
  const ms = await seenWithin('the DIMM', (vms) => dimms(vms, FIRST) === 1);
  t.log(`DIMM seen after ${ms} ms (poll interval 600 s)`);
  const vm = (await statusVms()).find((v) => v.name === FIRST)!;
  t.deepEqual(
    vm.guest!.layout!.memoryDevices.map((d) => ({ type: d.type, id: d.id, size: d.size })),
    [{ type: 'dimm', id: 'dimm0', size: 128 * 1024 * 1024 }],
  );
});

serial(`${ON}: a domain started after the daemon is in physbitsctl status within 5 s`, async (t) => {
  await createDomain(LATER);
  const ms = await seenWithin('the later domain', (vms) => dimms(vms, LATER) === 0);
  t.log(`started domain seen after ${ms} ms`);
  const vm = (await statusVms()).find((v) => v.name === LATER)!;
  t.is(vm.mode, 'libvirt');
  t.is(vm.guest!.physBits, 40);
});

serial(`${ON}: a domain destroyed leaves physbitsctl status within 5 s`, async (t) => {
  t.is((await virsh(['destroy', `--domain=${LATER}`])).code, 0);
  libvirtd!.createdDomains.delete(LATER);
  const ms = await seenWithin('the destroyed domain gone', (vms) => !vms.some((vm) => vm.name === LATER));
  t.log(`destroyed domain gone after ${ms} ms`);
  t.true((await statusVms()).some((vm) => vm.name === FIRST));
});

serial(`${ON}: after a libvirtd restart the daemon follows the events again`, async (t) => {
  await libvirtd!.restart();
  const down = await daemon!.waitForLog(
    (l) => l.message === 'libvirt event stream ended; domains are polled until it is back',
    20000,
  );
  t.regex(down.raw, /Disconnected from qemu:\/\/\/system|failed to connect|end of file/);
  await daemon!.waitForLog((l) => l.message === 'libvirt events followed again', 60000);
  t.is(daemon!.proc.exitCode, null);
  await attachDimm(FIRST);
  const dimmMs = await seenWithin('the second DIMM', (vms) => dimms(vms, FIRST) === 2);
  await createDomain(AFTER);
  const startMs = await seenWithin('the domain started after the restart', (vms) => dimms(vms, AFTER) === 0);
  t.log(`after the restart: DIMM seen after ${dimmMs} ms, started domain after ${startMs} ms`);
});

serial(`${ON}: a host-following domain restored from a save file is not taken for a migrated one`, async (t) => {
  // Under TCG, <maxphysaddr mode='passthrough'/> becomes host-phys-bits=on (QEMU keeps 40 bits).
  await createDomain(SAVED, "<maxphysaddr mode='passthrough'/>");
  await seenWithin('the domain to save', (vms) => vms.find((vm) => vm.name === SAVED)?.guest?.hostPhysBits === true);
  const image = join(dir, 'saved.img');
  const saved = await virsh(['save', `--domain=${SAVED}`, `--file=${image}`]);
  t.is(saved.code, 0, saved.stderr);
  await seenWithin('the saved domain gone', (vms) => !vms.some((vm) => vm.name === SAVED));
  const restored = await virsh(['restore', `--file=${image}`]);
  t.is(restored.code, 0, restored.stderr);
  // QEMU answers query-migrate with a destination's bare "completed" (observed), yet no arrival.
  const q = await virsh(['qemu-monitor-command', `--domain=${SAVED}`, '--cmd={"execute":"query-migrate"}']);
  t.regex(q.stdout, /"return":\{"status":"completed"\}/);
  const ms = await seenWithin('the restored domain without an arrival', (vms) => {
    const vm = vms.find((v) => v.name === SAVED);
    return !!vm?.guest && vm.guest.incoming === undefined && vm.guest.migratedIn === undefined;
  });
  t.log(`restored domain read after ${ms} ms`);
  const vm = (await statusVms()).find((v) => v.name === SAVED)!;
  t.deepEqual(
    vm.verdict!.reasons.map((r) => r.code),
    ['GUEST_EQUALS_HOST'],
  );
});
