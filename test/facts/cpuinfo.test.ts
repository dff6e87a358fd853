import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAddressSizes, parseCpuinfo, parseFlags } from '../../agent/facts/cpuinfo';

const HOSTS = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'hosts');

test('address sizes: both widths', (t) => {
  t.deepEqual(parseAddressSizes('46 bits physical, 48 bits virtual'), { physBits: 46, virtBits: 48 });
  t.deepEqual(parseAddressSizes(' 52 bits physical, 57 bits virtual '), { physBits: 52, virtBits: 57 });
});

test('address sizes: a malformed half is null, out-of-range widths are null', (t) => {
  t.deepEqual(parseAddressSizes('43 bits physical'), { physBits: 43, virtBits: null });
  t.deepEqual(parseAddressSizes('460 bits physical, lots of bits virtual'), { physBits: null, virtBits: null });
  t.deepEqual(parseAddressSizes('0 bits physical, 48 bits virtual'), { physBits: null, virtBits: 48 });
  t.deepEqual(parseAddressSizes('unknown'), { physBits: null, virtBits: null });
  t.deepEqual(parseAddressSizes('146 bits physical, 48 bits virtual'), { physBits: null, virtBits: 48 });
});

test('flags: only whole words count', (t) => {
  t.deepEqual(parseFlags('fpu sme sev sev_es sev_snp tme'), {
    sme: true,
    sev: true,
    sev_es: true,
    sev_snp: true,
    tme: true,
  });
  t.deepEqual(parseFlags('fpu smep sev_es_x tme2 smex'), {
    sme: false,
    sev: false,
    sev_es: false,
    sev_snp: false,
    tme: false,
  });
  t.deepEqual(parseFlags('sev\tsme'), { sme: true, sev: true, sev_es: false, sev_snp: false, tme: false });
});

test('first block only: a second processor block does not override the first', (t) => {
  const text = [
    'processor\t: 0',
    'vendor_id\t: GenuineIntel',
    'flags\t\t: fpu vmx',
    'address sizes\t: 46 bits physical, 48 bits virtual',
    '',
    'processor\t: 1',
    'vendor_id\t: AuthenticAMD',
    'flags\t\t: fpu sme sev',
    'address sizes\t: 43 bits physical, 48 bits virtual',
    '',
  ].join('\n');
  t.deepEqual(parseCpuinfo(text), {
    vendor: 'GenuineIntel',
    modelName: null,
    physBits: 46,
    virtBits: 48,
    flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false },
    hasFlags: true,
    paging: { la57: false, ept5Level: null, hypervisor: false },
  });
});

test('leading blank lines and no trailing newline', (t) => {
  const facts = parseCpuinfo(
    '\n\nprocessor : 0\nvendor_id : HygonGenuine\naddress sizes : 45 bits physical, 48 bits virtual',
  );
  t.is(facts.vendor, 'HygonGenuine');
  t.is(facts.physBits, 45);
  t.is(facts.virtBits, 48);
  t.false(facts.hasFlags);
});

test('empty and garbage text give all nulls', (t) => {
  const empty = { vendor: null, modelName: null, physBits: null, virtBits: null, hasFlags: false };
  t.like(parseCpuinfo(''), empty);
  t.like(parseCpuinfo('\u0000\u0001 binary junk without colons\n'), empty);
});

test('a huge flags line is cut, not fatal', (t) => {
  const text = `vendor_id : GenuineIntel\nflags : ${'x '.repeat(100_000)}sme\naddress sizes : 39 bits physical, 48 bits virtual\n`;
  const facts = parseCpuinfo(text);
  t.is(facts.physBits, 39);
  t.false(facts.flags.sme); // beyond the 64 KiB value bound
  t.true(facts.hasFlags);
});

test('fixture intel-46: Xeon Gold, 46 bits, no encryption flags', (t) => {
  const facts = parseCpuinfo(readFileSync(join(HOSTS, 'intel-46', 'proc', 'cpuinfo'), 'utf8'));
  t.deepEqual(facts, {
    vendor: 'GenuineIntel',
    modelName: 'Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz',
    physBits: 46,
    virtBits: 48,
    flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false },
    hasFlags: true,
    paging: { la57: false, ept5Level: false, hypervisor: false },
  });
});

test('fixture amd-sme-48: EPYC with SME/SEV reports the reduced 43 bits', (t) => {
  const facts = parseCpuinfo(readFileSync(join(HOSTS, 'amd-sme-48', 'proc', 'cpuinfo'), 'utf8'));
  t.is(facts.vendor, 'AuthenticAMD');
  t.is(facts.physBits, 43);
  t.is(facts.virtBits, 48);
  t.deepEqual(facts.flags, { sme: true, sev: true, sev_es: true, sev_snp: true, tme: false });
});

test('fixture laptop-39: client part with tme flag', (t) => {
  const facts = parseCpuinfo(readFileSync(join(HOSTS, 'laptop-39', 'proc', 'cpuinfo'), 'utf8'));
  t.is(facts.physBits, 39);
  t.deepEqual(facts.flags, { sme: false, sev: false, sev_es: false, sev_snp: false, tme: true });
});

test('fixture no-address-sizes: no vendor and no width', (t) => {
  const facts = parseCpuinfo(readFileSync(join(HOSTS, 'no-address-sizes', 'proc', 'cpuinfo'), 'utf8'));
  t.like(facts, {
    vendor: null,
    physBits: null,
    virtBits: null,
    hasFlags: true,
    modelName: 'AMD EPYC 7302 16-Core Processor',
  });
});

test('paging flags: la57 and hypervisor from flags, ept_5level from vmx flags', (t) => {
  const text = [
    'processor\t: 0',
    'vendor_id\t: GenuineIntel',
    'flags\t\t: fpu vmx la57 hypervisor',
    'vmx flags\t: vnmi preemption_timer invvpid ept_x_only ept_ad ept_1gb ept_5level flexpriority',
    'address sizes\t: 52 bits physical, 57 bits virtual',
  ].join('\n');
  t.deepEqual(parseCpuinfo(text).paging, { la57: true, ept5Level: true, hypervisor: true });
  const words = 'flags\t\t: fpu la57x xla57 hypervisorx\nvmx flags\t: ept_5levelx ept_ad';
  t.deepEqual(parseCpuinfo(words).paging, { la57: false, ept5Level: false, hypervisor: false });
  t.deepEqual(parseCpuinfo('vendor_id\t: AuthenticAMD').paging, { la57: null, ept5Level: null, hypervisor: null });
});
