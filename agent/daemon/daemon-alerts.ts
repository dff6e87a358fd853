/**
 * The daemon's side of alerting: VM statuses → the alert service's conditions, guard refusals,
 * migrations the guard did not see, and alert changes onto the event stream.
 */
import { AlertService, type AlertEvent } from '../alerts/alert-service';
import type { Daemon } from './daemon';
import type { Reason, VmStatus } from '../core/types';
import type { VmSupervisor } from './vm-supervisor';

/** A `migrate` the guard let through counts as seen for this long. */
const SEEN_MIGRATION_MS = 60_000;

export class DaemonAlerts {
  private service: AlertService | null = null;
  private configJson = '';
  private readonly approved = new Map<string, number>();
  private readonly lastReasons = new Map<string, readonly Reason[]>();

  constructor(private readonly d: Daemon) {}

  private create(): AlertService {
    const cfg = this.d.config;
    const service = new AlertService({
      config: cfg.alerts,
      host: this.d.host.name,
      logger: this.d.logger.child({ component: 'alerts' }),
      metrics: this.d.metrics.metrics,
    });
    service.on('alert', (ev: AlertEvent) => {
      this.d.events.publish({
        type: 'alert',
        vm: ev.labels.vm,
        status: ev.status,
        change: ev.change,
        alertname: ev.labels.alertname,
        severity: ev.labels.severity,
        reason: ev.labels.reason,
        summary: ev.annotations.summary,
      });
    });
    this.configJson = JSON.stringify([cfg.alerts, this.d.host.name]);
    return service;
  }

  async start(): Promise<void> {
    this.service = this.create();
    await this.service.start();
  }

  /** After a reload: a changed alerts section means a new service over the same spool. */
  reconfigure(): void {
    if (JSON.stringify([this.d.config.alerts, this.d.host.name]) === this.configJson) return;
    const old = this.service;
    this.service = null;
    void (async () => {
      await old?.stop();
      const next = this.create();
      await next.start();
      this.service = next;
      for (const [vm, reasons] of this.lastReasons) next.setVmReasons(vm, reasons);
    })().catch((err) => this.d.logger.error('alert service restart failed', { error: (err as Error).message }));
  }

  setVm(s: VmStatus): void {
    if (s.error) {
      // Nothing listens behind the socket any more: the guest is not running, its conditions end.
      if (s.error.code === 'QMP_CONNECT_FAILED') this.dropVm(s.name);
      return;
    }
    const reasons = s.verdict!.reasons;
    this.lastReasons.set(s.name, reasons);
    this.service?.setVmReasons(s.name, reasons);
  }

  dropVm(vm: string): void {
    this.lastReasons.delete(vm);
    if (this.service) this.service.dropVm(vm);
  }

  refusal(vm: string, code: string, message: string, command: string): void {
    this.service?.refusal(vm, code, message, command);
  }

  /** The guard forwarded a `migrate` for this VM (to a peer it checked). */
  migrationApproved(socket: string): void {
    this.approved.set(socket, Date.now());
  }

  /**
   * A MIGRATION event: when the guard did not see the `migrate` (it came through another monitor),
   * the target cannot be checked. If any configured peer is narrower than the guest, that is
   * critical (and cancelled when guard.cancelUnsafe is on); otherwise a warning.
   */
  onMigrationEvent(sup: VmSupervisor, data: { status?: string } | undefined): void {
    const status = data?.status;
    const vm = sup.name;
    const unverified = sup.extraReasons().some((r) => r.code === 'MIGRATION_UNVERIFIED');
    if (status === 'completed' || status === 'failed' || status === 'cancelled') {
      if (unverified) sup.setExtraReasons(sup.extraReasons().filter((r) => r.code !== 'MIGRATION_UNVERIFIED'));
      return;
    }
    if (status !== 'setup' && status !== 'active') return;
    const seen = this.approved.get(sup.socket);
    if (seen !== undefined && Date.now() - seen < SEEN_MIGRATION_MS) return;
    if (unverified) return;
    const g = sup.facts();
    const narrower = g ? this.d.peerFacts().filter((p) => p.physBits !== null && p.physBits < g.physBits) : [];
    const critical = narrower.length > 0 || !g;
    const message = critical
      ? `a migration of ${vm} started that physbits did not see (not through the guarded socket); ${g ? `peers ${narrower.map((p) => `${p.name} (${p.physBits} bits)`).join(', ')} are narrower than its ${g.physBits} bits` : 'its width is unknown'}, so the target may not back it${this.d.config.guard.cancelUnsafe ? '; physbits cancelled it' : ''}`
      : `a migration of ${vm} started that physbits did not see (not through the guarded socket); every configured peer is wide enough`;
    const reason: Reason = { code: 'MIGRATION_UNVERIFIED', severity: critical ? 'critical' : 'warning', message };
    this.d.logger.warn('unverified migration', { vm, severity: reason.severity });
    this.d.events.publish({ type: 'migration', vm, status, verified: false, severity: reason.severity, message });
    sup.setExtraReasons([...sup.extraReasons(), reason]);
    if (critical && this.d.config.guard.cancelUnsafe) {
      sup
        .upstream()
        ?.execute('migrate_cancel')
        .catch((err) => this.d.logger.error('migrate_cancel failed', { vm, error: (err as Error).message }));
    }
  }

  async stop(): Promise<void> {
    await this.service?.stop();
    this.service = null;
  }
}
