/**
 * Decoding of CPUID leaves as Linux's cpuid driver returns them: reading 16 bytes of
 * /dev/cpu/N/cpuid at offset `leaf | (subleaf << 32)` yields EAX, EBX, ECX, EDX, little-endian.
 * Pure: the reader lives in host-facts.ts.
 *
 * The leaves used mirror what QEMU reads for host-phys-bits (target/i386/host-cpu.c,
 * host_cpu_phys_bits: 0x80000008 EAX[7:0] when 0x80000000 EAX says the leaf exists) and what
 * the AMD APM defines for memory encryption (0x8000001F: EAX bit 0 SME, bit 1 SEV, bit 3 SEV-ES,
 * bit 4 SEV-SNP; EBX[5:0] C-bit position, EBX[11:6] physical address reduction).
 */
import { widthOrNull } from '../core/checks';

export interface CpuidRegisters {
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export const LEAF = {
  VENDOR: 0x0,
  EXT_MAX: 0x80000000,
  ADDRESS_SIZES: 0x80000008,
  MEM_ENCRYPTION: 0x8000001f,
} as const;

/** The vendors whose leaf 0x8000001F describes SME/SEV. */
const MEM_ENCRYPTION_VENDORS = new Set(['AuthenticAMD', 'HygonGenuine']);

/** The file offset that selects (leaf, subleaf) on the cpuid device; above 2^32 when subleaf > 0. */
export function cpuidPosition(leaf: number, subleaf = 0): bigint {
  return BigInt(leaf >>> 0) | (BigInt(subleaf >>> 0) << 32n);
}

/** The four registers of one 16-byte read; null when fewer than 16 bytes came back. */
export function parseCpuidRegisters(buf: Buffer): CpuidRegisters | null {
  if (buf.length < 16) return null;
  return {
    eax: buf.readUInt32LE(0),
    ebx: buf.readUInt32LE(4),
    ecx: buf.readUInt32LE(8),
    edx: buf.readUInt32LE(12),
  };
}

/** The 12-character vendor string of leaf 0 (EBX, EDX, ECX); null when not printable ASCII. */
export function vendorFromLeaf0(regs: CpuidRegisters): string | null {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(regs.ebx >>> 0, 0);
  b.writeUInt32LE(regs.edx >>> 0, 4);
  b.writeUInt32LE(regs.ecx >>> 0, 8);
  const s = b.toString('latin1');
  return /^[\x20-\x7e]{12}$/.test(s) ? s : null;
}

/** Leaf 0x80000008 EAX: [7:0] physical, [15:8] linear, [23:16] guest physical (0 = same as [7:0]). */
export function decodeAddressSizes(eax: number): { physBits: number; virtBits: number; guestPhysBits: number } {
  return { physBits: eax & 0xff, virtBits: (eax >>> 8) & 0xff, guestPhysBits: (eax >>> 16) & 0xff };
}

/** AMD leaf 0x8000001F: which encryption features exist, the C-bit and the address reduction. */
export function decodeMemEncryption(regs: Pick<CpuidRegisters, 'eax' | 'ebx'>): {
  sme: boolean;
  sev: boolean;
  sevEs: boolean;
  sevSnp: boolean;
  cBitPosition: number;
  reduction: number;
} {
  return {
    sme: (regs.eax & 0x1) !== 0,
    sev: (regs.eax & 0x2) !== 0,
    sevEs: (regs.eax & 0x8) !== 0,
    sevSnp: (regs.eax & 0x10) !== 0,
    cBitPosition: regs.ebx & 0x3f,
    reduction: (regs.ebx >>> 6) & 0x3f,
  };
}

/** The raw leaves as read; a leaf that could not be read is undefined. */
export interface CpuidLeaves {
  vendor?: CpuidRegisters;
  extMax?: CpuidRegisters;
  addressSizes?: CpuidRegisters;
  memEncryption?: CpuidRegisters;
}

export interface CpuidFacts {
  vendor: string | null;
  maxExtendedLeaf: number | null;
  /** Raw 0x80000008 EAX[7:0]; null when the leaf does not exist or reads 0. */
  physBits: number | null;
  virtBits: number | null;
  /** Whether 0x8000001F reports SME or SEV support (capability, not whether firmware enabled it). */
  memEncryptionSupported: boolean;
  /** 0x8000001F EBX[11:6] when SME or SEV is reported; 0 when the leaf exists without either; else null. */
  memEncryptionReduction: number | null;
}

/**
 * Interprets the leaves: a leaf above the maximum extended leaf returns unrelated data on real
 * CPUs, so 0x80000008 and 0x8000001F count only when 0x80000000 EAX reaches them, and 0x8000001F
 * only on AMD/Hygon (when the vendor is known).
 */
export function interpretCpuid(leaves: CpuidLeaves): CpuidFacts {
  const vendor = leaves.vendor ? vendorFromLeaf0(leaves.vendor) : null;
  const maxExt = leaves.extMax ? leaves.extMax.eax >>> 0 : null;
  const out: CpuidFacts = {
    vendor,
    maxExtendedLeaf: maxExt,
    physBits: null,
    virtBits: null,
    memEncryptionSupported: false,
    memEncryptionReduction: null,
  };
  if (maxExt === null) return out;
  if (maxExt >= LEAF.ADDRESS_SIZES && leaves.addressSizes) {
    const a = decodeAddressSizes(leaves.addressSizes.eax);
    out.physBits = widthOrNull(a.physBits);
    out.virtBits = widthOrNull(a.virtBits);
  }
  const vendorAllows = vendor === null || MEM_ENCRYPTION_VENDORS.has(vendor);
  if (maxExt >= LEAF.MEM_ENCRYPTION && leaves.memEncryption && vendorAllows) {
    const m = decodeMemEncryption(leaves.memEncryption);
    out.memEncryptionSupported = m.sme || m.sev;
    out.memEncryptionReduction = out.memEncryptionSupported ? m.reduction : 0;
  }
  return out;
}
