/**
 * A migration the guard did not see: QEMU sent a MIGRATION event for a held guest, but no `migrate`
 * passed through its guarded socket (it came through another monitor), so its target was never
 * checked. QEMU's MIGRATION event carries only the status (qapi/migration.json, MigrationStatus), not
 * where the guest goes, so the decision rests on the configured peers: critical when any is narrower
 * than the guest (or the guest's width is unknown), then cancelled when guard.cancelUnsafe is on;
 * a warning otherwise. Pure: docs/reasons.md, MIGRATION_UNVERIFIED.
 */
import type { Reason } from '../core/types';
import { REASON_SEVERITY } from './reasons';

/** What a MIGRATION event's status means for an unseen migration. */
export type MigrationPhase = 'started' | 'ended' | 'other';

/** `setup`/`active` start one; `completed`/`failed`/`cancelled` end it; any other status changes nothing. */
export function migrationPhase(status: string): MigrationPhase {
  if (status === 'setup' || status === 'active') return 'started';
  if (status === 'completed' || status === 'failed' || status === 'cancelled') return 'ended';
  return 'other';
}

export interface UnseenMigrationInput {
  vm: string;
  /** The guest's phys-bits; null when its facts were not read. */
  guestBits: number | null;
  /** The configured peers; a null width (not known) is not counted as narrower. */
  peers: readonly { name: string; physBits: number | null }[];
  /** guard.cancelUnsafe. */
  cancelUnsafe: boolean;
}

export interface UnseenMigrationVerdict {
  reason: Reason;
  /** Send migrate_cancel to QEMU. */
  cancel: boolean;
}

export function judgeUnseenMigration(input: UnseenMigrationInput): UnseenMigrationVerdict {
  const { guestBits } = input;
  const narrower =
    guestBits === null
      ? []
      : input.peers.flatMap((p) =>
          p.physBits !== null && p.physBits < guestBits ? [{ name: p.name, physBits: p.physBits }] : [],
        );
  const critical = guestBits === null || narrower.length > 0;
  const cancel = critical && input.cancelUnsafe;
  return { reason: migrationUnverified(input.vm, guestBits, narrower, cancel), cancel };
}

/** A peer as the unseen-migration message names it. */
export interface NamedWidth {
  name: string;
  physBits: number;
}

/**
 * Critical when `narrower` names peers or the guest's width is unknown (`guestBits` null), else a
 * warning (every configured peer is wide enough); `cancelled` says the daemon sent migrate_cancel.
 */
export function migrationUnverified(
  vm: string,
  guestBits: number | null,
  narrower: readonly NamedWidth[],
  cancelled: boolean,
): Reason {
  const unseen = `a migration of ${vm} started that physbits did not see (not through the guarded socket)`;
  if (guestBits !== null && narrower.length === 0)
    return {
      code: 'MIGRATION_UNVERIFIED',
      severity: 'warning',
      message: `${unseen}; every configured peer is wide enough`,
    };
  const why =
    guestBits === null
      ? 'its width is unknown'
      : `peers ${narrower.map((p) => `${p.name} (${p.physBits} bits)`).join(', ')} are narrower than its ${guestBits} bits`;
  return {
    code: 'MIGRATION_UNVERIFIED',
    severity: REASON_SEVERITY.MIGRATION_UNVERIFIED,
    message: `${unseen}; ${why}, so the target may not back it${cancelled ? '; physbits cancelled it' : ''}`,
  };
}
