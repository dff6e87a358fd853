/**
 * The width a guest runs with on the host it is migrating from (docs/guard.md "host-phys-bits=on guests after a migration"). A guest whose width follows its host (`-cpu host`/`max`, `host-phys-bits=on`, libvirt
 * `host-passthrough`/`maximum`/`<maxphysaddr mode='passthrough'>`, Proxmox `cpu: host`/`phys-bits=host`)
 * keeps the width it booted with when it migrates; a destination judges that width, not its own.
 *
 * Asked in this order, the first that knows wins:
 *   1. 'guest': the guest itself, found by UUID (else by name when a source does not know UUIDs)
 *      among the live peers' status documents (GET /v1/status) and fleet.prometheus's
 *      `physbits_guest_phys_bits` series, on any host but this one. Two sources (or two hosts)
 *      that disagree: the widest, since a destination that is wide enough for it is wide enough for
 *      every smaller answer.
 *   2. 'host': the source host's limit (peers[] static or live, fleet.prometheus's hosts), when the
 *      caller knows which host the guest comes from (Proxmox's PVE_MIGRATED_FROM, an incoming
 *      notice's `from`). A guest that booted there with host-phys-bits=on got at most that width.
 *   3. 'unknown': nothing knew; `why` says what was asked. The caller applies guard.unknownPeer.
 *
 * Matching: a VM whose UUID is known matches only that UUID (two guests of one name on two hosts
 * are told apart); a VM whose source reports no UUID (an older agent, QEMU's all-zero UUID) matches
 * by name. Every ask is bounded: the whole lookup ends within `deadlineMs`, whatever a peer or
 * Prometheus does; an ask that fails is named in `why`.
 */
import type { PeerFacts } from '../core/types';
import { normalizeUuid } from '../core/uuid';
import { errorText } from './peer';
import { guestWidthQueries } from './prometheus-fleet';
import { isWidth as validWidth } from '../core/checks';

export { normalizeUuid };

/** Who is asked about: the guest's name and UUID, and the host it comes from when the caller knows. */
export interface GuestIdentity {
  name: string;
  /** RFC 4122 text form; null or absent when unknown. */
  uuid?: string | null;
  /** The source host's name (peers[].name, Prometheus's `host` label); absent when unknown. */
  sourceHost?: string | null;
}

export type SourceWidth =
  /** The guest's own width at its source; `host` the host it runs on; `source` where it was read. */
  | { kind: 'guest'; physBits: number; host: string; source: string }
  /** The source host's limit; `source` where it was read. */
  | { kind: 'host'; physBits: number; host: string; source: string }
  /** Nothing knew; `why` is one sentence an operator can act on. */
  | { kind: 'unknown'; why: string };

/** A live peer as the fleet view collects it (peer-status.ts collectPeers, LivePeers.statuses). */
export type PeerStatus = Pick<PeerFacts, 'name' | 'reachable' | 'status' | 'error'>;

/** One `physbits_guest_phys_bits` sample (prometheus-client.ts PromSample fits). */
export interface GuestWidthSample {
  labels: Record<string, string>;
  value: number;
}

/** A host's limit as the peer lookup reports it (fleet-peers.ts FleetPeers.facts fits). */
export interface HostLimit {
  physBits: number | null;
  /** Why the width is unknown. */
  why?: string;
}

export interface SourceWidthDeps {
  /** This host's name: a guest found here is not the source. */
  self: string;
  /** The live peers' status documents; absent when no peer has an agent url. */
  peerStatuses?: () => Promise<PeerStatus[]>;
  /** Runs an instant query on fleet.prometheus; absent when it is not set. */
  prometheusQuery?: (query: string) => Promise<GuestWidthSample[]>;
  /** fleet.job: the scrape jobs whose series count (default ["physbits"]). */
  prometheusJobs?: readonly string[];
  /** The limit of the host of that name; null when no peer or fleet host has that name. */
  hostLimit?: (name: string) => Promise<HostLimit | null>;
  /** The whole lookup's bound (default SOURCE_WIDTH_DEADLINE_MS). */
  deadlineMs?: number;
}

/** How long a destination waits for the source's width before it counts as unknown. */
export const SOURCE_WIDTH_DEADLINE_MS = 8000;

/** Whether a VM known by `name`/`uuid` at a source is the guest asked about. */
export function sameGuest(
  want: GuestIdentity,
  name: string | null | undefined,
  uuid: string | null | undefined,
): boolean {
  const a = normalizeUuid(want.uuid);
  const b = normalizeUuid(uuid);
  if (a !== null && b !== null) return a === b;
  return typeof name === 'string' && name === want.name;
}

interface Found {
  physBits: number;
  host: string;
  source: string;
}

/** Pure: the guest among the peers' status documents, on hosts other than `self`. */
export function findInStatuses(want: GuestIdentity, peers: PeerStatus[], self: string): Found[] {
  const out: Found[] = [];
  for (const p of peers) {
    if (p.name === self || !p.reachable || !p.status) continue;
    for (const vm of p.status.vms) {
      const width = vm.guest?.physBits;
      if (!validWidth(width) || !sameGuest(want, vm.name, vm.guest?.uuid)) continue;
      out.push({ physBits: width, host: p.name, source: `live peer ${p.name}'s status` });
    }
  }
  return out;
}

/** Pure: the guest among `physbits_guest_phys_bits` samples, on hosts other than `self`. */
export function findInSamples(want: GuestIdentity, samples: GuestWidthSample[], self: string): Found[] {
  const out: Found[] = [];
  for (const s of samples) {
    const host = s.labels.host;
    if (!host || host === self || !validWidth(s.value)) continue;
    if (!sameGuest(want, s.labels.vm, s.labels.uuid)) continue;
    out.push({ physBits: s.value, host, source: `fleet.prometheus's physbits_guest_phys_bits{host="${host}"}` });
  }
  return out;
}

/** The queries that find the guest in Prometheus (fleet.job's series only): by UUID when known, and by name. */
export function guestQueries(want: GuestIdentity, jobs?: readonly string[]): string[] {
  return guestWidthQueries({ name: want.name, uuid: normalizeUuid(want.uuid) }, jobs);
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

function describe(want: GuestIdentity): string {
  const uuid = normalizeUuid(want.uuid);
  return `guest '${want.name}'${uuid ? ` (UUID ${uuid})` : ''}`;
}

/** The width `want` runs with at its source; never rejects. */
export async function lookupSourceWidth(want: GuestIdentity, deps: SourceWidthDeps): Promise<SourceWidth> {
  const deadline = deps.deadlineMs ?? SOURCE_WIDTH_DEADLINE_MS;
  const asked: string[] = [];
  const found: Found[] = [];

  const fromPeers = async (): Promise<void> => {
    if (!deps.peerStatuses) return;
    try {
      const peers = await withDeadline(deps.peerStatuses(), deadline, 'live peers');
      found.push(...findInStatuses(want, peers, deps.self));
      const down = peers.filter((p) => p.name !== deps.self && (!p.reachable || !p.status));
      const up = peers.length - down.length;
      asked.push(`${up} live peer${up === 1 ? '' : 's'} do not run it`);
      for (const p of down) asked.push(`peer ${p.name} did not answer (${p.error ? errorText(p.error) : 'no status'})`);
    } catch (err) {
      asked.push(`the live peers could not be asked (${errorText(err)})`);
    }
  };
  const fromPrometheus = async (): Promise<void> => {
    if (!deps.prometheusQuery) return;
    try {
      const query = deps.prometheusQuery;
      const answers = await withDeadline(
        Promise.all(guestQueries(want, deps.prometheusJobs).map((q) => query(q))),
        deadline,
        'fleet.prometheus',
      );
      found.push(...findInSamples(want, answers.flat(), deps.self));
      asked.push('fleet.prometheus has no physbits_guest_phys_bits series for it on another host');
    } catch (err) {
      asked.push(`fleet.prometheus could not be asked (${errorText(err)})`);
    }
  };
  await Promise.all([fromPeers(), fromPrometheus()]);

  if (found.length > 0) {
    const widest = found.reduce((a, b) => (b.physBits > a.physBits ? b : a));
    return { kind: 'guest', physBits: widest.physBits, host: widest.host, source: widest.source };
  }

  const from = want.sourceHost ?? null;
  if (from !== null && from !== deps.self && deps.hostLimit) {
    try {
      const limit = await withDeadline(deps.hostLimit(from), deadline, `host ${from}`);
      if (limit && validWidth(limit.physBits))
        return { kind: 'host', physBits: limit.physBits, host: from, source: `the limit of source host ${from}` };
      asked.push(
        limit ? (limit.why ?? `the width of host ${from} is unknown`) : `no peer or fleet host is named ${from}`,
      );
    } catch (err) {
      asked.push(`the limit of host ${from} could not be read (${errorText(err)})`);
    }
  } else if (from === null) {
    asked.push('the source host is not known');
  }
  if (!deps.peerStatuses && !deps.prometheusQuery) asked.unshift('no live peers[] and no fleet.prometheus to ask');
  return { kind: 'unknown', why: `the width of ${describe(want)} at its source is unknown: ${asked.join('; ')}` };
}
