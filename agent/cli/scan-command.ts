/**
 * `physbitsctl scan`: a one-shot check without the daemon. Connects straight to each socket named
 * (else the config's discovery globs), a bounded number at once, each held only for its read.
 */
import { existsSync } from 'node:fs';
import { DEFAULT_CONFIG_PATH, loadConfig, type Config } from '../core/config';
import { UsageError } from '../core/errors';
import { printable } from '../core/printable';
import { hostReadOptions, readHost } from '../facts/host-facts';
import { mapLimit } from '../core/async-limits';
import { renderStatus } from './render-status';
import { expandSocketGlobs, socketPatterns, type FoundSocket, type SocketListing } from '../core/socket-globs';
import { judgeHost } from '../judge/host-limit';
import { buildStatusDocument } from '../judge/status-document';
import type { HostFacts, PeerFacts, StatusDocument, VmStatus } from '../core/types';
import { errorInfo } from '../core/errors';
import { nameFromSocket, vmId } from '../core/vm-name';
import { visitVm } from '../facts/vm-visit';
import { judgeVm } from '../judge/vm-status';
import { parse } from './args';
import type { CliIo } from './cli-io';

/** This host's facts: its readings (agent/facts/host-facts.ts) judged with the config's host.physBits. */
export function hostFactsFor(config: Config): HostFacts {
  return judgeHost(readHost(hostReadOptions(config)), config.host.physBits);
}

/** Static peers' widths, for verdicts made without the daemon (live peers are the daemon's business). */
export function staticPeerFacts(config: Config): PeerFacts[] {
  return config.peers.map((p) => ({
    name: p.name,
    physBits: p.physBits ?? null,
    reachable: 'url' in p ? false : true,
  }));
}

/** Glob characters fast-glob acts on; a --socket holding one is a pattern, not a path. */
const GLOB_CHARS = /[*?[\]{}!]/;

/**
 * The paths `--socket` names: plain paths as given (a missing one becomes an error row), globs
 * expanded to the sockets they match; a glob that matches none is a usage error.
 */
export async function socketArgs(args: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const arg of args) {
    if (!GLOB_CHARS.test(arg)) {
      out.push(arg);
      continue;
    }
    const found = listed(await expandSocketGlobs([{ glob: arg, mode: 'poll' }]));
    if (found.length === 0) throw new UsageError(`scan: --socket '${printable(arg)}' matches no socket`);
    out.push(...found.map((f) => f.path));
  }
  return [...new Set(out)];
}

/** The sockets listed; each listing error is said on stderr (a socket it hid is missing from the table). */
function listed(listing: SocketListing): FoundSocket[] {
  for (const e of listing.errors) process.stderr.write(`physbitsctl: scan: cannot list ${printable(e)}\n`);
  return listing.sockets;
}

export async function scan(config: Config, sockets: string[]): Promise<StatusDocument> {
  const host = hostFactsFor(config);
  const paths = sockets.length
    ? await socketArgs(sockets)
    : listed(await expandSocketGlobs(socketPatterns(config.discovery))).map((s) => s.path);
  const peers = staticPeerFacts(config).filter((p) => p.reachable);
  const vms = await mapLimit(paths, config.qmp.concurrency, (socket) => scanOne(socket, config, host, peers));
  return buildStatusDocument(host, vms);
}

/** One VM visited and judged; never rejects: a failure becomes the VM's `error`. */
async function scanOne(socket: string, config: Config, host: HostFacts, peers: PeerFacts[]): Promise<VmStatus> {
  try {
    const guest = await visitVm(socket, { qmp: config.qmp });
    const checkedAt = new Date().toISOString();
    return judgeVm({ socket, mode: 'scan', guest, host, peers, policy: config.policy, checkedAt });
  } catch (err) {
    return { socket, id: vmId(socket), name: nameFromSocket(socket), mode: 'scan', error: errorInfo(err) };
  }
}

export async function scanCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parse('scan', args, {
    json: { type: 'boolean' },
    wide: { type: 'boolean' },
    config: { type: 'string' },
    socket: { type: 'string', multiple: true },
  });
  const config = loadConfig(values.config);
  // Sockets from the config while physbitsd runs: it holds them (QEMU serves one client), so a scan
  // would wait on each and call it unknown. Its own view answers instead, and says whose it is.
  const daemonView = values.socket?.length ? null : await runningDaemonStatus(config);
  if (daemonView)
    io.stderr(
      `physbitsctl: scan: physbitsd is running (${config.api.socket}) and holds the QMP sockets: ` +
        `this is its view, as \`physbitsctl status\` shows it`,
    );
  const doc = daemonView ?? (await scan(config, values.socket ?? []));
  if (values.json) io.stdout(JSON.stringify(doc, null, 2));
  else io.stdout(renderStatus(doc, { width: values.wide ? undefined : io.columns }));
  if (doc.vms.length === 0) io.stderr(`physbitsctl: scan: ${whereSearched(config, values.config)}`);
  return doc.summary!.exitCode;
}

/** Where a scan that found nothing looked: the config file and its patterns. */
export function whereSearched(config: Config, configArg: string | undefined): string {
  const file = configArg ?? DEFAULT_CONFIG_PATH;
  const source = configArg || existsSync(file) ? file : `${file} (absent: every default)`;
  const patterns = socketPatterns(config.discovery).map((p) => p.glob);
  if (patterns.length === 0)
    return `no VMs found: discovery.sockets in ${source} is empty; name sockets with --socket PATH or set discovery.sockets`;
  return `no VMs found: no socket matches discovery.sockets in ${source}: ${patterns.map((p) => printable(p)).join(', ')}`;
}

/** The running daemon's status document when its API answers at once on api.socket; else null. */
async function runningDaemonStatus(config: Config): Promise<StatusDocument | null> {
  const { apiRequest } = await import('../api/api-client');
  try {
    return await apiRequest<StatusDocument>({ socketPath: config.api.socket }, 'GET', '/v1/status', undefined, 2000);
  } catch {
    return null;
  }
}
