import test from 'ava';
import type { Severity } from '../../agent/core/types';
import { guardUnavailable, REASON_SEVERITY } from '../../agent/judge/reasons';
import { judgeUnseenMigration, migrationPhase, type MigrationPhase } from '../../agent/judge/unseen-migration';

const UNSEEN = 'a migration of web1 started that physbits did not see (not through the guarded socket)';

const rows: {
  title: string;
  guestBits: number | null;
  peers: { name: string; physBits: number | null }[];
  cancelUnsafe: boolean;
  severity: Severity;
  cancel: boolean;
  message: string;
}[] = [
  {
    title: 'every peer as wide as the guest: warning, never cancelled',
    guestBits: 40,
    peers: [
      { name: 'hv2', physBits: 40 },
      { name: 'hv3', physBits: 46 },
    ],
    cancelUnsafe: true,
    severity: 'warning',
    cancel: false,
    message: `${UNSEEN}; every configured peer is wide enough`,
  },
  {
    title: 'no peers at all: warning',
    guestBits: 40,
    peers: [],
    cancelUnsafe: true,
    severity: 'warning',
    cancel: false,
    message: `${UNSEEN}; every configured peer is wide enough`,
  },
  {
    title: 'a peer of unknown width is not counted as narrower',
    guestBits: 46,
    peers: [{ name: 'hv2', physBits: null }],
    cancelUnsafe: true,
    severity: 'warning',
    cancel: false,
    message: `${UNSEEN}; every configured peer is wide enough`,
  },
  {
    title: 'narrower peers named in order: critical, cancelled with guard.cancelUnsafe',
    guestBits: 46,
    peers: [
      { name: 'hv2', physBits: 39 },
      { name: 'hv3', physBits: 46 },
      { name: 'hv4', physBits: 40 },
    ],
    cancelUnsafe: true,
    severity: 'critical',
    cancel: true,
    message: `${UNSEEN}; peers hv2 (39 bits), hv4 (40 bits) are narrower than its 46 bits, so the target may not back it; physbits cancelled it`,
  },
  {
    title: 'a narrower peer without guard.cancelUnsafe: critical, not cancelled',
    guestBits: 46,
    peers: [{ name: 'hv2', physBits: 39 }],
    cancelUnsafe: false,
    severity: 'critical',
    cancel: false,
    message: `${UNSEEN}; peers hv2 (39 bits) are narrower than its 46 bits, so the target may not back it`,
  },
  {
    title: "the guest's width unknown: critical even with wide peers",
    guestBits: null,
    peers: [{ name: 'hv2', physBits: 52 }],
    cancelUnsafe: true,
    severity: 'critical',
    cancel: true,
    message: `${UNSEEN}; its width is unknown, so the target may not back it; physbits cancelled it`,
  },
];

for (const row of rows) {
  test(`unseen migration: ${row.title}`, (t) => {
    const verdict = judgeUnseenMigration({
      vm: 'web1',
      guestBits: row.guestBits,
      peers: row.peers,
      cancelUnsafe: row.cancelUnsafe,
    });
    t.deepEqual(verdict, {
      reason: { code: 'MIGRATION_UNVERIFIED', severity: row.severity, message: row.message },
      cancel: row.cancel,
    });
  });
}

test("unseen migration: the critical case is the code's default severity", (t) => {
  t.is(REASON_SEVERITY.MIGRATION_UNVERIFIED, 'critical');
});

const phases: [string, MigrationPhase][] = [
  ['setup', 'started'],
  ['active', 'started'],
  ['completed', 'ended'],
  ['failed', 'ended'],
  ['cancelled', 'ended'],
  ['cancelling', 'other'],
  ['device', 'other'],
  ['', 'other'],
];

test('migration phase of each MIGRATION event status', (t) => {
  t.deepEqual(
    phases.map(([status]) => [status, migrationPhase(status)]),
    phases,
  );
});

test('GUARD_UNAVAILABLE: critical, the cause inside the sentence', (t) => {
  t.deepEqual(guardUnavailable('/run/physbits/guard/web1.qmp is served by pid 42'), {
    code: 'GUARD_UNAVAILABLE',
    severity: 'critical',
    message:
      "No guarded socket for this VM (/run/physbits/guard/web1.qmp is served by pid 42); physbits released QEMU's socket, so nothing guards it until the cause is fixed.",
  });
});
