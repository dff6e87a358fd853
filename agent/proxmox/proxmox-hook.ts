/**
 * The decision behind a Proxmox VE hookscript. qemu-server runs the VM's `hookscript:` as
 * `<script> VMID PHASE` (pve-guest-common src/PVE/GuestHelpers.pm exec_hookscript); `pre-start`
 * runs in vm_start_nolock (src/PVE/QemuServer.pm) before the QEMU command line is built, with
 * stop_on_error, so a non-zero exit aborts the start and the task log shows the script's stderr.
 * That includes the receiving side of a migration, where vm_start_nolock sets PVE_MIGRATED_FROM
 * to the source node and the config is still the source node's file.
 *
 * `pre-start`: read the VM's config (config-tree.ts), work out what qemu-server will start
 * (vm-plan.ts) and judge it like a running guest (agent/judge/verdict.ts); refuse when a reason is
 * critical. A guest whose width follows the host arriving by migration is judged with the width it
 * booted with at the source (docs/guard.md "host-phys-bits=on guests after a migration"); when nothing knows that width,
 * guard.unknownPeer decides. A config that cannot be read or judged refuses (fail closed), naming
 * the file. Every other phase exits 0 without reading anything.
 */
import { join } from 'node:path';
import type { Config } from '../core/config';
import type { GuestIdentity, SourceWidth } from '../peers/source-width';
import { EXIT } from '../core/exit-codes';
import type { GuestFacts, HostFacts, Reason } from '../core/types';
import { formatBytes } from '../core/format';
import { judgeHost } from '../judge/host-limit';
import { parseVmid, readTreeFile, vmConfigPath } from './config-tree';
import { guestFromPlan } from './plan-guest';
import { findFix } from './proxmox-fix';
import { parseCpuModels, parseVmConfig, VmConfigError, type VmConfigFile } from './vm-config';
import { planVm, type PlanOptions, type VmPlan } from './vm-plan';
import {
  bootedElsewhere,
  guestPhysBitsClause,
  judgeBeforeStart,
  predictGuestPhysBits,
  type GuestPhysBitsPrediction,
  type QemuBinaryVersion,
} from '../judge/guest-phys-bits';

/** 78: refused because physbits' own config could not be loaded. */
export const PROXMOX_HOOK_EXIT = { ALLOW: 0, REFUSE: 1, UNKNOWN: EXIT.UNKNOWN, CONFIG: EXIT.CONFIG } as const;

/** Custom CPU models, relative to proxmox.configDir (CPUConfig.pm $default_filename). */
export const CPU_MODELS_FILE = join('virtual-guest', 'cpu-models.conf');

export interface ProxmoxHookDeps {
  config: Config;
  /** This node's facts, or how to read them; default: agent/facts/host-facts.ts with the config's roots. */
  hostFacts?: HostFacts | (() => HostFacts | Promise<HostFacts>);
  /** PVE_MIGRATED_FROM as qemu-server set it (empty or absent: not a migration). */
  migratedFrom?: string;
  /** The width a host-following guest runs with at its source; default agent/peers/source-width.ts. */
  sourceWidth?: (guest: GuestIdentity) => Promise<SourceWidth>;
  /** The QEMU binary qemu-server starts; default /usr/bin/kvm (agent/facts/qemu-binary.ts PROXMOX_KVM_BINARY). */
  kvmBinary?: string;
  /** One line at a time, without a trailing newline. */
  stderr: (line: string) => void;
}

async function defaultSourceWidth(config: Config, guest: GuestIdentity): Promise<SourceWidth> {
  const { lookupSourceWidth } = await import('../peers/source-width');
  const { sourceWidthDepsFromConfig } = await import('../peers/source-width-deps');
  return lookupSourceWidth(guest, sourceWidthDepsFromConfig(config));
}

async function defaultHostFacts(config: Config): Promise<HostFacts> {
  const { hostReadOptions, readHost } = await import('../facts/host-facts');
  return judgeHost(readHost({ ...hostReadOptions(config), kernelRelease: true }), config.host.physBits);
}

/** `kvm --version` as qemu-server's kvm_user_version reads it, bounded (agent/facts/qemu-binary.ts). */
async function kvmVersion(binary: string | undefined): Promise<QemuBinaryVersion> {
  const { readQemuVersion, PROXMOX_KVM_BINARY } = await import('../facts/qemu-binary');
  return readQemuVersion(binary ?? PROXMOX_KVM_BINARY);
}

/**
 * The guest-phys-bits QEMU will give the VM on this node (agent/judge/guest-phys-bits.ts). A VM
 * arriving by migration booted on its source node, where its firmware placed its memory by that
 * node's guest-phys-bits: only a guest-phys-bits in its config counts then.
 */
async function predictForPlan(
  plan: VmPlan,
  host: HostFacts,
  guest: GuestFacts,
  arrival: Arrival,
  deps: ProxmoxHookDeps,
): Promise<GuestPhysBitsPrediction> {
  if (arrival.from !== null && guest.guestPhysBits === null) return bootedElsewhere(`node ${arrival.from}`);
  const needsQemu = guest.guestPhysBits === null && plan.cpu.accelerator === 'kvm';
  return predictGuestPhysBits({
    qemu: needsQemu ? await kvmVersion(deps.kvmBinary) : { unknown: 'not asked' },
    accelerator: plan.cpu.accelerator,
    machineType: plan.machine.type,
    explicit: guest.guestPhysBits,
    physBits: guest.physBits,
    hostPhysBits: plan.cpu.hostPhysBits,
    hostPhysBitsLimit: 0,
    host,
  });
}

/** `smbios1: uuid=…` (QEMU's -smbios type=1,uuid=…, the UUID physbits reports for the guest). */
export function smbiosUuid(value: string | undefined): string | null {
  const m = value === undefined ? null : /(?:^|,)uuid=([0-9a-fA-F-]{36})(?:,|$)/.exec(value);
  return m ? m[1].toLowerCase() : null;
}

/** How the VM arrives: a start, or a migration from a node, with the source's width when it follows the host. */
export interface Arrival {
  from: string | null;
  source?: Extract<SourceWidth, { physBits: number }>;
}

/** The one stderr line of a refusal: the VM, its width, this node's limit, the fix. */
export function refusalLine(
  plan: VmPlan,
  host: HostFacts,
  guest: GuestFacts,
  reason: Reason,
  arrival: Arrival,
  fix: string | null,
  guestPhysBits: GuestPhysBitsPrediction | null = null,
): string {
  const gpb = reason.code === 'GUEST_WIDER_THAN_HOST' && guestPhysBits ? `; ${guestPhysBitsClause(guestPhysBits)}` : '';
  const vm = `VM ${plan.vmid} (${plan.name})`;
  const what = arrival.from === null ? `start of ${vm}` : `incoming migration of ${vm} from ${arrival.from}`;
  const override = host.physBitsSource === 'config' ? ' (host.physBits in the config)' : '';
  const src = arrival.source;
  const whose = !src
    ? ''
    : src.kind === 'guest'
      ? ` (its width on ${src.host}, from ${src.source})`
      : ` (at most ${src.source})`;
  const facts =
    reason.code === 'LAYOUT_BEYOND_HOST_LIMIT'
      ? `its memory layout reaches ${formatBytes(guest.layout?.highestAddress ?? 0)}, past this node's ${host.physBits}-bit limit${override}`
      : `guest phys-bits ${guest.physBits}${whose} is wider than this node's limit of ${host.physBits} bits${override}${gpb}`;
  let fixText: string;
  if (src) {
    fixText =
      `its width follows the node it booted on and stays ${guest.physBits} until it is shut down; fix: migrate it ` +
      `to a node of at least ${guest.physBits} bits, or shut it down and start it here` +
      (fix ? `; to keep it movable: ${fix}` : '');
  } else if (fix) {
    fixText = `fix: ${fix}${arrival.from === null ? '' : ', then stop and start it before migrating'}`;
  } else {
    fixText = `fix: run it on a node whose limit is at least ${guest.physBits} bits`;
  }
  return `physbits refused the ${what}: ${reason.code}: ${facts}; ${fixText}`;
}

/** The line of a host-following guest arriving from a node whose width for it nobody knows. */
export function unknownSourceLine(plan: VmPlan, from: string, why: string): string {
  return (
    `physbits refused the incoming migration of VM ${plan.vmid} (${plan.name}) from ${from}: SOURCE_WIDTH_UNKNOWN: ` +
    `its width follows the node it booted on (cpu: ${plan.cpu.configured}${plan.cpu.hostPhysBitsArg ? ',phys-bits=host' : ''}) and ${why}; ` +
    `guard.unknownPeer is refuse; fix: give node ${from} a live agent in peers[] (url, tokenFile) or set fleet.prometheus, ` +
    'so the width can be read, or set guard.unknownPeer to allow'
  );
}

function cannotCheck(deps: ProxmoxHookDeps, vmid: string, err: unknown): number {
  const code = (err as { code?: unknown }).code;
  const why = `${typeof code === 'string' ? `${code}: ` : ''}${err instanceof Error ? err.message : String(err)}`;
  deps.stderr(
    `physbits cannot check VM ${vmid}, refusing its start: ${why} (to start it anyway, see "Emergencies" in physbits' docs/proxmox.md)`,
  );
  return PROXMOX_HOOK_EXIT.REFUSE;
}

async function preStart(vmid: number, deps: ProxmoxHookDeps): Promise<number> {
  const root = deps.config.proxmox.configDir;
  const from = deps.migratedFrom ? deps.migratedFrom : null;
  let plan: VmPlan;
  let host: HostFacts;
  let file: VmConfigFile;
  let opts: PlanOptions;
  try {
    const source = deps.hostFacts ?? (() => defaultHostFacts(deps.config));
    host = typeof source === 'function' ? await source() : source;
    const rel = vmConfigPath(vmid, from);
    file = parseVmConfig(readTreeFile(root, rel));
    opts = {
      vmid,
      cpuinfoPhysBits: host.cpuinfoPhysBits,
      customModels: () => parseCpuModels(readTreeFile(root, CPU_MODELS_FILE)),
    };
    try {
      plan = planVm(file, opts);
    } catch (err) {
      if (err instanceof VmConfigError)
        throw new VmConfigError(err.code as never, `${join(root, rel)}: ${err.message}`);
      throw err;
    }
  } catch (err) {
    return cannotCheck(deps, String(vmid), err);
  }

  const arrival: Arrival = { from };
  if (from !== null && plan.cpu.followsHost) {
    const ask = deps.sourceWidth ?? ((g: GuestIdentity) => defaultSourceWidth(deps.config, g));
    const answer = await ask({ name: plan.name, uuid: smbiosUuid(file.current.smbios1), sourceHost: from });
    if (answer.kind === 'unknown') {
      if (deps.config.guard.unknownPeer === 'allow') return PROXMOX_HOOK_EXIT.ALLOW;
      deps.stderr(unknownSourceLine(plan, from, answer.why));
      return PROXMOX_HOOK_EXIT.UNKNOWN;
    }
    arrival.source = answer;
  }
  let guest: GuestFacts;
  try {
    guest = guestFromPlan(plan, host, arrival.source?.physBits);
  } catch (err) {
    return cannotCheck(deps, String(vmid), err);
  }
  const { blocking, prediction: gpb } = await judgeBeforeStart(host, guest, deps.config.policy, () =>
    predictForPlan(plan, host, guest, arrival, deps),
  );
  if (blocking.length === 0) return PROXMOX_HOOK_EXIT.ALLOW;
  deps.stderr(refusalLine(plan, host, guest, blocking[0], arrival, findFix(file, opts, host, deps.config.policy), gpb));
  return PROXMOX_HOOK_EXIT.REFUSE;
}

/** Runs the hookscript for qemu-server's arguments `VMID PHASE`; resolves to the exit code. */
export async function runProxmoxHook(args: string[], deps: ProxmoxHookDeps): Promise<number> {
  const [vmidText = '', phase = ''] = args;
  if (phase !== 'pre-start') return PROXMOX_HOOK_EXIT.ALLOW;
  const vmid = parseVmid(vmidText);
  if (vmid === null)
    return cannotCheck(deps, vmidText.slice(0, 20) || '(none)', new Error(`'${vmidText.slice(0, 20)}' is not a VMID`));
  return preStart(vmid, deps);
}

export interface ProxmoxHookEntryDeps extends Omit<ProxmoxHookDeps, 'config'> {
  configPath?: string;
  /** Loads and validates the config (agent/core/config.ts loadConfig); throws when it cannot. */
  loadConfig(path: string | undefined): Config;
}

/**
 * The hookscript as qemu-server runs it: load physbits' config, then runProxmoxHook. A config that
 * cannot be loaded refuses `pre-start` (exit 78) with one line; other phases are allowed.
 */
export async function runProxmoxHookEntry(args: string[], deps: ProxmoxHookEntryDeps): Promise<number> {
  let config: Config;
  try {
    config = deps.loadConfig(deps.configPath);
  } catch (err) {
    const [vmid = '(none)', phase = ''] = args;
    if (phase !== 'pre-start') return PROXMOX_HOOK_EXIT.ALLOW;
    deps.stderr(
      `physbits: proxmox-hook: config: ${err instanceof Error ? err.message : String(err)}; refusing the start of VM ${vmid.slice(0, 20)}`,
    );
    return PROXMOX_HOOK_EXIT.CONFIG;
  }
  return runProxmoxHook(args, { ...deps, config });
}
