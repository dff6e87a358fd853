/**
 * A host-phys-bits=on guest that arrived by migration (agent/judge/vm-status.ts applyArrival and
 * judgeVm), as a table: with the source guard's notice it is judged by its booted width; without
 * one, once the stream is loaded, the width QEMU reports is unverified.
 */
import test from 'ava';
import { applyArrival, judgeVm, type Arrival } from '../../agent/judge/vm-status';
import type { GuestFacts, GuestIncoming, Relation, Severity } from '../../agent/core/types';
import { guestFacts, hostFacts } from '../helpers/facts';

const policy = { accelerators: ['kvm'], narrowerSeverity: 'ok' as const };
const completed: GuestIncoming = { state: 'completed', port: null };
const pending: GuestIncoming = { state: 'pending', port: '4444' };
const notice = (physBits: number): Arrival => ({ notice: { physBits, from: 'hv1' } });

interface Row {
  title: string;
  guest: Partial<GuestFacts>;
  arrival: Arrival | null;
  physBits: number;
  migratedIn: GuestFacts['migratedIn'];
  codes: string[];
  severity: Severity;
  relation: Relation;
}

// This host: 48 bits; QEMU here reports 48 for every host-phys-bits=on guest.
const rows: Row[] = [
  {
    title: 'booted 52 elsewhere, told: wider than this host, critical',
    guest: { hostPhysBits: true, physBits: 48, incoming: completed },
    arrival: notice(52),
    physBits: 52,
    migratedIn: { bootedPhysBits: 52, qemuPhysBits: 48, from: 'hv1' },
    codes: ['GUEST_WIDER_THAN_HOST', 'MIGRATED_WIDTH_NOTIFIED'],
    severity: 'critical',
    relation: 'wider',
  },
  {
    title: 'booted 46 elsewhere, told: narrower, info',
    guest: { hostPhysBits: true, physBits: 48, incoming: completed },
    arrival: notice(46),
    physBits: 46,
    migratedIn: { bootedPhysBits: 46, qemuPhysBits: 48, from: 'hv1' },
    codes: ['MIGRATED_WIDTH_NOTIFIED', 'GUEST_NARROWER_THAN_HOST'],
    severity: 'info',
    relation: 'narrower',
  },
  {
    title: 'booted with the same width, told: nothing to say',
    guest: { hostPhysBits: true, physBits: 48, incoming: completed },
    arrival: notice(48),
    physBits: 48,
    migratedIn: { bootedPhysBits: 48, qemuPhysBits: 48, from: 'hv1' },
    codes: ['GUEST_EQUALS_HOST'],
    severity: 'ok',
    relation: 'equal',
  },
  {
    title: 'arrived, not told: unverified, not "equal and fine"',
    guest: { hostPhysBits: true, physBits: 48, incoming: completed },
    arrival: { notice: null },
    physBits: 48,
    migratedIn: { bootedPhysBits: null, qemuPhysBits: 48, from: null },
    codes: ['MIGRATED_WIDTH_UNVERIFIED', 'GUEST_EQUALS_HOST'],
    severity: 'warning',
    relation: 'equal',
  },
  {
    title: 'still waiting for the stream, not told: nothing yet',
    guest: { hostPhysBits: true, physBits: 48, incoming: pending },
    arrival: { notice: null },
    physBits: 48,
    migratedIn: undefined,
    codes: ['GUEST_EQUALS_HOST'],
    severity: 'ok',
    relation: 'equal',
  },
  {
    title: 'reset since it arrived (no arrival): QEMU’s width',
    guest: { hostPhysBits: true, physBits: 48, incoming: completed },
    arrival: null,
    physBits: 48,
    migratedIn: undefined,
    codes: ['GUEST_EQUALS_HOST'],
    severity: 'ok',
    relation: 'equal',
  },
  {
    title: 'fixed phys-bits: a notice changes nothing (QEMU reports what the command line says)',
    guest: { hostPhysBits: false, physBits: 48, incoming: completed },
    arrival: notice(52),
    physBits: 48,
    migratedIn: undefined,
    codes: ['GUEST_EQUALS_HOST'],
    severity: 'ok',
    relation: 'equal',
  },
];

for (const row of rows) {
  test(row.title, (t) => {
    const guest = guestFacts({ ...row.guest, layout: null });
    const status = judgeVm({
      socket: '/run/qemu/web1.qmp',
      guest,
      host: hostFacts(48),
      peers: [],
      policy,
      arrival: row.arrival,
      checkedAt: '2026-01-01T00:00:00.000Z',
    });
    t.is(status.guest!.physBits, row.physBits);
    t.deepEqual(status.guest!.migratedIn, row.migratedIn);
    t.deepEqual(
      status.verdict!.reasons.map((r) => r.code),
      row.codes,
    );
    t.is(status.verdict!.severity, row.severity);
    t.is(status.verdict!.relation, row.relation);
    // The facts as read are left as they were: a re-judgement starts from QEMU's width again.
    t.is(guest.physBits, row.guest.physBits!);
  });
}

test('applyArrival leaves a guest that did not arrive by migration alone', (t) => {
  const guest = guestFacts({ hostPhysBits: true, physBits: 48 });
  t.deepEqual(applyArrival(guest, notice(52)), { guest, reason: null });
});
