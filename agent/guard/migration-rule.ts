/**
 * The migration rule: may this guest move to that peer? `checkMigration` is the pure decision for
 * one known (or unknown) peer, shared by the guard, `physbitsctl check-migration` and
 * POST /v1/check-migration; `decideMigration` applies it to every destination a `migrate` names.
 */
import type { GuestFacts, HostFacts, PeerFacts, Policy } from '../core/types';
import { describeTarget, type MigrationTarget } from './migration-target';
import { hex } from '../core/format';
import { quote, REFUSED } from './refusal';

export interface MigrationPolicy extends Pick<Policy, 'accelerators'> {
  /** guard.unknownPeer; 'refuse' when absent. */
  unknownPeer?: 'refuse' | 'allow';
}

export interface MigrationRuleResult {
  allowed: boolean;
  code?: string;
  message: string;
}

/** A peer a `migrate` was allowed to, and the port it named (the destination QEMU's -incoming port). */
export interface AllowedDestination {
  peer: string;
  port: string;
}

export interface MigrationInput {
  guest: GuestFacts;
  host: HostFacts;
  /** null: not a configured peer, or its width is unknown. */
  peer: { name: string; physBits: number | null; why?: string } | null;
  policy: MigrationPolicy;
  /** The destination as the command named it, for messages. */
  target?: string;
  /** Why `peer` is null, for messages (default: not a configured peer). */
  unknownReason?: string;
}

function unknownPeer(input: MigrationInput, why: string): MigrationRuleResult {
  const allow = input.policy.unknownPeer === 'allow';
  const where = input.target ? ` (${input.target})` : '';
  if (allow) return { allowed: true, message: `${why}${where}; allowed because guard.unknownPeer is 'allow'` };
  return {
    allowed: false,
    code: REFUSED.MIGRATION_UNKNOWN_PEER,
    message: `${why}${where}, so its physical address width cannot be checked; add it to peers[] with its address and physBits (or a live agent url), or set guard.unknownPeer to 'allow'`,
  };
}

/** Pure: the verdict for migrating `guest` from this host to `peer`. */
export function checkMigration(input: MigrationInput): MigrationRuleResult {
  const { guest, host, peer, policy } = input;
  const vm = guest.name ?? 'the guest';
  if (!policy.accelerators.includes(guest.accelerator)) {
    return {
      allowed: true,
      message: `${vm} runs under ${guest.accelerator}, which policy.accelerators does not enforce; any destination width works`,
    };
  }
  if (!peer) return unknownPeer(input, input.unknownReason ?? 'the destination is not a configured peer');
  if (peer.physBits === null)
    return unknownPeer(
      input,
      peer.why ??
        `the width of peer ${peer.name} is unknown (its agent did not answer and no static physBits is configured)`,
    );
  const limit = 2 ** peer.physBits;
  if (guest.physBits > peer.physBits) {
    return {
      allowed: false,
      code: REFUSED.MIGRATION_PEER_NARROWER,
      message: `${vm} has phys-bits=${guest.physBits} but peer ${peer.name} has ${peer.physBits}-bit physical addresses (this host ${host.name}: ${host.physBits}); the guest could map memory the destination cannot back. Restart the guest with phys-bits=${peer.physBits} (or host-phys-bits-limit=${peer.physBits}) before moving it, or pick a peer with at least ${guest.physBits} bits`,
    };
  }
  const highest = guest.layout?.highestAddress ?? null;
  if (highest !== null && highest > limit) {
    return {
      allowed: false,
      code: REFUSED.MIGRATION_LAYOUT_TOO_HIGH,
      message: `${vm}'s memory layout reaches ${hex(highest - 1)}, above peer ${peer.name}'s ${peer.physBits}-bit limit ${hex(limit)}; shrink maxmem or the 64-bit PCI hole (pci-hole64-size), or pick a wider peer`,
    };
  }
  const layoutNote = highest === null ? '; the layout is unknown, so only phys-bits were compared' : '';
  return {
    allowed: true,
    message: `peer ${peer.name} has ${peer.physBits} bits, enough for ${vm} (phys-bits=${guest.physBits})${layoutNote}`,
  };
}

/** A peer as the guard names it: a configured one, or a host known from Prometheus. */
export type PeerRef = Pick<PeerFacts, 'name'>;

/** What the guard needs of the peer list (agent/peers/ answers it: the config, live agents and Prometheus). */
export interface PeerLookup {
  findByAddress(host: string): PeerRef | null | Promise<PeerRef | null>;
  facts(peer: PeerRef): Promise<Pick<PeerFacts, 'name' | 'physBits' | 'reachable' | 'why'>>;
}

/** Every destination of one `migrate`: the first refusal wins; allowed when all are. */
export async function decideMigration(input: {
  targets: MigrationTarget[];
  guest: GuestFacts;
  host: HostFacts;
  policy: MigrationPolicy;
  peers: PeerLookup;
}): Promise<MigrationRuleResult & { destinations?: AllowedDestination[] }> {
  const messages: string[] = [];
  const destinations: AllowedDestination[] = [];
  for (const t of input.targets) {
    const target = describeTarget(t);
    let result: MigrationRuleResult;
    if (t.kind === 'local') {
      const unknownReason = `a ${t.transport}: destination does not say which host receives the guest`;
      result = checkMigration({ ...input, peer: null, target: quote(target), unknownReason });
    } else if (t.kind === 'invalid') {
      // A destination this QEMU would not read as physbits does, or would reject (QEMU 10.0 exits
      // on a malformed rdma: uri), is refused whatever the accelerator or guard.unknownPeer.
      result = {
        allowed: false,
        code: REFUSED.MIGRATION_UNKNOWN_PEER,
        message: `the migration destination cannot be read as the guest's QEMU reads it: ${t.reason}; refused whatever guard.unknownPeer says`,
      };
    } else {
      const cfg = await input.peers.findByAddress(t.host);
      if (!cfg) {
        result = checkMigration({ ...input, peer: null, target: quote(target) });
      } else {
        const facts = await input.peers.facts(cfg);
        result = checkMigration({
          ...input,
          peer: { name: cfg.name, physBits: facts.physBits, why: facts.why },
          target: quote(target),
        });
        if (result.allowed) destinations.push({ peer: cfg.name, port: t.port });
      }
    }
    if (!result.allowed) return result;
    messages.push(result.message);
  }
  return { allowed: true, message: messages.join('; '), destinations };
}
