/**
 * A real Prometheus server (Debian's `prometheus`) on a loopback port picked with freePort (it has
 * no port 0), with its own temp storage, scraping the given targets every `scrapeInterval`; killed
 * and its storage removed by stop().
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitHttpReady } from './net';

export const PROMETHEUS = process.env.PHYSBITS_TEST_PROMETHEUS ?? 'prometheus';

export interface PrometheusOptions {
  /** host:port of each physbitsd metrics endpoint (job "physbits"). */
  targets: string[];
  /** Default 1s. */
  scrapeInterval?: string;
  /** An existing TSDB directory to serve (left in place by stop()); default a fresh temp one. */
  storageDir?: string;
  /** Extra flags, e.g. --query.max-samples. */
  extraArgs?: string[];
  readyTimeoutMs?: number;
}

export interface PrometheusServer {
  url: string;
  port: number;
  pid: number;
  /** Instant query, for tests' own checks. */
  query(q: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  stop(): Promise<void>;
  stderr(): string;
}

export function prometheusConfig(opts: Pick<PrometheusOptions, 'targets' | 'scrapeInterval'>): string {
  const interval = opts.scrapeInterval ?? '1s';
  const targets = opts.targets.map((t) => `'${t}'`).join(', ');
  return (
    `global:\n  scrape_interval: ${interval}\n  scrape_timeout: ${interval}\n  evaluation_interval: ${interval}\n` +
    `scrape_configs:\n  - job_name: physbits\n    static_configs:\n      - targets: [${targets}]\n`
  );
}

export async function startPrometheus(opts: PrometheusOptions): Promise<PrometheusServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'physbits-prom-'));
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, prometheusConfig(opts));
  const child: ChildProcess = spawn(
    PROMETHEUS,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${opts.storageDir ?? join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
      ...(opts.extraArgs ?? []),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < 32768) stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const describe = (): string => `${child.exitCode ?? child.signalCode ?? 'running'}: ${stderr.trim()}`;
  try {
    await waitHttpReady({
      name: 'prometheus',
      url,
      exited: () => child.exitCode !== null || child.signalCode !== null,
      describe,
      timeoutMs: opts.readyTimeoutMs ?? 60000,
      intervalMs: 100,
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    port,
    pid: child.pid!,
    async query(q: string) {
      const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: q })}`);
      const doc = (await res.json()) as { status: string; data: { result: [] }; error?: string };
      if (doc.status !== 'success') throw new Error(`${q}: ${doc.error}`);
      return doc.data.result;
    },
    stop,
    stderr: () => stderr,
  };
}
