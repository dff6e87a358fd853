/**
 * The settings that pin a guest's width, as strings an operator pastes: QEMU's -cpu options, libvirt's
 * <maxphysaddr>, Proxmox's cpu line, and QEMU's size syntax. Pure.
 */
import type { GuestFacts } from '../core/types';
import { GiB, MiB } from '../facts/guest-layout';

export interface AdviceSettings {
  /** `-cpu MODEL,phys-bits=N` */
  qemu: string;
  /** `-cpu MODEL,host-phys-bits=on,host-phys-bits-limit=N` (KVM: the host's width, capped at N). */
  qemuHostPhysBits: string;
  /** `<maxphysaddr mode='emulate' bits='N'/>` inside `<cpu>` (libvirt 8.7.0+). */
  libvirt: string;
  /** `<maxphysaddr mode='passthrough' limit='N'/>` (libvirt 9.3.0+, host-passthrough CPUs only). */
  libvirtPassthrough: string;
  /** `cpu: MODEL,phys-bits=N` in /etc/pve/qemu-server/VMID.conf. */
  proxmox: string;
  /** `-cpu MODEL,guest-phys-bits=N`, when the guest's QEMU has guest-phys-bits (9.1+). */
  qemuGuestPhysBits?: string;
}

/** QEMU's valid phys-bits for a 64-bit CPU (target/i386/cpu.c: 32 to TARGET_PHYS_ADDR_SPACE_BITS). */
export const MIN_PHYS_BITS = 32;
export const MAX_PHYS_BITS = 52;

/** "qemu64-x86_64-cpu" → "qemu64"; null → "MODEL", a placeholder for the operator to fill in. */
export function cpuModelName(model: string | null): string {
  if (!model) return 'MODEL';
  return model.replace(/-(x86_64|i386)-cpu$/, '');
}

/** [major, minor] of "9.1.0", "7.2.22 (Debian ...)"; null when unreadable. */
export function qemuVersionOf(text: string): [number, number] | null {
  const m = /^v?(\d+)\.(\d+)/.exec(text.trim());
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/**
 * guest-phys-bits can be advised: the guest's QEMU has it (9.1+, or the guest sets it), and the guest
 * boots UEFI from pflash (OVMF), which sizes its 64-bit window by it (OvmfPkg/Library/PlatformInitLib
 * MemDetect.c PlatformAddressWidthFromCpuid). SeaBIOS, QEMU's default firmware, reads only
 * CPUID 0x80000008 EAX[7:0] (src/fw/paravirt.c), so for its guests only phys-bits helps.
 */
export function hasGuestPhysBits(g: GuestFacts): boolean {
  if (g.firmware !== 'pflash') return false;
  if (g.guestPhysBits !== null && g.guestPhysBits !== undefined) return true;
  const v = qemuVersionOf(g.qemuVersion ?? '');
  return v !== null && (v[0] > 9 || (v[0] === 9 && v[1] >= 1));
}

export function settingsFor(model: string | null, bits: number, guestPhysBits: boolean): AdviceSettings {
  const m = cpuModelName(model);
  const s: AdviceSettings = {
    qemu: `-cpu ${m},phys-bits=${bits}`,
    qemuHostPhysBits: `-cpu ${m},host-phys-bits=on,host-phys-bits-limit=${bits}`,
    libvirt: `<maxphysaddr mode='emulate' bits='${bits}'/>`,
    libvirtPassthrough: `<maxphysaddr mode='passthrough' limit='${bits}'/>`,
    proxmox: `cpu: ${m},phys-bits=${bits}`,
  };
  if (guestPhysBits) s.qemuGuestPhysBits = `-cpu ${m},guest-phys-bits=${bits}`;
  return s;
}

export function currentSetting(g: GuestFacts): string {
  if (!g.hostPhysBits) return `phys-bits=${g.physBits}`;
  return g.hostPhysBitsLimit > 0
    ? `host-phys-bits=on,host-phys-bits-limit=${g.hostPhysBitsLimit}`
    : 'host-phys-bits=on';
}

/** A size for QEMU's command line: "473G", "1536M" (whole MiB; -m reads a bare number as MiB). */
export function qemuSize(bytes: number): string {
  return bytes % GiB === 0 ? `${bytes / GiB}G` : `${Math.floor(bytes / MiB)}M`;
}
