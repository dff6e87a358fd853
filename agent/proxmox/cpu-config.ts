/**
 * The `-cpu` qemu-server builds for a VM and the physical-address width QEMU then gives the guest.
 * Pure: config values in, a CpuPlan out.
 *
 * qemu-server (src/PVE/QemuServer/CPUConfig.pm):
 *  - get_default_cpu_type: without `cpu:`, x86_64 guests get `kvm64` under KVM and `qemu64` with
 *    `kvm: 0`. That has not changed for x86_64 (qemu-server 9.2.3 changed only the aarch64 default
 *    to host/max); the GUI's `x86-64-v2-AES` for new VMs (pve-manager 8.0) is written into the config.
 *  - get_cpu_options: the built-in `x86-64-v2`, `-v2-AES`, `-v3`, `-v4` are `qemu64` plus flags; a
 *    `custom-NAME` model (/etc/pve/virtual-guest/cpu-models.conf) runs as its `reported-model`
 *    (default kvm64); `Icelake-Client[-noTSX]` runs as `Icelake-Server[-noTSX]`. Flags, `hidden`,
 *    `level` and `hv-vendor-id` do not touch the width. A named model's vendor is forced with
 *    `vendor=` (kvm64, qemu64, max and host keep the host's under KVM).
 *  - for `guest-phys-bits` then `phys-bits`, the custom model's value and then the VM's (the VM's
 *    wins): `phys-bits=host` → `,host-phys-bits=true`, a number N → `,phys-bits=N`,
 *    `guest-phys-bits=N` → `,guest-phys-bits=N` (qemu-server 9.0.18+, QEMU 9.1+ only).
 * QEMU (target/i386/host-cpu.c host_cpu_adjust_phys_bits, host_cpu_max_instance_init;
 * target/i386/cpu.c x86_cpu_realizefn): under KVM `host` and `max` start with host-phys-bits=on,
 * and host-phys-bits=on makes the width the host's CPUID width, overriding an explicit phys-bits
 * (so `cpu: host,phys-bits=39` still gets the host's width: checked on QEMU 7.2 and 10.0 in
 * test/e2e/proxmox-prediction.test.ts). Under TCG host-phys-bits does nothing. Every other case:
 * phys-bits, or 40 when unset.
 */
import { invalid, parseBoolean, parseInteger, parsePropertyString, clip } from './vm-config';

/** The width QEMU gives a CPU whose phys-bits nobody set (TCG_PHYS_ADDR_BITS). */
export const QEMU_DEFAULT_PHYS_BITS = 40;

/** Properties of qemu-server's `cpu:` format (CPUConfig.pm $cpu_fmt). */
export const CPU_KEYS = [
  'cputype',
  'reported-model',
  'hidden',
  'hv-vendor-id',
  'flags',
  'guest-phys-bits',
  'phys-bits',
  'level',
] as const;

/** Built-in models that run as qemu64 with flags (CPUConfig.pm $builtin_models_by_arch). */
const BUILTIN_QEMU64 = new Set(['x86-64-v2', 'x86-64-v2-AES', 'x86-64-v3', 'x86-64-v4']);
const DEPRECATED: Readonly<Record<string, string>> = {
  'Icelake-Client': 'Icelake-Server',
  'Icelake-Client-noTSX': 'Icelake-Server-noTSX',
};
/** Models whose vendor qemu-server leaves to the host ('default' in CPUConfig.pm's model list). */
const HOST_VENDOR_MODELS = new Set(['kvm32', 'kvm64', 'qemu32', 'qemu64', 'max', 'host']);
/** AMD models of CPUConfig.pm's list; every other named x86 model there is GenuineIntel. */
const AMD_MODEL = /^(athlon|phenom|Opteron|EPYC)/;
/** A QEMU model name as qemu-server accepts one. */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/;

export interface CpuPlan {
  /** The `cpu:` model as configured (default kvm64/qemu64). */
  configured: string;
  /** The model QEMU gets, e.g. 'qemu64' for x86-64-v2-AES, the reported model of a custom one. */
  model: string;
  accelerator: 'kvm' | 'tcg';
  /** `,phys-bits=N` on the -cpu line; null when absent. */
  physBitsArg: number | null;
  /** `,host-phys-bits=true` on the -cpu line (phys-bits=host). */
  hostPhysBitsArg: boolean;
  /** `,guest-phys-bits=N`; null when absent. */
  guestPhysBits: number | null;
  /** The vendor qemu-server forces with `vendor=`; null: the host's (KVM) or the model's own (TCG). */
  vendor: string | null;
  /** QEMU's host-phys-bits property: given, or on for host/max under KVM. */
  hostPhysBits: boolean;
  /** host-phys-bits is on under KVM: the guest's width is the host's CPUID width. */
  followsHost: boolean;
  /** The guest's width when it does not follow the host; null when it does. */
  physBits: number | null;
  /** The -cpu argument, reduced to what decides width and layout (model, vendor, width properties). */
  cpuArg: string;
  notes: string[];
}

export interface CpuInput {
  /** The `cpu:` value; undefined when absent. */
  cpu: string | undefined;
  /** `kvm:` (default on). */
  kvm: boolean;
  /** Custom models (vm-config.ts parseCpuModels), read only when `cpu:` names one. */
  customModels?: () => Record<string, Record<string, string>>;
  /** A QEMU -cpu string that replaces qemu-server's (`runningcpu` on a resume, `-cpu` in `args:`). */
  forcedCpu?: string;
}

function physBitsValue(value: string, what: string): number | 'host' {
  if (value === 'host') return 'host';
  return parseInteger(value, what, 8, 64);
}

/** The vendor qemu-server forces for `model` (get_cpu_options: `vendor=` unless 'default'). */
export function forcedVendor(model: string): string | null {
  if (HOST_VENDOR_MODELS.has(model)) return null;
  return AMD_MODEL.test(model) ? 'AuthenticAMD' : 'GenuineIntel';
}

/** The width and the rest of the plan from the model and the width properties on the -cpu line. */
function resolve(
  configured: string,
  model: string,
  accelerator: CpuPlan['accelerator'],
  width: { physBits: number | null; hostPhysBits: boolean | null; guestPhysBits: number | null },
  vendor: string | null,
  notes: string[],
): CpuPlan {
  const hostModel = model === 'host' || model === 'max';
  // host-phys-bits: given on the line, else on for host/max (host_cpu_max_instance_init, KVM only).
  const hostPhysBits = width.hostPhysBits ?? (hostModel && accelerator === 'kvm');
  const followsHost = hostPhysBits && accelerator === 'kvm';
  if (followsHost && width.physBits !== null)
    notes.push(
      `phys-bits=${width.physBits} has no effect: QEMU's '${model}' model keeps host-phys-bits on under KVM, so the guest gets the host's width`,
    );
  if (width.hostPhysBits && accelerator !== 'kvm')
    notes.push(`phys-bits=host has no effect under ${accelerator}: the guest gets ${width.physBits ?? 40} bits`);
  const parts = [model];
  if (vendor) parts.push(`vendor=${vendor}`);
  if (width.hostPhysBits !== null) parts.push(`host-phys-bits=${width.hostPhysBits}`);
  if (width.guestPhysBits !== null) parts.push(`guest-phys-bits=${width.guestPhysBits}`);
  if (width.physBits !== null) parts.push(`phys-bits=${width.physBits}`);
  return {
    configured,
    model,
    accelerator,
    physBitsArg: width.physBits,
    hostPhysBitsArg: width.hostPhysBits === true,
    guestPhysBits: width.guestPhysBits,
    vendor,
    hostPhysBits,
    followsHost,
    physBits: followsHost ? null : (width.physBits ?? QEMU_DEFAULT_PHYS_BITS),
    cpuArg: parts.join(','),
    notes,
  };
}

/**
 * A QEMU `-cpu` string (`runningcpu`, or `-cpu` in `args:`): the model, then properties; the ones
 * that decide the width are read, flags and the rest are passed over.
 */
export function planFromCpuArg(arg: string, accelerator: CpuPlan['accelerator'], configured: string): CpuPlan {
  const [model, ...props] = arg.split(',');
  if (!MODEL_NAME.test(model)) throw invalid(`-cpu '${clip(arg)}': '${clip(model)}' is not a CPU model`);
  let physBits: number | null = null;
  let hostPhysBits: boolean | null = null;
  let guestPhysBits: number | null = null;
  let vendor: string | null = null;
  for (const prop of props) {
    const eq = prop.indexOf('=');
    const key = eq < 0 ? prop : prop.slice(0, eq);
    const value = eq < 0 ? 'on' : prop.slice(eq + 1);
    if (key === 'phys-bits') physBits = parseInteger(value, `-cpu phys-bits`, 8, 64);
    else if (key === 'host-phys-bits') hostPhysBits = parseBoolean(value, '-cpu host-phys-bits');
    else if (key === 'guest-phys-bits') guestPhysBits = parseInteger(value, '-cpu guest-phys-bits', 32, 64);
    else if (key === 'vendor') vendor = value;
    else if (key === 'host-phys-bits-limit')
      throw invalid(`-cpu '${clip(arg)}': host-phys-bits-limit is not something qemu-server writes`);
  }
  return resolve(configured, model, accelerator, { physBits, hostPhysBits, guestPhysBits }, vendor, []);
}

/** qemu-server's `-cpu` for `cpu:` and what QEMU makes of it (see the header). */
export function planCpu(input: CpuInput): CpuPlan {
  const accelerator = input.kvm ? 'kvm' : 'tcg';
  const fallback = input.kvm ? 'kvm64' : 'qemu64';
  if (input.forcedCpu !== undefined) return planFromCpuArg(input.forcedCpu, accelerator, input.cpu ?? fallback);
  if (input.cpu === undefined) return resolve(fallback, fallback, accelerator, nulls(), forcedVendor(fallback), []);

  const cpu = parsePropertyString(input.cpu, CPU_KEYS, 'cputype', `cpu '${clip(input.cpu)}'`);
  const configured = cpu.cputype;
  if (configured === undefined) throw invalid(`cpu '${clip(input.cpu)}': no CPU type`);
  if ('reported-model' in cpu) throw invalid(`cpu: 'reported-model' is only for custom models`);
  for (const key of ['hidden'] as const) if (key in cpu) parseBoolean(cpu[key], `cpu ${key}`);
  if ('level' in cpu) parseInteger(cpu.level, 'cpu level', 0, 4294967295);

  let model = configured;
  let custom: Record<string, string> | null = null;
  if (configured.startsWith('custom-')) {
    const name = configured.slice('custom-'.length);
    const models = input.customModels ? input.customModels() : Object.create(null);
    custom = (models as Record<string, Record<string, string>>)[name] ?? null;
    if (!custom) throw invalid(`cpu: custom model '${clip(name)}' is not in virtual-guest/cpu-models.conf`);
    model = custom['reported-model'] ?? 'kvm64';
  } else if (BUILTIN_QEMU64.has(configured)) {
    model = 'qemu64';
  }
  model = DEPRECATED[model] ?? model;
  if (!MODEL_NAME.test(model)) throw invalid(`cpu: '${clip(model)}' is not a CPU model`);

  // The custom model's value first, then the VM's (get_cpu_options' loop over ($custom_cpu, $cpu)).
  let physBits: number | 'host' | null = null;
  let guestPhysBits: number | null = null;
  for (const [source, conf] of [
    ['custom model', custom],
    ['cpu', cpu],
  ] as const) {
    if (!conf) continue;
    if (conf['phys-bits']) physBits = physBitsValue(conf['phys-bits'], `${source} phys-bits`);
    if (conf['guest-phys-bits'])
      guestPhysBits = parseInteger(conf['guest-phys-bits'], `${source} guest-phys-bits`, 32, 64);
  }
  const width = {
    physBits: typeof physBits === 'number' ? physBits : null,
    hostPhysBits: physBits === 'host' ? true : null,
    guestPhysBits,
  };
  return resolve(configured, model, accelerator, width, forcedVendor(model), []);
}

function nulls() {
  return { physBits: null, hostPhysBits: null, guestPhysBits: null };
}

/** The `cpu:` value's phys-bits as Memory.pm get_max_mem reads it (the VM's own, not a custom model's). */
export function configuredPhysBits(cpu: string | undefined): {
  cputype: string | null;
  physBits: number | 'host' | null;
} {
  if (cpu === undefined) return { cputype: null, physBits: null };
  const parsed = parsePropertyString(cpu, CPU_KEYS, 'cputype', `cpu '${clip(cpu)}'`);
  const pb = parsed['phys-bits'];
  return { cputype: parsed.cputype ?? null, physBits: pb ? physBitsValue(pb, 'cpu phys-bits') : null };
}
