/**
 * A VM that is not running yet, as the verdict (agent/judge/verdict.ts) sees a running guest: the
 * width and layout vm-plan.ts predicts for it on this node. Pure.
 */
import type { GuestFacts, HostFacts } from '../core/types';
import { qemuHostPhysBits } from '../judge/host-limit';
import { layoutFor } from './memory-config';
import type { VmPlan } from './vm-plan';

/** The vendor the guest's CPUID shows (the AMD 1 TiB relocation follows it). */
function guestVendor(plan: VmPlan, host: HostFacts): string | undefined {
  if (plan.cpu.vendor) return plan.cpu.vendor;
  if (plan.cpu.accelerator === 'kvm') return host.vendor ?? undefined;
  // TCG models keep their own: qemu64 and max are AMD, kvm64 Intel (target/i386/cpu.c).
  return plan.cpu.model === 'qemu64' || plan.cpu.model === 'max' ? 'AuthenticAMD' : 'GenuineIntel';
}

/** The guest of `plan` on `host`; `width` replaces a host-following width (the source's, on a migration). */
export function guestFromPlan(plan: VmPlan, host: HostFacts, width?: number): GuestFacts {
  const physBits = width ?? plan.cpu.physBits ?? qemuHostPhysBits(host);
  const layout = layoutFor(plan.memory, {
    family: plan.machine.family,
    ...(plan.machine.version !== null ? { machineVersion: plan.machine.version } : {}),
    vendor: guestVendor(plan, host),
    physBits,
  });
  return {
    name: plan.name,
    qemuVersion: '',
    accelerator: plan.cpu.accelerator,
    physBits,
    hostPhysBits: plan.cpu.followsHost,
    hostPhysBitsLimit: 0,
    guestPhysBits: plan.cpu.guestPhysBits,
    cpuModel: plan.cpu.model,
    memoryEncryption: { active: plan.amdSev, type: plan.amdSev ? 'sev' : null, reducedPhysBits: null },
    runState: null,
    layout,
  };
}
