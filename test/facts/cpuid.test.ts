import test from 'ava';
import {
  cpuidPosition,
  decodeAddressSizes,
  decodeMemEncryption,
  interpretCpuid,
  parseCpuidRegisters,
  vendorFromLeaf0,
  type CpuidRegisters,
} from '../../agent/facts/cpuid';

function regs(eax: number, ebx = 0, ecx = 0, edx = 0): CpuidRegisters {
  return { eax, ebx, ecx, edx };
}

const AMD_LEAF0 = regs(0x10, 0x68747541, 0x444d4163, 0x69746e65);
const INTEL_LEAF0 = regs(0x16, 0x756e6547, 0x6c65746e, 0x49656e69);

test('position: leaf in the low 32 bits, subleaf in the high 32 bits', (t) => {
  t.is(cpuidPosition(0x80000008), 0x80000008n);
  t.is(cpuidPosition(0x8000001f, 0), 0x8000001fn);
  t.is(cpuidPosition(0x7, 1), 0x100000007n);
  t.is(cpuidPosition(0xd, 0xffffffff), 0xffffffff0000000dn);
});

test('registers: four little-endian u32 in EAX, EBX, ECX, EDX order', (t) => {
  const buf = Buffer.from('303030000200055001700000000000ff', 'hex');
  t.deepEqual(parseCpuidRegisters(buf), { eax: 0x303030, ebx: 0x50050002, ecx: 0x7001, edx: 0xff000000 });
});

test('registers: a short read is null', (t) => {
  t.is(parseCpuidRegisters(Buffer.alloc(15)), null);
  t.is(parseCpuidRegisters(Buffer.alloc(0)), null);
});

test('vendor string from leaf 0 (EBX, EDX, ECX)', (t) => {
  t.is(vendorFromLeaf0(AMD_LEAF0), 'AuthenticAMD');
  t.is(vendorFromLeaf0(INTEL_LEAF0), 'GenuineIntel');
  t.is(vendorFromLeaf0(regs(0)), null);
});

test('0x80000008 EAX: physical, linear, guest physical', (t) => {
  t.deepEqual(decodeAddressSizes(0x303030), { physBits: 48, virtBits: 48, guestPhysBits: 48 });
  t.deepEqual(decodeAddressSizes(0x302e), { physBits: 46, virtBits: 48, guestPhysBits: 0 });
  t.deepEqual(decodeAddressSizes(0x3934), { physBits: 52, virtBits: 57, guestPhysBits: 0 });
});

test('0x8000001F: feature bits, C-bit position, reduction', (t) => {
  t.deepEqual(decodeMemEncryption({ eax: 0x1b, ebx: 0x173 }), {
    sme: true,
    sev: true,
    sevEs: true,
    sevSnp: true,
    cBitPosition: 51,
    reduction: 5,
  });
  t.deepEqual(decodeMemEncryption({ eax: 0x2, ebx: (1 << 6) | 47 }), {
    sme: false,
    sev: true,
    sevEs: false,
    sevSnp: false,
    cBitPosition: 47,
    reduction: 1,
  });
});

test('interpret: AMD with SME/SEV', (t) => {
  t.deepEqual(
    interpretCpuid({
      vendor: AMD_LEAF0,
      extMax: regs(0x80000023),
      addressSizes: regs(0x3030),
      memEncryption: regs(0x1b, 0x173),
    }),
    {
      vendor: 'AuthenticAMD',
      maxExtendedLeaf: 0x80000023,
      physBits: 48,
      virtBits: 48,
      memEncryptionSupported: true,
      memEncryptionReduction: 5,
    },
  );
});

test('interpret: 0x8000001F without SME or SEV means no reduction (0), even if EBX has bits', (t) => {
  const f = interpretCpuid({
    vendor: AMD_LEAF0,
    extMax: regs(0x80000020),
    addressSizes: regs(0x3030),
    memEncryption: regs(0, 0x173),
  });
  t.is(f.memEncryptionReduction, 0);
  t.false(f.memEncryptionSupported);
});

test('interpret: leaves above the maximum extended leaf are ignored', (t) => {
  const f = interpretCpuid({
    vendor: INTEL_LEAF0,
    extMax: regs(0x80000004),
    addressSizes: regs(0x302e),
    memEncryption: regs(0x3, 0x173),
  });
  t.is(f.physBits, null);
  t.is(f.memEncryptionReduction, null);
  t.is(f.maxExtendedLeaf, 0x80000004);
});

test('interpret: 0x8000001F is ignored on Intel even when the maximum leaf reaches it', (t) => {
  const f = interpretCpuid({
    vendor: INTEL_LEAF0,
    extMax: regs(0x80000020),
    addressSizes: regs(0x302e),
    memEncryption: regs(0x3, 0x173),
  });
  t.is(f.physBits, 46);
  t.is(f.memEncryptionReduction, null);
  t.false(f.memEncryptionSupported);
});

test('interpret: nothing read, or a zero width, gives nulls', (t) => {
  t.deepEqual(interpretCpuid({}), {
    vendor: null,
    maxExtendedLeaf: null,
    physBits: null,
    virtBits: null,
    memEncryptionSupported: false,
    memEncryptionReduction: null,
  });
  t.is(interpretCpuid({ extMax: regs(0x80000008), addressSizes: regs(0) }).physBits, null);
});
