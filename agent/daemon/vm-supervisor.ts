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
import type { GuestFacts, GuestIncoming, HostFacts, PeerFacts, Reason, VmStatus } from '../core/types';
import { nameFromSocket, vmId } from '../core/vm-name';
import { visitVm } from '../facts/vm-visit';
import { FactsGate } from '../guard/facts-gate';
import { guardUnavailable } from '../judge/reasons';
import { judgeVm, type Arrival, type ArrivalFound } from '../judge/vm-status';
import type { IncomingNotice } from '../peers/incoming-notice';
import type { IncomingVm } from './incoming-notices';
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
  /** The peer guard's notice for a guest that arrived here by migration (agent/daemon/incoming-notices.ts). */
  claimNotice?: (vm: IncomingVm) => IncomingNotice | null;
  /**
   * The width a guest that arrived by migration had at its source (live peers, fleet.prometheus:
   * agent/peers/source-width.ts), asked when no notice claims it; never rejects.
   */
  sourceWidth?: (vm: { name: string; uuid: string | null }) => Promise<ArrivalFound>;
}

/** VmSupervisor's events: its status changed (now, before), and each QMP event of its held connection. */
export interface VmSupervisorEvents {
  status: [now: VmStatus, prev: VmStatus];
  'qmp-event': [ev: { event: string; data?: unknown }];
}

export class VmSupervisor extends EventEmitter<VmSupervisorEvents> {
  readonly socket: string;
  /** The VM's identity on this host (agent/core/vm-name.ts). */
  readonly id: string;
  readonly mode: SupervisorMode;
  private current: VmStatus;
  /** JSON.stringify(current), made when first asked for after each change (GET /v1/status). */
  private currentText: string | null = null;
  private stopped = false;
  private readonly source: FactSource;
  /** The guard's dangerous commands wait here (bounded) for facts not known yet. */
  private readonly gate: FactsGate;
  /** Reasons the daemon adds from what it saw happen (an unverified migration), kept until cleared. */
  private extra: Reason[] = [];
  /** GUARD_UNAVAILABLE while the last attempt to serve the guarded socket failed. */
  private guardReason: Reason | null = null;
  /** The facts as QEMU gave them, before the arrival is applied. */
  private raw: GuestFacts | null = null;
  /** A host-phys-bits=on guest received by migration and not reset since, with the notice when claimed. */
  private arrival: Arrival | null = null;
  /** The -incoming port seen while QEMU waited for the stream. */
  private incomingPort: string | null = null;
  /** A RESET since the guest arrived: it has re-read CPUID and now uses QEMU's width. */
  private resetSinceArrival = false;
  /** The source's width is being asked for; and in which state of the arrival it last was. */
  private asking = false;
  private askedIn: GuestIncoming['state'] | null = null;

  constructor(private readonly opts: SupervisorOptions) {
    super();
    this.socket = opts.socket;
    this.id = vmId(opts.socket);
    this.mode = opts.mode;
    this.gate = new FactsGate(opts.timers);
    this.current = {
      socket: opts.socket,
      id: this.id,
      name: nameFromSocket(opts.socket),
      mode: opts.mode,
      error: { code: 'PENDING', message: 'not read yet' },
    };
    this.source = this.createSource();
  }

  private createSource(): FactSource {
    const opts = this.opts;
    const report: FactReport = {
      read: (guest) => {
        this.raw = guest;
        this.trackArrival(guest);
        this.setStatus(this.judged(guest));
      },
      failed: (err) => this.fail(err),
      event: (ev) => {
        if (ev.event === 'RESET' && this.arrival) {
          // The guest reboots and reads CPUID again: from now on it uses QEMU's width.
          this.resetSinceArrival = true;
          this.arrival = null;
          this.askedIn = null;
          this.rejudge();
        }
        this.emit('qmp-event', ev);
      },
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

  /** status() as JSON text, serialised once per status however often it is asked for. */
  statusText(): string {
    return (this.currentText ??= JSON.stringify(this.current));
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
    if (this.raw && !this.current.error) this.setStatus(this.judged(this.raw));
  }

  /**
   * Keeps track of a host-phys-bits=on guest that QEMU received by migration: from the facts'
   * `incoming` until the guest is reset, or a read shows a QEMU that did not receive one.
   */
  private trackArrival(guest: GuestFacts): void {
    const incoming = guest.hostPhysBits ? guest.incoming : undefined;
    if (!incoming) {
      this.arrival = null;
      this.askedIn = null;
      this.incomingPort = null;
      this.resetSinceArrival = false;
      return;
    }
    if (incoming.state === 'pending') {
      this.resetSinceArrival = false;
      if (incoming.port !== null) this.incomingPort = incoming.port;
    }
    if (this.resetSinceArrival) return;
    this.arrival ??= { notice: null };
    this.claim(guest.name || this.name);
    this.askSource(guest, incoming.state);
  }

  /**
   * Without a notice, asks for the guest's width at its source: as soon as the arrival is seen
   * (while QEMU waits for the stream the source still runs the guest), and once more when the guest
   * has arrived if nothing knew it before. The answer is judged when it comes.
   */
  private askSource(guest: GuestFacts, state: GuestIncoming['state']): void {
    const arrival = this.arrival;
    const ask = this.opts.sourceWidth;
    if (!ask || !arrival || arrival.notice || this.asking) return;
    if (
      this.askedIn !== null &&
      !(arrival.found?.kind === 'unknown' && state === 'completed' && this.askedIn === 'pending')
    )
      return;
    this.asking = true;
    this.askedIn = state;
    const name = guest.name || this.name;
    const failed = (err: unknown): ArrivalFound => ({
      kind: 'unknown',
      why: `the width of guest '${name}' at its source could not be read (${(err as Error)?.message ?? String(err)})`,
    });
    void ask({ name, uuid: guest.uuid ?? null })
      .catch(failed)
      .then((found) => {
        this.asking = false;
        if (this.stopped || this.arrival !== arrival) return;
        if (found.kind === 'unknown')
          this.opts.logger.warn('width of a migrated guest at its source unknown', { vm: name, why: found.why });
        else
          this.opts.logger.info('width of a migrated guest at its source', {
            vm: name,
            physBits: found.physBits,
            host: found.host,
            source: found.source,
          });
        this.arrival = { ...arrival, found };
        this.rejudge();
      });
  }

  private claim(name: string): boolean {
    if (!this.arrival || this.arrival.notice || !this.opts.claimNotice) return false;
    const notice = this.opts.claimNotice({ name, port: this.incomingPort });
    if (!notice) return false;
    this.opts.logger.info('booted width of a migrated guest', {
      vm: name,
      physBits: notice.physBits,
      from: notice.from ?? undefined,
    });
    this.arrival = { notice: { physBits: notice.physBits, from: notice.from } };
    return true;
  }

  /** A peer's guard sent a notice: claims it when it is this VM's, and re-judges. */
  offerNotice(): boolean {
    if (!this.raw || !this.claim(this.raw.name || this.name)) return false;
    this.rejudge();
    return true;
  }

  /** Sets the daemon's own reasons for this VM and re-judges it. */
  setExtraReasons(reasons: Reason[]): void {
    this.extra = reasons;
    this.rejudge();
  }

  private setGuardReason(error: string | null): void {
    if (error === null && this.guardReason === null) return;
    this.guardReason = error === null ? null : guardUnavailable(error);
    this.rejudge();
  }

  extraReasons(): readonly Reason[] {
    return this.extra;
  }

  setGuardSocket(path: string | null): void {
    this.current = { ...this.current, guardSocket: path };
    this.currentText = null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.gate.close();
    await this.source.stop();
  }

  private judged(guest: GuestFacts): VmStatus {
    return judgeVm({
      socket: this.socket,
      id: this.id,
      mode: this.mode,
      guest,
      host: this.opts.host(),
      peers: this.opts.peers(),
      policy: this.opts.config().policy,
      extraReasons: this.guardReason ? [...this.extra, this.guardReason] : this.extra,
      arrival: this.arrival,
      checkedAt: new Date(this.opts.timers.now()).toISOString(),
    });
  }

  private setStatus(status: VmStatus): void {
    if (this.stopped) return;
    const prev = this.current;
    this.current = { ...status, guardSocket: prev.guardSocket ?? null };
    this.currentText = null;
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
    this.setStatus({ socket: this.socket, id: this.id, name: this.current.name, mode: this.mode, error: info });
  }
}
