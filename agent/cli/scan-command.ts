/**
 * `physbitsctl scan`: a one-shot check without the daemon. Connects straight to each socket named
 * (else the config's discovery globs), a bounded number at once, each held only for its read.
 */
import { loadConfig, type Config } from '../core/config';
import { hostFactsFromConfig } from '../facts/host-facts';
import { mapLimit } from '../core/async-limits';
import { renderStatus } from './render-status';
import { expandSocketGlobs, socketPatterns } from '../core/socket-globs';
import { buildStatusDocument } from '../judge/status-document';
import type { PeerFacts, StatusDocument } from '../core/types';
import { probeVm } from '../facts/vm-probe';
import { parse } from './args';
import type { CliIo } from './cli-io';

/** This host's facts as the config reads them (agent/facts/host-facts.ts). */
export { hostFactsFromConfig as hostFactsFor };

/** Static peers' widths, for verdicts made without the daemon (live peers are the daemon's business). */
export function staticPeerFacts(config: Config): PeerFacts[] {
  return config.peers.map((p) => ({
    name: p.name,
    physBits: p.physBits ?? null,
    reachable: 'url' in p ? false : true,
  }));
}

export async function scan(config: Config, sockets: string[]): Promise<StatusDocument> {
  const host = hostFactsFromConfig(config);
  const paths = sockets.length
    ? [...new Set(sockets)]
    : (await expandSocketGlobs(socketPatterns(config.discovery))).map((s) => s.path);
  const peers = staticPeerFacts(config).filter((p) => p.reachable);
  const vms = await mapLimit(paths, config.qmp.concurrency, (socket) =>
    probeVm(socket, { config, host, peers, mode: 'scan' }),
  );
  return buildStatusDocument(host, vms);
}

export async function scanCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parse('scan', args, {
    json: { type: 'boolean' },
    config: { type: 'string' },
    socket: { type: 'string', multiple: true },
  });
  const config = loadConfig(values.config);
  const doc = await scan(config, values.socket ?? []);
  io.stdout(values.json ? JSON.stringify(doc, null, 2) : renderStatus(doc));
  return doc.summary!.exitCode;
}
