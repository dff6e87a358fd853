/**
 * The Proxmox hook's predictions held against QEMU: for each fixture config in
 * test/fixtures/proxmox/pve, the parts of the command line qemu-server would build (vm-plan.ts
 * qemuArgs: -machine, -cpu, -smp, -m, NUMA nodes, cold-plugged DIMMs) start QEMU 7.2 and QEMU 10.0,
 * and the width and layout QMP reports (agent/facts/guest-facts.ts, the daemon's own reader) equal
 * what the hook computed for this machine.
 *
 * The accelerator is the one qemu-server would use here: KVM where /dev/kvm opens (the configs say
 * nothing, so KVM, as on a Proxmox node), else the same configs with `kvm: 0` (TCG), which is what
 * qemu-server starts on a node without KVM. On this machine's nested KVM, `-cpu host`/`max` abort in
 * QEMU ("failed to set MSR 0x10a") unless `arch-capabilities=off` is added; that flag does not touch
 * the width or the layout, and is added for those two models only.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../agent/core/config';
import type { HostFacts } from '../../agent/core/types';
import { readGuestFacts } from '../../agent/facts/guest-facts';
import { hostReadOptions, readHost } from '../../agent/facts/host-facts';
import { judgeHost } from '../../agent/judge/host-limit';
import { guestFromPlan } from '../../agent/proxmox/plan-guest';
import { parseCpuModels, parseVmConfig } from '../../agent/proxmox/vm-config';
import { planVm, qemuArgs, type VmPlan } from '../../agent/proxmox/vm-plan';
import { QmpClient } from '../../qmp/client';
import { kvmUsable, QEMUS, startGuest, type Qemu } from '../helpers/qemu';

const PVE = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'proxmox', 'pve');
const KVM = kvmUsable();
const HOST: HostFacts = judgeHost(readHost(hostReadOptions(parseConfig({}))), undefined);
const customModels = () => parseCpuModels(readFileSync(join(PVE, 'virtual-guest', 'cpu-models.conf'), 'utf8'));

function plan(vmid: number, node = 'pve1'): VmPlan {
  const file = parseVmConfig(readFileSync(join(PVE, 'nodes', node, 'qemu-server', `${vmid}.conf`), 'utf8'));
  if (!KVM) file.current.kvm = '0';
  return planVm(file, { vmid, cpuinfoPhysBits: HOST.cpuinfoPhysBits, customModels });
}

function argsFor(p: VmPlan): string[] {
  const args = qemuArgs(p);
  const hostModel = p.cpu.model === 'host' || p.cpu.model === 'max';
  if (hostModel && p.cpu.accelerator === 'kvm') args[args.indexOf('-cpu') + 1] += ',arch-capabilities=off';
  return args;
}

async function start(t: { teardown(fn: () => unknown): void }, qemu: Qemu, p: VmPlan) {
  const guest = await startGuest({ qemu, accel: p.cpu.accelerator, name: p.name, extraArgs: argsFor(p) });
  t.teardown(() => guest.kill());
  const q = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
  t.teardown(() => q.close());
  return readGuestFacts(q, { timeoutMs: 20000 });
}

/**
 * What QEMU says when it will not start with these arguments. QEMU 10 listens on its QMP socket
 * before it checks -cpu, so a start can look successful for a moment: then wait for it to exit.
 */
async function startFailure(qemu: Qemu, extraArgs: string[]): Promise<string> {
  let guest;
  try {
    guest = await startGuest({ qemu, accel: 'tcg', extraArgs });
  } catch (err) {
    return (err as Error).message;
  }
  const exited = await Promise.race([
    new Promise<boolean>((resolve) => guest.process.once('exit', () => resolve(true))),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(guest.process.exitCode !== null), 20000)),
  ]);
  const text = guest.stderr();
  await guest.kill();
  return exited || guest.process.exitCode !== null ? text : `QEMU kept running: ${text}`;
}

/** Fixtures every QEMU runs; 105 (guest-phys-bits) is QEMU 9.1+ and tested on its own below. */
const VMIDS = [100, 101, 102, 103, 104, 106, 107, 108, 109, 110, 111];

for (const qemu of QEMUS) {
  for (const vmid of VMIDS) {
    const p = plan(vmid);
    test(`${qemu.label}: VM ${vmid} (${p.name}, cpu ${p.cpu.configured}, -m ${p.memory.mArg}, ${p.machine.type}, ${p.cpu.accelerator}): width and layout as predicted`, async (t) => {
      if (p.cpu.model === 'host' && p.cpu.accelerator === 'tcg') {
        // Without KVM (kvm: 0, or a machine with none) QEMU has no `-cpu host`: the start fails there
        // as it would under qemu-server, and there is no width to compare.
        t.regex(await startFailure(qemu, argsFor(p)), /CPU model 'host' requires KVM/);
        return;
      }
      const facts = await start(t, qemu, p);
      const predicted = guestFromPlan(p, HOST);
      t.is(facts.accelerator, p.cpu.accelerator);
      t.is(facts.physBits, predicted.physBits, 'phys-bits');
      t.is(facts.hostPhysBits, p.cpu.hostPhysBits, 'host-phys-bits');
      const got = facts.layout!;
      const want = predicted.layout!;
      t.is(got.ramBelow4g, want.ramBelow4g, 'RAM below 4 GiB');
      t.is(got.ramAbove4g, want.ramAbove4g, 'RAM above 4 GiB');
      t.deepEqual(got.deviceMemory, want.deviceMemory, 'device memory');
      t.deepEqual(
        got.memoryDevices.map((d) => [d.id, d.addr, d.size]),
        want.memoryDevices.map((d) => [d.id, d.addr, d.size]),
        'cold-plugged DIMMs',
      );
      t.is(got.usedEnd, want.usedEnd, 'used end');
      if (got.pciHole64) t.is(got.pciHole64.start, want.pciHole64!.start, '64-bit PCI hole start');
    });
  }

  test(`${qemu.label}: VM 105's guest-phys-bits=39 is passed on (QEMU 9.1+) or refused by QEMU (older)`, async (t) => {
    const p = plan(105);
    t.is(p.cpu.guestPhysBits, 39);
    if (/QEMU 7\./.test(qemu.label)) {
      const err = await t.throwsAsync(() => startGuest({ qemu, accel: p.cpu.accelerator, extraArgs: argsFor(p) }));
      t.regex(err!.message, /guest-phys-bits' not found/);
      return;
    }
    const facts = await start(t, qemu, p);
    t.is(facts.guestPhysBits, 39);
    t.is(facts.physBits, guestFromPlan(p, HOST).physBits);
  });
}
