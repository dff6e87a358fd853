/**
 * Remediation advice: the width that makes each guest safe on every host of its pool, the setting
 * that pins it in QEMU, libvirt and Proxmox (advice-settings.ts), and what to shrink when the guest's
 * address layout does not fit under that width (layout-advice.ts). Pure: the input is the same as
 * the fleet view's.
 */
import { AgentError } from '../core/errors';
import { EXIT, exitCodeFor, worstState, type State } from '../core/exit-codes';
import { formatBytes } from '../core/format';
import { fleetHosts, fleetVms, isBound, type FleetHost, type FleetInput } from './fleet';
import type { GuestFacts, PrometheusSource, VmErrorInfo, VmStatus } from '../core/types';
import {
  currentSetting,
  hasGuestPhysBits,
  MAX_PHYS_BITS,
  MIN_PHYS_BITS,
  settingsFor,
  type AdviceSettings,
} from './advice-settings';
import { layoutAdvice, type LayoutAdvice } from './layout-advice';

/** An advice request that cannot be answered. `exitCode` is what the CLI exits with. */
export class AdviceError extends AgentError {
  readonly exitCode: number;
  constructor(code: 'VM_NOT_FOUND' | 'VM_AMBIGUOUS' | 'POOL_BITS_INVALID', message: string, exitCode: number) {
    super(code, message);
    this.exitCode = exitCode;
  }
}

export interface AdviseOptions {
  /** Only this VM: its name, or "host/name". */
  vm?: string;
  /** Plan for this width instead of the pool's narrowest host. */
  poolBits?: number;
}

/** The fleet view's input (this host's status, its peers, the policy), inline or under `fleet`. */
export type AdviseInput = (FleetInput | { fleet: FleetInput }) & AdviseOptions;

export interface GuestAdvice {
  host: string;
  vm: string;
  /** The VM's id on its host, when the status it came from had one. */
  id?: string;
  physBits: number | null;
  poolBits: number | null;
  poolHosts: string[];
  safe: boolean | null;
  layoutFits: boolean | null;
  accelerator: string | null;
  bound: boolean | null;
  /** How the width is set now: "phys-bits=46", "host-phys-bits=on", "host-phys-bits=on,host-phys-bits-limit=39". */
  current: string | null;
  settings: AdviceSettings | null;
  layout: LayoutAdvice | null;
  notes: string[];
  state: 'ok' | 'warning' | 'unknown';
  error?: VmErrorInfo;
}

export interface AdviceDocument {
  poolBits: number | null;
  poolBitsSource: 'requested' | 'pool';
  pool: { hosts: Array<{ name: string; physBits: number | null; reachable: boolean }>; unreachable: string[] };
  guests: GuestAdvice[];
  summary: { worst: State; exitCode: number };
  prometheus?: PrometheusSource;
}

/** Pure: advice for every guest of the fleet, or for the one named. */
export function advise(request: AdviseInput): AdviceDocument {
  const input: FleetInput & AdviseOptions =
    'fleet' in request ? { ...request.fleet, vm: request.vm, poolBits: request.poolBits } : request;
  const hosts = fleetHosts(input);
  const unreachable = hosts.filter((h) => !h.reachable).map((h) => h.name);
  if (
    input.poolBits !== undefined &&
    (!Number.isInteger(input.poolBits) || input.poolBits < MIN_PHYS_BITS || input.poolBits > MAX_PHYS_BITS)
  ) {
    throw new AdviceError(
      'POOL_BITS_INVALID',
      `pool width ${input.poolBits}: QEMU takes phys-bits from ${MIN_PHYS_BITS} to ${MAX_PHYS_BITS}`,
      EXIT.USAGE,
    );
  }
  const known = hosts.map((h) => h.physBits).filter((b): b is number => b !== null);
  const poolBits = input.poolBits ?? (known.length ? Math.min(...known) : null);
  let vms = fleetVms(input);
  if (input.vm !== undefined) {
    const want = input.vm;
    const byId = vms.filter(({ vm }) => vm.id === want);
    vms = byId.length ? byId : vms.filter(({ host, vm }) => vm.name === want || `${host}/${vm.name}` === want);
    if (vms.length === 0) {
      const where = unreachable.length ? ` (not reachable: ${unreachable.join(', ')})` : '';
      // Unknown, like any other thing physbits cannot find (exit 3).
      throw new AdviceError(
        'VM_NOT_FOUND',
        `no VM named '${want}' on ${hosts
          .filter((h) => h.reachable)
          .map((h) => h.name)
          .join(', ')}${where}`,
        EXIT.UNKNOWN,
      );
    }
    const hostsOfName = vms.map(({ host }) => host);
    if (new Set(hostsOfName).size < hostsOfName.length)
      throw new AdviceError(
        'VM_AMBIGUOUS',
        `${vms.length} VMs are named '${want}': name one by its id (${vms
          .map(({ host, vm }) => `${vm.id ?? '?'} on ${host}`)
          .join(', ')})`,
        EXIT.USAGE,
      );
  }
  const guests = vms.map(({ host, vm }) => {
    // Hosts that carry a pool label (from Prometheus) are advised within their own pool.
    const pool = poolOf(hosts, host);
    const bits = input.poolBits ?? (pool === hosts ? poolBits : narrowest(pool));
    return guestAdvice(
      host,
      vm,
      bits,
      pool.map((h) => h.name),
      input,
    );
  });
  const states: State[] = guests.map((g) => g.state);
  if (unreachable.length) states.push('unknown');
  const worst = worstState(states);
  return {
    poolBits,
    poolBitsSource: input.poolBits !== undefined ? 'requested' : 'pool',
    pool: { hosts: hosts.map(({ name, physBits, reachable }) => ({ name, physBits, reachable })), unreachable },
    guests,
    summary: { worst, exitCode: exitCodeFor(worst) },
  };
}

/** The hosts of `host`'s pool: every host, unless hosts carry `pool` labels. */
function poolOf(hosts: FleetHost[], host: string): FleetHost[] {
  if (!hosts.some((h) => h.pool !== undefined)) return hosts;
  const pool = hosts.find((h) => h.name === host)?.pool;
  return hosts.filter((h) => h.pool === pool);
}

function narrowest(hosts: FleetHost[]): number | null {
  const known = hosts.map((h) => h.physBits).filter((b): b is number => b !== null);
  return known.length ? Math.min(...known) : null;
}

function guestAdvice(
  host: string,
  vm: VmStatus,
  poolBits: number | null,
  poolHosts: string[],
  input: FleetInput,
): GuestAdvice {
  const g = vm.guest;
  const base = { host, vm: vm.name, ...(vm.id ? { id: vm.id } : {}), poolBits, poolHosts };
  if (vm.error || !g) {
    const error = vm.error ?? {
      code: 'GUEST_FACTS_MISSING',
      message: 'the status document has no guest facts for this VM',
    };
    return {
      ...base,
      physBits: null,
      safe: null,
      layoutFits: null,
      accelerator: vm.accelerator ?? null,
      bound: null,
      current: null,
      settings: null,
      layout: null,
      notes: [],
      state: 'unknown',
      error,
    };
  }
  const accelerator = vm.accelerator ?? g.accelerator;
  const bound = isBound(accelerator, input.policy);
  const current = currentSetting(g);
  if (poolBits === null) {
    const notes = ['no host width is known: nothing to advise'];
    return {
      ...base,
      physBits: g.physBits,
      safe: null,
      layoutFits: null,
      accelerator,
      bound,
      current,
      settings: null,
      layout: null,
      notes,
      state: 'unknown',
    };
  }
  const guestPhysBits = hasGuestPhysBits(g);
  const read = g.layout ? layoutAdvice(g.layout, poolBits) : null;
  const layoutFits = read ? read.fits : null;
  const widthFits = g.physBits <= poolBits;
  const safe = bound ? widthFits && layoutFits !== false : true;
  // A guest called safe is given no change to make: no settings, no layout fixes.
  const layout = read && safe ? { ...read, fixes: [] } : read;
  const notes = adviceNotes(g, poolBits, { bound, accelerator, widthFits, layout, guestPhysBits, safe });
  const settings = safe
    ? null
    : settingsFor(g.cpuModel, poolBits, guestPhysBits && g.physBits > poolBits && poolBits >= MIN_PHYS_BITS);
  const state = safe ? 'ok' : 'warning';
  return {
    ...base,
    physBits: g.physBits,
    safe,
    layoutFits,
    accelerator,
    bound,
    current,
    settings,
    layout,
    notes,
    state,
  };
}

function adviceNotes(
  g: GuestFacts,
  poolBits: number,
  c: {
    bound: boolean;
    accelerator: string;
    widthFits: boolean;
    layout: LayoutAdvice | null;
    guestPhysBits: boolean;
    safe: boolean;
  },
): string[] {
  const notes: string[] = [];
  if (!c.bound)
    notes.push(
      `${c.accelerator} guest: host widths do not bind it (policy.accelerators), so there is nothing to change; advise it again once it runs under KVM`,
    );
  if (poolBits < MIN_PHYS_BITS || poolBits > MAX_PHYS_BITS)
    notes.push(`QEMU takes phys-bits from ${MIN_PHYS_BITS} to ${MAX_PHYS_BITS}; ${poolBits} cannot be set`);
  if (!c.widthFits && !c.safe)
    notes.push(
      `guest ${g.physBits} bits > pool ${poolBits} bits: it may address memory the narrowest host cannot back; set ${poolBits}; it takes effect when QEMU restarts (a running guest's width cannot change)`,
    );
  if (g.hostPhysBits && (g.hostPhysBitsLimit === 0 || g.hostPhysBitsLimit > poolBits)) {
    notes.push(
      'host-phys-bits=on takes the width of the host it starts on and keeps it when migrating: started on a wider host it carries that width to narrower ones',
    );
  }
  if (c.layout?.firmwareEnd !== undefined) {
    notes.push(
      `firmware has placed 64-bit PCI BARs up to ${formatBytes(c.layout.firmwareEnd)}; it places them within the CPU's width, so they follow the width set at the next start`,
    );
  }
  if (c.layout && !c.layout.fits) {
    notes.push(
      `the address layout ends at ${formatBytes(c.layout.end)}, above 2^${poolBits} (${formatBytes(c.layout.limit)}): QEMU 7.1+ refuses to start it with phys-bits=${poolBits} ("phys-bits too low") until it shrinks`,
    );
    if (c.layout.fixes.length && !c.layout.fixes.some((f) => f.alone))
      notes.push('no single change is enough: combine the changes listed');
    if (c.layout.approximate)
      notes.push('the reported layout differs from the PC machine arithmetic: treat the sizes as estimates');
  }
  if (g.layout === null) notes.push('the address layout was not read: only the width is checked');
  if (!c.safe && c.guestPhysBits && g.physBits > poolBits && poolBits >= MIN_PHYS_BITS) {
    notes.push(
      `this QEMU has guest-phys-bits (9.1+): guest-phys-bits=${poolBits} has the firmware place the 64-bit PCI window below 2^${poolBits} without changing the CPU's width, the lighter change when only the layout must stay within the pool; the CPU still reports ${g.physBits} bits, so phys-bits=${poolBits} remains the setting that matches the narrowest host`,
    );
  }
  if (g.memoryEncryption?.active && g.memoryEncryption.reducedPhysBits) {
    notes.push(
      `memory encryption is active: the guest loses ${g.memoryEncryption.reducedPhysBits} more bits (reduced-phys-bits) on top of the width set here`,
    );
  }
  return notes;
}

/** The CLI's exit code for advice: 3 when a pool host or a guest is unknown, else 1 when a guest is not safe, else 0. */
export function adviceExitCode(doc: Pick<AdviceDocument, 'pool' | 'guests'>): number {
  const states: State[] = doc.guests.map((g) => g.state);
  if (doc.pool.unreachable.length) states.push('unknown');
  return exitCodeFor(worstState(states));
}

export { adviceExitCode as adviseExitCode };
