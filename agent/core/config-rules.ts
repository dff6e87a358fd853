/**
 * The parts of the config's schema that are code, not bounds: one copy each, used by the zod schema
 * (config-schema.ts) and by the compiled check every start runs (config-spec.ts), which names them.
 * Nothing here loads zod.
 */
import { splitHostPort } from './host-port';

/** A listen address: "host:port" or "[v6]:port". */
export function isHostPort(text: string): boolean {
  return splitHostPort(text) !== null;
}

/** An optional key left out or set to null: either reads as undefined. */
export function absentAsUndefined<T>(value: T | null | undefined): T | undefined {
  return value ?? undefined;
}

/** fleet.job: one job or several, as a list. */
export function asList(value: string | string[]): string[] {
  return typeof value === 'string' ? [value] : value;
}

/** A problem that involves more than one key, at the key to change. */
export interface CrossKeyProblem {
  path: Array<string | number>;
  message: string;
}

/** What the checks across keys read of a config that passed every per-key check. */
export interface CrossKeyView {
  api: { listen?: string; tokenFile?: string; maxConnections: number; maxConnectionsPerAddress: number };
  peers: Array<{ name: string; url?: string; caFile?: string }>;
  alerts: { webhooks: Array<{ url: string; secret?: string; secretFile?: string }> };
}

/** The rules between keys: api.listen needs a token, per-address limits fit the total, and so on. */
export function crossKeyProblems(cfg: CrossKeyView): CrossKeyProblem[] {
  const problems: CrossKeyProblem[] = [];
  if (cfg.api.listen && !cfg.api.tokenFile)
    problems.push({ path: ['api', 'tokenFile'], message: 'required when api.listen is set' });
  if (cfg.api.maxConnectionsPerAddress > cfg.api.maxConnections)
    problems.push({
      path: ['api', 'maxConnectionsPerAddress'],
      message: `must not exceed api.maxConnections (${cfg.api.maxConnections})`,
    });
  cfg.peers.forEach((peer, i) => {
    if (peer.url !== undefined && peer.caFile !== undefined && !peer.url.startsWith('https://'))
      problems.push({ path: ['peers', i, 'caFile'], message: 'only for an https:// url' });
  });
  cfg.alerts.webhooks.forEach((hook, i) => {
    if (hook.secret !== undefined && hook.secretFile !== undefined)
      problems.push({ path: ['alerts', 'webhooks', i, 'secretFile'], message: 'give secret or secretFile, not both' });
  });
  return problems;
}
