/**
 * Reads this host's readings through injected roots (like node_exporter's --path.procfs), so tests
 * run on fixture trees: /proc/cpuinfo, the cpuid device of CPU 0, and the KVM module parameters.
 * Every parse is a pure function of cpuinfo.ts / cpuid.ts; this file only opens files. The host's
 * limit is the judge's: agent/judge/host-limit.ts judgeHost turns these readings into HostFacts.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { hostName, type Config } from '../core/config';
import {
  interpretCpuid,
  LEAF,
  cpuidPosition,
  parseCpuidRegisters,
  type CpuidFacts,
  type CpuidLeaves,
  type CpuidRegisters,
} from './cpuid';
import { EPT_5LEVEL_FLAG_SINCE, kernelVersion, noFlags, parseCpuinfo, type CpuinfoFacts } from './cpuinfo';
import type { HostKvm, HostPaging, HostReadings, HostSource } from '../core/types';
import { atLeast } from './qemu-version';

export interface HostReadOptions {
  procRoot?: string;
  sysRoot?: string;
  devRoot?: string;
  name: string;
  /**
   * Read the kernel release whatever the CPU (the hooks predict guest-phys-bits from it,
   * agent/judge/guest-phys-bits.ts); otherwise it is read only where the EPT depth needs it.
   */
  kernelRelease?: boolean;
}

/** /proc/cpuinfo beyond this is not read; the first processor block is a few KiB. */
const CPUINFO_MAX_BYTES = 1024 * 1024;
/** A module parameter file holds "Y\n" or "1\n"; anything longer is not a boolean. */
const PARAM_MAX_BYTES = 64;

function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? String(err);
}

/** Reads at most `max` bytes of a file (procfs and sysfs files report size 0, so read until EOF). */
export function readBounded(path: string, max: number): string {
  const fd = openSync(path, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    while (total < max) {
      const buf = Buffer.alloc(Math.min(64 * 1024, max - total));
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(n === buf.length ? buf : buf.subarray(0, n));
      total += n;
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** A kernel module bool parameter: "Y"/"N" (bool) or "1"/"0" (int, as kvm_amd's npt). */
export function parseModuleBool(text: string): boolean | null {
  const v = text.trim();
  if (v === 'Y' || v === 'y' || v === '1') return true;
  if (v === 'N' || v === 'n' || v === '0') return false;
  return null;
}

/** One 16-byte read of the cpuid device; null on a short read. */
export function readCpuidLeaf(fd: number, leaf: number, subleaf = 0): CpuidRegisters | null {
  const buf = Buffer.alloc(16);
  const n = readSync(fd, buf, 0, 16, cpuidPosition(leaf, subleaf));
  return parseCpuidRegisters(buf.subarray(0, n));
}

/**
 * Reads the leaves physbits needs from `<devRoot>/cpu/<cpu>/cpuid`. Works on the character device
 * (needs CAP_SYS_RAWIO / root and the cpuid module) and on a regular file holding the registers at
 * the same offsets, which is how fixture trees provide it.
 */
export function readCpuid(devRoot: string, cpu = 0): CpuidFacts {
  const fd = openSync(join(devRoot, 'cpu', String(cpu), 'cpuid'), 'r');
  try {
    const leaves: CpuidLeaves = {};
    leaves.vendor = readCpuidLeaf(fd, LEAF.VENDOR) ?? undefined;
    leaves.extMax = readCpuidLeaf(fd, LEAF.EXT_MAX) ?? undefined;
    const maxExt = leaves.extMax ? leaves.extMax.eax >>> 0 : 0;
    if (maxExt >= LEAF.ADDRESS_SIZES) leaves.addressSizes = readCpuidLeaf(fd, LEAF.ADDRESS_SIZES) ?? undefined;
    if (maxExt >= LEAF.MEM_ENCRYPTION) leaves.memEncryption = readCpuidLeaf(fd, LEAF.MEM_ENCRYPTION) ?? undefined;
    return interpretCpuid(leaves);
  } finally {
    closeSync(fd);
  }
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function readParam(sysRoot: string, module: string, param: string, notes: string[]): boolean | null {
  const path = join(sysRoot, 'module', module, 'parameters', param);
  try {
    const value = parseModuleBool(readBounded(path, PARAM_MAX_BYTES));
    if (value === null) notes.push(`${path}: not a boolean`);
    return value;
  } catch (err) {
    notes.push(`${path}: ${errCode(err)}`);
    return null;
  }
}

/** The loaded KVM vendor module and the parameters that change how guest widths behave. */
export function readKvm(sysRoot: string, vendor: string | null, notes: string[]): HostKvm {
  const intel = isDir(join(sysRoot, 'module', 'kvm_intel'));
  const amd = isDir(join(sysRoot, 'module', 'kvm_amd'));
  let module: HostKvm['module'] = null;
  if (intel && amd) module = vendor === 'GenuineIntel' ? 'kvm_intel' : 'kvm_amd';
  else if (intel) module = 'kvm_intel';
  else if (amd) module = 'kvm_amd';
  const kvm: HostKvm = { module, allowSmallerMaxphyaddr: null, ept: null, npt: null };
  if (module === 'kvm_intel') {
    kvm.allowSmallerMaxphyaddr = readParam(sysRoot, module, 'allow_smaller_maxphyaddr', notes);
    kvm.ept = readParam(sysRoot, module, 'ept', notes);
  } else if (module === 'kvm_amd') {
    kvm.npt = readParam(sysRoot, module, 'npt', notes);
  }
  return kvm;
}

/** The kernel release (`<procRoot>/sys/kernel/osrelease`); null with a note when unreadable. */
export function readKernelRelease(procRoot: string, notes: string[]): string | null {
  const path = join(procRoot, 'sys', 'kernel', 'osrelease');
  try {
    const text = readBounded(path, 256).trim();
    return /^[\x21-\x7e]{1,128}$/.test(text) ? text : null;
  } catch (err) {
    notes.push(`${path}: ${errCode(err)}`);
    return null;
  }
}

/** IA32_VMX_EPT_VPID_CAP (Intel SDM vol. 3 A.10; arch/x86/include/asm/msr-index.h MSR_IA32_VMX_EPT_VPID_CAP). */
export const MSR_IA32_VMX_EPT_VPID_CAP = 0x48c;
/** Its bit 7: a 5-level EPT page walk (arch/x86/include/asm/vmx.h VMX_EPT_PAGE_WALK_5_BIT). */
export const VMX_EPT_PAGE_WALK_5_BIT = 1n << 7n;

/**
 * Bit 7 of IA32_VMX_EPT_VPID_CAP from `<devRoot>/cpu/0/msr` (the msr module's device: an 8-byte
 * read at the MSR's number; needs CAP_SYS_RAWIO). A fixture tree provides a regular file holding
 * the value at that offset. Null with a note when it cannot be read.
 */
export function readEptMsr5Level(devRoot: string, notes: string[]): boolean | null {
  const path = join(devRoot, 'cpu', '0', 'msr');
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    notes.push(`${path}: ${errCode(err)}`);
    return null;
  }
  try {
    const buf = Buffer.alloc(8);
    const n = readSync(fd, buf, 0, 8, MSR_IA32_VMX_EPT_VPID_CAP);
    if (n !== 8) {
      notes.push(`${path}: short read of MSR 0x48c`);
      return null;
    }
    return (buf.readBigUInt64LE(0) & VMX_EPT_PAGE_WALK_5_BIT) !== 0n;
  } catch (err) {
    notes.push(`${path}: ${errCode(err)}`);
    return null;
  } finally {
    closeSync(fd);
  }
}

/** Reads every host reading; a source that cannot be read becomes null with a note. */
export function readHost(opts: HostReadOptions): HostReadings {
  const procRoot = opts.procRoot ?? '/proc';
  const sysRoot = opts.sysRoot ?? '/sys';
  const devRoot = opts.devRoot ?? '/dev';
  const notes: string[] = [];

  const cpuinfoPath = join(procRoot, 'cpuinfo');
  let cpuinfo: CpuinfoFacts | null = null;
  try {
    cpuinfo = parseCpuinfo(readBounded(cpuinfoPath, CPUINFO_MAX_BYTES));
    if (cpuinfo.physBits === null) notes.push(`${cpuinfoPath}: no "address sizes" line`);
  } catch (err) {
    notes.push(`${cpuinfoPath}: ${errCode(err)}`);
  }

  const cpuidPath = join(devRoot, 'cpu', '0', 'cpuid');
  let cpuid: CpuidFacts | null = null;
  try {
    cpuid = readCpuid(devRoot, 0);
    if (cpuid.physBits === null) notes.push(`${cpuidPath}: leaf 0x80000008 not available`);
  } catch (err) {
    notes.push(`${cpuidPath}: ${errCode(err)}`);
  }

  const cpuinfoPhysBits = cpuinfo?.physBits ?? null;
  const cpuidPhysBits = cpuid?.physBits ?? null;
  const sources: Record<string, HostSource> = {
    cpuinfoPhysBits: cpuinfoPhysBits !== null ? 'cpuinfo' : 'unknown',
    cpuinfoVirtBits: cpuinfo?.virtBits != null ? 'cpuinfo' : 'unknown',
    cpuidPhysBits: cpuidPhysBits !== null ? 'cpuid' : 'unknown',
    memEncryptionReduction: cpuid?.memEncryptionReduction != null ? 'cpuid' : 'unknown',
    flags: cpuinfo?.hasFlags ? 'cpuinfo' : 'unknown',
  };

  let vendor = cpuinfo?.vendor ?? null;
  sources.vendor = vendor !== null ? 'cpuinfo' : 'unknown';
  if (vendor === null && cpuid?.vendor) {
    vendor = cpuid.vendor;
    sources.vendor = 'cpuid';
  }
  const problems: string[] = [];
  if (cpuid?.vendor && cpuinfo?.vendor && cpuid.vendor !== cpuinfo.vendor)
    problems.push(`/proc/cpuinfo says ${cpuinfo.vendor} but CPUID leaf 0 says ${cpuid.vendor}`);

  const kvm = readKvm(sysRoot, vendor, notes);
  const paging: HostPaging = { ...(cpuinfo?.paging ?? { la57: null, ept5Level: null, hypervisor: null }) };
  // The EPT depth matters only on an Intel CPU wider than 48 bits whose "vmx flags" do not show
  // ept_5level; Linux shows that flag from 6.9, so before that the capability MSR tells.
  const widest = Math.max(cpuidPhysBits ?? 0, cpuinfo?.physBits ?? 0);
  const eptDepthUnshown = vendor === 'GenuineIntel' && paging.ept5Level !== true && widest > 48;
  if (opts.kernelRelease || eptDepthUnshown) paging.kernelRelease = readKernelRelease(procRoot, notes);
  if (eptDepthUnshown) {
    const kernel = kernelVersion(paging.kernelRelease);
    const flagShown = kernel !== null && atLeast(kernel, EPT_5LEVEL_FLAG_SINCE.major, EPT_5LEVEL_FLAG_SINCE.minor);
    if (!flagShown || paging.ept5Level === null) paging.eptMsr5Level = readEptMsr5Level(devRoot, notes);
  }
  return {
    name: opts.name,
    vendor,
    cpuinfoPhysBits,
    cpuinfoVirtBits: cpuinfo?.virtBits ?? null,
    cpuidPhysBits,
    memEncryptionReduction: cpuid?.memEncryptionReduction ?? null,
    flags: cpuinfo?.flags ?? noFlags(),
    paging,
    kvm,
    sources,
    notes,
    problems,
  };
}

/** The config's roots and host name, for readHost. */
export function hostReadOptions(config: Config): HostReadOptions {
  return {
    procRoot: config.host.procRoot,
    sysRoot: config.host.sysRoot,
    devRoot: config.host.devRoot,
    name: hostName(config),
  };
}
