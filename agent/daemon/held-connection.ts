/**
 * Facts over a held QMP connection: the daemon is the VM's sole QMP client, listens to its events,
 * re-reads the facts they change, pings it so a hung QEMU turns `unknown` quickly, reconnects with
 * backoff, and (through `attach`) serves the guarded socket while connected.
 */
import { QmpClient } from '../../qmp/client';
import { QmpError, TimeoutError } from '../../qmp/errors';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from '../core/backoff';
import type { Config } from '../core/config';
import { VmShutDownError } from '../core/errors';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import { readGuestFacts } from '../facts/guest-facts';
import type { FactReport, FactSource } from './fact-source';

/** Events after which facts may have changed. */
export const REREAD_EVENTS = new Set([
  'STOP',
  'RESUME',
  'RESET',
  'SHUTDOWN',
  'POWERDOWN',
  'MIGRATION',
  'MIGRATION_PASS',
  'DEVICE_DELETED',
  'MEMORY_DEVICE_SIZE_CHANGE',
  'MEM_UNPLUG_ERROR',
  'DEVICE_UNPLUG_GUEST_ERROR',
  'ACPI_DEVICE_OST',
]);

/** What runs beside a held connection (the guard's proxy); closed when the connection ends. */
/** Event-triggered re-reads of one VM are at least this far apart. */
export const EVENT_REREAD_MIN_MS = 1000;

export interface Attachment {
  close(): Promise<void>;
}

export interface HeldConnectionOptions {
  socket: string;
  /** The VM's name for logs. */
  name: () => string;
  config: () => Config;
  logger: Logger;
  timers: Timers;
  backoff?: BackoffOptions;
  /** Called once per connection (the guard); its close() runs when the connection ends. */
  attach?: (client: QmpClient) => Promise<Attachment | null>;
  /** Milliseconds between heartbeats; default qmp.heartbeatMs. */
  heartbeatInterval?: () => number;
  /** Takes a turn for each full read (the daemon reads at most qmp.concurrency VMs at once); default none. */
  readTurn?: <T>(read: () => Promise<T>) => Promise<T>;
  /** The timers heartbeats are scheduled on (the daemon gathers many VMs' into one wake-up); default `timers`. */
  heartbeatTimers?: Timers;
  /** Each QMP command's round trip (seconds, send to reply): reads, heartbeats, guarded clients' commands. */
  observe?: (seconds: number) => void;
  report: FactReport;
}

export class HeldConnection implements FactSource {
  private client: QmpClient | null = null;
  private attachment: Attachment | null = null;
  private reconnectTimer: unknown = null;
  private heartbeat: unknown = null;
  private rereadTimer: unknown = null;
  /** When the last event-triggered re-read started (EVENT_REREAD_MIN_MS apart). */
  private lastEventRead = -Infinity;
  private attempt = 0;
  private stopped = false;
  /** Whether the last read over the connection succeeded. */
  private lastReadOk = false;
  /** The run state the last read saw; a heartbeat that sees another one reads again. */
  private lastRunState: string | null = null;
  private reading: Promise<void> | null = null;
  /** QEMU's SHUTDOWN reason on the current connection: its closing after it is a planned end. */
  private shutdownReason: string | null = null;
  /** The connection attempt under way, so that stop() can wait for what it creates. */
  private connecting: Promise<void> | null = null;

  constructor(private readonly opts: HeldConnectionOptions) {}

  start(): void {
    void this.connect();
  }

  async refresh(): Promise<void> {
    if (this.client) return this.read();
  }

  /** A reconnect waiting out its backoff goes now; a connected VM is left alone. */
  kick(): void {
    if (this.stopped || !this.reconnectTimer || this.client) return;
    this.opts.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.attempt = 0;
    void this.connect();
  }

  rereadSoon(delayMs: number): void {
    if (this.stopped || this.rereadTimer) return;
    this.rereadTimer = this.opts.timers.setTimeout(() => {
      this.rereadTimer = null;
      void this.read();
    }, delayMs);
  }

  upstream(): QmpClient | null {
    return this.client;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.reconnectTimer, this.rereadTimer]) if (t) this.opts.timers.clearTimeout(t);
    this.reconnectTimer = this.rereadTimer = null;
    this.clearHeartbeat();
    const client = this.client;
    this.client = null;
    await client?.close().catch(() => undefined);
    // A connection being set up (its guarded socket half made) finishes and is torn down before
    // stop() returns, so nothing it created outlives the daemon.
    // (Bounded: a QEMU that never greets must not hold up the daemon's exit.)
    if (this.connecting) {
      let t: unknown;
      await Promise.race([
        this.connecting.catch(() => undefined),
        new Promise<void>((r) => (t = this.opts.timers.setTimeout(r, 2000))),
      ]);
      this.opts.timers.clearTimeout(t);
    }
    await this.detach();
  }

  private connect(): Promise<void> {
    if (this.connecting) return this.connecting;
    this.connecting = this.connectOnce().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async connectOnce(): Promise<void> {
    if (this.stopped) return;
    const config = this.opts.config();
    let client: QmpClient;
    try {
      // Guarded-socket clients share this connection: each has at most one in-band command and a few
      // out-of-band ones in flight, on top of the daemon's own reads.
      client = await QmpClient.connect(this.opts.socket, {
        timeoutMs: config.qmp.timeoutMs,
        maxLineBytes: config.qmp.maxLineBytes,
        maxPending: config.qmp.maxPending + (this.opts.attach ? config.guard.maxClients * 4 : 0),
        onReply: this.opts.observe && ((_command, seconds) => this.opts.observe!(seconds)),
      });
    } catch (err) {
      this.opts.report.failed(err);
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) {
      await client.close().catch(() => undefined);
      return;
    }
    this.client = client;
    this.shutdownReason = null;
    client.on('event', (ev) => this.onEvent(ev));
    client.on('close', (err?: QmpError) => this.onClose(client, err));
    await this.read();
    if (this.client !== client || this.stopped) return;
    if (this.lastReadOk) this.attempt = 0;
    if (this.opts.attach) {
      try {
        this.attachment = await this.opts.attach(client);
        this.opts.report.guard?.(null);
      } catch (err) {
        // Holding QEMU's only monitor with no guarded socket in front of it would lock every tool
        // out: let go of it, say so, and try again with backoff.
        this.opts.logger.error('guard could not start; QEMU socket released', {
          vm: this.opts.name(),
          error: (err as Error).message,
        });
        if (this.client === client) {
          this.client = null;
          this.clearHeartbeat();
          await client.close().catch(() => undefined);
          this.opts.report.guard?.((err as Error).message);
          this.scheduleReconnect();
        }
        return;
      }
      if (this.client !== client) await this.detach();
    }
    this.scheduleHeartbeat();
  }

  private async detach(): Promise<void> {
    const attachment = this.attachment;
    this.attachment = null;
    await attachment?.close().catch(() => undefined);
  }

  private onClose(client: QmpClient, err?: QmpError): void {
    if (this.client !== client) return;
    this.client = null;
    this.clearHeartbeat();
    void this.detach();
    if (this.stopped) return;
    // QEMU closes its monitor after the SHUTDOWN event of a `quit` (or of the guest powering off):
    // whatever the socket reports then (end of file, ECONNRESET) is the planned end, not a fault.
    if (this.shutdownReason !== null)
      this.opts.report.failed(new VmShutDownError(this.opts.socket, this.shutdownReason));
    else this.opts.report.failed(err ?? new QmpError('QMP_CLOSED', `${this.opts.socket}: connection closed`));
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const delay = backoffDelay(this.attempt++, this.opts.backoff ?? DEFAULT_BACKOFF);
    this.reconnectTimer = this.opts.timers.setTimeout(() => {
      this.reconnectTimer = null;
      void this.connect();
    }, delay);
  }

  private onEvent(ev: { event: string; data?: unknown }): void {
    if (ev.event === 'SHUTDOWN') {
      // qapi/run-state.json: SHUTDOWN { guest, reason: ShutdownCause } (QEMU 4.0+; 'shutdown' before).
      const reason = (ev.data as { reason?: unknown } | undefined)?.reason;
      this.shutdownReason = typeof reason === 'string' ? reason : 'shutdown';
    }
    this.opts.report.event(ev);
    if (!REREAD_EVENTS.has(ev.event) || this.rereadTimer) return;
    // Events a guest can raise at will (ACPI_DEVICE_OST from a loop on the memory-hotplug status
    // port: 50 000 a second) coalesce into one re-read 50 ms after the first, and at most one per
    // EVENT_REREAD_MIN_MS per VM: a flood costs one full read a second, not one per event.
    const since = this.opts.timers.now() - this.lastEventRead;
    this.rereadTimer = this.opts.timers.setTimeout(
      () => {
        this.rereadTimer = null;
        this.lastEventRead = this.opts.timers.now();
        void this.read();
      },
      Math.max(50, EVENT_REREAD_MIN_MS - since),
    );
  }

  /** Reads facts over the held connection; overlapping calls share one read. */
  private read(): Promise<void> {
    if (this.reading) return this.reading;
    const client = this.client;
    if (!client) return Promise.resolve();
    const readOnce = () => readGuestFacts(client, { timeoutMs: this.opts.config().qmp.timeoutMs });
    this.reading = (async () => {
      try {
        const guest = await (this.opts.readTurn ? this.opts.readTurn(readOnce) : readOnce());
        if (this.client === client && !this.stopped) {
          this.lastReadOk = true;
          this.lastRunState = guest.runState;
          this.opts.report.read(guest);
        }
      } catch (err) {
        if (this.client === client && !this.stopped) {
          this.lastReadOk = false;
          this.opts.report.failed(err);
        }
      }
    })().finally(() => {
      this.reading = null;
    });
    return this.reading;
  }

  private clearHeartbeat(): void {
    if (this.heartbeat) (this.opts.heartbeatTimers ?? this.opts.timers).clearTimeout(this.heartbeat);
    this.heartbeat = null;
  }

  private scheduleHeartbeat(): void {
    if (this.stopped || !this.client) return;
    this.heartbeat = (this.opts.heartbeatTimers ?? this.opts.timers).setTimeout(
      this.beat,
      this.opts.heartbeatInterval?.() ?? this.opts.config().qmp.heartbeatMs,
    );
  }

  /**
   * One heartbeat: query-status within qmp.heartbeatTimeoutMs (QmpClient.ping), then the next one.
   * The same two functions serve every beat: nothing is made per beat but the command itself.
   */
  private readonly beat = (): void => {
    this.heartbeat = null;
    this.client?.ping(this.opts.config().qmp.heartbeatTimeoutMs, this.beaten);
  };

  private readonly beaten = (result: unknown, client: QmpClient): void => {
    if (result instanceof QmpError) {
      if (this.client !== client) return;
      if (result instanceof TimeoutError) return void this.stalled(client, result);
      return this.scheduleHeartbeat();
    }
    // Back from a stall: the facts are re-read, since events may have been missed meanwhile.
    // So are they when the run state changed without an event QEMU sends (an incoming migration
    // that completes into a paused guest leaves `inmigrate` silently).
    const status = (result as { status?: unknown } | null)?.status;
    const changed = typeof status === 'string' && status !== this.lastRunState;
    if ((!this.lastReadOk || changed) && this.client === client)
      return void this.read().then(() => this.scheduleHeartbeat());
    this.scheduleHeartbeat();
  };

  /** A stalled QEMU: report it, drop the connection and reconnect with backoff. */
  private async stalled(client: QmpClient, err: TimeoutError): Promise<void> {
    this.lastReadOk = false;
    this.opts.report.failed(err);
    this.client = null;
    await this.detach();
    await client.close().catch(() => undefined);
    this.scheduleReconnect();
  }
}
