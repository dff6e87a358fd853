/**
 * The decision behind /etc/libvirt/hooks/qemu. libvirt runs the hook as
 * `qemu DOMAIN OPERATION SUB-OPERATION EXTRA` with the domain XML on stdin, and a non-zero exit of
 * `prepare begin` (before a start) or `migrate begin` (on the destination of an incoming
 * migration) stops the operation, showing the hook's stderr to the user
 * (libvirt src/qemu/qemu_process.c qemuProcessPrepareHost, src/qemu/qemu_migration.c).
 *
 * Refused: a guest wider than this host under an enforced accelerator, or whose memory layout
 * reaches past the host's limit (the verdict's critical reasons). A guest wider than the limit is
 * judged with the guest-phys-bits its QEMU will give it (agent/judge/guest-phys-bits.ts: the
 * <emulator>'s `--version` and this host's kernel), as the verdict judges it once it runs. `started`, `stopped`, `release`
 * and `reconnect` are passed on to the running daemon. The hook prints nothing on stdout: for
 * `migrate` and `restore`, libvirt would take stdout as a replacement domain XML.
 */
import { readFileSync } from 'node:fs';
import { judgeHost, qemuHostPhysBits } from '../judge/host-limit';
import { DEFAULT_CONFIG_PATH, stripComments, type Config } from '../core/config';
import { EXIT } from '../core/exit-codes';
import type { GuestFacts, HostFacts, Reason } from '../core/types';
import { formatBytes } from '../core/format';
import { parseDomainXml, resolvePhysBits, type DomainFacts } from './domain-xml';
import type { GuestIdentity, SourceWidth } from '../peers/source-width';
import {
  bootedElsewhere,
  guestPhysBitsClause,
  judgeBeforeStart,
  predictGuestPhysBits,
  type GuestPhysBitsPrediction,
  type QemuBinaryVersion,
} from '../judge/guest-phys-bits';

export interface LibvirtEvent {
  domain: string;
  operation: string;
  subOperation: string;
}

export interface LibvirtHookDeps {
  config: Config;
  /** This host's facts, or how to read them; default: agent/facts/host-facts.ts with the config's roots. */
  hostFacts?: HostFacts | (() => HostFacts | Promise<HostFacts>);
  /**
   * The width a host-following guest runs with at its source (agent/peers/source-width.ts); default:
   * the config's live peers[], fleet.prometheus and peers' limits.
   */
  sourceWidth?: (guest: GuestIdentity) => Promise<SourceWidth>;
  /** How to tell the daemon; default: POST /v1/libvirt-events on config api.socket. */
  notify?: (event: LibvirtEvent) => Promise<void>;
  /** One line at a time, without a trailing newline. */
  stderr: (line: string) => void;
}

/** Operations checked before QEMU starts, with the sub-operation libvirt passes. */
const CHECKED: Readonly<Record<string, string>> = { prepare: 'begin', migrate: 'begin' };
/** Operations the daemon hears about. */
const NOTIFIED: ReadonlySet<string> = new Set(['started', 'stopped', 'release', 'reconnect']);

/** 78: refused because the config could not be loaded (libvirt only asks for non-zero). */
export const HOOK_EXIT = { ALLOW: 0, REFUSE: 1, UNKNOWN: EXIT.UNKNOWN, CONFIG: EXIT.CONFIG } as const;

/**
 * libvirtHook.failClosed's default: refuse a start or incoming migration physbits cannot judge. A
 * guest that is let through too wide can crash or lose memory once it touches addresses the host
 * cannot back, which is what physbits exists to prevent; a refusal costs a start and says on one
 * line what to fix. The guard's guard.onUnknown defaults to refuse for the same reason.
 */
export const FAIL_CLOSED_DEFAULT = true;

async function defaultHostFacts(config: Config): Promise<HostFacts> {
  const { hostReadOptions, readHost } = await import('../facts/host-facts');
  return judgeHost(readHost({ ...hostReadOptions(config), kernelRelease: true }), config.host.physBits);
}

/** `<emulator> --version`, bounded (agent/facts/qemu-binary.ts). */
async function emulatorVersion(binary: string): Promise<QemuBinaryVersion> {
  const { readQemuVersion } = await import('../facts/qemu-binary');
  return readQemuVersion(binary);
}

async function defaultSourceWidth(config: Config, guest: GuestIdentity): Promise<SourceWidth> {
  const { lookupSourceWidth } = await import('../peers/source-width');
  const { sourceWidthDepsFromConfig } = await import('../peers/source-width-deps');
  return lookupSourceWidth(guest, sourceWidthDepsFromConfig(config));
}

async function defaultNotify(config: Config, event: LibvirtEvent): Promise<void> {
  const { apiRequest } = await import('../api/api-client');
  await apiRequest(
    { socketPath: config.api.socket },
    'POST',
    '/v1/libvirt-events',
    event,
    config.libvirtHook.notifyTimeoutMs,
  );
}

/** The guest as the verdict sees it, before it exists. */
export function guestFromDomain(d: DomainFacts, host: HostFacts): GuestFacts {
  const sev = d.launchSecurity !== null && d.launchSecurity.startsWith('sev');
  return {
    name: d.name,
    qemuVersion: '',
    accelerator: d.accelerator,
    physBits: resolvePhysBits(d, qemuHostPhysBits(host)),
    hostPhysBits: d.hostPhysBits,
    hostPhysBitsLimit: d.hostPhysBitsLimit,
    guestPhysBits: d.guestPhysBits,
    cpuModel: d.cpuModel,
    memoryEncryption: {
      active: sev,
      type: sev ? d.launchSecurity : null,
      reducedPhysBits: sev ? d.reducedPhysBits : null,
    },
    runState: null,
    layout: d.layout,
  };
}

/** What to change in the domain XML so that `reason` goes away. */
export function libvirtFix(reason: Reason, d: DomainFacts, host: HostFacts): string {
  const bits = host.physBits;
  if (reason.code === 'LAYOUT_BEYOND_HOST_LIMIT') {
    return `lower <maxMemory> (or <pcihole64>) so the layout ends below ${formatBytes(2 ** bits)}`;
  }
  if (d.physBits === null) {
    return (
      `use <cpu mode='custom'> with a named model and <maxphysaddr mode='emulate' bits='${bits}'/>, ` +
      `or <maxphysaddr mode='passthrough' limit='${bits}'/> where libvirt supports limit=`
    );
  }
  return `set <maxphysaddr mode='emulate' bits='${bits}'/> in <cpu>`;
}

/** A host-following guest's width as read at its source: the width and a phrase saying where. */
export interface WidthAtSource {
  physBits: number;
  /** e.g. "its width on hvA (live peer hvA's status)". */
  where: string;
}

/** The one stderr line of a refusal: domain, bits, reason code, fix. */
export function refusalLine(
  operation: string,
  d: DomainFacts,
  host: HostFacts,
  guest: GuestFacts,
  reason: Reason,
  atSource: WidthAtSource | null = null,
  guestPhysBits: GuestPhysBitsPrediction | null = null,
): string {
  const gpb = reason.code === 'GUEST_WIDER_THAN_HOST' && guestPhysBits ? `; ${guestPhysBitsClause(guestPhysBits)}` : '';
  const what = operation === 'migrate' ? `incoming migration of domain '${d.name}'` : `start of domain '${d.name}'`;
  const source = host.physBitsSource === 'config' ? ' (host.physBits in the config)' : '';
  if (reason.code === 'GUEST_WIDER_THAN_HOST' && atSource !== null) {
    return (
      `physbits refused the ${what}: ${reason.code}: guest phys-bits ${guest.physBits} (${atSource.where}) is wider ` +
      `than this host's ${host.physBits} bits${source} under ${guest.accelerator}${gpb}; its width follows the host it ` +
      `booted on and stays ${guest.physBits} until it is shut down; fix: migrate it to a host of at least ` +
      `${guest.physBits} bits, or shut it down and start it here; to keep it movable, ${libvirtFix(reason, d, host)}`
    );
  }
  const facts =
    reason.code === 'LAYOUT_BEYOND_HOST_LIMIT'
      ? `its memory layout reaches past this host's ${host.physBits}-bit limit${source}`
      : `guest phys-bits ${guest.physBits} is wider than this host's ${host.physBits} bits${source} under ${guest.accelerator}${gpb}`;
  return `physbits refused the ${what}: ${reason.code}: ${facts}; fix: ${libvirtFix(reason, d, host)}`;
}

/** How the domain asks for the host's width, for messages. */
function followsWhat(d: DomainFacts): string {
  if (d.cpuMode === 'host-passthrough' || d.cpuMode === 'maximum') return `<cpu mode='${d.cpuMode}'>`;
  return "<maxphysaddr mode='passthrough'>";
}

/**
 * A host-following guest (its width is null in the XML: host-passthrough, maximum, maxphysaddr
 * passthrough under KVM) keeps the width it booted with when it migrates (docs/guard.md "host-phys-bits=on guests after
 * a migration"). `migrate begin` runs only on the destination of an incoming migration; there
 * the source's width is judged, and when nothing knows it guard.unknownPeer decides. `prepare
 * begin` runs before every start, incoming migrations included, with nothing that tells them apart
 * (libvirt passes "-" as EXTRA to both), so there the guest counts as arriving only when a peer
 * reports it running elsewhere; otherwise it boots with this host's width.
 */
async function widthAtSource(
  operation: string,
  d: DomainFacts,
  deps: LibvirtHookDeps,
): Promise<WidthAtSource | { refuse: string } | null> {
  if (d.physBits !== null || !deps.config.policy.accelerators.includes(d.accelerator)) return null;
  const ask = deps.sourceWidth ?? ((g: GuestIdentity) => defaultSourceWidth(deps.config, g));
  let found: SourceWidth;
  try {
    found = await ask({ name: d.name, uuid: d.uuid });
  } catch (err) {
    found = { kind: 'unknown', why: `the source's width could not be read: ${(err as Error)?.message ?? String(err)}` };
  }
  if (found.kind === 'guest' || found.kind === 'host') {
    if (found.kind === 'host' && operation !== 'migrate') return null;
    const physBits = d.hostPhysBitsLimit > 0 ? Math.min(found.physBits, d.hostPhysBitsLimit) : found.physBits;
    const where =
      found.kind === 'guest'
        ? `its width on ${found.host}, from ${found.source}`
        : `the limit of its source host ${found.host}, from ${found.source}`;
    return { physBits, where };
  }
  if (operation !== 'migrate') return null;
  const head = `domain '${d.name}' follows its host's width (${followsWhat(d)}) and ${found.why}`;
  if (deps.config.guard.unknownPeer === 'refuse') {
    return {
      refuse:
        `physbits refused the incoming migration of domain '${d.name}': SOURCE_WIDTH_UNKNOWN: ${head}; ` +
        'guard.unknownPeer is refuse; fix: give the source host a live agent in peers[] (url, tokenFile) or set ' +
        'fleet.prometheus, so the width can be read, or set guard.unknownPeer to allow',
    };
  }
  deps.stderr(
    `physbits: SOURCE_WIDTH_UNKNOWN: ${head}; allowing because guard.unknownPeer is allow (judged with this host's width)`,
  );
  return null;
}

async function notifyDaemon(deps: LibvirtHookDeps, event: LibvirtEvent): Promise<void> {
  const timeoutMs = deps.config.libvirtHook.notifyTimeoutMs;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  try {
    const send = deps.notify ? deps.notify(event) : defaultNotify(deps.config, event);
    const outcome = await Promise.race([send.then(() => 'sent' as const), timeout]);
    if (outcome === 'timeout')
      deps.stderr(
        `physbits: daemon did not take the '${event.operation}' event of '${event.domain}' within ${timeoutMs} ms`,
      );
  } catch (err) {
    const cause = (err as { cause?: NodeJS.ErrnoException }).cause;
    // No daemon running is normal: the hook works without one.
    if (cause?.code === 'ENOENT' || cause?.code === 'ECONNREFUSED') return;
    deps.stderr(
      `physbits: could not tell the daemon about '${event.domain}' ${event.operation}: ${(err as Error).message}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

/** physbits cannot decide: refuse and say why, or allow when libvirtHook.failClosed is false. */
function undecided(deps: LibvirtHookDeps, domain: string, err: unknown): number {
  const code = (err as { code?: unknown }).code;
  const why = `${typeof code === 'string' ? `${code}: ` : ''}${err instanceof Error ? err.message : String(err)}`;
  if (deps.config.libvirtHook.failClosed) {
    deps.stderr(`physbits cannot check domain '${domain}' (${why}); refusing because libvirtHook.failClosed is on`);
    return HOOK_EXIT.REFUSE;
  }
  deps.stderr(`physbits cannot check domain '${domain}' (${why}); allowing because libvirtHook.failClosed is false`);
  return HOOK_EXIT.ALLOW;
}

async function check(operation: string, stdin: string, deps: LibvirtHookDeps, domain: string): Promise<number> {
  let host: HostFacts;
  let d: DomainFacts;
  try {
    const source = deps.hostFacts ?? (() => defaultHostFacts(deps.config));
    host = typeof source === 'function' ? await source() : source;
    d = parseDomainXml(stdin, { hostVendor: host.vendor });
  } catch (err) {
    return undecided(deps, domain, err);
  }
  const guest = guestFromDomain(d, host);
  const atSource = await widthAtSource(operation, d, deps);
  if (atSource !== null && 'refuse' in atSource) {
    deps.stderr(atSource.refuse);
    return HOOK_EXIT.UNKNOWN;
  }
  if (atSource !== null) guest.physBits = atSource.physBits;
  const { blocking, prediction: gpb } = await judgeBeforeStart(host, guest, deps.config.policy, () =>
    predictForDomain(operation, d, host, guest, atSource),
  );
  if (blocking.length === 0) return HOOK_EXIT.ALLOW;
  deps.stderr(refusalLine(operation, d, host, guest, blocking[0], atSource, gpb));
  return HOOK_EXIT.REFUSE;
}

/**
 * The guest-phys-bits QEMU will give the domain here. An incoming migration (or a guest a peer
 * reports running elsewhere) booted on its source: its firmware placed its memory by that host's
 * guest-phys-bits, which is not known here, so only a guest-phys-bits given on -cpu counts.
 */
async function predictForDomain(
  operation: string,
  d: DomainFacts,
  host: HostFacts,
  guest: GuestFacts,
  atSource: WidthAtSource | null,
): Promise<GuestPhysBitsPrediction> {
  if (guest.guestPhysBits === null && (atSource !== null || operation === 'migrate')) return bootedElsewhere(null);
  const needsQemu = guest.guestPhysBits === null && d.accelerator === 'kvm';
  let qemu: QemuBinaryVersion = { unknown: 'the domain names no <emulator>' };
  if (needsQemu && d.emulator !== null) qemu = await emulatorVersion(d.emulator);
  return predictGuestPhysBits({
    qemu,
    accelerator: d.accelerator,
    machineType: d.machineType,
    explicit: guest.guestPhysBits,
    physBits: guest.physBits,
    hostPhysBits: d.hostPhysBits,
    hostPhysBitsLimit: d.hostPhysBitsLimit,
    host,
  });
}

/**
 * Runs the hook for libvirt's arguments `DOMAIN OPERATION SUB-OPERATION EXTRA` and the domain XML
 * read from stdin; resolves to the exit code (0 allow, 1 refuse).
 */
export async function runLibvirtHook(args: string[], stdin: string, deps: LibvirtHookDeps): Promise<number> {
  const [domain = '', operation = '', subOperation = ''] = args;
  if (!domain || !operation) {
    return undecided(
      deps,
      domain || '(none)',
      new Error(`expected DOMAIN OPERATION SUB-OPERATION EXTRA, got ${args.length} arguments`),
    );
  }
  if (CHECKED[operation] === subOperation) return check(operation, stdin, deps, domain);
  if (NOTIFIED.has(operation)) await notifyDaemon(deps, { domain, operation, subOperation });
  return HOOK_EXIT.ALLOW;
}

/**
 * libvirtHook.failClosed as a config file that does not load as a whole still says it: the value
 * when the file is JSON and the key a boolean, else FAIL_CLOSED_DEFAULT.
 */
export function failClosedOf(configText: string | null): boolean {
  if (configText === null) return FAIL_CLOSED_DEFAULT;
  let raw: unknown;
  try {
    raw = stripComments(JSON.parse(configText));
  } catch {
    return FAIL_CLOSED_DEFAULT;
  }
  const hook = (raw as { libvirtHook?: unknown } | null)?.libvirtHook;
  const value = hook !== null && typeof hook === 'object' ? (hook as { failClosed?: unknown }).failClosed : undefined;
  return typeof value === 'boolean' ? value : FAIL_CLOSED_DEFAULT;
}

export interface HookEntryDeps extends Omit<LibvirtHookDeps, 'config'> {
  /** --config; undefined: the default path. */
  configPath?: string;
  /** Loads and validates the config (agent/core/config.ts loadConfig); throws when it cannot. */
  loadConfig(path: string | undefined): Config;
  /** The file's text, or null when it cannot be read. */
  readText(path: string): string | null;
}

/** HookEntryDeps.readText from the file system. */
export function readTextOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/**
 * The hook as libvirt runs it: load the config, then runLibvirtHook. A config that cannot be loaded
 * is one line on stderr naming the problem; for `prepare begin` and `migrate begin` it refuses
 * (HOOK_EXIT.CONFIG) unless the file itself sets libvirtHook.failClosed to false; every other
 * operation is allowed.
 */
export async function runHookEntry(args: string[], stdin: string, deps: HookEntryDeps): Promise<number> {
  let config: Config;
  try {
    config = deps.loadConfig(deps.configPath);
  } catch (err) {
    const [domain = '(none)', operation = '', subOperation = ''] = args;
    const problem = `physbits: hook: config: ${err instanceof Error ? err.message : String(err)}`;
    if (CHECKED[operation] !== subOperation) {
      deps.stderr(`${problem}; allowing '${operation}' of domain '${domain}'`);
      return HOOK_EXIT.ALLOW;
    }
    const what = operation === 'migrate' ? 'incoming migration' : 'start';
    if (failClosedOf(deps.readText(deps.configPath ?? DEFAULT_CONFIG_PATH))) {
      deps.stderr(`${problem}; refusing the ${what} of domain '${domain}' because libvirtHook.failClosed is on`);
      return HOOK_EXIT.CONFIG;
    }
    deps.stderr(`${problem}; allowing the ${what} of domain '${domain}' because libvirtHook.failClosed is false`);
    return HOOK_EXIT.ALLOW;
  }
  return runLibvirtHook(args, stdin, { ...deps, config });
}
