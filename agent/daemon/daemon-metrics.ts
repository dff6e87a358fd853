/** The daemon's side of the metrics: VM statuses → series, and the /metrics listener. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Metrics } from '../api/metrics';
import { startMetricsServer, type MetricsListenLimits, type MetricsServer } from '../api/metrics-server';
import type { HostFacts, VmStatus } from '../core/types';
import type { LogStreamHealth } from '../core/log-stream';
import { joinHostPort } from '../../qmp/address';
import { printable } from '../core/printable';

export function packageVersion(): string {
  try {
    return JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Label values that came from VMs and clients (names, commands) are escaped like the log's
 * (agent/core/printable.ts): a dashboard or a terminal showing them never meets a raw control or
 * bidirectional character. Every call below passes them through it, so a series is removed under the
 * same value it was written with.
 */
const label = printable;

export class DaemonMetrics {
  readonly metrics: Metrics;
  private server: MetricsServer | null = null;
  private lastError = new Map<string, string>();

  constructor(logHealth?: LogStreamHealth) {
    this.metrics = new Metrics({ version: packageVersion(), logHealth });
  }

  async listen(listen: string, limits?: MetricsListenLimits): Promise<string> {
    this.server = await startMetricsServer(this.metrics, listen, limits);
    return joinHostPort(this.server.address, this.server.port);
  }

  setHost(host: HostFacts, pool: string | undefined): void {
    this.metrics.setHost(host, pool);
  }

  setVm(s: VmStatus): void {
    if (s.error) {
      if (s.error.code === 'PENDING') return;
      this.metrics.setVmUp(label(s.name), false);
      if (this.lastError.get(s.name) !== s.error.code) this.metrics.qmpError(label(s.name), s.error.code);
      this.lastError.set(s.name, s.error.code);
      return;
    }
    this.lastError.delete(s.name);
    this.metrics.setVmUp(label(s.name), true);
    this.metrics.setVm(label(s.name), s.guest!, s.verdict!);
  }

  removeVm(name: string): void {
    this.lastError.delete(name);
    this.metrics.removeVm(label(name));
  }

  refused(vm: string, command: string): void {
    this.metrics.refused(label(vm), label(command));
  }

  observeQmp(vm: string, seconds: number): void {
    this.metrics.observeQmp(label(vm), seconds);
  }

  async close(): Promise<void> {
    await this.server?.close();
    this.server = null;
  }
}
