/**
 * Prometheus metrics on a registry of their own (nothing is registered globally); metrics-server.ts
 * serves them at GET /metrics. Every per-VM series is dropped by removeVm, and the label values that
 * clients or errors choose (command, code) are bounded per VM.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AlertMetrics } from '../alerts/alert-service';
import type { AlertSeverity } from '../alerts/alert-model';
import type { DeliveryResult } from '../alerts/sink-worker';
import type { DropReason } from '../alerts/spool';
import type { GuestFacts, HostFacts, Relation, Severity, Verdict } from '../core/types';
import type { LogStreamHealth } from '../core/log-stream';
import { severityRank } from '../core/severity';

/** Distinct `command` / `code` values kept per VM; further ones are counted as "other". */
export const MAX_LABEL_VALUES_PER_VM = 32;
export const OTHER = 'other';

const RELATIONS: Relation[] = ['equal', 'narrower', 'wider'];
const SEVERITIES: Severity[] = ['ok', 'info', 'warning', 'critical'];
const LINT_FAILING_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

export interface MetricsOptions {
  /** The package version (physbits_build_info). */
  version: string;
  /** process_* and nodejs_* metrics of prom-client (default true). */
  defaultMetrics?: boolean;
  /** The daemon's log stream: physbits_log_stream_up and physbits_log_lines_dropped_total. */
  logHealth?: LogStreamHealth;
}

interface VmState {
  relation: Relation | null;
  severity: Severity | null;
  commands: Set<string>;
  codes: Set<string>;
  /** The last values of the series that carry this host's identity, to relabel them when it changes. */
  physBits: number | null;
  accelerator: string | null;
  /** The guest's UUID (query-uuid), the `uuid` label of physbits_guest_phys_bits; null when unknown. */
  uuid: string | null;
  highestAddress: number | null;
  up: boolean | null;
  /** The label sets those series were last written with (removed when they change). */
  guestLabels: Labels | null;
  vmLabels: Labels | null;
}

type Labels = Record<string, string>;

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
  private readonly guestPhysBits: Gauge<'vm' | 'host' | 'pool' | 'accelerator' | 'uuid'>;
  private readonly guestHighestAddress: Gauge<'vm' | 'host' | 'pool'>;
  private readonly vmSeverity: Gauge<'vm'>;
  private readonly vmUp: Gauge<'vm' | 'host' | 'pool'>;
  private readonly refusedCommands: Counter<'vm' | 'command'>;
  private readonly qmpErrors: Counter<'vm' | 'code'>;
  private readonly qmpDuration: Histogram<'vm'>;
  private readonly alertsPending: Gauge;
  private readonly alertsFiring: Gauge<'severity'>;
  private readonly spoolEntries: Gauge;
  private readonly spoolDrops: Counter<'reason'>;
  private readonly deliveries: Counter<'sink' | 'result'>;

  constructor(opts: MetricsOptions) {
    const r = [this.registry];
    new Gauge({
      name: 'physbits_build_info',
      help: 'Always 1; the label carries the physbits version.',
      labelNames: ['version'],
      registers: r,
    }).set({ version: opts.version }, 1);
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
    this.guestPhysBits = new Gauge({
      name: 'physbits_guest_phys_bits',
      help: "The guest's width: its CPU's phys-bits as QEMU resolved it, or a migrated host-phys-bits guest's booted width.",
      labelNames: ['vm', 'host', 'pool', 'accelerator', 'uuid'],
      registers: r,
    });
    this.guestHighestAddress = new Gauge({
      name: 'physbits_guest_highest_address_bytes',
      help: "One past the highest guest-physical address the guest's memory layout can use now.",
      labelNames: ['vm', 'host', 'pool'],
      registers: r,
    });
    this.vmSeverity = new Gauge({
      name: 'physbits_vm_severity',
      help: 'Verdict severity of the VM: 0 ok, 1 info, 2 warning, 3 critical.',
      labelNames: ['vm'],
      registers: r,
    });
    this.vmUp = new Gauge({
      name: 'physbits_vm_up',
      help: "1 when the VM's QMP socket answered the last read, 0 when not.",
      labelNames: ['vm', 'host', 'pool'],
      registers: r,
    });
    const vms = this.vms;
    new Gauge({
      name: 'physbits_vms',
      help: 'VMs with a verdict, by relation to the host width and by severity.',
      labelNames: ['relation', 'severity'],
      registers: r,
      collect() {
        this.reset();
        for (const rel of RELATIONS) for (const sev of SEVERITIES) this.set({ relation: rel, severity: sev }, 0);
        for (const s of vms.values()) {
          if (s.relation && s.severity) this.inc({ relation: s.relation, severity: s.severity });
        }
      },
    });
    this.refusedCommands = new Counter({
      name: 'physbits_refused_commands_total',
      help: 'QMP commands the guard refused.',
      labelNames: ['vm', 'command'],
      registers: r,
    });
    this.qmpErrors = new Counter({
      name: 'physbits_qmp_errors_total',
      help: 'Failed QMP reads, by error code.',
      labelNames: ['vm', 'code'],
      registers: r,
    });
    this.qmpDuration = new Histogram({
      name: 'physbits_qmp_request_duration_seconds',
      help: 'Time from sending a QMP command to its reply.',
      labelNames: ['vm'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
      registers: r,
    });
    this.alertsPending = new Gauge({
      name: 'physbits_alerts_pending',
      help: 'Alert state changes some sink has not received yet.',
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

  private vm(vm: string): VmState {
    let s = this.vms.get(vm);
    if (!s) {
      s = {
        relation: null,
        severity: null,
        commands: new Set(),
        codes: new Set(),
        physBits: null,
        accelerator: null,
        uuid: null,
        highestAddress: null,
        up: null,
        guestLabels: null,
        vmLabels: null,
      };
      this.vms.set(vm, s);
    }
    return s;
  }

  /** The host's width, and who it is in the fleet (its name and pool label every series a fleet query joins). */
  setHost(host: Pick<HostFacts, 'physBits'> & { name?: string }, pool?: string): void {
    const identity: Labels = {};
    if (host.name) identity.host = host.name;
    if (host.name && pool) identity.pool = pool;
    const changed = JSON.stringify(identity) !== JSON.stringify(this.identity);
    this.identity = identity;
    this.hostPhysBits.reset();
    this.hostPhysBits.set(identity, host.physBits);
    this.hostInfo.reset();
    if (identity.host) this.hostInfo.set(identity, 1);
    if (changed) for (const [vm, s] of this.vms) this.writeVm(vm, s);
  }

  /** Writes the VM's identity-carrying series from its state, dropping those written under other labels. */
  private writeVm(vm: string, s: VmState): void {
    const vmLabels: Labels = { vm, ...this.identity };
    const guestLabels: Labels = {
      ...vmLabels,
      ...(s.accelerator ? { accelerator: s.accelerator } : {}),
      ...(s.uuid ? { uuid: s.uuid } : {}),
    };
    if (s.guestLabels && !sameLabels(s.guestLabels, guestLabels)) this.guestPhysBits.remove(s.guestLabels);
    if (s.vmLabels && !sameLabels(s.vmLabels, vmLabels)) {
      this.guestHighestAddress.remove(s.vmLabels);
      this.vmUp.remove(s.vmLabels);
    }
    s.guestLabels = guestLabels;
    s.vmLabels = vmLabels;
    if (s.physBits !== null) this.guestPhysBits.set(guestLabels, s.physBits);
    if (s.highestAddress !== null) this.guestHighestAddress.set(vmLabels, s.highestAddress);
    else this.guestHighestAddress.remove(vmLabels);
    if (s.up !== null) this.vmUp.set(vmLabels, s.up ? 1 : 0);
  }

  /** A successful read of the VM: its width, accelerator and layout, and its verdict. */
  setVm(
    vm: string,
    guest: Pick<GuestFacts, 'physBits'> & Partial<Pick<GuestFacts, 'accelerator' | 'layout' | 'uuid'>>,
    verdict: Pick<Verdict, 'relation' | 'severity'>,
  ): void {
    const s = this.vm(vm);
    s.relation = verdict.relation;
    s.severity = verdict.severity;
    s.physBits = guest.physBits;
    s.accelerator = guest.accelerator ?? null;
    s.uuid = guest.uuid ?? null;
    s.highestAddress = guest.layout?.highestAddress ?? null;
    s.up = true;
    this.writeVm(vm, s);
    this.vmSeverity.set({ vm }, severityRank(verdict.severity));
  }

  /** Whether the VM's QMP socket answered. */
  setVmUp(vm: string, up: boolean): void {
    const s = this.vm(vm);
    s.up = up;
    this.writeVm(vm, s);
  }

  /** Drops every series of the VM (it is gone). */
  removeVm(vm: string): void {
    const s = this.vms.get(vm);
    this.vms.delete(vm);
    this.vmSeverity.remove({ vm });
    this.qmpDuration.remove({ vm });
    if (!s) return;
    if (s.guestLabels) this.guestPhysBits.remove(s.guestLabels);
    if (s.vmLabels) {
      this.guestHighestAddress.remove(s.vmLabels);
      this.vmUp.remove(s.vmLabels);
    }
    for (const command of s.commands) this.refusedCommands.remove({ vm, command });
    for (const code of s.codes) this.qmpErrors.remove({ vm, code });
  }

  refused(vm: string, command: string): void {
    this.refusedCommands.inc({ vm, command: bounded(this.vm(vm).commands, command) });
  }

  qmpError(vm: string, code: string): void {
    this.qmpErrors.inc({ vm, code: bounded(this.vm(vm).codes, code) });
  }

  observeQmp(vm: string, seconds: number): void {
    this.vm(vm);
    this.qmpDuration.observe({ vm }, seconds);
  }

  setAlertsPending(n: number): void {
    this.alertsPending.set(n);
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

  /** The text exposition (what GET /metrics serves). */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

function sameLabels(a: Labels, b: Labels): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

function bounded(seen: Set<string>, value: string): string {
  const v = value.slice(0, 128) || OTHER;
  if (seen.has(v)) return v;
  if (seen.size >= MAX_LABEL_VALUES_PER_VM) {
    seen.add(OTHER);
    return OTHER;
  }
  seen.add(v);
  return v;
}
