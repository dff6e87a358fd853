/** The daemon's side of the metrics: VM statuses → series, and the /metrics listener. */
import { Metrics, type VmRef } from '../api/metrics';
import { startMetricsServer, type MetricsListenLimits, type MetricsServer } from '../api/metrics-server';
import type { HostFacts, VmStatus } from '../core/types';
import type { LogStreamHealth } from '../core/log-stream';
import { buildInfo, type BuildInfo } from '../core/version';
import { vmId } from '../core/vm-name';
import { joinHostPort } from '../../qmp/address';
import { printable } from '../core/printable';

/** physbits_build_info's labels: the same build info `--version` prints (agent/core/version.ts). */
export function buildInfoLabels(info: BuildInfo | null = buildInfo()): { version: string; revision: string } {
  return {
    version: info?.version ?? 'unknown',
    revision: info?.commit ? `${info.commit}${info.dirty ? '-modified' : ''}` : 'unknown',
  };
}

/**
 * Label values that came from VMs and clients (names, commands) are escaped like the log's
 * (agent/core/printable.ts): a dashboard or a terminal showing them never meets a raw control or
 * bidirectional character. Every call below passes them through it, so a series is removed under the
 * same value it was written with.
 */
const label = printable;

/** A status's identity in the series. */
function refOf(s: Pick<VmStatus, 'id' | 'name' | 'socket'>): VmRef {
  return { id: s.id ?? vmId(s.socket), name: label(s.name) };
}

export class DaemonMetrics {
  readonly metrics: Metrics;
  private server: MetricsServer | null = null;
  /** The last error code counted per VM id, so that a VM failing the same way counts once. */
  private lastError = new Map<string, string>();

  constructor(logHealth?: LogStreamHealth) {
    this.metrics = new Metrics({ ...buildInfoLabels(), logHealth });
    // The daemon is made once its config was loaded: that load counts as the first one taken.
    this.metrics.configLoaded(true, Date.now());
  }

  async listen(listen: string, limits?: MetricsListenLimits): Promise<string> {
    this.server = await startMetricsServer(this.metrics, listen, limits);
    return joinHostPort(this.server.address, this.server.port);
  }

  setHost(host: HostFacts, pool: string | undefined): void {
    this.metrics.setHost(host, pool);
  }

  setVm(s: VmStatus): void {
    const ref = refOf(s);
    if (s.error) {
      if (s.error.code === 'PENDING') return;
      this.metrics.setVmUp(ref, false);
      if (this.lastError.get(ref.id) !== s.error.code) this.metrics.qmpError(ref, s.error.code);
      this.lastError.set(ref.id, s.error.code);
      return;
    }
    this.lastError.delete(ref.id);
    this.metrics.setVm(ref, s.guest!, s.verdict!);
  }

  /** The VM with this id is gone: its series go, no other VM's. */
  removeVm(id: string): void {
    this.lastError.delete(id);
    this.metrics.removeVm(id);
  }

  refused(vm: VmRef, command: string): void {
    this.metrics.refused({ id: vm.id, name: label(vm.name) }, label(command));
  }

  /** One QMP round trip of the VM (every reply, heartbeats included: no object is made for a name that needs no escape). */
  observeQmp(vm: VmRef, seconds: number): void {
    const name = label(vm.name);
    this.metrics.observeQmp(name === vm.name ? vm : { id: vm.id, name }, seconds);
  }

  /** A config was taken (at start, at a reload) or refused (a reload). */
  configLoaded(ok: boolean): void {
    this.metrics.configLoaded(ok, Date.now());
  }

  async close(): Promise<void> {
    await this.server?.close();
    this.server = null;
  }
}
