/** Files that hold secrets should not be readable by everyone: say so when they are. */
import { statSync } from 'node:fs';
import type { Config } from './config';

/** The files of this config that hold secrets, each with the key that names it. */
export function secretFiles(config: Config, configPath: string | undefined): Array<{ key: string; path: string }> {
  const out: Array<{ key: string; path: string }> = [];
  if (configPath && config.alerts.webhooks.some((w) => w.secret))
    out.push({ key: 'alerts.webhooks[].secret (the config file)', path: configPath });
  if (config.api.tokenFile) out.push({ key: 'api.tokenFile', path: config.api.tokenFile });
  config.peers.forEach((p, i) => {
    if ('tokenFile' in p) out.push({ key: `peers[${i}].tokenFile`, path: p.tokenFile });
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
