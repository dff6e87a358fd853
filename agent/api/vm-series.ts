/**
 * The per-VM series of /metrics (agent/api/metrics.ts holds the registry): written from each VM's
 * state at every scrape (collect()), keyed by the VM's id (agent/core/vm-name.ts). Two VMs with one
 * name keep their own series, a renamed VM or host is relabelled at once, and a VM that leaves
 * takes exactly its own series along. Every series carries `vm`, `id` and, once known, `host` and
 * `pool`.
 */
import { Counter, Gauge, type Metric, type Registry } from 'prom-client';
import { severityRank } from '../core/severity';
import type { Reason, Relation, Severity } from '../core/types';

const RELATIONS: Relation[] = ['equal', 'narrower', 'wider'];
const SEVERITIES: Severity[] = ['ok', 'info', 'warning', 'critical'];

export const VM_LABELS = ['vm', 'id', 'host', 'pool'] as const;
export type VmLabel = (typeof VM_LABELS)[number];
export type Labels = Record<string, string>;

/** A VM as its series name it: its id (unique on the host) and its name. */
export interface VmRef {
  id: string;
  name: string;
}

export interface VmState {
  name: string;
  relation: Relation | null;
  severity: Severity | null;
  reasons: Array<Pick<Reason, 'code' | 'severity'>>;
  physBits: number | null;
  accelerator: string | null;
  /** The guest's UUID (query-uuid), the `uuid` label of physbits_guest_phys_bits; null when unknown. */
  uuid: string | null;
  highestAddress: number | null;
  up: boolean | null;
  /** Counts by (bounded) label value. */
  refused: Map<string, number>;
  errors: Map<string, number>;
  /** physbits_qmp_request_duration_seconds: commands per bucket (not cumulative; the last is +Inf), their sum and count. */
  durations: QmpDurations | null;
}

/** physbits_qmp_request_duration_seconds's upper bounds (seconds). */
export const QMP_DURATION_BUCKETS: readonly number[] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];

export interface QmpDurations {
  /** One count per bound of QMP_DURATION_BUCKETS, then the commands above the last bound. */
  buckets: number[];
  sum: number;
  count: number;
}

/**
 * Counts one command's round trip: a few additions on numbers the VM keeps, where prom-client's
 * `Histogram.observe` checks and hashes the label set on every call (every QMP reply, heartbeats
 * included: thirty thousand while a thousand VMs are read at start).
 */
export function countDuration(state: VmState, seconds: number): void {
  const d = (state.durations ??= {
    buckets: new Array<number>(QMP_DURATION_BUCKETS.length + 1).fill(0),
    sum: 0,
    count: 0,
  });
  let i = 0;
  while (i < QMP_DURATION_BUCKETS.length && seconds > QMP_DURATION_BUCKETS[i]) i++;
  d.buckets[i]++;
  d.sum += seconds;
  d.count++;
}

const DURATION_METRIC = 'physbits_qmp_request_duration_seconds';
const DURATION_HELP = "Time from sending a QMP command to its reply: reads, heartbeats and guarded clients' commands.";

/**
 * physbits_qmp_request_duration_seconds as a histogram written from each VM's counts at scrape time,
 * in the shape prom-client's Histogram gives (`le` first, cumulative buckets, `_sum`, `_count`).
 */
function durationHistogram(vms: ReadonlyMap<string, VmState>, labelsOf: (id: string, s: VmState) => Labels) {
  type Value = { labels: Labels; value: number; metricName: string };
  const le = QMP_DURATION_BUCKETS.map(String);
  const get = () => {
    const values: Value[] = [];
    for (const [id, s] of vms) {
      const d = s.durations;
      if (!d) continue;
      const labels = labelsOf(id, s);
      let acc = 0;
      for (let i = 0; i < QMP_DURATION_BUCKETS.length; i++) {
        acc += d.buckets[i];
        values.push({
          labels: { le: le[i], ...labels },
          value: acc,
          metricName: `${DURATION_METRIC}_bucket`,
        });
      }
      values.push({ labels: { le: '+Inf', ...labels }, value: d.count, metricName: `${DURATION_METRIC}_bucket` });
      values.push({ labels, value: d.sum, metricName: `${DURATION_METRIC}_sum` });
      values.push({ labels, value: d.count, metricName: `${DURATION_METRIC}_count` });
    }
    return Promise.resolve({
      name: DURATION_METRIC,
      help: DURATION_HELP,
      type: 'histogram',
      values,
      aggregator: 'sum',
    });
  };
  return {
    name: DURATION_METRIC,
    help: DURATION_HELP,
    type: 'histogram',
    aggregator: 'sum',
    get,
    reset: () => undefined,
  };
}

/** Registers the per-VM gauges and counters; `labelsOf` gives a VM's identity labels at scrape time. */
export function registerVmSeries(
  registry: Registry,
  vms: ReadonlyMap<string, VmState>,
  labelsOf: (id: string, s: VmState) => Labels,
): void {
  const r = [registry];
  new Gauge({
    name: 'physbits_guest_phys_bits',
    help: "The guest's width: its CPU's phys-bits as QEMU resolved it, or a migrated host-phys-bits guest's booted width.",
    labelNames: [...VM_LABELS, 'accelerator', 'uuid'],
    registers: r,
    collect() {
      this.reset();
      for (const [id, s] of vms) {
        if (s.physBits === null) continue;
        const labels = labelsOf(id, s);
        const guest = {
          ...labels,
          ...(s.accelerator ? { accelerator: s.accelerator } : {}),
          ...(s.uuid ? { uuid: s.uuid } : {}),
        };
        this.set(guest, s.physBits);
      }
    },
  });
  new Gauge({
    name: 'physbits_guest_highest_address_bytes',
    help: "One past the highest guest-physical address the guest's memory layout can use now.",
    labelNames: VM_LABELS,
    registers: r,
    collect() {
      this.reset();
      for (const [id, s] of vms) if (s.highestAddress !== null) this.set(labelsOf(id, s), s.highestAddress);
    },
  });
  new Gauge({
    name: 'physbits_vm_severity',
    help: 'Verdict severity of the VM: 0 ok, 1 info, 2 warning, 3 critical.',
    labelNames: VM_LABELS,
    registers: r,
    collect() {
      this.reset();
      for (const [id, s] of vms) if (s.severity) this.set(labelsOf(id, s), severityRank(s.severity));
    },
  });
  new Gauge({
    name: 'physbits_vm_reason_info',
    help: "Always 1, one series per reason of the VM's verdict: reason is its code (docs/reasons.md), severity its own.",
    labelNames: [...VM_LABELS, 'reason', 'severity'],
    registers: r,
    collect() {
      this.reset();
      for (const [id, s] of vms) {
        const labels = labelsOf(id, s);
        for (const reason of s.reasons) this.set({ ...labels, reason: reason.code, severity: reason.severity }, 1);
      }
    },
  });
  new Gauge({
    name: 'physbits_vm_up',
    help: "1 when the VM's QMP socket answered the last read, 0 when not.",
    labelNames: VM_LABELS,
    registers: r,
    collect() {
      this.reset();
      for (const [id, s] of vms) if (s.up !== null) this.set(labelsOf(id, s), s.up ? 1 : 0);
    },
  });
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
  new Counter({
    name: 'physbits_refused_commands_total',
    help: 'QMP commands the guard refused.',
    labelNames: [...VM_LABELS, 'command'],
    registers: r,
    collect() {
      this.reset();
      for (const [id, s] of vms) {
        const labels = labelsOf(id, s);
        for (const [command, n] of s.refused) this.inc({ ...labels, command }, n);
      }
    },
  });
  new Counter({
    name: 'physbits_qmp_errors_total',
    help: 'Failed QMP reads, by error code.',
    labelNames: [...VM_LABELS, 'code'],
    registers: r,
    collect() {
      this.reset();
      for (const [id, s] of vms) {
        const labels = labelsOf(id, s);
        for (const [code, n] of s.errors) this.inc({ ...labels, code }, n);
      }
    },
  });
  // The registry takes any metric object whose get() answers in prom-client's JSON shape.
  registry.registerMetric(durationHistogram(vms, labelsOf) as unknown as Metric);
}
