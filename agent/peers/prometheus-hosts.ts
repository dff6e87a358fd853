/**
 * The fleet as Prometheus sees it, from the instant-query results of prometheus-fleet.ts (the one
 * place the queries are written): which hosts run physbits, each host's limit and whether its agent
 * is up and fresh, and each guest's width, accelerator and layout end (docs/metrics.md). Pure:
 * samples in, hosts and the fleet view's peers out.
 */
import type { GuestFacts, HostFacts, PeerFacts, StatusDocument, VmStatus } from '../core/types';
import { lowerWidth } from './merge';
import type { PromSample } from './prometheus-client';
import { widthOrNull as validWidth } from '../core/checks';

/** The queries that describe the hosts (what the guard needs), by name. */
export type HostQueryName = 'hosts' | 'up' | 'widths' | 'fresh';
/** Every query of the fleet view: the hosts', and the guests'. */
export type FleetQueryName = HostQueryName | 'guests' | 'layouts' | 'vmsUp';
export type HostSamples = Record<HostQueryName, PromSample[]>;
export type FleetSamples = Record<FleetQueryName, PromSample[]>;

export interface PromHost {
  name: string;
  pool?: string;
  /** The scrape targets that reported this host (`instance` labels). */
  instances: string[];
  /** The width now when reachable, else the last one seen within the lookback; null when none was. */
  physBits: number | null;
  /** Its agent is up and its width sample is fresh. */
  reachable: boolean;
  /** Why not reachable: PROM_TARGET_DOWN or PROM_SERIES_STALE. */
  error?: { code: string; message: string };
  /** Strings a migration URI may name for this host: its name and its targets' host parts. */
  addresses: string[];
}

/** "10.0.0.3:9741" → "10.0.0.3"; "[fd00::3]:9741" → "fd00::3"; a target without a port stays whole. */
export function instanceHost(instance: string): string {
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(instance);
  if (v6) return v6[1];
  const m = /^([^:]+):\d+$/.exec(instance);
  return m ? m[1] : instance;
}

/**
 * Pure: each host named by a physbits_host_info series within the lookback, in name order. A host is
 * reachable when one of its targets is `up` (1) now and its width sample is at most `staleSeconds`
 * older than `time`; otherwise it keeps the last width seen, with the reason it is not reachable.
 * A host with several width series takes the lowest of them.
 */
export function hostsFromSamples(s: HostSamples, time: number, staleSeconds: number): PromHost[] {
  const byName = new Map<string, { pool?: string; targets: Array<{ job?: string; instance?: string }> }>();
  for (const info of s.hosts) {
    const name = info.labels.host;
    if (!name) continue;
    let h = byName.get(name);
    if (!h) byName.set(name, (h = { targets: [] }));
    if (info.labels.pool !== undefined && info.labels.pool !== '') h.pool = info.labels.pool;
    h.targets.push({ job: info.labels.job, instance: info.labels.instance });
  }
  const target = (l: Record<string, string | undefined>) => `${l.job ?? ''}\u0000${l.instance ?? ''}`;
  const upByTarget = new Map(s.up.map((u) => [target(u.labels), u.value]));
  const upOf = (t: { job?: string; instance?: string }) => upByTarget.get(target(t));
  const freshByHost = new Map<string, PromSample>();
  for (const f of s.fresh) {
    const name = f.labels.host;
    const prev = name ? freshByHost.get(name) : undefined;
    if (name && (!prev || f.value > prev.value)) freshByHost.set(name, f);
  }
  const widthsByHost = new Map<string, PromSample[]>();
  for (const w of s.widths) {
    const name = w.labels.host;
    if (!name) continue;
    const list = widthsByHost.get(name);
    if (list) list.push(w);
    else widthsByHost.set(name, [w]);
  }
  const out: PromHost[] = [];
  for (const [name, h] of [...byName].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const fresh = freshByHost.get(name);
    const widths = widthsByHost.get(name) ?? [];
    const instances = [...new Set(h.targets.map((t) => t.instance).filter((i): i is string => !!i))];
    const up = h.targets.map(upOf);
    const host: PromHost = {
      name,
      instances,
      // Two series for one host (two targets, a second exporter in fleet.job) that disagree: the
      // lower width wins (merge.ts), never the freshest or the first.
      physBits: lowerWidth(...widths.map((w) => validWidth(w.value))),
      reachable: false,
      addresses: [...new Set([name, ...instances.map(instanceHost)])],
    };
    if (h.pool !== undefined) host.pool = h.pool;
    const targets = h.targets.map((t) => `{job="${t.job ?? ''}",instance="${t.instance ?? ''}"}`).join(', ');
    if (!up.some((v) => v === 1)) {
      host.error = {
        code: 'PROM_TARGET_DOWN',
        message: `${
          up.every((v) => v === undefined) ? `no up series for ${targets}` : `up${targets} is 0`
        } at ${new Date(time * 1000).toISOString()}`,
      };
    } else if (!fresh || time - fresh.value > staleSeconds) {
      const age = fresh ? `last sample ${Math.round(time - fresh.value)} s old` : 'no sample now';
      host.error = {
        code: 'PROM_SERIES_STALE',
        message: `physbits_host_phys_bits{host="${name}"}: ${age} (fleet.staleSeconds ${staleSeconds})`,
      };
    } else if (host.physBits === null) {
      host.error = { code: 'PROM_SERIES_STALE', message: `physbits_host_phys_bits{host="${name}"} is not a width` };
    } else {
      host.reachable = true;
    }
    out.push(host);
  }
  return out;
}

/** The guest facts a fleet series carries; what Prometheus does not know stays null or false. */
function guestFromSeries(vm: string, physBits: number, accelerator: string, highestAddress: number | null): GuestFacts {
  return {
    name: vm,
    qemuVersion: '',
    accelerator,
    physBits,
    hostPhysBits: false,
    hostPhysBitsLimit: 0,
    guestPhysBits: null,
    cpuModel: null,
    memoryEncryption: { active: false, type: null, reducedPhysBits: null },
    runState: null,
    layout:
      highestAddress === null
        ? null
        : {
            ramAbove4g: 0,
            ramBelow4g: 0,
            deviceMemory: null,
            memoryDevices: [],
            pciHole64: null,
            highestAddress,
            usedEnd: highestAddress,
          },
  };
}

/** host → vm → sample (a later duplicate replaces an earlier one). */
function byHostAndVm(samples: PromSample[]): Map<string, Map<string, PromSample>> {
  const out = new Map<string, Map<string, PromSample>>();
  for (const sample of samples) {
    const { host, vm } = sample.labels;
    if (!host || !vm) continue;
    let m = out.get(host);
    if (!m) out.set(host, (m = new Map()));
    m.set(vm, sample);
  }
  return out;
}

/**
 * Pure: the fleet view's peers, one per host Prometheus knows, each reachable host with a status
 * document built from its guests' series (a guest whose physbits_vm_up is 0, or with no width, is
 * listed with an error, as a live peer lists a VM it cannot read).
 */
export function fleetPeersFromSamples(s: FleetSamples, time: number, staleSeconds: number): PeerFacts[] {
  const hosts = hostsFromSamples(s, time, staleSeconds);
  const widths = byHostAndVm(s.guests);
  const layouts = byHostAndVm(s.layouts);
  const vmUp = byHostAndVm(s.vmsUp);
  return hosts.map((h): PeerFacts => {
    const peer: PeerFacts = { name: h.name, physBits: h.physBits, reachable: h.reachable, source: 'prometheus' };
    if (h.pool !== undefined) peer.pool = h.pool;
    if (h.error) peer.error = h.error;
    if (!h.reachable || h.physBits === null) return peer;
    const hostWidths = widths.get(h.name) ?? new Map<string, PromSample>();
    const hostUp = vmUp.get(h.name) ?? new Map<string, PromSample>();
    const hostLayouts = layouts.get(h.name) ?? new Map<string, PromSample>();
    const names = [...new Set([...hostWidths.keys(), ...hostUp.keys()])].sort();
    const vms: VmStatus[] = names.map((vm): VmStatus => {
      const width = hostWidths.get(vm);
      const up = hostUp.get(vm)?.value;
      if (up === 0 || !width || validWidth(width.value) === null) {
        const message =
          up === 0
            ? `physbits_vm_up{host="${h.name}",vm="${vm}"} is 0: the agent cannot read the guest`
            : `no physbits_guest_phys_bits{host="${h.name}",vm="${vm}"} width`;
        return { socket: '', name: vm, error: { code: 'PROM_VM_DOWN', message } };
      }
      const accelerator = width.labels.accelerator ?? 'kvm';
      const highest = hostLayouts.get(vm)?.value;
      return {
        socket: '',
        name: vm,
        accelerator,
        guest: guestFromSeries(vm, width.value, accelerator, highest !== undefined && highest > 0 ? highest : null),
      };
    });
    const host = { name: h.name, physBits: h.physBits } as HostFacts;
    peer.status = { host, vms } satisfies StatusDocument;
    return peer;
  });
}
