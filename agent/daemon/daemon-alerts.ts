/**
 * The daemon's side of alerting, bookkeeping only: VM statuses → the alert service's conditions,
 * guard refusals, migrations the guard did not see (judged in judge/unseen-migration.ts), and alert
 * changes onto the event stream.
 */
import { AlertService, type AlertMetrics } from '../alerts/alert-service';
import type { AlertVm } from '../alerts/alert-model';
import type { Config } from '../core/config';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import type { HostFacts, PeerFacts, Reason, VmStatus } from '../core/types';
import { vmId } from '../core/vm-name';
import { judgeUnseenMigration, migrationPhase } from '../judge/unseen-migration';
import type { EventBus } from './event-bus';
import type { VmSupervisor } from './vm-supervisor';

/** The `vm` label of the daemon's own alerts (no VM's name is empty). */
export const HOST_VM = '';

/** A `migrate` the guard let through counts as seen for this long. */
const SEEN_MIGRATION_MS = 60_000;

/** What alerting needs of the daemon. */
export interface DaemonAlertsDeps {
  config: () => Config;
  host: () => HostFacts;
  peers: () => PeerFacts[];
  logger: Logger;
  timers: Timers;
  metrics: AlertMetrics;
  events: Pick<EventBus, 'publish'>;
}

/** What a MIGRATION event needs of the VM it came from. */
export type MigratingVm = Pick<
  VmSupervisor,
  'name' | 'socket' | 'facts' | 'extraReasons' | 'setExtraReasons' | 'upstream'
>;

export class DaemonAlerts {
  private service: AlertService | null = null;
  private configJson = '';
  private readonly approved = new Map<string, number>();
  /** By VM id: the VM's name and its last reasons (given again to a new service after a reload). */
  private readonly lastReasons = new Map<string, { vm: AlertVm; reasons: readonly Reason[] }>();

  constructor(private readonly deps: DaemonAlertsDeps) {}

  private create(): AlertService {
    const config = this.deps.config();
    const hostName = this.deps.host().name;
    const service = new AlertService({
      config: config.alerts,
      host: hostName,
      timers: this.deps.timers,
      logger: this.deps.logger.child({ component: 'alerts' }),
      metrics: this.deps.metrics,
    });
    service.on('alert', (ev) => {
      this.deps.events.publish({
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
    this.configJson = JSON.stringify([config.alerts, hostName]);
    return service;
  }

  async start(): Promise<void> {
    this.service = this.create();
    await this.service.start();
  }

  /** After a reload: a changed alerts section means a new service over the same spool. */
  reconfigure(): void {
    if (JSON.stringify([this.deps.config().alerts, this.deps.host().name]) === this.configJson) return;
    const old = this.service;
    this.service = null;
    void (async () => {
      await old?.stop();
      const next = this.create();
      await next.start();
      this.service = next;
      for (const { vm, reasons } of this.lastReasons.values()) next.setVmReasons(vm, reasons);
    })().catch((err) => this.deps.logger.error('alert service restart failed', { error: (err as Error).message }));
  }

  setVm(status: VmStatus): void {
    const vm = { id: status.id ?? vmId(status.socket), name: status.name };
    if (status.error) {
      // Nothing listens behind the socket any more: the guest is not running, its conditions end.
      if (status.error.code === 'QMP_CONNECT_FAILED') this.dropVm(vm.id);
      return;
    }
    const reasons = status.verdict!.reasons;
    this.lastReasons.set(vm.id, { vm, reasons });
    this.service?.setVmReasons(vm, reasons);
  }

  /** The daemon's own conditions (agent/daemon/daemon-health.ts): an alert each, with an empty vm label. */
  setHostReasons(reasons: readonly Reason[]): void {
    this.lastReasons.set(HOST_VM, { vm: HOST_VM, reasons });
    this.service?.setVmReasons(HOST_VM, reasons);
  }

  /** The VM with this id is gone: its condition alerts resolve. */
  dropVm(id: string): void {
    this.lastReasons.delete(id);
    if (this.service) this.service.dropVm(id);
  }

  refusal(vm: { id: string; name: string }, code: string, message: string, command: string): void {
    this.service?.refusal(vm, code, message, command);
  }

  /** The guard forwarded a `migrate` for this VM (to a peer it checked). */
  migrationApproved(socket: string): void {
    this.approved.set(socket, this.deps.timers.now());
  }

  /**
   * A MIGRATION event: when the guard did not see the `migrate` (it came through another monitor),
   * judge/unseen-migration.ts decides the MIGRATION_UNVERIFIED reason and whether to cancel; here it
   * is kept on the VM until the migration ends, published, and the cancel sent.
   */
  onMigrationEvent(vm: MigratingVm, data: { status?: string } | undefined): void {
    const status = data?.status ?? '';
    const phase = migrationPhase(status);
    const unverified = vm.extraReasons().some((r) => r.code === 'MIGRATION_UNVERIFIED');
    if (phase === 'ended') {
      if (unverified) vm.setExtraReasons(vm.extraReasons().filter((r) => r.code !== 'MIGRATION_UNVERIFIED'));
      return;
    }
    if (phase !== 'started' || unverified) return;
    const seen = this.approved.get(vm.socket);
    if (seen !== undefined && this.deps.timers.now() - seen < SEEN_MIGRATION_MS) return;
    const name = vm.name;
    const { reason, cancel } = judgeUnseenMigration({
      vm: name,
      guestBits: vm.facts()?.physBits ?? null,
      peers: this.deps.peers(),
      cancelUnsafe: this.deps.config().guard.cancelUnsafe,
    });
    this.deps.logger.warn('unverified migration', { vm: name, severity: reason.severity });
    this.deps.events.publish({
      type: 'migration',
      vm: name,
      status,
      verified: false,
      severity: reason.severity,
      message: reason.message,
    });
    vm.setExtraReasons([...vm.extraReasons(), reason]);
    if (cancel) {
      vm.upstream()
        ?.execute('migrate_cancel')
        .catch((err) => this.deps.logger.error('migrate_cancel failed', { vm: name, error: (err as Error).message }));
    }
  }

  async stop(): Promise<void> {
    await this.service?.stop();
    this.service = null;
  }
}
