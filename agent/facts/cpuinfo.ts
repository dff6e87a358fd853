/**
 * Parsing of /proc/cpuinfo text: the vendor, the "address sizes" line and the memory-encryption
 * flags of the first processor. Pure: the reader lives in host-facts.ts.
 *
 * Linux prints one block per logical CPU, separated by blank lines; the fields this project needs
 * are identical in every block, so only the first block is read.
 */
import type { HostFlags, HostPaging } from '../core/types';
import { widthOrNull } from '../core/checks';

export interface CpuinfoFacts {
  vendor: string | null;
  modelName: string | null;
  /** "address sizes : N bits physical, M bits virtual"; null when absent or out of range. */
  physBits: number | null;
  virtBits: number | null;
  flags: HostFlags;
  /** Whether a "flags" line was present at all (false: the flags above are only defaults). */
  hasFlags: boolean;
  /** la57 and hypervisor from "flags", ept_5level from "vmx flags" (null where the line is absent). */
  paging: HostPaging;
}

/** Longest field value considered; a longer value is cut (a flags line is ~1.5 KiB today). */
const MAX_VALUE_CHARS = 64 * 1024;

const PHYSICAL = /(?:^|\s)(\d{1,3}) bits physical(?:,|$)/;
const VIRTUAL = /(?:^|\s)(\d{1,3}) bits virtual$/;

export function noFlags(): HostFlags {
  return { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false };
}

function bitsOrNull(text: string): number | null {
  return widthOrNull(Number(text));
}

/** Parses "46 bits physical, 48 bits virtual" into both widths; a malformed half is null. */
export function parseAddressSizes(value: string): { physBits: number | null; virtBits: number | null } {
  const v = value.trim();
  const p = PHYSICAL.exec(v);
  const w = VIRTUAL.exec(v);
  return { physBits: p ? bitsOrNull(p[1]) : null, virtBits: w ? bitsOrNull(w[1]) : null };
}

/** The memory-encryption flags among a space-separated cpuinfo "flags" value. */
export function parseFlags(value: string): HostFlags {
  const flags = noFlags();
  for (const word of value.split(/\s+/)) {
    if (word === 'sme' || word === 'sev' || word === 'sev_es' || word === 'sev_snp' || word === 'tme') {
      flags[word] = true;
    }
  }
  return flags;
}

/** Whether `word` is among the space-separated words of a cpuinfo flags value. */
function hasWord(value: string, word: string): boolean {
  return value.split(/\s+/).includes(word);
}

/**
 * Parses the first processor block of /proc/cpuinfo. Never throws: missing or malformed fields
 * come back as null (and `hasFlags: false`).
 */
export function parseCpuinfo(text: string): CpuinfoFacts {
  const out: CpuinfoFacts = {
    vendor: null,
    modelName: null,
    physBits: null,
    virtBits: null,
    flags: noFlags(),
    hasFlags: false,
    paging: { la57: null, ept5Level: null, hypervisor: null },
  };
  let seenField = false;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const line = text.slice(start, Math.min(end, start + MAX_VALUE_CHARS));
    start = end + 1;
    if (line.trim() === '') {
      if (seenField) break; // end of the first processor block
      continue;
    }
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    seenField = true;
    const key = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    switch (key) {
      case 'vendor_id':
        if (out.vendor === null && value) out.vendor = value;
        break;
      case 'model name':
        if (out.modelName === null && value) out.modelName = value;
        break;
      case 'address sizes':
        if (out.physBits === null) Object.assign(out, parseAddressSizes(value));
        break;
      case 'flags':
        if (!out.hasFlags) {
          out.flags = parseFlags(value);
          out.hasFlags = true;
          out.paging.la57 = hasWord(value, 'la57');
          out.paging.hypervisor = hasWord(value, 'hypervisor');
        }
        break;
      case 'vmx flags':
        // Linux 5.8+ (arch/x86/kernel/cpu/proc.c show_cpuinfo, VMX feature names): ept_5level
        // is the CPU's 5-level EPT, what vmx_get_max_ept_level() tests.
        if (out.paging.ept5Level === null) out.paging.ept5Level = hasWord(value, 'ept_5level');
        break;
      default:
        break;
    }
  }
  return out;
}

/** The first kernel whose "vmx flags" show ept_5level (arch/x86/include/asm/vmxfeatures.h VMX_FEATURE_EPT_5LEVEL). */
export const EPT_5LEVEL_FLAG_SINCE = { major: 6, minor: 9 } as const;

/** "6.1.0-28-amd64" → { 6, 1 }; null for other shapes. */
export function kernelVersion(release: string | null | undefined): { major: number; minor: number } | null {
  const m = release ? /^(\d{1,3})\.(\d{1,3})/.exec(release) : null;
  return m ? { major: Number(m[1]), minor: Number(m[2]) } : null;
}
