/**
 * What qemu-server will start for a VM config: machine, accelerator, vCPUs, `-cpu` and memory, the
 * parts of its command line (src/PVE/QemuServer.pm config_to_command) that decide the guest's
 * width and memory layout. Pure: a parsed config in, a VmPlan out; VmConfigError where the config
 * cannot be judged (a value qemu-server would reject, or `args:` that replace what is modelled).
 *
 * config_to_command, the parts used here:
 *  - `kvm:` (default 1): `kvm: 0` adds `accel=tcg` to -machine.
 *  - the machine (QemuServer/Machine.pm get_vm_machine): `machine: [type=]TYPE,...`, default `pc`
 *    (i440fx); `pc`/`q35` without a version run the newest machine of the node's QEMU, except for
 *    Windows guests (`ostype: w*`), pinned to the QEMU that created them (`meta: creation-qemu=`,
 *    9.1 or later) or else to 5.1. qemu-server appends `+pveN` (a Proxmox QEMU machine revision
 *    with the same memory layout as the upstream type).
 *  - -smp from `sockets` (default 1), `cores` (default 1) and `vcpus`.
 *  - on a resume (`vmstate:` or `lock: suspended`), `runningmachine:` and `runningcpu:` replace
 *    the machine and `-cpu` (vm_start_nolock).
 *  - `args:` is appended last: a `-cpu` there replaces qemu-server's (QEMU takes the last one);
 *    `-m`, `-machine`/`-M`, `-numa`, `-accel`, memory devices or a pci-hole64 size there change
 *    what is modelled here, and such a config is not judged (VmConfigError).
 */
import { parseBoolean, parseInteger, parsePropertyString, clip, invalid, type VmConfigFile } from './vm-config';
import { configuredPhysBits, planCpu, type CpuPlan } from './cpu-config';
import { planMemory, type MemoryPlan } from './memory-config';

const MACHINE_KEYS = ['type', 'viommu', 'aw-bits', 'enable-s3', 'enable-s4'] as const;
const MACHINE_TYPE =
  /^(pc|pc(-i440fx)?-\d+(\.\d+)+(\+pve\d+)?(\.pxe)?|q35|pc-q35-\d+(\.\d+)+(\+pve\d+)?(\.pxe)?|virt(?:-\d+(\.\d+)+)?(\+pve\d+)?)$/;
/** `args:` options that change what this file models; a config that has them is not judged. */
const UNMODELLED_ARGS = /^-(m|machine|M|numa|accel|enable-kvm|object|smp)$/;
const MEMORY_DEVICE = /^(pc-dimm|nvdimm|virtio-mem|virtio-pmem)/;

export interface MachinePlan {
  /** The machine type as qemu-server passes it, without its `+pveN` revision: 'pc', 'pc-q35-8.1'. */
  type: string;
  family: 'pc' | 'q35';
  /** The pinned version; null: the newest of the node's QEMU. */
  version: string | null;
}

export interface VmPlan {
  vmid: number;
  /** `name:`, else qemu-server's `vm<VMID>`. */
  name: string;
  machine: MachinePlan;
  cpu: CpuPlan;
  memory: MemoryPlan;
  smp: { sockets: number; cores: number; vcpus: number };
  /** `amd-sev:` is set: the guest runs with memory encryption. */
  amdSev: boolean;
  notes: string[];
}

export interface PlanOptions {
  vmid: number;
  /** /proc/cpuinfo's physical address width on the node that starts the VM. */
  cpuinfoPhysBits: number | null;
  /** Custom CPU models (read only when `cpu:` names one). */
  customModels?: () => Record<string, Record<string, string>>;
}

function isWindows(ostype: string | undefined): boolean {
  return ostype !== undefined && /^(wxp|w2k|w2k3|w2k8|wvista|win\d+)$/.test(ostype);
}

/** `meta: creation-qemu=9.1.2,ctime=…` → "9.1" when it is 9.1 or later, else null. */
function creationVersion(meta: string | undefined): string | null {
  if (meta === undefined) return null;
  const m = /(?:^|,)creation-qemu=(\d+)\.(\d+)/.exec(meta);
  if (!m) return null;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 9 || (major === 9 && minor >= 1) ? `${major}.${minor}` : null;
}

/** Machine.pm get_vm_machine for x86_64 (see the header). */
export function planMachine(conf: Readonly<Record<string, string>>, forced: string | undefined): MachinePlan {
  let type = forced;
  if (type === undefined && conf.machine !== undefined) {
    const parsed = parsePropertyString(conf.machine, MACHINE_KEYS, 'type', `machine '${clip(conf.machine)}'`);
    type = parsed.type;
  }
  type ??= 'pc';
  if (!MACHINE_TYPE.test(type)) throw invalid(`machine: '${clip(type)}' is not a machine type`);
  if (type.startsWith('virt')) throw invalid(`machine: '${type}' is not an x86 machine`);
  type = type.replace(/\.pxe$/, '').replace(/\+pve\d+$/, '');
  const family = type.includes('q35') ? 'q35' : 'pc';
  if ((type === 'pc' || type === 'q35') && isWindows(conf.ostype)) {
    const pin = creationVersion(conf.meta) ?? '5.1';
    type = `${family === 'q35' ? 'pc-q35' : 'pc-i440fx'}-${pin}`;
  }
  const v = /-(\d+\.\d+)/.exec(type);
  return { type, family, version: v ? v[1] : null };
}

/** `args:` split as PVE::Tools::split_args does (shell words; quotes are removed). */
export function splitArgs(args: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(args); m; m = re.exec(args)) words.push(m[1] ?? m[2] ?? m[3]);
  return words;
}

/** The `-cpu` an `args:` line forces (the last one); throws for options that change the layout. */
function argsCpu(args: string | undefined): string | undefined {
  if (args === undefined) return undefined;
  const words = splitArgs(args);
  let cpu: string | undefined;
  for (let i = 0; i < words.length; i++) {
    const w = words[i].replace(/^--/, '-');
    const next = words[i + 1] ?? '';
    if (w === '-cpu') cpu = next;
    else if (UNMODELLED_ARGS.test(w))
      throw invalid(`args: '${w}' changes what physbits predicts; it cannot judge this VM`);
    else if (w === '-device' && MEMORY_DEVICE.test(next)) throw invalid(`args: a memory device cannot be judged`);
    else if (w === '-global' && /pci-hole64/i.test(next))
      throw invalid(`args: '-global ${clip(next)}' cannot be judged`);
  }
  return cpu;
}

function count(conf: Readonly<Record<string, string>>, key: string, min: number, max: number): number | null {
  return conf[key] === undefined ? null : parseInteger(conf[key], key, min, max);
}

/** The plan for the current section of `file` (see the header). */
export function planVm(file: VmConfigFile, opts: PlanOptions): VmPlan {
  const conf = file.current;
  const notes: string[] = [];
  if (conf.arch !== undefined && conf.arch !== 'x86_64')
    throw invalid(`arch: '${clip(conf.arch)}' guests are not judged (x86_64 only)`);
  const kvm = conf.kvm === undefined ? true : parseBoolean(conf.kvm, 'kvm');
  const resume = conf.vmstate !== undefined || conf.lock === 'suspended';
  const machine = planMachine(conf, resume ? conf.runningmachine : undefined);
  const sockets = count(conf, 'sockets', 1, 4096) ?? count(conf, 'smp', 1, 4096) ?? 1;
  const cores = count(conf, 'cores', 1, 1024) ?? 1;
  const vcpus = count(conf, 'vcpus', 0, sockets * cores) || sockets * cores;
  const forcedCpu = (resume ? conf.runningcpu : undefined) ?? argsCpu(conf.args);
  if (resume && conf.runningcpu !== undefined) notes.push('resumed: the -cpu is runningcpu');
  const cpu = planCpu({ cpu: conf.cpu, kvm, customModels: opts.customModels, forcedCpu });
  const memory = planMemory({
    conf,
    cpuinfoPhysBits: opts.cpuinfoPhysBits,
    cpu: configuredPhysBits(conf.cpu),
    sockets,
    cores,
  });
  return {
    vmid: opts.vmid,
    name: conf.name ?? `vm${opts.vmid}`,
    machine,
    cpu,
    memory,
    smp: { sockets, cores, vcpus },
    amdSev: conf['amd-sev'] !== undefined,
    notes: [...notes, ...cpu.notes],
  };
}

/**
 * The parts of qemu-server's command line this plan stands for, runnable on upstream QEMU (the
 * `+pveN` revision dropped): -machine, -cpu, -smp, -m, and -object/-numa/-device for NUMA nodes
 * and cold-plugged DIMMs. The tests start QEMU with these and compare what QMP reports.
 */
export function qemuArgs(plan: VmPlan): string[] {
  const accel = plan.cpu.accelerator;
  const { sockets, cores, vcpus } = plan.smp;
  const args = [
    '-machine',
    `type=${plan.machine.type},accel=${accel}`,
    '-cpu',
    plan.cpu.cpuArg,
    '-smp',
    `${vcpus},sockets=${sockets},cores=${cores},maxcpus=${sockets * cores}`,
    '-m',
    plan.memory.mArg,
  ];
  for (const node of plan.memory.numaNodes) {
    args.push('-object', `memory-backend-ram,id=ram-node${node.id},size=${node.sizeMiB}M`);
    args.push('-numa', `node,nodeid=${node.id},cpus=${node.cpus},memdev=ram-node${node.id}`);
  }
  for (const d of plan.memory.dimms) {
    args.push('-object', `memory-backend-ram,id=mem-${d.id},size=${d.sizeMiB}M`);
    args.push('-device', `pc-dimm,id=${d.id},memdev=mem-${d.id},node=${d.node}`);
  }
  return args;
}
