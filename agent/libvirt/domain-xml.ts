/**
 * A libvirt domain definition → the facts physbits needs before the guest runs: its accelerator,
 * machine, the physical-address width QEMU will give its CPU, and how far its memory layout reaches.
 * Pure: text in, plain object out.
 *
 * How libvirt 9.0 turns <cpu> into -cpu (src/qemu/qemu_command.c, qemuBuildCpuCommandLine; checked
 * with `virsh domxml-to-native qemu-argv`):
 *   mode='host-passthrough'             → -cpu host,migratable=on
 *   mode='maximum'                      → -cpu max
 *   mode='host-model'                   → -cpu <named model>,<features>
 *   mode='custom' <model>M</model>      → -cpu M       (no <cpu> at all → -cpu qemu64)
 *   <maxphysaddr mode='emulate' bits=N> → ,phys-bits=N
 *   <maxphysaddr mode='passthrough'>    → ,host-phys-bits=on (libvirt 9.0 drops a limit='L'
 *                                         attribute; later versions add ,host-phys-bits-limit=L)
 * How QEMU 7.2 resolves the width (target/i386/cpu.c x86_cpu_realizefn, target/i386/host-cpu.c,
 * target/i386/kvm/kvm-cpu.c):
 *   - under KVM the "host" and "max" models default to host-phys-bits=on
 *     (host_cpu_max_instance_init); host-phys-bits=on makes phys-bits the host's CPUID width, capped
 *     by host-phys-bits-limit, and overrides an explicit phys-bits (so emulate bits are ignored there);
 *   - host-phys-bits only acts under KVM (host_cpu_realizefn runs from kvm_cpu_realizefn): under TCG
 *     it is inert and the width is phys-bits, or 40 (TCG_PHYS_ADDR_BITS) when unset;
 *   - every other model without phys-bits gets 40.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { AgentError } from '../core/errors';
import { normalizeUuid } from '../core/uuid';
import { estimatePcLayout, type PcLayoutEstimate } from '../facts/guest-layout';
import { parseMachineType } from '../facts/qemu-version';
import { isObject } from '../core/checks';
import { cpuProp, judgeQemuArgs, qemuBool, qemuNamespaceArgs, qemuSize } from './qemu-commandline';

/** libvirt domain XML is a few KiB; anything past this is not a domain definition. */
export const DOMAIN_XML_MAX_BYTES = 4 * 1024 * 1024;
/** The width QEMU gives a 64-bit CPU whose phys-bits nobody set (TCG_PHYS_ADDR_BITS). */
export const QEMU_DEFAULT_PHYS_BITS = 40;

export type DomainXmlErrorCode = 'DOMAIN_XML_TOO_LARGE' | 'DOMAIN_XML_MALFORMED' | 'DOMAIN_XML_INVALID';
/** <qemu:commandline> or <qemu:override> content physbits cannot judge: QemuCommandlineError, DOMAIN_XML_UNJUDGEABLE. */
export { QemuCommandlineError } from './qemu-commandline';

export class DomainXmlError extends AgentError {
  constructor(code: DomainXmlErrorCode, message: string) {
    super(code, message);
  }
}

export interface DomainFacts {
  name: string;
  /** <uuid>, lower case; null when absent or not a UUID (libvirt always writes one). */
  uuid: string | null;
  /** <domain type=…> as written: 'kvm', 'qemu', … */
  domainType: string;
  /** QEMU's accelerator: 'kvm', 'tcg' (type='qemu'), else the domain type. */
  accelerator: string;
  /** <os><type machine=…>, e.g. 'pc-q35-7.2'; null when absent. */
  machineType: string | null;
  machine: 'q35' | 'pc' | 'other';
  /** Version of a versioned machine type; null for the 'q35'/'pc' aliases (the newest) or others. */
  machineVersion: { major: number; minor: number } | null;
  cpuMode: 'custom' | 'host-model' | 'host-passthrough' | 'maximum';
  /** The -cpu model libvirt will use: 'host', 'max', a named model, or null for host-model. */
  cpuModel: string | null;
  /** The width QEMU will give the CPU; null when it follows the host (host-phys-bits under KVM). */
  physBits: number | null;
  hostPhysBits: boolean;
  /** 0 when unset. */
  hostPhysBitsLimit: number;
  /** <maxphysaddr mode='emulate' bits=…> as written; null when absent. */
  emulatedBits: number | null;
  /** guest-phys-bits on the effective -cpu (<qemu:commandline>, -global); null when absent. */
  guestPhysBits: number | null;
  /** <devices><emulator>: the QEMU binary libvirt starts; null when absent. */
  emulator: string | null;
  /** RAM present at boot, QEMU's -m size (bytes). */
  ramBytes: number;
  /** <memory>: the most the guest may have at boot, memory devices included (bytes). */
  memoryBytes: number;
  currentMemoryBytes: number | null;
  /** <maxMemory>, QEMU's -m maxmem (bytes); null when absent. */
  maxMemoryBytes: number | null;
  slots: number;
  /** <pcihole64> of the root controller (bytes); null: QEMU's default. */
  pciHole64Bytes: number | null;
  /** <launchSecurity type=…>: 'sev', 'sev-snp', 's390-pv'…; null when absent. */
  launchSecurity: string | null;
  /** <launchSecurity><reducedPhysBits>; null when absent. */
  reducedPhysBits: number | null;
  /** QEMU's layout for this configuration (agent/facts/guest-layout.ts), 64-bit PCI hole included. */
  layout: PcLayoutEstimate | null;
  /** One past the highest address RAM and the hot-plug region can reach; null for other machines. */
  highestAddress: number | null;
  /** Sentences about settings that do not do what they seem to. */
  notes: string[];
}

const UNIT_BYTES: Record<string, number> = {
  b: 1,
  bytes: 1,
  kb: 1e3,
  k: 1024,
  kib: 1024,
  mb: 1e6,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1e9,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  tb: 1e12,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  pb: 1e15,
  p: 1024 ** 5,
  pib: 1024 ** 5,
};

/** Built-in models whose vendor is AuthenticAMD (target/i386/cpu.c builtin_x86_defs). */
const AMD_MODELS = /^(qemu64|EPYC|Opteron|phenom|athlon)/i;

type Node = Record<string, unknown>;

function obj(v: unknown): Node | undefined {
  return isObject(v) ? v : undefined;
}

const PREDEFINED: Readonly<Record<string, string>> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/** XML's predefined entities and character references; nothing a document could declare. */
export function decodeXmlText(raw: string): string {
  return raw.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-z]{2,4});/g, (whole, ref: string) => {
    if (ref[0] !== '#') return PREDEFINED[ref] ?? whole;
    const cp = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    return cp <= 0x10ffff ? String.fromCodePoint(cp) : whole;
  });
}

function text(v: unknown): string | undefined {
  if (typeof v === 'string') return decodeXmlText(v.trim());
  const o = obj(v);
  return typeof o?.['#text'] === 'string' ? decodeXmlText((o['#text'] as string).trim()) : undefined;
}

function attr(node: Node | undefined, name: string): string | undefined {
  const v = node?.[`@_${name}`];
  return typeof v === 'string' ? decodeXmlText(v.trim()) : undefined;
}

function invalid(message: string): never {
  throw new DomainXmlError('DOMAIN_XML_INVALID', message);
}

function parseCount(value: string, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d{1,16}$/.test(value)) invalid(`${what}: '${value.slice(0, 40)}' is not a whole number`);
  const n = Number(value);
  if (n > max) invalid(`${what}: ${n} is out of range`);
  return n;
}

/** A libvirt scaled integer: the value in `unit` (default KiB), as bytes. */
export function scaledBytes(value: string, unit: string | undefined, what: string): number {
  const factor = UNIT_BYTES[(unit ?? 'KiB').toLowerCase()];
  if (factor === undefined) invalid(`${what}: unknown unit '${unit!.slice(0, 20)}'`);
  const bytes = parseCount(value, what) * factor;
  if (!Number.isSafeInteger(bytes)) invalid(`${what}: ${value} ${unit ?? 'KiB'} is out of range`);
  return bytes;
}

function memoryElement(node: unknown, what: string): number | null {
  if (node === undefined) return null;
  const value = text(node);
  if (value === undefined || value === '') invalid(`${what}: no value`);
  return scaledBytes(value, attr(obj(node), 'unit'), what);
}

function bitsAttr(node: Node | undefined, name: string, what: string): number | null {
  const v = attr(node, name);
  return v === undefined ? null : parseCount(v, what, 64);
}

function accelOf(domainType: string): string {
  if (domainType === 'kvm') return 'kvm';
  if (domainType === 'qemu') return 'tcg';
  return domainType;
}

/** The machine family and version of <os><type machine=…> ('pc-q35-7.2', 'q35', 'pc-i440fx-2.11'). */
export function classifyMachine(type: string | null): {
  machine: DomainFacts['machine'];
  version: DomainFacts['machineVersion'];
} {
  const mt = type === null ? null : parseMachineType(type);
  const machine = mt?.family === 'q35' || mt?.family === 'pc' ? mt.family : 'other';
  return { machine, version: machine === 'other' ? null : mt!.version };
}

/**
 * Names that would meet Object.prototype (or that fast-xml-parser refuses outright: `__proto__`,
 * `constructor`, `prototype`) get a NUL in front, a character no XML name can hold: any well-formed
 * document parses, such an element can never be mistaken for one physbits reads, and no parsed
 * object gets a key that shadows or replaces what every object inherits.
 */
const ESCAPE = '\u0000';
export function escapeXmlName(name: string): string {
  return name in Object.prototype || name === 'prototype' || name.startsWith(ESCAPE) ? ESCAPE + name : name;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  processEntities: false,
  htmlEntities: false,
  transformTagName: escapeXmlName,
  transformAttributeName: escapeXmlName,
  isArray: (_name, jpath) =>
    jpath === 'domain.cpu.numa.cell' || jpath === 'domain.devices.memory' || jpath === 'domain.devices.controller',
});

/** Parses a libvirt domain XML document. Throws DomainXmlError (DOMAIN_XML_*) when it cannot. */
export interface DomainXmlOptions {
  /** This host's CPUID vendor: the vendor KVM's 'host' and 'max' models show the guest. */
  hostVendor?: string;
}

export function parseDomainXml(xml: string, opts: DomainXmlOptions = {}): DomainFacts {
  if (Buffer.byteLength(xml, 'utf8') > DOMAIN_XML_MAX_BYTES) {
    throw new DomainXmlError('DOMAIN_XML_TOO_LARGE', `domain XML larger than ${DOMAIN_XML_MAX_BYTES} bytes`);
  }
  // libvirt never writes a DTD; refusing one keeps entity expansion out entirely.
  if (/<!(DOCTYPE|ENTITY)/i.test(xml)) {
    throw new DomainXmlError('DOMAIN_XML_MALFORMED', 'domain XML must not contain a DOCTYPE or ENTITY declaration');
  }
  const valid = XMLValidator.validate(xml);
  if (valid !== true) {
    const e = valid.err;
    throw new DomainXmlError('DOMAIN_XML_MALFORMED', `domain XML is not well-formed: line ${e.line}: ${e.msg}`);
  }
  let parsed: unknown;
  try {
    parsed = parser.parse(xml);
  } catch (err) {
    // The validator passed it; whatever the parser still objects to is the document's form.
    throw new DomainXmlError('DOMAIN_XML_MALFORMED', `domain XML cannot be parsed: ${(err as Error).message}`);
  }
  const doc = obj(parsed);
  const domain = obj(doc?.domain);
  if (!domain) throw new DomainXmlError('DOMAIN_XML_MALFORMED', 'the document is not a <domain>');

  const name = text(domain.name);
  if (!name) invalid('<name> is missing');
  const uuid = normalizeUuid(text(domain.uuid));
  const domainType = attr(domain, 'type');
  if (!domainType) invalid(`${name}: <domain type=…> is missing`);
  const accelerator = accelOf(domainType);
  // <qemu:commandline> arguments reach QEMU after libvirt's own (agent/libvirt/qemu-commandline.ts).
  const qemuArgs = judgeQemuArgs(qemuNamespaceArgs(domain, decodeXmlText));
  const osType = obj(obj(domain.os)?.type);
  const machineType = qemuArgs.machineType ?? attr(osType, 'machine') ?? null;
  const { machine, version: machineVersion } = classifyMachine(machineType);
  const notes: string[] = [];
  const arch = attr(osType, 'arch');
  if (arch !== undefined && arch !== 'x86_64')
    notes.push(`architecture ${arch} is not modelled; the width assumes x86_64`);

  // CPU model and width.
  const cpu = obj(domain.cpu);
  const modeAttr = attr(cpu, 'mode') ?? 'custom';
  if (!['custom', 'host-model', 'host-passthrough', 'maximum'].includes(modeAttr))
    invalid(`${name}: unknown <cpu mode='${modeAttr.slice(0, 40)}'>`);
  const cpuMode = modeAttr as DomainFacts['cpuMode'];
  let cpuModel: string | null;
  if (qemuArgs.cpu) cpuModel = qemuArgs.cpu.model;
  else if (cpuMode === 'host-passthrough') cpuModel = 'host';
  else if (cpuMode === 'maximum') cpuModel = 'max';
  else if (cpuMode === 'host-model') cpuModel = null;
  else cpuModel = text(cpu?.model) || 'qemu64';

  const addr = obj(cpu?.maxphysaddr);
  const addrMode = attr(addr, 'mode');
  if (addr && addrMode !== 'emulate' && addrMode !== 'passthrough')
    invalid(`${name}: <maxphysaddr mode='${(addrMode ?? '').slice(0, 40)}'> is neither 'emulate' nor 'passthrough'`);
  const xmlBits = addrMode === 'emulate' ? bitsAttr(addr, 'bits', `${name}: <maxphysaddr bits>`) : null;
  if (addrMode === 'emulate' && xmlBits === null) invalid(`${name}: <maxphysaddr mode='emulate'> needs bits`);
  const xmlLimit = addrMode === 'passthrough' ? (bitsAttr(addr, 'limit', `${name}: <maxphysaddr limit>`) ?? 0) : 0;
  // The effective -cpu's properties: a <qemu:commandline> -cpu replaces libvirt's whole -cpu.
  const cpuProps: Record<string, string> = qemuArgs.cpu
    ? qemuArgs.cpu.props
    : {
        ...(xmlBits !== null ? { 'phys-bits': String(xmlBits) } : {}),
        ...(addrMode === 'passthrough' ? { 'host-phys-bits': 'on' } : {}),
        ...(xmlLimit > 0 ? { 'host-phys-bits-limit': String(xmlLimit) } : {}),
      };
  const prop = (p: string) => (cpuModel === null ? cpuProps[p] : cpuProp(qemuArgs, cpuModel, cpuProps, p));
  const bitsProp = (p: string) => {
    const v = prop(p);
    return v === undefined ? null : parseCount(v, `${name}: -cpu ${p}`, 64);
  };
  const emulatedBits = bitsProp('phys-bits');
  const hostPhysBitsLimit = bitsProp('host-phys-bits-limit') ?? 0;
  const guestPhysBits = bitsProp('guest-phys-bits');
  const hostPhysBitsProp = prop('host-phys-bits');

  const hostModelDefault = (cpuModel === 'host' || cpuModel === 'max') && accelerator === 'kvm';
  const hostPhysBits =
    hostPhysBitsProp !== undefined ? qemuBool(hostPhysBitsProp, '-cpu host-phys-bits') : hostModelDefault;
  let physBits: number | null;
  if (hostPhysBits && accelerator === 'kvm') {
    physBits = null;
    if (emulatedBits !== null) {
      const asked = qemuArgs.cpu ? `phys-bits=${emulatedBits}` : `<maxphysaddr mode='emulate' bits='${emulatedBits}'/>`;
      notes.push(
        `${asked} has no effect: QEMU's '${cpuModel}' model keeps host-phys-bits=on, so the guest gets the host's width`,
      );
    }
  } else {
    physBits = emulatedBits ?? QEMU_DEFAULT_PHYS_BITS;
    if (hostPhysBits)
      notes.push(
        `${qemuArgs.cpu ? 'host-phys-bits=on' : "<maxphysaddr mode='passthrough'/>"} has no effect under ${accelerator}: the guest gets ${physBits} bits`,
      );
  }

  // Memory.
  const memoryBytes = memoryElement(domain.memory, `${name}: <memory>`);
  if (memoryBytes === null) invalid(`${name}: <memory> is missing`);
  const currentMemoryBytes = memoryElement(domain.currentMemory, `${name}: <currentMemory>`);
  const maxMemoryBytes = qemuArgs.memory.maxmem ?? memoryElement(domain.maxMemory, `${name}: <maxMemory>`);
  const slotsAttr = attr(obj(domain.maxMemory), 'slots');
  const slots =
    qemuArgs.memory.slots ?? (slotsAttr === undefined ? 0 : parseCount(slotsAttr, `${name}: <maxMemory slots>`, 4096));

  const cells = (obj(cpu?.numa)?.cell as unknown[] | undefined) ?? [];
  let ramBytes: number;
  if (cells.length > 0) {
    ramBytes = 0;
    for (const c of cells) {
      const cell = obj(c);
      const mem = attr(cell, 'memory');
      if (mem === undefined) invalid(`${name}: <numa><cell> without memory`);
      ramBytes += scaledBytes(mem, attr(cell, 'unit'), `${name}: <numa><cell memory>`);
    }
  } else {
    let devices = 0;
    for (const d of (obj(domain.devices)?.memory as unknown[] | undefined) ?? []) {
      const size = obj(obj(d)?.target)?.size;
      devices += memoryElement(size, `${name}: <memory><target><size>`) ?? 0;
    }
    ramBytes = Math.max(0, memoryBytes - devices);
  }
  if (!Number.isSafeInteger(ramBytes)) invalid(`${name}: NUMA cell memory is out of range`);
  if (qemuArgs.memory.size !== undefined) ramBytes = qemuArgs.memory.size;

  // <controller type='pci' index='0' model='pcie-root|pci-root'><pcihole64 unit=…>N</pcihole64>
  // becomes -global q35-pcihost.pci-hole64-size / i440FX-pcihost.pci-hole64-size.
  let pciHole64Bytes: number | null = null;
  for (const c of (obj(domain.devices)?.controller as unknown[] | undefined) ?? []) {
    const ctl = obj(c);
    if (attr(ctl, 'type') !== 'pci' || attr(ctl, 'index') !== '0' || ctl?.pcihole64 === undefined) continue;
    pciHole64Bytes = memoryElement(ctl.pcihole64, `${name}: <pcihole64>`);
  }
  const bridge = machine === 'q35' ? 'q35-pcihost' : 'i440FX-pcihost';
  for (const g of qemuArgs.globals)
    if (g.driver === bridge && g.property === 'pci-hole64-size')
      pciHole64Bytes = qemuSize(g.value, 'b', `-global ${bridge}.pci-hole64-size`);

  const sec = obj(domain.launchSecurity);
  const launchSecurity = sec ? (attr(sec, 'type') ?? null) : null;
  const reducedText = sec ? text(sec.reducedPhysBits) : undefined;
  const reducedPhysBits = reducedText ? parseCount(reducedText, `${name}: <reducedPhysBits>`, 64) : null;

  let layout: PcLayoutEstimate | null = null;
  let highestAddress: number | null = null;
  if (machine === 'q35' || machine === 'pc') {
    const vendorText = text(cpu?.vendor);
    let vendor: string | undefined;
    if (vendorText !== undefined)
      vendor = vendorText === 'AMD' ? 'AuthenticAMD' : vendorText === 'Intel' ? 'GenuineIntel' : vendorText;
    // Under KVM every model shows the host's vendor unless <vendor> sets one (target/i386/cpu.c
    // x86_cpu_load_model: vendor = host vendor when accel_uses_host_cpuid()); the AMD 1 TiB
    // relocation of RAM above 4 GiB (hw/i386/pc.c) follows that vendor.
    else if (accelerator === 'kvm') vendor = opts.hostVendor;
    else if (cpuModel === 'max') vendor = 'AuthenticAMD';
    else if (cpuModel === 'host' || cpuModel === 'max' || cpuMode === 'host-model') vendor = opts.hostVendor;
    else if (cpuModel !== null && AMD_MODELS.test(cpuModel)) vendor = 'AuthenticAMD';
    const version = machineVersion ? `${machineVersion.major}.${machineVersion.minor}` : undefined;
    layout = estimatePcLayout({
      machine,
      ramBytes,
      maxRamBytes: maxMemoryBytes ?? 0,
      slots,
      vendor,
      machineVersion: version,
      ...(pciHole64Bytes !== null ? { pciHole64Size: pciHole64Bytes } : {}),
    });
    highestAddress = layout.deviceMemory ? layout.deviceMemory.base + layout.deviceMemory.size : layout.usedEnd;
  } else {
    notes.push(`machine type ${machineType ?? '(none)'} is not pc or q35: its memory layout is not estimated`);
  }

  return {
    name,
    uuid,
    domainType,
    accelerator,
    machineType,
    machine,
    machineVersion,
    cpuMode,
    cpuModel,
    physBits,
    hostPhysBits,
    hostPhysBitsLimit,
    emulatedBits,
    guestPhysBits,
    emulator: text(obj(domain.devices)?.emulator) || null,
    ramBytes,
    memoryBytes,
    currentMemoryBytes,
    maxMemoryBytes,
    slots,
    pciHole64Bytes,
    launchSecurity,
    reducedPhysBits,
    layout,
    highestAddress,
    notes,
  };
}

/** The width the guest will have on a host of `hostPhysBits` (the host's CPUID width). */
export function resolvePhysBits(d: Pick<DomainFacts, 'physBits' | 'hostPhysBitsLimit'>, hostPhysBits: number): number {
  if (d.physBits !== null) return d.physBits;
  return d.hostPhysBitsLimit > 0 ? Math.min(hostPhysBits, d.hostPhysBitsLimit) : hostPhysBits;
}
