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
const foundGuest = (physBits: number): Arrival => ({
  notice: null,
  found: { kind: 'guest', physBits, host: 'hv1', source: "live peer hv1's status" },
});
const foundHost = (physBits: number): Arrival => ({
  notice: null,
  found: { kind: 'host', physBits, host: 'hv1', source: 'the limit of source host hv1' },
});
const unknown: Arrival = {
  notice: null,
  found: { kind: 'unknown', why: "the width of guest 'web1' at its source is unknown: 1 live peers do not run it" },
};

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
    title: 'found at the source (a live peer runs it with 52): wider than this host, critical',
    guest: { hostPhysBits: true, physBits: 48, incoming: completed },
    arrival: foundGuest(52),
    physBits: 52,
    migratedIn: { bootedPhysBits: 52, qemuPhysBits: 48, from: 'hv1' },
    codes: ['GUEST_WIDER_THAN_HOST', 'MIGRATED_WIDTH_NOTIFIED'],
    severity: 'critical',
    relation: 'wider',
  },
  {
    title: 'found at the source while QEMU still waits for the stream: judged by it already',
    guest: { hostPhysBits: true, physBits: 48, incoming: pending },
    arrival: foundGuest(46),
    physBits: 46,
    migratedIn: { bootedPhysBits: 46, qemuPhysBits: 48, from: 'hv1' },
    codes: ['MIGRATED_WIDTH_NOTIFIED', 'GUEST_NARROWER_THAN_HOST'],
    severity: 'info',
    relation: 'narrower',
  },
  {
    title: "the source host's limit, capped by the guest's host-phys-bits-limit",
    guest: { hostPhysBits: true, hostPhysBitsLimit: 50, physBits: 48, incoming: completed },
    arrival: foundHost(52),
    physBits: 50,
    migratedIn: { bootedPhysBits: 50, qemuPhysBits: 48, from: 'hv1' },
    codes: ['GUEST_WIDER_THAN_HOST', 'MIGRATED_WIDTH_NOTIFIED'],
    severity: 'critical',
    relation: 'wider',
  },
  {
    title: 'a notice wins over what was found',
    guest: { hostPhysBits: true, physBits: 48, incoming: completed },
    arrival: { ...foundGuest(52), notice: { physBits: 46, from: 'hv2' } },
    physBits: 46,
    migratedIn: { bootedPhysBits: 46, qemuPhysBits: 48, from: 'hv2' },
    codes: ['MIGRATED_WIDTH_NOTIFIED', 'GUEST_NARROWER_THAN_HOST'],
    severity: 'info',
    relation: 'narrower',
  },
  {
    title: 'nothing knew: unverified, a warning (a restore looks the same to QEMU)',
    guest: { hostPhysBits: true, physBits: 48, incoming: completed },
    arrival: unknown,
    physBits: 48,
    migratedIn: { bootedPhysBits: null, qemuPhysBits: 48, from: null },
    codes: ['MIGRATED_WIDTH_UNVERIFIED', 'GUEST_EQUALS_HOST'],
    severity: 'warning',
    relation: 'equal',
  },
  {
    title: 'nothing knew while QEMU still waits: nothing yet',
    guest: { hostPhysBits: true, physBits: 48, incoming: pending },
    arrival: unknown,
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

test('the reasons say where the width was read, or what was asked', (t) => {
  const guest = guestFacts({ hostPhysBits: true, physBits: 48, incoming: completed });
  t.is(
    applyArrival(guest, foundGuest(46)).reason!.message,
    "host-phys-bits=on guest that arrived by migration from hv1: it keeps the 46 bits it booted with (read from live peer hv1's status), " +
      'not the 48 bits QEMU here reports, which it takes at its next reset; every rule here judges 46 bits',
  );
  t.regex(
    applyArrival(guest, foundHost(46)).reason!.message,
    /it keeps the width it booted with, at most 46 bits \(the limit of the host it came from, read from the limit of source host hv1\)/,
  );
  t.regex(
    applyArrival(guest, unknown).reason!.message,
    /no guard told this host the booted width; the width of guest 'web1' at its source is unknown: 1 live peers do not run it; the rules here use 48 bits/,
  );
});

test('applyArrival leaves a guest that did not arrive by migration alone', (t) => {
  const guest = guestFacts({ hostPhysBits: true, physBits: 48 });
  t.deepEqual(applyArrival(guest, notice(52)), { guest, reason: null });
});
