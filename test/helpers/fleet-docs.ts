/**
 * Status documents for fleet tests: a host of a given width and VMs of a given width whose layout
 * ends where the test says.
 */
import type { GuestLayout, HostFacts, StatusDocument, VmStatus } from '../../agent/core/types';
import { guestFacts, hostFacts } from './facts';

export const GIB = 2 ** 30;

export function host(name: string, physBits: number): HostFacts {
  return hostFacts(physBits, name, { sources: {} });
}

export function layout(highestAddress: number): GuestLayout {
  return {
    ramAbove4g: 0,
    ramBelow4g: GIB,
    deviceMemory: null,
    memoryDevices: [],
    pciHole64: { start: 4 * GIB, end: 4 * GIB + 32 * GIB },
    highestAddress,
    usedEnd: 4 * GIB,
  };
}

export function vm(name: string, physBits: number, opts: { accel?: string; highest?: number | null } = {}): VmStatus {
  const accel = opts.accel ?? 'kvm';
  const guest = guestFacts({
    name,
    qemuVersion: '7.2.22',
    accelerator: accel,
    physBits,
    runState: 'paused',
    layout: opts.highest === null ? null : layout(opts.highest ?? 36 * GIB),
  });
  return {
    socket: `/run/qemu/${name}.qmp`,
    name,
    accelerator: accel,
    guest,
    verdict: { relation: 'equal', severity: 'ok', reasons: [] },
  };
}

export function status(hostName: string, bits: number, vms: VmStatus[]): StatusDocument {
  return { host: host(hostName, bits), vms };
}
