/**
 * The per-VM series of /metrics (agent/api/metrics.ts holds the registry): written from each VM's
 * state at every scrape (collect()), keyed by the VM's id (agent/core/vm-name.ts). Two VMs with one
 * name keep their own series, a renamed VM or host is relabelled at once, and a VM that leaves
 * takes exactly its own series along. Every series carries `vm`, `id` and, once known, `host` and
 * `pool`.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
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
  /** The label set the duration histogram was last observed under (removed when it changes). */
  histogramLabels: Labels | null;
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
}
