/**
 * One supervisor per VM. `hold`: the daemon is the VM's sole QMP client, listens to its events,
 * re-reads the facts they change, pings it so a hung QEMU turns `unknown` quickly, reconnects with
 * backoff, and (through `attach`) serves the guarded socket while connected. `poll`: connect, read,
 * disconnect on a schedule, never keeping the socket. Nothing a VM does can throw out of here.
 */
import { EventEmitter } from 'node:events';
import { QmpClient } from '../../qmp/client';
import { QmpError, TimeoutError } from '../../qmp/errors';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from '../core/backoff';
import type { Config } from '../core/config';
import { readGuestFacts } from '../facts/guest-facts';
import { FactsGate } from '../guard/facts-gate';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import { byDescendingSeverity, maxSeverity } from '../judge/reasons';
import type { GuestFacts, HostFacts, PeerFacts, Reason, VmStatus } from '../core/types';
import { errorInfo, judge, probeVm } from '../facts/vm-probe';
import { nameFromSocket } from '../core/vm-name';

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

export interface Attachment {
  close(): Promise<void>;
}

export interface SupervisorOptions {
  socket: string;
  /** `libvirt` polls through libvirt's own monitor (`probe`). */
  mode: 'hold' | 'poll' | 'libvirt';
  config: () => Config;
  host: () => HostFacts;
  peers: () => PeerFacts[];
  logger: Logger;
  timers: Timers;
  backoff?: BackoffOptions;
  /** Called once per connection in hold mode (the guard); its close() runs when the connection ends. */
  attach?: (client: QmpClient, sup: VmSupervisor) => Promise<Attachment | null>;
  observe?: (seconds: number) => void;
  /** Milliseconds between heartbeats; default qmp.heartbeatMs (the daemon spreads them over many VMs). */
  heartbeatInterval?: () => number;
  /** Poll mode only: how to read the facts, when not by visiting `socket` (libvirt's monitor). */
  probe?: () => Promise<GuestFacts>;
}

export class VmSupervisor extends EventEmitter {
  readonly socket: string;
  readonly mode: 'hold' | 'poll' | 'libvirt';
  private current: VmStatus;
  private client: QmpClient | null = null;
  private attachment: Attachment | null = null;
  private timer: unknown = null;
  private heartbeat: unknown = null;
  private rereadTimer: unknown = null;
  private attempt = 0;
  private stopped = false;
  private reading: Promise<void> | null = null;
  /** The guard's dangerous commands wait here (bounded) for facts not known yet. */
  private readonly gate: FactsGate;
  /** Reasons the daemon adds from what it saw happen (an unverified migration), kept until cleared. */
  private extra: Reason[] = [];

  constructor(private readonly opts: SupervisorOptions) {
    super();
    this.socket = opts.socket;
    this.mode = opts.mode;
    this.gate = new FactsGate(opts.timers);
    this.current = {
      socket: opts.socket,
      name: nameFromSocket(opts.socket),
      mode: opts.mode,
      error: { code: 'PENDING', message: 'not read yet' },
    };
  }

  get name(): string {
    return this.current.name;
  }

  status(): VmStatus {
    return this.current;
  }

  facts(): GuestFacts | null {
    return this.current.error ? null : (this.current.guest ?? null);
  }

  /** The held upstream connection, when there is one. */
  upstream(): QmpClient | null {
    return this.client;
  }

  /**
   * Resolves with the facts as soon as they are known, or null after `ms` (or at once when the
   * gate already holds its most waiters, or when the supervisor stops).
   */
  waitForFacts(ms: number): Promise<GuestFacts | null> {
    return this.gate.wait(ms);
  }

  start(): void {
    if (this.mode === 'hold') void this.connect();
    else void this.poll();
  }

  /** A full re-read now (the scheduled re-verify, or a host change). */
  async refresh(): Promise<void> {
    if (this.stopped) return;
    if (this.mode !== 'hold') return this.poll(false);
    if (this.client) return this.read();
  }

  /**
   * The socket was re-created (the VM restarted): a reconnect waiting out its backoff goes now,
   * and a polled VM that was unreachable is visited now.
   */
  kick(): void {
    if (this.stopped || !this.timer) return;
    if (this.mode === 'hold' && this.client) return;
    if (this.mode !== 'hold' && !this.current.error) return;
    this.opts.timers.clearTimeout(this.timer);
    this.timer = null;
    this.attempt = 0;
    if (this.mode === 'hold') void this.connect();
    else void this.poll();
  }

  /**
   * Reads the facts again shortly, over the held connection: after a command the guard let through
   * that changes them without an event (QEMU sends none for a plugged DIMM).
   */
  rereadSoon(delayMs = 200): void {
    if (this.stopped || this.mode !== 'hold' || this.rereadTimer) return;
    this.rereadTimer = this.opts.timers.setTimeout(() => {
      this.rereadTimer = null;
      void this.read();
    }, delayMs);
  }

  /** Re-judges the last facts (host or peers changed) without asking the VM. */
  rejudge(): void {
    const g = this.facts();
    if (g) this.setStatus(this.judgeFacts(g));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.timer, this.heartbeat, this.rereadTimer]) if (t) this.opts.timers.clearTimeout(t);
    this.timer = this.heartbeat = this.rereadTimer = null;
    this.gate.close();
    const c = this.client;
    this.client = null;
    await c?.close().catch(() => undefined);
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

  private judgeFacts(g: GuestFacts): VmStatus {
    const cfg = this.opts.config();
    const s = judge(this.socket, g, { config: cfg, host: this.opts.host(), peers: this.opts.peers(), mode: this.mode });
    if (!this.extra.length || !s.verdict) return s;
    const reasons = [...s.verdict.reasons, ...this.extra].sort(byDescendingSeverity);
    return {
      ...s,
      verdict: {
        ...s.verdict,
        reasons,
        severity: reasons.reduce((m, r) => maxSeverity(m, r.severity), s.verdict.severity),
      },
    };
  }

  /** Sets the daemon's own reasons for this VM and re-judges it. */
  setExtraReasons(reasons: Reason[]): void {
    this.extra = reasons;
    this.rejudge();
  }

  extraReasons(): readonly Reason[] {
    return this.extra;
  }

  private setStatus(s: VmStatus): void {
    const prev = this.current;
    this.current = { ...s, guardSocket: prev.guardSocket ?? null };
    this.gate.set(this.facts());
    this.emit('status', this.current, prev);
  }

  setGuardSocket(path: string | null): void {
    this.current = { ...this.current, guardSocket: path };
  }

  private fail(err: unknown): void {
    const info = errorInfo(err);
    if (this.current.error?.code !== info.code)
      this.opts.logger.warn('VM unreachable', {
        vm: this.name,
        socket: this.socket,
        code: info.code,
        error: info.message,
      });
    this.setStatus({ socket: this.socket, name: this.current.name, mode: this.mode, error: info });
  }

  // ---- hold mode ----

  /** The connection attempt under way (hold mode), so that stop() can wait for what it creates. */
  private connecting: Promise<void> | null = null;

  private connect(): Promise<void> {
    if (this.connecting) return this.connecting;
    this.connecting = this.connectOnce().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async connectOnce(): Promise<void> {
    if (this.stopped) return;
    const cfg = this.opts.config();
    let client: QmpClient;
    try {
      // Guarded-socket clients share this connection: each has at most one in-band command and a few
      // out-of-band ones in flight, on top of the daemon's own reads.
      client = await QmpClient.connect(this.socket, {
        timeoutMs: cfg.qmp.timeoutMs,
        maxLineBytes: cfg.qmp.maxLineBytes,
        maxPending: cfg.qmp.maxPending + (this.opts.attach ? cfg.guard.maxClients * 4 : 0),
      });
    } catch (err) {
      this.fail(err);
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) {
      await client.close().catch(() => undefined);
      return;
    }
    this.client = client;
    client.on('event', (ev: { event: string; data?: unknown }) => this.onEvent(ev));
    client.on('close', (err?: QmpError) => this.onClose(client, err));
    await this.read();
    if (this.client !== client || this.stopped) return;
    if (!this.current.error) this.attempt = 0;
    if (this.opts.attach) {
      try {
        this.attachment = await this.opts.attach(client, this);
      } catch (err) {
        this.opts.logger.error('guard could not start', { vm: this.name, error: (err as Error).message });
      }
      if (this.client !== client) await this.detach();
    }
    this.scheduleHeartbeat();
  }

  private async detach(): Promise<void> {
    const a = this.attachment;
    this.attachment = null;
    await a?.close().catch(() => undefined);
  }

  private onClose(client: QmpClient, err?: QmpError): void {
    if (this.client !== client) return;
    this.client = null;
    if (this.heartbeat) this.opts.timers.clearTimeout(this.heartbeat);
    this.heartbeat = null;
    void this.detach();
    if (this.stopped) return;
    this.fail(err ?? new QmpError('QMP_CLOSED', `${this.socket}: connection closed`));
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.timer) return;
    const delay = backoffDelay(this.attempt++, this.opts.backoff ?? DEFAULT_BACKOFF);
    this.timer = this.opts.timers.setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, delay);
  }

  private onEvent(ev: { event: string; data?: unknown }): void {
    this.emit('qmp-event', ev);
    if (!REREAD_EVENTS.has(ev.event) || this.rereadTimer) return;
    this.rereadTimer = this.opts.timers.setTimeout(() => {
      this.rereadTimer = null;
      void this.read();
    }, 50);
  }

  /** Reads facts over the held connection; overlapping calls share one read. */
  private read(): Promise<void> {
    if (this.reading) return this.reading;
    const client = this.client;
    if (!client) return Promise.resolve();
    const started = process.hrtime.bigint();
    this.reading = (async () => {
      try {
        const g = await readGuestFacts(client, { timeoutMs: this.opts.config().qmp.timeoutMs });
        this.opts.observe?.(Number(process.hrtime.bigint() - started) / 1e9);
        if (this.client === client && !this.stopped) this.setStatus(this.judgeFacts(g));
      } catch (err) {
        if (this.client === client && !this.stopped) this.fail(err);
      }
    })().finally(() => {
      this.reading = null;
    });
    return this.reading;
  }

  private scheduleHeartbeat(): void {
    if (this.stopped || !this.client) return;
    const cfg = this.opts.config();
    this.heartbeat = this.opts.timers.setTimeout(async () => {
      this.heartbeat = null;
      const client = this.client;
      if (!client) return;
      try {
        await client.execute('query-status', undefined, { timeoutMs: cfg.qmp.heartbeatTimeoutMs });
        // Back from a stall: the facts are re-read, since events may have been missed meanwhile.
        if (this.current.error && this.client === client) await this.read();
      } catch (err) {
        if (this.client !== client) return;
        if (err instanceof TimeoutError) {
          // A stalled QEMU: report it, drop the connection and reconnect with backoff.
          this.fail(err);
          this.client = null;
          await this.detach();
          await client.close().catch(() => undefined);
          this.scheduleReconnect();
          return;
        }
      }
      this.scheduleHeartbeat();
    }, this.opts.heartbeatInterval?.() ?? cfg.qmp.heartbeatMs);
  }

  // ---- poll mode ----

  private async poll(reschedule = true): Promise<void> {
    if (this.stopped) return;
    const cfg = this.opts.config();
    if (this.opts.probe) {
      try {
        const g = await this.opts.probe();
        if (!this.stopped) this.setStatus(this.judgeFacts(g));
      } catch (err) {
        if (!this.stopped) this.fail(err);
      }
    } else {
      const s = await probeVm(this.socket, {
        config: cfg,
        host: this.opts.host(),
        peers: this.opts.peers(),
        mode: this.mode,
        observe: this.opts.observe,
      });
      if (this.stopped) return;
      if (s.error) this.fail(new QmpError(s.error.code, s.error.message));
      else this.setStatus(s);
    }
    if (reschedule) {
      this.timer = this.opts.timers.setTimeout(
        () => {
          this.timer = null;
          void this.poll();
        },
        (this.mode === 'libvirt' ? cfg.discovery.libvirtPollSeconds : cfg.discovery.pollIntervalSeconds) * 1000,
      );
    }
  }
}
