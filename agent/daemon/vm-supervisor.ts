/**
 * One supervisor per VM: its status, the waiters for its facts, and the reasons the daemon adds
 * from what it saw happen; the facts come from a fact source: a held connection (`hold`), or a
 * poller over the socket (`poll`) or over libvirt's monitor (`libvirt`). Every read is judged on
 * the same path (agent/judge/vm-status.ts). Nothing a VM does can throw out of here.
 */
import { EventEmitter } from 'node:events';
import type { QmpClient } from '../../qmp/client';
import type { BackoffOptions } from '../core/backoff';
import type { Config } from '../core/config';
import { errorInfo, type VmShutDownError } from '../core/errors';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import type { GuestFacts, HostFacts, PeerFacts, Reason, VmStatus } from '../core/types';
import { nameFromSocket } from '../core/vm-name';
import { visitVm } from '../facts/vm-visit';
import { FactsGate } from '../guard/facts-gate';
import { judgeVm } from '../judge/vm-status';
import { FactPoller } from './fact-poller';
import type { FactReport, FactSource } from './fact-source';
import { HeldConnection, type Attachment } from './held-connection';

export { REREAD_EVENTS, type Attachment } from './held-connection';

export type SupervisorMode = 'hold' | 'poll' | 'libvirt';

export interface SupervisorOptions {
  socket: string;
  /** `libvirt` polls through libvirt's own monitor (`probe`). */
  mode: SupervisorMode;
  config: () => Config;
  host: () => HostFacts;
  peers: () => PeerFacts[];
  logger: Logger;
  timers: Timers;
  backoff?: BackoffOptions;
  /** Called once per connection in hold mode (the guard); its close() runs when the connection ends. */
  attach?: (client: QmpClient, supervisor: VmSupervisor) => Promise<Attachment | null>;
  observe?: (seconds: number) => void;
  /** Milliseconds between heartbeats; default qmp.heartbeatMs (the daemon spreads them over many VMs). */
  heartbeatInterval?: () => number;
  /** Hold mode: takes a turn for each full read (bounded concurrency); default none. */
  readTurn?: <T>(read: () => Promise<T>) => Promise<T>;
  /** The timers heartbeats are scheduled on; default `timers`. */
  heartbeatTimers?: Timers;
  /** Poll modes: how to read the facts, when not by visiting `socket` (libvirt's monitor). */
  probe?: () => Promise<GuestFacts>;
}

export class VmSupervisor extends EventEmitter {
  readonly socket: string;
  readonly mode: SupervisorMode;
  private current: VmStatus;
  private stopped = false;
  private readonly source: FactSource;
  /** The guard's dangerous commands wait here (bounded) for facts not known yet. */
  private readonly gate: FactsGate;
  /** Reasons the daemon adds from what it saw happen (an unverified migration), kept until cleared. */
  private extra: Reason[] = [];
  /** GUARD_UNAVAILABLE while the last attempt to serve the guarded socket failed. */
  private guardReason: Reason | null = null;

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
    this.source = this.createSource();
  }

  private createSource(): FactSource {
    const opts = this.opts;
    const report: FactReport = {
      read: (guest) => this.setStatus(this.judged(guest)),
      failed: (err) => this.fail(err),
      event: (ev) => this.emit('qmp-event', ev),
      guard: (error) => this.setGuardReason(error),
    };
    if (opts.mode === 'hold') {
      const attach = opts.attach;
      return new HeldConnection({
        socket: opts.socket,
        name: () => this.name,
        config: opts.config,
        logger: opts.logger,
        timers: opts.timers,
        backoff: opts.backoff,
        attach: attach && ((client) => attach(client, this)),
        heartbeatInterval: opts.heartbeatInterval,
        heartbeatTimers: opts.heartbeatTimers,
        readTurn: opts.readTurn,
        observe: opts.observe,
        report,
      });
    }
    const discovery = () => opts.config().discovery;
    return new FactPoller({
      readFacts: opts.probe ?? (() => visitVm(opts.socket, { qmp: opts.config().qmp, observe: opts.observe })),
      intervalMs: () =>
        (opts.mode === 'libvirt' ? discovery().libvirtPollSeconds : discovery().pollIntervalSeconds) * 1000,
      timers: opts.timers,
      report,
    });
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
    return this.source.upstream();
  }

  /**
   * Resolves with the facts as soon as they are known, or null after `ms` (at once when the gate
   * already holds its most waiters, or when the supervisor stops).
   */
  waitForFacts(ms: number): Promise<GuestFacts | null> {
    return this.gate.wait(ms);
  }

  start(): void {
    this.source.start();
  }

  /** A full re-read now (the scheduled re-verify, or a host change). */
  async refresh(): Promise<void> {
    if (this.stopped) return;
    return this.source.refresh();
  }

  /**
   * The socket was re-created (the VM restarted): a reconnect waiting out its backoff goes now,
   * and a polled VM that was unreachable is visited now.
   */
  kick(): void {
    if (!this.stopped) this.source.kick();
  }

  /**
   * Reads the facts again shortly, over the held connection: after a command the guard let through
   * that changes them without an event (QEMU sends none for a plugged DIMM).
   */
  rereadSoon(delayMs = 200): void {
    if (!this.stopped) this.source.rereadSoon(delayMs);
  }

  /** Re-judges the last facts (host or peers changed) without asking the VM. */
  rejudge(): void {
    const guest = this.facts();
    if (guest) this.setStatus(this.judged(guest));
  }

  /** Sets the daemon's own reasons for this VM and re-judges it. */
  setExtraReasons(reasons: Reason[]): void {
    this.extra = reasons;
    this.rejudge();
  }

  private setGuardReason(error: string | null): void {
    if (error === null && this.guardReason === null) return;
    this.guardReason =
      error === null
        ? null
        : {
            code: 'GUARD_UNAVAILABLE',
            severity: 'critical',
            message: `No guarded socket for this VM (${error}); physbits released QEMU's socket, so nothing guards it until the cause is fixed.`,
          };
    this.rejudge();
  }

  extraReasons(): readonly Reason[] {
    return this.extra;
  }

  setGuardSocket(path: string | null): void {
    this.current = { ...this.current, guardSocket: path };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.gate.close();
    await this.source.stop();
  }

  private judged(guest: GuestFacts): VmStatus {
    return judgeVm({
      socket: this.socket,
      mode: this.mode,
      guest,
      host: this.opts.host(),
      peers: this.opts.peers(),
      policy: this.opts.config().policy,
      extraReasons: this.guardReason ? [...this.extra, this.guardReason] : this.extra,
      checkedAt: new Date(this.opts.timers.now()).toISOString(),
    });
  }

  private setStatus(status: VmStatus): void {
    if (this.stopped) return;
    const prev = this.current;
    this.current = { ...status, guardSocket: prev.guardSocket ?? null };
    this.gate.set(this.facts());
    this.emit('status', this.current, prev);
  }

  private fail(err: unknown): void {
    if (this.stopped) return;
    const info = errorInfo(err);
    if (info.code === 'VM_SHUT_DOWN') {
      if (this.current.error?.code !== info.code)
        this.opts.logger.info('VM shut down', {
          vm: this.name,
          socket: this.socket,
          reason: (err as VmShutDownError).reason,
        });
    } else if (this.current.error?.code === 'VM_SHUT_DOWN' && info.code === 'QMP_CONNECT_FAILED') {
      // After a planned end, the socket is gone or refuses until QEMU runs again: that is the
      // expected state, not news; the status keeps saying the VM shut down.
      return;
    } else if (this.current.error?.code !== info.code)
      this.opts.logger.warn('VM unreachable', {
        vm: this.name,
        socket: this.socket,
        code: info.code,
        error: info.message,
      });
    this.setStatus({ socket: this.socket, name: this.current.name, mode: this.mode, error: info });
  }
}
