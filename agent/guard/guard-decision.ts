/**
 * The guard's interceptor: for each command a client sends through the guarded socket, forward it
 * or answer it with a refusal. Only `device_add` of a memory device or of a PCI device with a 64-bit
 * BAR, `migrate` and their HMP forms are looked at; everything else is forwarded at once, without
 * waiting for anything.
 */
import type { Config } from '../core/config';
import type { QmpExecutor } from '../facts/guest-facts';
import type { Logger } from '../core/logger';
import type { GuestFacts, HostFacts } from '../core/types';
import { parseHmpCommandLine } from './hmp-command';
import { decideMemoryHotplug, memoryDeviceRequest, type MemoryDeviceRequest } from './memory-hotplug-rule';
import { decideMigration, type AllowedDestination, type PeerLookup } from './migration-rule';
import { decidePciHotplug, pciDeviceRequest, type PciDeviceRequest } from './pci-hotplug-rule';
import type { IncomingNotice } from '../peers/incoming-notice';
import type { ResolveOptions } from '../facts/memory-placement';
import { migrateTargets, parseMigrateUri, type MigrationTarget } from './migration-target';
import { refusalDesc, REFUSED } from './refusal';

export interface GuardCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  oob: boolean;
}

export type GuardAction =
  { action: 'forward' } | { action: 'reply-error'; errorClass: 'GenericError'; desc: string; code: string };

export interface GuardRefusal {
  vm: string;
  code: string;
  /** The QMP command the client sent (`human-monitor-command` for the HMP forms). */
  command: string;
  /** What it would have done: 'device_add' or 'migrate'. */
  effective: 'device_add' | 'migrate';
  desc: string;
}

export interface GuardContext {
  vm: string;
  host: () => HostFacts;
  facts: () => GuestFacts | null;
  waitForFacts(ms: number): Promise<GuestFacts | null>;
  /** Upstream QMP, for backend sizes and plugged memory devices. */
  q: QmpExecutor;
  config: () => Config;
  peers: PeerLookup;
  onRefusal(r: GuardRefusal): void;
  /**
   * Tells a peer's agent the width a host-phys-bits=on guest migrating there booted with (POST
   * /v1/incoming); resolves with null when told, else why not. Bounded by the peer timeout.
   */
  notifyIncoming?(peer: string, notice: IncomingNotice): Promise<string | null>;
  /** Where QEMU's paths (a backend's mem-path) are measured: its root, `/proc/<pid>/root`. */
  resolveOptions?: () => Promise<ResolveOptions>;
  logger?: Logger;
  /** Milliseconds, for how long an approved placement stays reserved (default Date.now). */
  clock?: () => number;
}

export type Classified =
  | { kind: 'safe' }
  /** A memory device; `pci`: the PCI device it also is (virtio-mem-pci, virtio-pmem-pci: the modern BAR). */
  | { kind: 'memory'; via: 'qmp' | 'hmp'; device: MemoryDeviceRequest; pci: PciDeviceRequest | null }
  | { kind: 'pci'; via: 'qmp' | 'hmp'; device: PciDeviceRequest }
  | { kind: 'migrate'; via: 'qmp' | 'hmp'; targets: MigrationTarget[] }
  | { kind: 'hmp-unparsable'; name: 'device_add' | 'migrate'; reason: string };

/**
 * A device_add's rules: a memory device meets the memory rule, and then the PCI rule when it is a
 * PCI device too (virtio-mem-pci's modern BAR); any other device that may have a 64-bit BAR (or that
 * the BAR table does not know) meets the PCI rule.
 */
function classifyDeviceAdd(args: Record<string, unknown> | undefined, via: 'qmp' | 'hmp'): Classified {
  const memory = memoryDeviceRequest(args);
  const pci = pciDeviceRequest(args);
  if (memory) return { kind: 'memory', via, device: memory, pci: pci?.classified ? pci : null };
  return pci ? { kind: 'pci', via, device: pci } : { kind: 'safe' };
}

/**
 * The commands a rule looks at: classifyCommand calls every other one safe, whatever its
 * arguments, so the proxy may pass those on without asking (QmpProxyOptions.inspects).
 */
export const INSPECTED_COMMANDS: ReadonlySet<string> = new Set(['device_add', 'migrate', 'human-monitor-command']);

/** Pure: which rule, if any, a command meets. */
export function classifyCommand(cmd: Pick<GuardCommand, 'execute' | 'arguments'>, qemuVersion?: string): Classified {
  const args = cmd.arguments;
  if (!INSPECTED_COMMANDS.has(cmd.execute)) return { kind: 'safe' };
  switch (cmd.execute) {
    case 'device_add':
      return classifyDeviceAdd(args, 'qmp');
    case 'migrate':
      return { kind: 'migrate', via: 'qmp', targets: migrateTargets(args, qemuVersion) };
    case 'human-monitor-command': {
      const line = args?.['command-line'];
      if (typeof line !== 'string') return { kind: 'safe' };
      const hmp = parseHmpCommandLine(line);
      if (hmp.kind === 'unparsable') return { kind: 'hmp-unparsable', name: hmp.name, reason: hmp.reason };
      if (hmp.kind === 'migrate')
        return { kind: 'migrate', via: 'hmp', targets: [parseMigrateUri(hmp.uri, qemuVersion)] };
      if (hmp.kind === 'device_add') return classifyDeviceAdd(hmp.args, 'hmp');
      return { kind: 'safe' };
    }
    default:
      return { kind: 'safe' };
  }
}

/**
 * Before an allowed `migrate` of a host-phys-bits=on guest goes to QEMU, each destination peer's
 * agent is told the width the guest booted with: QEMU there will report its own host's width, which
 * the guest does not take until it is reset. A peer that cannot be told does not stop the
 * migration; its agent reports the width as unverified (MIGRATED_WIDTH_UNVERIFIED).
 */
async function notifyDestinations(
  ctx: GuardContext,
  guest: GuestFacts,
  destinations: readonly AllowedDestination[],
): Promise<void> {
  if (!guest.hostPhysBits || !ctx.notifyIncoming) return;
  const from = ctx.host().name;
  for (const d of destinations) {
    const notice: IncomingNotice = { vm: ctx.vm, port: d.port, physBits: guest.physBits, from };
    const failure = await ctx.notifyIncoming(d.peer, notice).catch((err: unknown) => String(err));
    if (failure === null) ctx.logger?.info('told the destination the booted width', { vm: ctx.vm, peer: d.peer });
    else ctx.logger?.warn('destination not told the booted width', { vm: ctx.vm, peer: d.peer, error: failure });
  }
}

/** How long an approved placement is kept out of later predictions, and how many are kept. */
export const RESERVATION_MS = 10_000;
export const MAX_RESERVATIONS = 64;

const FORWARD: GuardAction = { action: 'forward' };

/**
 * The guard's decision for each command: at once (not a promise) for every command no rule looks at,
 * so that the proxy forwards those in the same turn; a promise for the ones a rule decides.
 */
export function createGuardInterceptor(ctx: GuardContext): (cmd: GuardCommand) => GuardAction | Promise<GuardAction> {
  const clock = ctx.clock ?? Date.now;
  let reservations: { addr: number; size: number; until: number }[] = [];
  let memoryQueue: Promise<unknown> = Promise.resolve();

  const refuse = (
    cmd: GuardCommand,
    effective: GuardRefusal['effective'],
    code: string,
    message: string,
  ): GuardAction => {
    const desc = refusalDesc(code, message);
    ctx.logger?.warn('command refused', { vm: ctx.vm, command: cmd.execute, effective, code });
    try {
      ctx.onRefusal({ vm: ctx.vm, code, command: cmd.execute, effective, desc });
    } catch (err) {
      ctx.logger?.error('refusal listener failed', { vm: ctx.vm, error: String(err) });
    }
    return { action: 'reply-error', errorClass: 'GenericError', desc, code };
  };

  /** guard.onUnknown: refuse with `code`, or let the command through with a warning. */
  const undecided = (
    cmd: GuardCommand,
    effective: GuardRefusal['effective'],
    code: string,
    message: string,
  ): GuardAction => {
    if (ctx.config().guard.onUnknown === 'allow') {
      ctx.logger?.warn('forwarding undecided command (guard.onUnknown=allow)', {
        vm: ctx.vm,
        command: cmd.execute,
        effective,
        code,
        reason: message,
      });
      return FORWARD;
    }
    return refuse(cmd, effective, code, `${message}; refused because guard.onUnknown is 'refuse'`);
  };

  const pciRule = (cmd: GuardCommand, device: PciDeviceRequest, guest: GuestFacts): GuardAction => {
    const decision = decidePciHotplug({ device, guest, host: ctx.host(), policy: ctx.config().policy });
    if (decision.outcome === 'refuse')
      return refuse(cmd, 'device_add', REFUSED.PCI_WINDOW_ABOVE_HOST_LIMIT, decision.message);
    if (decision.outcome === 'unknown')
      return undecided(
        cmd,
        'device_add',
        decision.what === 'device' ? REFUSED.PCI_DEVICE_UNKNOWN : REFUSED.PCI_WINDOW_UNKNOWN,
        decision.message,
      );
    return FORWARD;
  };

  const memory = async (
    cmd: GuardCommand,
    device: MemoryDeviceRequest,
    pci: PciDeviceRequest | null,
    guest: GuestFacts,
  ): Promise<GuardAction> => {
    const now = clock();
    reservations = reservations.filter((r) => r.until > now);
    const decision = await decideMemoryHotplug({
      device,
      guest,
      host: ctx.host(),
      policy: ctx.config().policy,
      q: ctx.q,
      reserved: reservations,
      resolveOptions: ctx.resolveOptions,
    });
    if (decision.outcome === 'refuse') return refuse(cmd, 'device_add', decision.code, decision.message);
    if (decision.outcome === 'unknown')
      return undecided(cmd, 'device_add', REFUSED.MEMORY_PLACEMENT_UNKNOWN, decision.message);
    // Its memory fits; its PCI BAR must too (the window of the bus it is plugged into).
    if (pci) {
      const bar = pciRule(cmd, pci, guest);
      if (bar.action !== 'forward') return bar;
    }
    if (decision.placement) {
      reservations.push({
        addr: decision.placement.addr,
        size: decision.placement.size,
        until: clock() + RESERVATION_MS,
      });
      if (reservations.length > MAX_RESERVATIONS) reservations = reservations.slice(-MAX_RESERVATIONS);
    }
    return FORWARD;
  };

  const decideRuled = async (cmd: GuardCommand, c: Exclude<Classified, { kind: 'safe' }>): Promise<GuardAction> => {
    if (c.kind === 'hmp-unparsable') {
      return refuse(
        cmd,
        c.name,
        REFUSED.HMP_UNPARSABLE,
        `the human-monitor-command line for ${c.name} cannot be read as QEMU would read it (${c.reason}); send the QMP command ${c.name} instead`,
      );
    }
    const effective = c.kind === 'migrate' ? 'migrate' : 'device_add';
    const holdMs = ctx.config().guard.holdMs;
    const guest = ctx.facts() ?? (await ctx.waitForFacts(holdMs).catch(() => null));
    if (!guest) {
      return undecided(
        cmd,
        effective,
        REFUSED.FACTS_UNKNOWN,
        `the facts of ${ctx.vm} (phys-bits, accelerator, layout) are not known ${holdMs > 0 ? `after waiting ${holdMs} ms` : 'yet'}`,
      );
    }
    try {
      if (c.kind === 'memory') {
        // One memory decision at a time, so that each sees the placements approved before it.
        const run = memoryQueue.then(() => memory(cmd, c.device, c.pci, guest));
        memoryQueue = run.catch(() => undefined);
        return await run;
      }
      if (c.kind === 'pci') return pciRule(cmd, c.device, guest);
      // The uri as this guest's QEMU reads it (QEMU 7.2 and 8.2+ differ: migration-target.ts).
      const asRead = classifyCommand(cmd, guest.qemuVersion);
      const verdict = await decideMigration({
        targets: asRead.kind === 'migrate' ? asRead.targets : c.targets,
        guest,
        host: ctx.host(),
        policy: { accelerators: ctx.config().policy.accelerators, unknownPeer: ctx.config().guard.unknownPeer },
        peers: ctx.peers,
      });
      if (!verdict.allowed)
        return refuse(cmd, 'migrate', verdict.code ?? REFUSED.MIGRATION_UNKNOWN_PEER, verdict.message);
      await notifyDestinations(ctx, guest, verdict.destinations ?? []);
      return FORWARD;
    } catch (err) {
      ctx.logger?.error('guard rule failed', {
        vm: ctx.vm,
        command: cmd.execute,
        error: String((err as Error)?.message ?? err),
      });
      return undecided(
        cmd,
        effective,
        REFUSED.GUARD_ERROR,
        `the guard could not decide (${String((err as Error)?.message ?? err).slice(0, 200)})`,
      );
    }
  };

  return (cmd: GuardCommand): GuardAction | Promise<GuardAction> => {
    const c = classifyCommand(cmd);
    return c.kind === 'safe' ? FORWARD : decideRuled(cmd, c);
  };
}
