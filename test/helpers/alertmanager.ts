/**
 * A real Alertmanager (Debian's prometheus-alertmanager) on a loopback port, clustering off, with
 * its own temp storage and a minimal config; plus a loopback HTTP receiver that records every
 * request (Alertmanager's webhook notifications, or physbits' own webhooks).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ALERTMANAGER = process.env.PHYSBITS_TEST_ALERTMANAGER ?? 'prometheus-alertmanager';
export const PROMTOOL = process.env.PHYSBITS_TEST_PROMTOOL ?? 'promtool';
export const AMTOOL = process.env.PHYSBITS_TEST_AMTOOL ?? 'amtool';

/** Whether a binary runs at all (`--version`). */
export function toolAvailable(bin: string): boolean {
  const r = spawnSync(bin, ['--version'], { stdio: 'ignore', timeout: 10000 });
  return r.status === 0;
}

/**
 * Whether a test that needs `bin` can run: absent tools are a failure in CI (which installs the
 * Debian packages), and a skip said aloud elsewhere.
 */
export function requireTool(
  t: { log(...v: unknown[]): void; fail(m?: string): void },
  bin: string,
  pkg: string,
): boolean {
  if (toolAvailable(bin)) return true;
  if (process.env.CI) t.fail(`${bin} is not installed (Debian package ${pkg})`);
  else t.log(`SKIPPED: ${bin} is not installed (Debian package ${pkg})`);
  return false;
}

import { freePort, startReadyServer } from './net';

export { freePort };

export interface ReceivedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface Receiver {
  url: string;
  port: number;
  requests: ReceivedRequest[];
  /** Status code to answer with (default 200). */
  status: number;
  close(): Promise<void>;
}

/** Records every request; answers `status`. Listens on `port` when given (else a free one). */
export async function startReceiver(port = 0): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const rx: Receiver = { url: '', port: 0, requests, status: 200, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      res.writeHead(rx.status).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  rx.port = (server.address() as AddressInfo).port;
  rx.url = `http://127.0.0.1:${rx.port}/`;
  rx.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return rx;
}

export interface AlertmanagerOptions {
  /** Listen here (default: a free port). */
  port?: number;
  /** Where notifications go (a webhook receiver); none = a receiver that sends nothing. */
  webhookUrl?: string;
  groupWait?: string;
  groupInterval?: string;
  repeatInterval?: string;
}

export interface Alertmanager {
  url: string;
  port: number;
  /** GET /api/v2/alerts (active, silenced, inhibited and unprocessed alerts). */
  alerts(): Promise<AmAlert[]>;
  stop(): Promise<void>;
}

export interface AmAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  updatedAt: string;
  fingerprint: string;
  status: { state: string };
}

/** The minimal configuration the tests run Alertmanager with. */
export function alertmanagerConfig(opts: AlertmanagerOptions): string {
  const receiver = opts.webhookUrl
    ? `  - name: hook\n    webhook_configs:\n      - url: '${opts.webhookUrl}'\n        send_resolved: true\n`
    : `  - name: hook\n`;
  return (
    `route:\n  receiver: hook\n  group_by: ['alertname', 'vm']\n` +
    `  group_wait: ${opts.groupWait ?? '1s'}\n  group_interval: ${opts.groupInterval ?? '1s'}\n` +
    `  repeat_interval: ${opts.repeatInterval ?? '1h'}\nreceivers:\n${receiver}`
  );
}

export async function startAlertmanager(opts: AlertmanagerOptions = {}): Promise<Alertmanager> {
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'physbits-am-'));
  const configFile = join(dir, 'alertmanager.yml');
  writeFileSync(configFile, alertmanagerConfig(opts));
  const server = await startReadyServer({
    name: 'alertmanager',
    command: ALERTMANAGER,
    args: [
      `--config.file=${configFile}`,
      `--storage.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--cluster.listen-address=',
      '--log.level=warn',
    ],
    port,
    dir,
    stderrBytes: 16384,
    timeoutMs: 30000,
  });
  const { url } = server;
  return {
    url,
    port,
    async alerts() {
      const res = await fetch(`${url}/api/v2/alerts`);
      if (!res.ok) throw new Error(`GET /api/v2/alerts: HTTP ${res.status}`);
      return (await res.json()) as AmAlert[];
    },
    stop: server.stop,
  };
}

/** Polls `check` every 50 ms until it returns a value that is not undefined, or throws after `ms`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  ms = 20000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
