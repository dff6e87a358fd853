/**
 * A real Prometheus server (Debian's `prometheus`) on a loopback port picked with freePort (it has
 * no port 0), with its own temp storage, scraping the given targets every `scrapeInterval`; killed
 * and its storage removed by stop().
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startReadyServer } from './net';

export const PROMETHEUS = process.env.PHYSBITS_TEST_PROMETHEUS ?? 'prometheus';

export interface PrometheusOptions {
  /** host:port of each physbitsd metrics endpoint (job "physbits"). */
  targets: string[];
  /** More scrape jobs: job name -> host:port targets. */
  jobs?: Record<string, string[]>;
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

export function prometheusConfig(opts: Pick<PrometheusOptions, 'targets' | 'scrapeInterval' | 'jobs'>): string {
  const interval = opts.scrapeInterval ?? '1s';
  const job = (name: string, targets: string[]) =>
    `  - job_name: ${name}\n    static_configs:\n      - targets: [${targets.map((t) => `'${t}'`).join(', ')}]\n`;
  return (
    `global:\n  scrape_interval: ${interval}\n  scrape_timeout: ${interval}\n  evaluation_interval: ${interval}\n` +
    `scrape_configs:\n${job('physbits', opts.targets)}` +
    Object.entries(opts.jobs ?? {})
      .map(([name, targets]) => job(name, targets))
      .join('')
  );
}

export async function startPrometheus(opts: PrometheusOptions): Promise<PrometheusServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'physbits-prom-'));
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, prometheusConfig(opts));
  const server = await startReadyServer({
    name: 'prometheus',
    command: PROMETHEUS,
    args: [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${opts.storageDir ?? join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
      ...(opts.extraArgs ?? []),
    ],
    port,
    dir,
    stderrBytes: 32768,
    timeoutMs: opts.readyTimeoutMs ?? 60000,
    intervalMs: 100,
  });
  const { url } = server;
  return {
    url,
    port,
    pid: server.pid,
    async query(q: string) {
      const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: q })}`);
      const doc = (await res.json()) as { status: string; data: { result: [] }; error?: string };
      if (doc.status !== 'success') throw new Error(`${q}: ${doc.error}`);
      return doc.data.result;
    },
    stop: server.stop,
    stderr: server.stderr,
  };
}
