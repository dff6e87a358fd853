/**
 * Where a supervisor's facts come from. A held connection (agent/daemon/held-connection.ts) keeps
 * the VM's QMP socket, follows its events and serves the guard; a poller (agent/daemon/fact-poller.ts)
 * visits a socket, or libvirt's monitor, on a schedule. Either reports what it read to its supervisor,
 * which judges it and keeps the status.
 */
import type { QmpClient } from '../../qmp/client';
import type { GuestFacts } from '../core/types';

/** What a fact source tells its supervisor. */
export interface FactReport {
  /** The facts were read. */
  read(guest: GuestFacts): void;
  /** The VM could not be read: unreachable, broken, stalled, gone. */
  failed(err: unknown): void;
  /** An event from the held connection. */
  event(ev: { event: string; data?: unknown }): void;
  /** The guarded socket could not be served (a message) or is served again (null); held connections only. */
  guard?(error: string | null): void;
}

export interface FactSource {
  start(): void;
  /** A full read now (the scheduled re-verify). */
  refresh(): Promise<void>;
  /** The socket was re-created (the VM restarted): a retry waiting out its delay goes now. */
  kick(): void;
  /** Reads again shortly, after a change QEMU sends no event for (held connections only). */
  rereadSoon(delayMs: number): void;
  /** The held upstream connection, when there is one. */
  upstream(): QmpClient | null;
  stop(): Promise<void>;
}
