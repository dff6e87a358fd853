/**
 * The configuration: read, checked, every default filled in. Loading never throws anything but
 * ConfigError, whose message names the offending key (exit 78). The schema is written in zod
 * (config-schema.ts) and compiled at build time (config-spec.ts): a start checks its config with the
 * compiled form, and loads zod only to say what is wrong with one the compiled check declines.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { compiledParse, compiledSpec } from './config-spec';
import { ConfigError } from './errors';

export { ConfigError };

export const DEFAULT_CONFIG_PATH = '/etc/physbits/config.json';

export type Config = import('./config-schema').Config;
export type PeerConfig = Config['peers'][number];

/** The CA file that verifies a live peer's certificate: its own caFile, else tls.caFile for an https url. */
export function peerCaFile(peer: PeerConfig, config: Pick<Config, 'tls'>): string | undefined {
  if (!('url' in peer) || !peer.url.startsWith('https://')) return undefined;
  return peer.caFile ?? config.tls.caFile;
}

/** The configured peers with each https peer's effective caFile filled in. */
export function peersWithCaFiles(config: Pick<Config, 'peers' | 'tls'>): PeerConfig[] {
  return config.peers.map((p) => {
    const caFile = peerCaFile(p, config);
    return caFile && 'url' in p && p.caFile !== caFile ? { ...p, caFile } : p;
  });
}

/** Drops every "$comment" key, at any depth: config files may explain themselves. */
export function stripComments(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripComments);
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.entries(v)
        .filter(([k]) => k !== '$comment')
        .map(([k, x]) => [k, stripComments(x)]),
    );
  }
  return v;
}

const spec = compiledSpec();

/** The zod schema and its messages, loaded on first need. */
function schema(): typeof import('./config-schema') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only for a config the compiled check declines
  return require('./config-schema') as typeof import('./config-schema');
}

/** The value as the schema reads it, or every problem of it: the compiled check, else the zod schema. */
function read(raw: unknown): { config: Config; problems?: undefined } | { problems: string[] } {
  const value = stripComments(raw ?? {});
  const config = spec ? (compiledParse(spec, value) as Config | undefined) : undefined;
  return config ? { config } : schema().schemaParse(value);
}

/** Every problem of a parsed JSON value, one `key: what` line each; empty when it is a valid config. */
export function configProblems(raw: unknown): string[] {
  return read(raw).problems ?? [];
}

/** Validates a parsed JSON value; throws ConfigError naming the first bad key. */
export function parseConfig(raw: unknown, source = 'config'): Config {
  const result = read(raw);
  if (result.problems) throw new ConfigError(`${source}: ${result.problems[0]}`);
  return result.config;
}

/**
 * The config file's text: null when the default file is missing (every default); a file that
 * cannot be read is a ConfigError naming it.
 */
export function readConfigText(path: string | undefined): { file: string; text: string | null } {
  const file = path ?? DEFAULT_CONFIG_PATH;
  try {
    return { file, text: readFileSync(file, 'utf8') };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!path && code === 'ENOENT') return { file, text: null };
    throw new ConfigError(`${file}: cannot read: ${code ?? String(err)}`);
  }
}

/** Reads and validates a config file. A missing default file means all defaults. */
export function loadConfig(path: string | undefined): Config {
  const { file, text } = readConfigText(path);
  if (text === null) return parseConfig({}, file);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON: ${(err as Error).message}`);
  }
  return parseConfig(raw, file);
}

/** This host's name in documents and alert labels. */
export function hostName(cfg: Config): string {
  return cfg.host.name ?? hostname();
}
