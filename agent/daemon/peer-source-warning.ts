import type { Config } from '../core/config';

/**
 * The start-up warning of a config that knows no peer (no `peers`, no `fleet.prometheus`) while
 * `guard.unknownPeer` is `refuse`: every `migrate` the guard sees then goes to an unknown peer and is
 * refused. Null when a peer source is configured or unknown peers are allowed.
 */
export function peerSourceWarning(config: Pick<Config, 'peers' | 'fleet' | 'guard'>): string | null {
  if (config.peers.length > 0 || config.fleet.prometheus || config.guard.unknownPeer !== 'refuse') return null;
  return (
    'no peer source is configured (peers is empty, no fleet.prometheus) and guard.unknownPeer is refuse: ' +
    'every migration through the guard will be refused as going to an unknown peer (docs/configuration.md)'
  );
}
