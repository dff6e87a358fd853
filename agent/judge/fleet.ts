/**
 * The fleet view: every guest of this host and of its peers, against every host's width. Pure: the
 * peers come in as agent/peers/ found them (config, live agents, Prometheus), each with its merged width.
 */
import { exitCodeFor, worstState, type State } from '../core/exit-codes';
import { formatBytes } from '../core/format';
import type { PeerFacts, Policy, PrometheusSource, StatusDocument, VmErrorInfo, VmStatus } from '../core/types';

export interface FleetInput {
  /** This host's status; absent when the whole fleet comes from Prometheus. */
  local?: StatusDocument;
  localName?: string;
  /** Every other host, its width already merged (the lower wins) and, when had, its guests. */
  peers: PeerFacts[];
  policy: Pick<Policy, 'accelerators'>;
  /** Above this many cells (hosts × guests) the matrix is given by width only (fleet.maxMatrixCells). */
  maxMatrixCells?: number;
}

export interface FleetHost {
  name: string;
  physBits: number | null;
  reachable: boolean;
  /**
   * 'local' this host; 'live' a peer agent's own report; 'static' the configured width;
   * 'prometheus' the host's own series in Prometheus (the last width seen when it is not up).
   */
  source: 'local' | 'live' | 'static' | 'prometheus';
  pool?: string;
  error?: string;
}

export type FleetGuestState = 'ok' | 'critical' | 'unknown';

/**
 * How the document gives the guest × host matrix. 'full': `fits` and `why` per host name, for fleets
 * of at most `maxMatrixCells` cells (hosts × guests). 'by-width': `fits` and `why` are left out and
 * every answer is in `fitsByWidth`/`whyByWidth`: a cell depends only on the host's width
 * (fitOnHost), so `fitsByWidth[String(host.physBits)]` (or `["unknown"]` for a host of unknown
 * width) is the answer for every host of that width. 1,000 hosts × 20,000 guests is 20 million
 * cells by host and at most a few dozen by width.
 */
export type FleetMatrix = 'full' | 'by-width';

/** Above this many cells (hosts × guests) the document gives the matrix by width only. */
export const DEFAULT_MAX_MATRIX_CELLS = 200_000;

/** The key of a host width in `fitsByWidth`/`whyByWidth` and `FleetDocument.widths`. */
export function widthKey(physBits: number | null): string {
  return physBits === null ? 'unknown' : String(physBits);
}

export interface FleetGuest {
  host: string;
  vm: string;
  physBits: number | null;
  accelerator: string | null;
  /** Whether host widths bind this guest (its accelerator is in policy.accelerators). */
  bound: boolean | null;
  /** One past the highest guest-physical address its layout can use; null when not read. */
  highestAddress: number | null;
  /** Per host: true fits, false does not, null unknown (no width, or the guest was not read). Only in a 'full' matrix. */
  fits?: Record<string, boolean | null>;
  /** Per host: the sentence behind each `fits` value. Only in a 'full' matrix. */
  why?: Record<string, string>;
  /** Per host width (widthKey): the same answer for every host of that width. */
  fitsByWidth: Record<string, boolean | null>;
  /** Per host width: the sentence behind it (without the note on unreachable hosts). */
  whyByWidth: Record<string, string>;
  /** How many hosts it fits, does not fit, and is unknown on. */
  fitCount: { fits: number; doesNot: number; unknown: number };
  state: FleetGuestState;
  error?: VmErrorInfo;
}

export interface FleetDocument {
  hosts: FleetHost[];
  /** How many hosts have each width (widthKey), reachable or not. */
  widths: Record<string, number>;
  matrix: FleetMatrix;
  guests: FleetGuest[];
  summary: { worst: State; exitCode: number };
  prometheus?: PrometheusSource;
}

/** This host plus each peer, in config order. */
export function fleetHosts(input: Pick<FleetInput, 'local' | 'localName' | 'peers'>): FleetHost[] {
  const hosts: FleetHost[] = input.local
    ? [{ name: input.localName ?? 'localhost', physBits: input.local.host.physBits, reachable: true, source: 'local' }]
    : [];
  for (const p of input.peers) {
    const host: FleetHost = {
      name: p.name,
      physBits: p.physBits,
      reachable: p.reachable,
      source: p.source === 'prometheus' ? 'prometheus' : p.reachable && p.status ? 'live' : 'static',
    };
    if (p.pool !== undefined) host.pool = p.pool;
    if (p.error) host.error = `${p.error.code}: ${p.error.message}`;
    hosts.push(host);
  }
  return hosts;
}

/** Every VM of this host and of each reachable peer that sent its status, with the host it runs on. */
export function fleetVms(
  input: Pick<FleetInput, 'local' | 'localName' | 'peers'>,
): Array<{ host: string; vm: VmStatus }> {
  const local = input.local;
  const out = local ? local.vms.map((vm) => ({ host: input.localName ?? 'localhost', vm })) : [];
  for (const p of input.peers) {
    if (!p.reachable || !p.status) continue;
    for (const vm of p.status.vms) out.push({ host: p.name, vm });
  }
  return out;
}

/** Whether the host limit applies to a guest on this accelerator (the verdict's rule, policy.accelerators). */
export function isBound(accelerator: string, policy: Pick<Policy, 'accelerators'>): boolean {
  return policy.accelerators.includes(accelerator);
}

/** One cell of the matrix: may a guest of this width and layout run on a host of `hostBits`? */
export function fitOnHost(
  guest: { physBits: number; highestAddress: number | null; accelerator: string; bound: boolean },
  host: FleetHost,
): { fits: boolean | null; why: string } {
  const fallback = host.reachable
    ? ''
    : host.source === 'prometheus'
      ? ' (last width Prometheus saw; host unreachable)'
      : ' (configured width; host unreachable)';
  if (!guest.bound) {
    return { fits: true, why: `${guest.accelerator} guest: host widths do not bind it (policy.accelerators)` };
  }
  if (host.physBits === null)
    return { fits: null, why: `width of ${host.name} unknown${host.reachable ? '' : ' (unreachable)'}` };
  const problems: string[] = [];
  if (guest.physBits > host.physBits) problems.push(`guest ${guest.physBits} bits > host ${host.physBits} bits`);
  const limit = 2 ** host.physBits;
  if (guest.highestAddress !== null && guest.highestAddress > limit) {
    problems.push(`layout ends at ${formatBytes(guest.highestAddress)} > 2^${host.physBits} (${formatBytes(limit)})`);
  }
  if (problems.length) return { fits: false, why: problems.join('; ') + fallback };
  const layout =
    guest.highestAddress === null ? 'layout not read' : `layout ends at ${formatBytes(guest.highestAddress)}`;
  return { fits: true, why: `guest ${guest.physBits} bits <= host ${host.physBits} bits, ${layout}${fallback}` };
}

/**
 * Hosts that answer alike for every guest: one width, reachable or not, and the same kind of
 * fallback width. fitOnHost is asked once per guest and class, not once per cell.
 */
interface HostClass {
  sample: FleetHost;
  names: string[];
}

function hostClasses(hosts: FleetHost[]): HostClass[] {
  const byKey = new Map<string, HostClass>();
  for (const h of hosts) {
    const key = `${widthKey(h.physBits)}|${h.reachable}|${h.source === 'prometheus'}`;
    const c = byKey.get(key);
    if (c) c.names.push(h.name);
    else byKey.set(key, { sample: h, names: [h.name] });
  }
  return [...byKey.values()];
}

/** Pure: the fleet document for this host's status and what is known of its peers. */
export function buildFleet(input: FleetInput): FleetDocument {
  const hosts = fleetHosts(input);
  const vms = fleetVms(input);
  const maxCells = input.maxMatrixCells ?? DEFAULT_MAX_MATRIX_CELLS;
  const matrix: FleetMatrix = hosts.length * vms.length <= maxCells ? 'full' : 'by-width';
  const classes = hostClasses(hosts);
  const answers: AnswerCache = new Map();
  const guests = vms.map(({ host, vm }) => fleetGuest(host, vm, classes, input.policy, matrix, answers));
  const widths: Record<string, number> = {};
  for (const h of hosts) widths[widthKey(h.physBits)] = (widths[widthKey(h.physBits)] ?? 0) + 1;
  const states: State[] = guests.map((g) => g.state);
  if (hosts.some((h) => !h.reachable)) states.push('unknown');
  const worst = worstState(states);
  return { hosts, widths, matrix, guests, summary: { worst, exitCode: exitCodeFor(worst) } };
}

/** A guest's answers against every host: the same for every guest of the same width, layout end and accelerator. */
type GuestAnswers = Pick<FleetGuest, 'fits' | 'why' | 'fitsByWidth' | 'whyByWidth' | 'fitCount' | 'state'>;
/**
 * Answers already worked out in one buildFleet, by guest facts: guests alike share them (the same
 * objects, never changed once made), so a fleet of 20,000 guests of a few dozen kinds holds a few
 * dozen sets of sentences, not 20,000.
 */
type AnswerCache = Map<string, GuestAnswers>;

function fleetGuest(
  host: string,
  vm: VmStatus,
  classes: HostClass[],
  policy: Pick<Policy, 'accelerators'>,
  matrix: FleetMatrix,
  answers: AnswerCache,
): FleetGuest {
  const g = vm.guest;
  if (vm.error || !g) {
    const fitCount = { fits: 0, doesNot: 0, unknown: 0 };
    const error = vm.error ?? {
      code: 'GUEST_FACTS_MISSING',
      message: 'the status document has no guest facts for this VM',
    };
    for (const c of classes) fitCount.unknown += c.names.length;
    return {
      host,
      vm: vm.name,
      physBits: null,
      accelerator: vm.accelerator ?? null,
      bound: null,
      highestAddress: null,
      ...(matrix === 'full' ? { fits: {}, why: {} } : {}),
      fitsByWidth: {},
      whyByWidth: {},
      fitCount,
      state: 'unknown',
      error,
    };
  }
  const accelerator = vm.accelerator ?? g.accelerator;
  const facts = {
    physBits: g.physBits,
    highestAddress: g.layout?.highestAddress ?? null,
    accelerator,
    bound: isBound(accelerator, policy),
  };
  const key = `${facts.physBits}|${facts.highestAddress}|${facts.bound}|${accelerator}`;
  const a = answers.get(key) ?? guestAnswers(facts, classes, matrix);
  answers.set(key, a);
  // Written out key by key (fits and why, in a full matrix, before fitsByWidth, as in every fleet
  // document): objects spread together here each got a hidden class of their own in V8, 7 MB of
  // them for 20,000 guests.
  return matrix === 'full'
    ? {
        host,
        vm: vm.name,
        physBits: facts.physBits,
        accelerator,
        bound: facts.bound,
        highestAddress: facts.highestAddress,
        fits: a.fits,
        why: a.why,
        fitsByWidth: a.fitsByWidth,
        whyByWidth: a.whyByWidth,
        fitCount: a.fitCount,
        state: a.state,
      }
    : {
        host,
        vm: vm.name,
        physBits: facts.physBits,
        accelerator,
        bound: facts.bound,
        highestAddress: facts.highestAddress,
        fitsByWidth: a.fitsByWidth,
        whyByWidth: a.whyByWidth,
        fitCount: a.fitCount,
        state: a.state,
      };
}

function guestAnswers(
  facts: { physBits: number; highestAddress: number | null; accelerator: string; bound: boolean },
  classes: HostClass[],
  matrix: FleetMatrix,
): GuestAnswers {
  const fitCount = { fits: 0, doesNot: 0, unknown: 0 };
  const fits: Record<string, boolean | null> = {};
  const why: Record<string, string> = {};
  const fitsByWidth: Record<string, boolean | null> = {};
  const whyByWidth: Record<string, string> = {};
  let state: FleetGuestState = 'ok';
  for (const c of classes) {
    const h = c.sample;
    const cell = fitOnHost(facts, h);
    const key = widthKey(h.physBits);
    if (!(key in fitsByWidth) || h.reachable) {
      fitsByWidth[key] = cell.fits;
      whyByWidth[key] =
        h.physBits === null && cell.fits === null
          ? 'host width unknown'
          : h.reachable
            ? cell.why
            : fitOnHost(facts, { ...h, reachable: true }).why;
    }
    if (matrix === 'full') {
      for (const name of c.names) {
        fits[name] = cell.fits;
        why[name] = cell.why;
      }
    }
    if (cell.fits === true) fitCount.fits += c.names.length;
    else if (cell.fits === false) fitCount.doesNot += c.names.length;
    else fitCount.unknown += c.names.length;
    if (cell.fits === false && h.reachable) state = 'critical';
    else if ((cell.fits === null || !h.reachable) && state === 'ok') state = 'unknown';
  }
  return { ...(matrix === 'full' ? { fits, why } : {}), fitsByWidth, whyByWidth, fitCount, state };
}

/**
 * The CLI's exit code for a fleet document: 2 when a guest does not fit a reachable host,
 * else 3 when a host is unreachable or a guest unknown, else 0.
 */
export function fleetExitCode(doc: Pick<FleetDocument, 'hosts' | 'guests'>): number {
  const states: State[] = doc.guests.map((g) => g.state);
  if (doc.hosts.some((h) => !h.reachable)) states.push('unknown');
  return exitCodeFor(worstState(states));
}
