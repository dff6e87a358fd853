/**
 * physbitsd's core: discovery → one supervisor per VM → verdicts → metrics, alerts, events, API.
 * The guard (hold mode) and libvirt domains plug in through the supervisor's `attach` and `probe`.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve, sep } from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import { probeSocketPath } from '../../qmp/unix-server';
import { SocketInUseError } from '../../qmp/errors';
import { ApiServer } from '../api/api-server';
import type { Config } from '../core/config';
import { DaemonApi } from './daemon-api';
import { Discovery } from './discovery';
import { EventBus } from './event-bus';
import { hostFactsFromConfig } from '../facts/host-facts';
import type { Logger } from '../core/logger';
import { LibvirtWatch } from './libvirt-watch';
import { DaemonAlerts } from './daemon-alerts';
import { DaemonMetrics } from './daemon-metrics';
import { socketPatterns, type FoundSocket } from '../core/socket-globs';
import { realTimers, type Timers } from '../core/timers';
import type { GuestFacts, HostFacts, PeerFacts, VmStatus } from '../core/types';
import { VmSupervisor } from './vm-supervisor';
import { createGuardAttach } from './guard-attach';
import { LivePeers } from './live-peers';
import { groupId } from '../core/unix-groups';

export interface DaemonOptions {
  config: Config;
  logger: Logger;
  timers?: Timers;
}

export class Daemon {
  config: Config;
  host: HostFacts;
  readonly events = new EventBus();
  readonly logger: Logger;
  readonly timers: Timers;
  readonly supervisors = new Map<string, VmSupervisor>();
  readonly peers: LivePeers;
  private discovery: Discovery | null = null;
  private libvirt: LibvirtWatch | null = null;
  private api: ApiServer | null = null;
  private verifyTask: ScheduledTask | null = null;
  readonly metrics: DaemonMetrics;
  readonly alerts: DaemonAlerts;
  /** Bound addresses, for logs and tests. */
  metricsAddress: string | null = null;
  apiTcpAddress: string | null = null;

  constructor(opts: DaemonOptions) {
    this.config = opts.config;
    this.logger = opts.logger;
    this.timers = opts.timers ?? realTimers;
    this.host = this.readHost(this.config);
    this.peers = new LivePeers(() => this.config, this.logger);
    this.metrics = new DaemonMetrics();
    this.alerts = new DaemonAlerts(this);
  }

  readHost(config: Config): HostFacts {
    return hostFactsFromConfig(config);
  }

  async start(): Promise<void> {
    const cfg = this.config;
    this.logger.info('starting', {
      host: this.host.name,
      physBits: this.host.physBits,
      source: this.host.physBitsSource,
    });
    // Another daemon serving this config's API socket owns the spool and the guarded sockets too:
    // stop before touching any of them (opening the spool compacts it under the other's feet).
    if ((await probeSocketPath(resolve(cfg.api.socket))) === 'live')
      throw new SocketInUseError(resolve(cfg.api.socket));
    this.metrics.setHost(this.host, this.config.fleet.pool);
    await this.alerts.start();
    this.metricsAddress = await this.metrics.listen(cfg.metrics.listen);
    this.logger.info('metrics listening', { address: this.metricsAddress });
    await this.startApi();
    await this.peers.refresh();
    this.startDiscovery();
    await this.discovery?.rescan();
    this.startLibvirt();
    this.verifyTask = cron.schedule(cfg.verify.schedule, () => void this.verifyAll(), { noOverlap: true });
  }

  private async startApi(): Promise<void> {
    const cfg = this.config;
    this.api = new ApiServer({
      handlers: new DaemonApi(this),
      events: this.events,
      logger: this.logger.child({ component: 'api' }),
      maxBodyBytes: cfg.api.maxBodyBytes,
      maxEventClients: cfg.api.maxEventClients,
      eventBufferBytes: cfg.api.eventBufferBytes,
    });
    mkdirSync(dirname(cfg.api.socket), { recursive: true, mode: 0o755 });
    await this.api.listenUnix(
      cfg.api.socket,
      parseInt(cfg.api.mode, 8),
      cfg.api.group ? groupId(cfg.api.group) : undefined,
    );
    this.logger.info('API listening', { socket: cfg.api.socket });
    if (cfg.api.listen && cfg.api.tokenFile) {
      const token = this.peers.readToken(cfg.api.tokenFile);
      const addr = await this.api.listenTcp(cfg.api.listen, token);
      this.apiTcpAddress = `${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
      this.logger.info('peer API listening', { address: this.apiTcpAddress });
    }
  }

  private startDiscovery(): void {
    const cfg = this.config;
    const guardDir = resolve(cfg.guard.socketDir) + sep;
    this.discovery = new Discovery({
      patterns: socketPatterns(cfg.discovery),
      schedule: cfg.discovery.schedule,
      logger: this.logger,
    });
    this.discovery.on('added', (s: FoundSocket) => {
      // Never supervise our own guarded sockets, should a glob also match them.
      if (resolve(s.path).startsWith(guardDir)) return;
      this.addVm(s.path, s.mode);
    });
    this.discovery.on('removed', (s: FoundSocket) => void this.removeVm(s.path));
    this.discovery.on('replaced', (s: FoundSocket) => this.supervisors.get(s.path)?.kick());
    void this.discovery
      .start()
      .catch((err) => this.logger.error('discovery failed to start', { error: (err as Error).message }));
  }

  private startLibvirt(): void {
    if (!this.config.discovery.libvirt) return;
    this.libvirt = new LibvirtWatch(this);
    this.libvirt.start();
  }

  /** Libvirt's hook said something changed: look again now. */
  libvirtChanged(): void {
    void this.libvirt?.rescan();
  }

  /**
   * Each held VM's heartbeat interval: qmp.heartbeatMs, stretched so that all of them together stay
   * under qmp.heartbeatsPerSecond (a host with 1000 guests pings each every 5 s by default).
   */
  heartbeatInterval(): number {
    let held = 0;
    for (const s of this.supervisors.values()) if (s.mode === 'hold') held++;
    const q = this.config.qmp;
    return Math.max(q.heartbeatMs, Math.ceil((1000 * held) / q.heartbeatsPerSecond));
  }

  peerFacts(): PeerFacts[] {
    return this.peers.facts();
  }

  addVm(socket: string, mode: 'hold' | 'poll' | 'libvirt', probe?: () => Promise<GuestFacts>): VmSupervisor | null {
    if (this.supervisors.has(socket)) return null;
    const logger = this.logger.child({ socket });
    const useGuard = mode === 'hold' && this.config.guard.enabled;
    const sup = new VmSupervisor({
      socket,
      mode,
      config: () => this.config,
      host: () => this.host,
      peers: () => this.peerFacts(),
      logger,
      timers: this.timers,
      probe,
      attach: useGuard ? createGuardAttach(this) : undefined,
      heartbeatInterval: () => this.heartbeatInterval(),
      observe: (s) => this.metrics.observeQmp(sup.name, s),
    });
    sup.on('status', (now: VmStatus, prev: VmStatus) => this.onStatus(sup, now, prev));
    sup.on('qmp-event', (ev: { event: string; data?: unknown }) => this.onQmpEvent(sup, ev));
    this.supervisors.set(socket, sup);
    this.logger.info('VM found', { socket, mode });
    this.events.publish({ type: 'vm-added', vm: sup.name, socket, mode });
    sup.start();
    return sup;
  }

  async removeVm(socket: string): Promise<void> {
    const sup = this.supervisors.get(socket);
    if (!sup) return;
    this.supervisors.delete(socket);
    await sup.stop();
    this.logger.info('VM gone', { socket, vm: sup.name });
    this.metrics.removeVm(sup.name);
    this.alerts.dropVm(sup.name);
    this.events.publish({ type: 'vm-removed', vm: sup.name, socket });
  }

  private onStatus(sup: VmSupervisor, now: VmStatus, prev: VmStatus): void {
    if (prev.name !== now.name && prev.name) {
      this.metrics.removeVm(prev.name);
      this.alerts.dropVm(prev.name);
    }
    this.metrics.setVm(now);
    this.alerts.setVm(now);
    const before = prev.error ? 'unknown' : prev.verdict?.severity;
    const after = now.error ? 'unknown' : now.verdict?.severity;
    const reasonsChanged =
      (prev.verdict?.reasons.map((r) => r.code).join() ?? '') !==
      (now.verdict?.reasons.map((r) => r.code).join() ?? '');
    if (now.error) {
      if (prev.error?.code !== now.error.code)
        this.events.publish({
          type: 'vm-error',
          vm: now.name,
          socket: sup.socket,
          code: now.error.code,
          message: now.error.message,
        });
      if (before !== after)
        this.events.publish({
          type: 'verdict',
          vm: now.name,
          socket: sup.socket,
          previous: prev.error?.code === 'PENDING' ? null : before,
          severity: 'unknown',
          relation: null,
        });
      return;
    }
    if (before !== after || reasonsChanged) {
      const v = now.verdict!;
      if (before !== after)
        this.logger.info('verdict', {
          vm: now.name,
          severity: v.severity,
          relation: v.relation,
          reason: v.reasons[0]?.code,
        });
      this.events.publish({
        type: 'verdict',
        vm: now.name,
        socket: sup.socket,
        previous: prev.error?.code === 'PENDING' ? null : (before ?? null),
        severity: v.severity,
        relation: v.relation,
        reason: v.reasons[0]?.code,
        reasons: v.reasons,
      });
    }
  }

  private onQmpEvent(sup: VmSupervisor, ev: { event: string; data?: unknown }): void {
    if (ev.event === 'MIGRATION') this.alerts.onMigrationEvent(sup, ev.data as { status?: string } | undefined);
  }

  /** The scheduled full re-verify: host facts, live peers, then every VM. */
  async verifyAll(): Promise<void> {
    try {
      this.host = this.readHost(this.config);
      this.metrics.setHost(this.host, this.config.fleet.pool);
    } catch (err) {
      this.logger.error('host facts unreadable; keeping the last ones', { error: (err as Error).message });
    }
    await this.peers.refresh();
    await Promise.all([...this.supervisors.values()].map((s) => s.refresh().catch(() => undefined)));
  }

  /** SIGHUP: the new config replaces the old one only when valid (the caller validated it). */
  async reload(next: Config): Promise<void> {
    const prev = this.config;
    const restartOnly = (['api', 'metrics', 'log'] as const).filter(
      (k) => JSON.stringify(prev[k]) !== JSON.stringify(next[k]),
    );
    if (restartOnly.length)
      this.logger.warn('settings that take effect at the next restart changed', { keys: restartOnly.join(',') });
    this.config = next;
    this.host = this.readHost(next);
    this.metrics.setHost(this.host, this.config.fleet.pool);
    this.alerts.reconfigure();
    const sameDiscovery =
      JSON.stringify(prev.discovery) === JSON.stringify(next.discovery) &&
      prev.guard.socketDir === next.guard.socketDir &&
      prev.guard.enabled === next.guard.enabled;
    if (!sameDiscovery) {
      this.discovery?.stop();
      this.libvirt?.stop();
      await Promise.all([...this.supervisors.keys()].map((s) => this.removeVm(s)));
      this.startDiscovery();
      await this.discovery?.rescan();
      this.startLibvirt();
    }
    void this.verifyTask?.destroy();
    this.verifyTask = cron.schedule(next.verify.schedule, () => void this.verifyAll(), { noOverlap: true });
    await this.peers.refresh();
    for (const s of this.supervisors.values()) s.rejudge();
    this.events.publish({ type: 'config', message: 'configuration reloaded' });
    this.logger.info('configuration reloaded');
  }

  status() {
    return [...this.supervisors.values()].map((s) => s.status());
  }

  findVm(name: string): VmSupervisor | null {
    for (const s of this.supervisors.values()) if (s.name === name) return s;
    for (const s of this.supervisors.values()) if (s.socket === name) return s;
    return null;
  }

  async stop(): Promise<void> {
    void this.verifyTask?.destroy();
    this.verifyTask = null;
    this.discovery?.stop();
    this.libvirt?.stop();
    await Promise.all([...this.supervisors.values()].map((s) => s.stop()));
    this.supervisors.clear();
    await this.api?.close();
    await this.metrics.close();
    await this.alerts.stop();
  }
}
