/**
 * Files that hold secrets: webhook secrets, peers' tokens, `api.tokenFile` and `fleet.tokenFile` must
 * be root's alone (a config error otherwise); the config file holding an inline webhook secret should
 * not be readable by everyone (a warning).
 */
import { readFileSync, statSync } from 'node:fs';
import { peerCaFile, type Config } from './config';
import { ConfigError } from './errors';

/** The files of this config that hold secrets, each with the key that names it. */
export function secretFiles(config: Config, configPath: string | undefined): Array<{ key: string; path: string }> {
  const out: Array<{ key: string; path: string }> = [];
  if (configPath && config.alerts.webhooks.some((w) => w.secret))
    out.push({ key: 'alerts.webhooks[].secret (the config file)', path: configPath });
  config.alerts.webhooks.forEach((w, i) => {
    if (w.secretFile) out.push({ key: `alerts.webhooks[${i}].secretFile`, path: w.secretFile });
  });
  return out;
}

/** One warning line per secret file that others may read. */
export function worldReadableWarnings(
  files: Array<{ key: string; path: string }>,
  stat: (p: string) => { mode: number } = statSync,
): string[] {
  const warnings: string[] = [];
  for (const f of files) {
    let mode: number;
    try {
      mode = stat(f.path).mode;
    } catch {
      continue;
    }
    if (mode & 0o004)
      warnings.push(
        `${f.path} (${f.key}) is readable by every user (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); chmod o-r it`,
      );
  }
  return warnings;
}

/** What resolveWebhookSecrets needs of the file system (injected by tests). */
export interface SecretFileAccess {
  stat(path: string): { uid: number; mode: number; isFile(): boolean };
  read(path: string): string;
}

const realAccess: SecretFileAccess = { stat: (p) => statSync(p), read: (p) => readFileSync(p, 'utf8') };

/**
 * The config with each webhook's `secretFile` read into its `secret`. The file must be a regular file
 * owned by root and not readable or writable by group or others; anything else is a ConfigError
 * naming the file (the daemon exits 78, or refuses a reload).
 */
export function resolveWebhookSecrets(config: Config, fs: SecretFileAccess = realAccess): Config {
  if (!config.alerts.webhooks.some((w) => w.secretFile)) return config;
  const webhooks = config.alerts.webhooks.map((hook, i) => {
    if (!hook.secretFile) return hook;
    return { url: hook.url, secret: readSecretFile(`alerts.webhooks[${i}].secretFile`, hook.secretFile, fs) };
  });
  return { ...config, alerts: { ...config.alerts, webhooks } };
}

/**
 * A file that holds a secret, checked and read: a regular file owned by root, not readable or
 * writable by group or others, not empty. Anything else is a ConfigError naming the key and the file.
 */
export function readSecretFile(key: string, path: string, fs: SecretFileAccess = realAccess): string {
  let st;
  try {
    st = fs.stat(path);
  } catch (err) {
    throw new ConfigError(`${key}: ${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
  if (!st.isFile()) throw new ConfigError(`${key}: ${path}: not a regular file`);
  if (st.uid !== 0) throw new ConfigError(`${key}: ${path}: must be owned by root (owner uid ${st.uid})`);
  if (st.mode & 0o077)
    throw new ConfigError(`${key}: ${path}: must not be open to group or others (mode ${mode}); chmod 0600 it`);
  let secret: string;
  try {
    secret = fs.read(path).trim();
  } catch (err) {
    throw new ConfigError(`${key}: ${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (!secret) throw new ConfigError(`${key}: ${path}: is empty`);
  return secret;
}

/**
 * The files of the live peers, checked when the daemon starts and on every reload: each tokenFile as
 * a secret (readSecretFile), each https peer's CA file (its own or tls.caFile) readable and holding a
 * PEM certificate. The token is read again for every request, so a new token needs no reload.
 */
export function checkPeerFiles(config: Config, fs: SecretFileAccess = realAccess): void {
  config.peers.forEach((peer, i) => {
    if (!('url' in peer)) return;
    readSecretFile(`peers[${i}].tokenFile`, peer.tokenFile, fs);
    const caFile = peerCaFile(peer, config);
    if (!caFile) return;
    const key = peer.caFile ? `peers[${i}].caFile` : `tls.caFile (for peers[${i}])`;
    let pem: string;
    try {
      pem = fs.read(caFile);
    } catch (err) {
      throw new ConfigError(`${key}: ${caFile}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    if (!pem.includes('-----BEGIN CERTIFICATE-----'))
      throw new ConfigError(`${key}: ${caFile}: holds no PEM certificate`);
  });
}

/**
 * The daemon's own token files, checked at start and on every reload: `api.tokenFile` when the TCP
 * API listens (readApiToken) and `fleet.tokenFile` (a secret file like the others; the daemon reads it
 * again for every query).
 */
export function checkTokenFiles(config: Config, fs: SecretFileAccess = realAccess): void {
  if (config.api.listen && config.api.tokenFile) readApiToken(config.api.tokenFile, fs);
  if (config.fleet.tokenFile) readSecretFile('fleet.tokenFile', config.fleet.tokenFile, fs);
}

/** The shortest bearer token api.tokenFile may hold (SECURITY.md: at least 32 random characters). */
export const API_TOKEN_MIN_LENGTH = 32;

/**
 * The token this daemon's TCP API demands, from api.tokenFile: a secret file (readSecretFile: a
 * regular file, root's, not open to group or others, not empty), its content without surrounding
 * whitespace at least API_TOKEN_MIN_LENGTH characters. Anything else is a ConfigError naming the
 * key and the file (the daemon exits 78 before it opens a socket).
 */
export function readApiToken(path: string, fs: SecretFileAccess = realAccess): string {
  const text = readSecretFile('api.tokenFile', path, fs);
  if (text.length < API_TOKEN_MIN_LENGTH)
    throw new ConfigError(
      `api.tokenFile: ${path}: the token must be at least ${API_TOKEN_MIN_LENGTH} characters (it has ${text.length})`,
    );
  return text;
}
