/**
 * libvirt's QEMU namespace in a domain XML (`xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'`):
 * what `<qemu:commandline>` changes in the width and layout physbits judges, and what it refuses as
 * impossible to judge (SECURITY.md §5). Pure: the parsed <domain> in, the arguments' effect out.
 *
 * libvirt reads `./qemu:commandline/qemu:arg` by namespace URI, whatever the prefix
 * (src/qemu/qemu_domain.c qemuDomainDefNamespaceParseCommandlineArgs) and appends the arguments after
 * every argument it builds itself (src/qemu/qemu_command.c qemuBuildCommandLine), so they meet QEMU
 * last. How QEMU combines repeated options (softmmu/vl.c in 7.2, system/vl.c in 8.2+, qemu_init):
 *   -cpu            `cpu_option = optarg`: the last one alone counts, libvirt's own included;
 *   -m              QemuOpts "memory" with merge_lists: keys merge, a later key wins (size in MiB by
 *                   default, maxmem in bytes: parse_memory_options);
 *   -machine / -M   keyval_parse_into(machine_opts_dict, ...): keys merge, a later key wins;
 *   -global         qemu_global_option: each one a global property, applied in order, so the last for
 *                   a property wins; a CPU property given in -cpu is registered later
 *                   (x86_cpu_parse_featurestr) and beats every -global, in whichever order they come.
 * Observed on QEMU 7.2 and 10.0 (test/libvirt/qemu-commandline.test.ts).
 *
 * Refused, with the reason: `<qemu:override>` (libvirt 8.2+ device frontend properties, which can
 * set a vCPU's or any device's properties), `<qemu:capabilities>` (changes how libvirt builds its
 * own arguments), and any argument physbits does not model: -accel, -enable-kvm, machine `accel`
 * and properties that move memory (max-ram-below-4g, cxl…), -set, -readconfig, -device of a CPU,
 * and every option not listed below.
 */
import { isObject as isNode } from '../core/checks';
import { AgentError } from '../core/errors';

export const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';

/** At most this many arguments are read; a domain with more cannot be judged. */
export const MAX_QEMU_ARGS = 1024;

export class QemuCommandlineError extends AgentError {
  constructor(message: string) {
    super('DOMAIN_XML_UNJUDGEABLE', message);
  }
}

function refuse(message: string): never {
  throw new QemuCommandlineError(message);
}

type Node = Record<string, unknown>;
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]);

/** Elements of the QEMU namespace in `node`'s children: [local name, element] in each name's order. */
function qemuChildren(node: Node, scope: Record<string, string>): Array<[string, string, Node]> {
  const inner = { ...scope };
  for (const [k, v] of Object.entries(node)) {
    if (k === '@_xmlns' && typeof v === 'string') inner[''] = v;
    else if (k.startsWith('@_xmlns:') && typeof v === 'string') inner[k.slice(8)] = v;
  }
  const out: Array<[string, string, Node]> = [];
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith('@_') || key === '#text') continue;
    const colon = key.indexOf(':');
    const prefix = colon < 0 ? '' : key.slice(0, colon);
    const local = colon < 0 ? key : key.slice(colon + 1);
    for (const el of list(value)) {
      const elScope = isNode(el) ? { ...inner } : inner;
      if (isNode(el)) {
        if (typeof el['@_xmlns'] === 'string') elScope[''] = el['@_xmlns'];
        const own = el[`@_xmlns:${prefix}`];
        if (typeof own === 'string') elScope[prefix] = own;
      }
      if (elScope[prefix] === QEMU_NS) out.push([key, local, isNode(el) ? el : {}]);
    }
  }
  return out;
}

/**
 * The arguments `<qemu:commandline>` adds, in order; throws QemuCommandlineError for what the
 * namespace holds that physbits cannot judge. `decode` turns attribute text into its value.
 */
export function qemuNamespaceArgs(domain: Node, decode: (raw: string) => string): string[] {
  const args: string[] = [];
  const found = qemuChildren(domain, {});
  const lineKeys = new Set(found.filter(([, local]) => local === 'commandline').map(([key]) => key));
  if (lineKeys.size > 1)
    refuse(`<qemu:commandline> appears under ${lineKeys.size} prefixes, and their order is not kept`);
  for (const [key, local, el] of found) {
    if (local === 'override')
      refuse(
        `<${key}> sets device properties QEMU applies after libvirt's (a vCPU's phys-bits among them); physbits does not judge it`,
      );
    if (local === 'capabilities')
      refuse(`<${key}> changes the arguments libvirt builds; physbits judges only the arguments of the XML as written`);
    if (local !== 'commandline') continue;
    const argEls = qemuChildren(el, prefixesOf(domain)).filter(([, l]) => l === 'arg');
    if (new Set(argEls.map(([k]) => k)).size > 1)
      refuse(`<${key}> holds <arg> elements under different prefixes, and their order is not kept`);
    for (const [, , arg] of argEls) {
      const value = arg['@_value'];
      if (typeof value !== 'string') refuse(`<${key}><arg> without a value`);
      args.push(decode(value));
      if (args.length > MAX_QEMU_ARGS) refuse(`more than ${MAX_QEMU_ARGS} <qemu:arg> elements`);
    }
  }
  return args;
}

function prefixesOf(node: Node): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === '@_xmlns' && typeof v === 'string') out[''] = v;
    else if (k.startsWith('@_xmlns:') && typeof v === 'string') out[k.slice(8)] = v;
  }
  return out;
}

/** What the arguments change; a field is absent where they leave libvirt's own arguments alone. */
export interface QemuArgsEffect {
  /** The last -cpu: its model and properties. */
  cpu?: { model: string; props: Record<string, string> };
  /** -global DRIVER.PROP=VALUE in order. */
  globals: Array<{ driver: string; property: string; value: string }>;
  /** -m keys merged (size in MiB by default, maxmem in bytes). */
  memory: { size?: number; slots?: number; maxmem?: number };
  /** -machine type, when set. */
  machineType?: string;
}

/** Options that take an argument and cannot move the guest's width or memory layout. */
const HARMLESS_WITH_ARG = new Set(
  (
    'name uuid smp numa object fw_cfg smbios chardev netdev nic net drive blockdev hda hdb hdc hdd cdrom ' +
    'display vga vnc spice audiodev monitor qmp qmp-pretty mon serial parallel debugcon trace d D msg rtc boot ' +
    'bios kernel initrd append dtb L acpitable overcommit sandbox incoming loadvm k add-fd mem-path ' +
    'watchdog-action action iscsi fsdev virtfs pidfile runas chroot option-rom prom-env usbdevice ' +
    'compat seed icount plugin semihosting-config tpmdev device'
  ).split(' '),
);
const FLAGS = new Set(
  (
    'S nodefaults nographic no-reboot no-shutdown snapshot no-hpet mem-prealloc no-user-config daemonize ' +
    'no-acpi usb full-screen only-migratable preconfig s no-fd-bootchk semihosting enable-sync-profile ' +
    'no-graphic nodefconfig'
  ).split(' '),
);
/** -machine properties that leave the width and the memory layout alone. */
const HARMLESS_MACHINE = new Set(
  (
    'usb dump-guest-core mem-merge vmport smm kernel_irqchip kernel-irqchip hpet sata graphics i8042 pit pic ' +
    'suppress-vmdesc memory-backend nvdimm hmat acpi pflash0 pflash1 dea-key-wrap aes-key-wrap ' +
    'confidential-guest-support memory-encryption'
  ).split(' '),
);

/** QemuOpts-style "implied,key=value,flag" into keys; a doubled comma (an escaped one) is not judged. */
function keyvals(opt: string, value: string, implied: string): Record<string, string> {
  if (value.includes(',,')) refuse(`${opt} ${value}: an escaped comma is not judged`);
  const out: Record<string, string> = {};
  value.split(',').forEach((part, i) => {
    if (part === '') return;
    const eq = part.indexOf('=');
    if (eq < 0) out[i === 0 ? implied : part] = i === 0 ? part : 'on';
    else out[part.slice(0, eq)] = part.slice(eq + 1);
  });
  return out;
}

const SIZE_RE = /^(\d{1,20})(?:\.(\d{1,10}))?([bkmgtpe])?$/i;
const SCALE: Record<string, number> = { b: 0, k: 1, m: 2, g: 3, t: 4, p: 5, e: 6 };

/** QEMU's qemu_strtosz: a number with an optional B/K/M/G/T/P/E suffix, powers of 1024. */
export function qemuSize(text: string, defaultSuffix: 'b' | 'm', what: string): number {
  const m = SIZE_RE.exec(text.trim());
  if (!m) refuse(`${what}: '${text.slice(0, 40)}' is not a size`);
  const unit = 1024 ** SCALE[(m[3] ?? defaultSuffix).toLowerCase()];
  const bytes = Math.round(Number(`${m[1]}.${m[2] ?? '0'}`) * unit);
  if (!Number.isSafeInteger(bytes)) refuse(`${what}: '${text.slice(0, 40)}' is out of range`);
  return bytes;
}

function deviceDriver(value: string): string {
  if (value.trimStart().startsWith('{')) {
    try {
      const d = (JSON.parse(value) as { driver?: unknown }).driver;
      return typeof d === 'string' ? d : '';
    } catch {
      refuse(`-device ${value.slice(0, 60)}: not valid JSON`);
    }
  }
  const kv = keyvals('-device', value, 'driver');
  return kv.driver ?? '';
}

/** The effect of `args` as QEMU reads them after libvirt's own; throws QemuCommandlineError for what it cannot judge. */
export function judgeQemuArgs(args: string[]): QemuArgsEffect {
  const effect: QemuArgsEffect = { globals: [], memory: {} };
  for (let i = 0; i < args.length; i++) {
    const raw = args[i];
    if (!raw.startsWith('-')) continue; // an image file name (QEMU's -hda)
    const opt = raw.replace(/^--?/, '');
    if (FLAGS.has(opt)) continue;
    const known = ['cpu', 'm', 'machine', 'M', 'global'].includes(opt) || HARMLESS_WITH_ARG.has(opt);
    if (!known) refuse(`<qemu:arg value='${raw.slice(0, 40)}'/> is an option physbits does not judge`);
    if (i + 1 >= args.length) refuse(`${raw} has no argument`);
    const value = args[++i];
    if (opt === 'cpu') {
      const [model, ...rest] = value.split(',');
      if (!model || model === 'help' || model === '?') refuse(`-cpu ${value.slice(0, 40)}: no model`);
      effect.cpu = { model, props: rest.length ? keyvals('-cpu', rest.join(','), '') : {} };
    } else if (opt === 'm') {
      const kv = keyvals('-m', value, 'size');
      for (const k of Object.keys(kv))
        if (!['size', 'slots', 'maxmem'].includes(k)) refuse(`-m ${value.slice(0, 60)}: '${k}' is not judged`);
      if (kv.size !== undefined) effect.memory.size = qemuSize(kv.size, 'm', '-m size');
      if (kv.maxmem !== undefined) effect.memory.maxmem = qemuSize(kv.maxmem, 'b', '-m maxmem');
      if (kv.slots !== undefined) {
        if (!/^\d{1,5}$/.test(kv.slots)) refuse(`-m slots='${kv.slots.slice(0, 20)}' is not a count`);
        effect.memory.slots = Number(kv.slots);
      }
    } else if (opt === 'machine' || opt === 'M') {
      const kv = keyvals('-machine', value, 'type');
      for (const k of Object.keys(kv)) {
        if (k === 'type') effect.machineType = kv.type;
        else if (!HARMLESS_MACHINE.has(k))
          refuse(`-machine ${k}=: physbits does not judge it (accelerator or memory placement)`);
      }
    } else if (opt === 'global') {
      const dotted = /^([^.=]{1,63})\.([^=]{1,63})=(.*)$/.exec(value);
      const kv = dotted ? null : keyvals('-global', value, 'driver');
      const g = dotted
        ? { driver: dotted[1], property: dotted[2], value: dotted[3] }
        : { driver: kv!.driver ?? '', property: kv!.property ?? '', value: kv!.value ?? '' };
      if (!g.driver || !g.property) refuse(`-global ${value.slice(0, 60)}: no driver or property`);
      effect.globals.push(g);
    } else if (opt === 'device' && /(^|-)cpu$/.test(deviceDriver(value))) {
      refuse(`-device ${value.slice(0, 60)}: a vCPU added on the command line is not judged`);
    }
  }
  return effect;
}

/** QOM types a global on a CPU property reaches for `model` (object_dynamic_cast in object_apply_global_props). */
export function cpuTypeChain(model: string): string[] {
  const chain = [`${model}-x86_64-cpu`];
  if (model === 'host') chain.push('max-x86_64-cpu');
  return [...chain, 'x86_64-cpu', 'cpu', 'device', 'object'];
}

/** The value of a CPU property: the effective -cpu's own, else the last -global reaching the model. */
export function cpuProp(
  effect: Pick<QemuArgsEffect, 'globals'>,
  model: string,
  cpuProps: Record<string, string>,
  property: string,
): string | undefined {
  if (cpuProps[property] !== undefined) return cpuProps[property];
  const chain = cpuTypeChain(model);
  let value: string | undefined;
  for (const g of effect.globals) if (g.property === property && chain.includes(g.driver)) value = g.value;
  return value;
}

/** QEMU's boolean property spellings. */
export function qemuBool(value: string, what: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(value)) return true;
  if (['off', 'no', 'false', 'n'].includes(value)) return false;
  return refuse(`${what}='${value.slice(0, 20)}' is not on or off`);
}
