/**
 * Prometheus metrics on a registry of their own (nothing is registered globally); metrics-server.ts
 * serves them at GET /metrics. Every per-VM series carries the VM's `id` (unique on
 * the host) beside its `vm` name and is dropped by removeVm(id), and the label values that clients
 * or errors choose (command, code) are bounded per VM.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { AlertMetrics } from '../alerts/alert-service';
import type { AlertSeverity } from '../alerts/alert-model';
import type { DeliveryResult } from '../alerts/sink-worker';
import type { DropReason } from '../alerts/spool';
import type { GuestFacts, HostFacts, Verdict } from '../core/types';
import { countDuration, registerVmSeries, type Labels, type VmRef, type VmState } from './vm-series';

export type { VmRef } from './vm-series';
import type { LogStreamHealth } from '../core/log-stream';

/** Distinct `command` / `code` values kept per VM; further ones are counted as "other". */
export const MAX_LABEL_VALUES_PER_VM = 32;
export const OTHER = 'other';
/** Reasons per VM in physbits_vm_reason_info (a verdict has a handful). */
export const MAX_REASONS_PER_VM = 32;

const LINT_FAILING_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

export interface MetricsOptions {
  /** The package version (physbits_build_info{version}). */
  version: string;
  /** The commit it was built from (physbits_build_info{revision}); "unknown" when not known. */
  revision?: string;
  /** process_* and nodejs_* metrics of prom-client (default true). */
  defaultMetrics?: boolean;
  /** The daemon's log stream: physbits_log_stream_up and physbits_log_lines_dropped_total. */
  logHealth?: LogStreamHealth;
}

/** Who this host is in the fleet: physbits_host_info{host,pool}, and the same labels on the series a fleet query joins. */
export interface HostIdentity {
  /** host.name; no identity labels while it is unknown. */
  host?: string;
  /** fleet.pool; the label is left out when no pool is configured. */
  pool?: string;
}

export class Metrics implements AlertMetrics {
  readonly registry = new Registry();
  private readonly vms = new Map<string, VmState>();
  private identity: Labels = {};
  private readonly hostInfo: Gauge<'host' | 'pool'>;
  private readonly hostPhysBits: Gauge<'host' | 'pool'>;
  private readonly alertsUndelivered: Gauge;
  private readonly alertsFiring: Gauge<'severity'>;
  private readonly spoolEntries: Gauge;
  private readonly spoolDrops: Counter<'reason'>;
  private readonly deliveries: Counter<'sink' | 'result'>;
  private readonly reloadOk: Gauge;
  private readonly reloadTime: Gauge;

  constructor(opts: MetricsOptions) {
    const r = [this.registry];
    new Gauge({
      name: 'physbits_build_info',
      help: 'Always 1; version and revision are what --version prints (the package version, the commit).',
      labelNames: ['version', 'revision'],
      registers: r,
    }).set({ version: opts.version, revision: opts.revision ?? 'unknown' }, 1);
    this.hostInfo = new Gauge({
      name: 'physbits_host_info',
      help: "Always 1; host is this host's name in fleet documents (host.name), pool its fleet.pool when set.",
      labelNames: ['host', 'pool'],
      registers: r,
    });
    this.hostPhysBits = new Gauge({
      name: 'physbits_host_phys_bits',
      help: 'Physical address width of this host (bits), after any host.physBits override.',
      labelNames: ['host', 'pool'],
      registers: r,
    });
    registerVmSeries(this.registry, this.vms, (id, s) => this.vmLabels(id, s.name));
    this.alertsUndelivered = new Gauge({
      name: 'physbits_alerts_undelivered',
      help: 'Alert state changes (fired, resolved, refused) that some sink has not taken yet; they wait in the spool.',
      registers: r,
    });
    this.alertsFiring = new Gauge({
      name: 'physbits_alerts_firing',
      help: 'Alerts firing now, by severity.',
      labelNames: ['severity'],
      registers: r,
    });
    for (const sev of ['info', 'warning', 'critical']) this.alertsFiring.set({ severity: sev }, 0);
    this.spoolEntries = new Gauge({
      name: 'physbits_spool_entries',
      help: 'Entries in the alert spool (undelivered states and firing alerts).',
      registers: r,
    });
    this.spoolDrops = new Counter({
      name: 'physbits_spool_dropped_total',
      help: 'Spool entries dropped because alerts.spoolMaxEntries was reached, by kind.',
      labelNames: ['reason'],
      registers: r,
    });
    for (const reason of ['superseded', 'ended', 'firing']) this.spoolDrops.inc({ reason }, 0);
    this.deliveries = new Counter({
      name: 'physbits_alert_deliveries_total',
      help: 'Alert delivery requests by sink and result (success, error, timeout, rejected).',
      labelNames: ['sink', 'result'],
      registers: r,
    });
    this.reloadOk = new Gauge({
      name: 'physbits_config_last_reload_successful',
      help: 'Whether the last configuration reload (SIGHUP) was taken: 1 yes (or none yet), 0 refused.',
      registers: r,
    });
    this.reloadOk.set(1);
    this.reloadTime = new Gauge({
      name: 'physbits_config_last_reload_success_timestamp_seconds',
      help: 'When the configuration in use was last loaded: the start, or the last reload taken (Unix seconds).',
      registers: r,
    });
    const log = opts.logHealth;
    if (log) {
      new Gauge({
        name: 'physbits_log_stream_up',
        help: '1 while the log stream (stderr, the journal) takes lines; 0 once it failed for good.',
        registers: r,
        collect() {
          this.set(log.failure() === null ? 1 : 0);
        },
      });
      new Counter({
        name: 'physbits_log_lines_dropped_total',
        help: 'Log lines dropped because the log stream had failed or was full.',
        registers: r,
        collect() {
          this.reset();
          this.inc(log.dropped());
        },
      });
    }
    if (opts.defaultMetrics !== false) {
      // The event-loop lag monitor samples every 10 ms by default: a hundred wake-ups a second of
      // an otherwise idle daemon. Once a second is plenty for a scrape every 15 s or more.
      collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 1000 });
      // Gauges that end in _total mislead PromQL users (and promtool's lint); the non-_total
      // nodejs_active_{handles,requests,resources} series carry the same numbers.
      for (const name of LINT_FAILING_DEFAULTS) this.registry.removeSingleMetric(name);
    }
  }

  private vmLabels(id: string, name: string): Labels {
    return { vm: name, id, ...this.identity };
  }

  /** The VM's state, created on first sight; its name follows the latest one reported. */
  private vm(ref: VmRef): VmState {
    let s = this.vms.get(ref.id);
    if (!s) {
      s = {
        name: ref.name,
        relation: null,
        severity: null,
        reasons: [],
        physBits: null,
        accelerator: null,
        uuid: null,
        highestAddress: null,
        up: null,
        refused: new Map(),
        errors: new Map(),
        durations: null,
      };
      this.vms.set(ref.id, s);
    }
    s.name = ref.name;
    return s;
  }

  /** The host's width, and who it is in the fleet (its name and pool label every series a fleet query joins). */
  setHost(host: Pick<HostFacts, 'physBits'> & { name?: string }, pool?: string): void {
    const identity: Labels = {};
    if (host.name) identity.host = host.name;
    if (host.name && pool) identity.pool = pool;
    this.identity = identity;
    this.hostPhysBits.reset();
    this.hostPhysBits.set(identity, host.physBits);
    this.hostInfo.reset();
    if (identity.host) this.hostInfo.set(identity, 1);
  }

  /** A successful read of the VM: its width, accelerator and layout, and its verdict. */
  setVm(
    ref: VmRef,
    guest: Pick<GuestFacts, 'physBits'> & Partial<Pick<GuestFacts, 'accelerator' | 'layout' | 'uuid'>>,
    verdict: Pick<Verdict, 'relation' | 'severity'> & Partial<Pick<Verdict, 'reasons'>>,
  ): void {
    const s = this.vm(ref);
    s.relation = verdict.relation;
    s.severity = verdict.severity;
    s.reasons = (verdict.reasons ?? [])
      .slice(0, MAX_REASONS_PER_VM)
      .map((r) => ({ code: r.code.slice(0, 128), severity: r.severity }));
    s.physBits = guest.physBits;
    s.accelerator = guest.accelerator ?? null;
    s.uuid = guest.uuid ?? null;
    s.highestAddress = guest.layout?.highestAddress ?? null;
    s.up = true;
  }

  /** Whether the VM's QMP socket answered. */
  setVmUp(ref: VmRef, up: boolean): void {
    this.vm(ref).up = up;
  }

  /** Drops every series of the VM with this id (it is gone); other VMs, whatever their names, keep theirs. */
  removeVm(id: string): void {
    this.vms.delete(id);
  }

  /** The VMs that have series, by id (for tests and the bench). */
  vmIds(): string[] {
    return [...this.vms.keys()];
  }

  refused(ref: VmRef, command: string): void {
    const s = this.vm(ref);
    const key = bounded(s.refused, command);
    s.refused.set(key, (s.refused.get(key) ?? 0) + 1);
  }

  qmpError(ref: VmRef, code: string): void {
    const s = this.vm(ref);
    const key = bounded(s.errors, code);
    s.errors.set(key, (s.errors.get(key) ?? 0) + 1);
  }

  /** One QMP command's round trip (physbits_qmp_request_duration_seconds, labelled at scrape time). */
  observeQmp(ref: VmRef, seconds: number): void {
    countDuration(this.vm(ref), seconds);
  }

  /** Alert state changes no sink has taken yet (physbits_alerts_undelivered). */
  setAlertsPending(n: number): void {
    this.alertsUndelivered.set(n);
  }

  setSpoolEntries(n: number): void {
    this.spoolEntries.set(n);
  }

  setAlertsFiring(counts: Record<AlertSeverity, number>): void {
    for (const [severity, n] of Object.entries(counts)) this.alertsFiring.set({ severity }, n);
  }

  alertDelivery(sink: string, result: DeliveryResult, _alerts: number): void {
    this.deliveries.inc({ sink, result });
  }

  spoolDropped(reason: DropReason): void {
    this.spoolDrops.inc({ reason });
  }

  /** A configuration was loaded (at start, or a reload taken: ok) or a reload was refused. */
  configLoaded(ok: boolean, atMs: number): void {
    this.reloadOk.set(ok ? 1 : 0);
    if (ok) this.reloadTime.set(Math.floor(atMs / 1000));
  }

  /** The text exposition (what GET /metrics serves). */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

function bounded(seen: Map<string, number>, value: string): string {
  const v = value.slice(0, 128) || OTHER;
  if (seen.has(v) || seen.size < MAX_LABEL_VALUES_PER_VM) return v;
  return OTHER;
}
