/**
 * physbitsd's core: discovery → one supervisor per VM → verdicts → metrics, alerts, events, API.
 * The guard (hold mode) and libvirt domains plug in through the supervisor's `attach` and `probe`.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve, sep } from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import { probeSocketPath } from '../../qmp/unix-server';
import { joinHostPort } from '../../qmp/address';
import { SocketInUseError } from '../../qmp/errors';
import { ApiServer } from '../api/api-server';
import type { Config } from '../core/config';
import { DaemonApi } from './daemon-api';
import { Discovery } from './discovery';
import { EventBus } from './event-bus';
import { statusEvents, statusState } from './status-events';
import { hostReadOptions, readHost } from '../facts/host-facts';
import type { Logger } from '../core/logger';
import { changedKeys } from '../core/config-check';
import type { LogStreamHealth } from '../core/log-stream';
import { LibvirtWatch } from './libvirt-watch';
import { DaemonAlerts } from './daemon-alerts';
import { DaemonMetrics } from './daemon-metrics';
import { socketPatterns } from '../core/socket-globs';
import { realTimers, slottedTimers, type Timers } from '../core/timers';
import { ConcurrencyGate } from '../core/async-limits';
import type { GuestFacts, HostFacts, VmStatus } from '../core/types';
import { judgeHost } from '../judge/host-limit';
import { VmSupervisor } from './vm-supervisor';
import { NameCollisions } from './name-collisions';
import { createGuardAttach } from './guard-attach';
import { LivePeers } from './live-peers';
import { IncomingNotices } from './incoming-notices';
import type { IncomingNotice } from '../peers/incoming-notice';
import { groupId } from '../core/unix-groups';
import { readApiToken } from '../core/secret-files';
import { nfdFeatureText, writeNfdFeatureFile } from './nfd-feature-file';
import { DaemonHealth } from './daemon-health';
import { findVms } from './find-vms';
import { peerSourceWarning } from './peer-source-warning';

export interface DaemonOptions {
  config: Config;
  logger: Logger;
  timers?: Timers;
  /** The log stream's state, for the metrics (agent/core/log-stream.ts). */
  logHealth?: LogStreamHealth;
}

export class Daemon {
  private config: Config;
  private host: HostFacts;
  private readonly events = new EventBus();
  private readonly logger: Logger;
  private readonly timers: Timers;
  /**
   * Every held VM's heartbeat runs on these: slots of qmp.heartbeatMs, so that the VMs due in one
   * slot are pinged together from one wake-up (agent/core/timers.ts slottedTimers).
   */
  private readonly heartbeatTimers: Timers;
  /**
   * Held VMs' full reads take turns, qmp.concurrency at once: at start-up and at each re-verify every
   * VM is read, and a thousand reads in flight together keep their replies alive long enough to be
   * promoted into V8's old generation, which then grows to several times the live heap.
   */
  private readonly reads = new ConcurrencyGate(() => this.config.qmp.concurrency);
  /** One supervisor per VM, by upstream socket path (or `libvirt:<domain>`). */
  private readonly supervisors = new Map<string, VmSupervisor>();
  /** How many of them hold their VM's connection (mode `hold`): kept on add and remove, read on every heartbeat. */
  private heldCount = 0;
  private readonly nameCollisions = new NameCollisions(() => this.logger);
  /** Upstream socket → the fixed part of the glob that found it (its guarded socket mirrors the rest). */
  private readonly globBases = new Map<string, string>();
  private readonly peers: LivePeers;
  private discovery: Discovery | null = null;
  private libvirt: LibvirtWatch | null = null;
  private api: ApiServer | null = null;
  private verifyTask: ScheduledTask | null = null;
  private readonly metrics: DaemonMetrics;
  private readonly alerts: DaemonAlerts;
  private readonly guardAttach: ReturnType<typeof createGuardAttach>;
  /** Peer guards' notices of guests migrating here, until their VM arrives. */
  private readonly incoming: IncomingNotices;
  /** The daemon's own conditions and its descriptor budget. */
  private readonly health: DaemonHealth;
  /** Bound addresses, for logs and tests. */
  metricsAddress: string | null = null;
  apiTcpAddress: string | null = null;

  constructor(opts: DaemonOptions) {
    this.config = opts.config;
    this.logger = opts.logger;
    this.timers = opts.timers ?? realTimers;
    this.heartbeatTimers = slottedTimers(this.timers, () => this.config.qmp.heartbeatMs);
    this.host = this.readHost(this.config);
    if (this.config.guard.socketGroup) groupId(this.config.guard.socketGroup, 'guard.socketGroup');
    this.peers = new LivePeers(() => this.config, this.logger, this.timers);
    this.incoming = new IncomingNotices(() => this.timers.now());
    this.metrics = new DaemonMetrics(opts.logHealth);
    this.alerts = new DaemonAlerts({
      config: () => this.config,
      host: () => this.host,
      peers: () => this.peers.facts(),
      logger: this.logger,
      timers: this.timers,
      metrics: this.metrics.metrics,
      events: this.events,
    });
    this.health = new DaemonHealth({
      logger: this.logger,
      timers: this.timers,
      report: (reasons) => this.alerts.setHostReasons(reasons),
    });
    // The guard on each held VM, wired to the daemon's metrics, alerts and events.
    this.guardAttach = createGuardAttach({
      config: () => this.config,
      host: () => this.host,
      peers: () => this.peers.lookup(),
      logger: this.logger,
      refused: (vm, refusal) => {
        this.metrics.refused(
          vm,
          refusal.command === 'human-monitor-command' ? `hmp:${refusal.effective}` : refusal.command,
        );
        this.alerts.refusal(vm, refusal.code, refusal.desc, refusal.command);
        this.events.publish({
          type: 'refusal',
          vm: vm.name,
          id: vm.id,
          command: refusal.command,
          effective: refusal.effective,
          code: refusal.code,
          message: refusal.desc,
        });
      },
      migrationApproved: (socket) => this.alerts.migrationApproved(socket),
      notifyIncoming: (peer, notice) => this.peers.notifyIncoming(peer, notice),
      globBase: (socket) => this.globBases.get(socket),
    });
  }

  private readHost(config: Config): HostFacts {
    return judgeHost(readHost(hostReadOptions(config)), config.host.physBits);
  }

  async start(): Promise<void> {
    const config = this.config;
    this.logger.info('starting', {
      host: this.host.name,
      physBits: this.host.physBits,
      source: this.host.physBitsSource,
    });
    const noPeers = peerSourceWarning(config);
    if (noPeers) this.logger.warn(noPeers);
    // Another daemon serving this config's API socket owns the spool and the guarded sockets too:
    // stop before touching any of them (opening the spool compacts it under the other's feet).
    if ((await probeSocketPath(resolve(config.api.socket))) === 'live')
      throw new SocketInUseError(resolve(config.api.socket));
    this.metrics.setHost(this.host, config.fleet.pool);
    await this.publishLimit();
    await this.alerts.start();
    this.health.start();
    this.metricsAddress = await this.metrics.listen(config.metrics.listen, {
      maxConnections: config.metrics.maxConnections,
      maxConnectionsPerAddress: config.metrics.maxConnectionsPerAddress,
      admit: () => this.health.budget.admit(),
      logger: this.logger.child({ component: 'metrics' }),
    });
    this.logger.info('metrics listening', { address: this.metricsAddress });
    await this.startApi();
    await this.peers.refresh();
    this.startDiscovery();
    await this.discovery?.rescan();
    this.startLibvirt();
    this.verifyTask = cron.schedule(config.verify.schedule, () => void this.verifyAll(), { noOverlap: true });
  }

  /** schedulers.nfdFeatureFile: the host's limit as Node Feature Discovery labels; a failure is logged, never fatal. */
  private async publishLimit(): Promise<void> {
    const file = this.config.schedulers.nfdFeatureFile;
    if (!file) return;
    try {
      if (await writeNfdFeatureFile(file, nfdFeatureText(this.host)))
        this.logger.info('NFD feature file written', { file, physBits: this.host.physBits });
    } catch (err) {
      this.logger.error('NFD feature file not written', { file, error: (err as Error).message });
    }
  }

  private async startApi(): Promise<void> {
    const config = this.config;
    this.api = new ApiServer({
      handlers: new DaemonApi({
        config: () => this.config,
        host: () => this.host,
        logger: this.logger,
        peers: this.peers,
        statuses: () => this.status(),
        supervisors: () => this.supervisors.values(),
        findVms: (key) => findVms(this.supervisors.values(), key),
        libvirtChanged: () => this.libvirtChanged(),
        incoming: (notice) => this.noticeReceived(notice),
      }),
      events: this.events,
      logger: this.logger.child({ component: 'api' }),
      maxBodyBytes: config.api.maxBodyBytes,
      maxEventClients: config.api.maxEventClients,
      maxPeerEventClients: config.api.maxPeerEventClients,
      eventPingMs: config.api.eventPingMs,
      eventBufferBytes: config.api.eventBufferBytes,
      idleTimeoutMs: config.api.idleTimeoutMs,
      firstRequestMs: config.api.firstRequestMs,
      maxConnections: config.api.maxConnections,
      maxConnectionsPerAddress: config.api.maxConnectionsPerAddress,
      admit: () => this.health.budget.admit(),
    });
    mkdirSync(dirname(config.api.socket), { recursive: true, mode: 0o755 });
    await this.api.listenUnix(
      config.api.socket,
      parseInt(config.api.mode, 8),
      config.api.group ? groupId(config.api.group) : undefined,
    );
    this.logger.info('API listening', { socket: config.api.socket });
    if (config.api.listen && config.api.tokenFile) {
      const token = readApiToken(config.api.tokenFile);
      const addr = await this.api.listenTcp(config.api.listen, token);
      this.apiTcpAddress = joinHostPort(addr.address, addr.port);
      this.logger.info('peer API listening', { address: this.apiTcpAddress });
    }
  }

  private startDiscovery(): void {
    const config = this.config;
    const guardDir = resolve(config.guard.socketDir) + sep;
    this.discovery = new Discovery({
      patterns: socketPatterns(config.discovery),
      schedule: config.discovery.schedule,
      logger: this.logger,
    });
    this.discovery.on('added', (found) => {
      // Never supervise our own guarded sockets, should a glob also match them.
      if (resolve(found.path).startsWith(guardDir)) return;
      this.globBases.set(found.path, found.base);
      this.addVm(found.path, found.mode);
    });
    this.discovery.on('removed', (found) => void this.removeVm(found.path));
    this.discovery.on('replaced', (found) => this.supervisors.get(found.path)?.kick());
    this.discovery.on('listing', (errors) => this.health.discovery(errors));
    void this.discovery
      .start()
      .catch((err) => this.logger.error('discovery failed to start', { error: (err as Error).message }));
  }

  private startLibvirt(): void {
    if (!this.config.discovery.libvirt) return;
    this.libvirt = new LibvirtWatch({
      config: () => this.config,
      logger: this.logger,
      timers: this.timers,
      vms: {
        keys: () => this.supervisors.keys(),
        has: (key) => this.supervisors.has(key),
        add: (key, readFacts) => void this.addVm(key, 'libvirt', readFacts),
        remove: (key) => this.removeVm(key),
        refresh: (key) => this.supervisors.get(key)?.refresh() ?? Promise.resolve(),
      },
    });
    this.libvirt.start();
  }

  /** A peer guard's notice: kept, and given to the VM it names when that VM is already here. */
  private noticeReceived(notice: IncomingNotice): string | null {
    this.incoming.add(notice);
    for (const supervisor of this.supervisors.values()) if (supervisor.offerNotice()) return supervisor.name;
    return null;
  }

  /** Libvirt's hook said something changed: look again now. */
  private libvirtChanged(): void {
    void this.libvirt?.rescan();
  }

  /**
   * Each held VM's heartbeat interval: qmp.heartbeatMs, stretched so that all of them together stay
   * under qmp.heartbeatsPerSecond (a host with 1000 guests pings each every 5 s by default).
   */
  private heartbeatInterval(): number {
    const qmp = this.config.qmp;
    return Math.max(qmp.heartbeatMs, Math.ceil((1000 * this.heldCount) / qmp.heartbeatsPerSecond));
  }

  private addVm(
    socket: string,
    mode: 'hold' | 'poll' | 'libvirt',
    probe?: () => Promise<GuestFacts>,
  ): VmSupervisor | null {
    if (this.supervisors.has(socket)) return null;
    const logger = this.logger.child({ socket });
    const useGuard = mode === 'hold' && this.config.guard.enabled;
    const supervisor: VmSupervisor = new VmSupervisor({
      socket,
      mode,
      config: () => this.config,
      host: () => this.host,
      peers: () => this.peers.facts(),
      logger,
      timers: this.timers,
      probe,
      claimNotice: (vm) => this.incoming.take(vm),
      sourceWidth: (vm) => this.peers.sourceWidth(vm),
      attach: useGuard ? this.guardAttach : undefined,
      heartbeatInterval: () => this.heartbeatInterval(),
      heartbeatTimers: this.heartbeatTimers,
      readTurn: (read) => this.reads.run(read),
      observe: (seconds) => this.metrics.observeQmp(supervisor, seconds),
    });
    supervisor.on('status', (now, prev) => this.onStatus(supervisor, now, prev));
    supervisor.on('qmp-event', (ev) => this.onQmpEvent(supervisor, ev));
    this.supervisors.set(socket, supervisor);
    if (mode === 'hold') this.heldCount++;
    this.logger.info('VM found', { socket, mode });
    this.events.publish({ type: 'vm-added', vm: supervisor.name, id: supervisor.id, socket, mode });
    supervisor.start();
    return supervisor;
  }

  private async removeVm(socket: string): Promise<void> {
    const supervisor = this.supervisors.get(socket);
    if (!supervisor) return;
    this.supervisors.delete(socket);
    if (supervisor.mode === 'hold') this.heldCount--;
    await supervisor.stop();
    this.globBases.delete(socket);
    this.logger.info('VM gone', { socket, vm: supervisor.name, id: supervisor.id });
    this.metrics.removeVm(supervisor.id);
    this.alerts.dropVm(supervisor.id);
    this.nameCollisions.forget(supervisor.id);
    this.events.publish({ type: 'vm-removed', vm: supervisor.name, id: supervisor.id, socket });
  }

  private onStatus(supervisor: VmSupervisor, now: VmStatus, prev: VmStatus): void {
    this.nameCollisions.check(supervisor, this.supervisors.values());
    this.metrics.setVm(now);
    this.alerts.setVm(now);
    if (!now.error && now.verdict && statusState(prev) !== statusState(now))
      this.logger.info('verdict', {
        vm: now.name,
        severity: now.verdict.severity,
        relation: now.verdict.relation,
        reason: now.verdict.reasons[0]?.code,
      });
    for (const event of statusEvents(supervisor.socket, prev, now)) this.events.publish(event);
  }

  private onQmpEvent(supervisor: VmSupervisor, ev: { event: string; data?: unknown }): void {
    if (ev.event === 'MIGRATION') this.alerts.onMigrationEvent(supervisor, ev.data as { status?: string } | undefined);
  }

  /** The scheduled full re-verify: host facts, live peers, then every VM. */
  async verifyAll(): Promise<void> {
    try {
      this.host = this.readHost(this.config);
      this.metrics.setHost(this.host, this.config.fleet.pool);
    } catch (err) {
      this.logger.error('host facts unreadable; keeping the last ones', { error: (err as Error).message });
    }
    await this.publishLimit();
    await this.peers.refresh();
    await Promise.all([...this.supervisors.values()].map((supervisor) => supervisor.refresh().catch(() => undefined)));
  }

  /** physbits_config_last_reload_*: a SIGHUP's config taken (true) or refused (false). */
  configLoaded(ok: boolean): void {
    this.metrics.configLoaded(ok);
  }
  /** SIGHUP: the new config replaces the old one only when valid (the caller validated it). */
  async reload(next: Config): Promise<void> {
    const prev = this.config;
    const changed = changedKeys(prev, next);
    // log.level applies at once; the listeners and the log's format take a restart.
    if (prev.log.level !== next.log.level) this.logger.setLevel?.(next.log.level);
    const restartOnly = changed.filter((k) => /^(api|metrics)(\.|$)|^log\.(?!level$)/.test(k));
    if (restartOnly.length)
      this.logger.warn('settings that take effect at the next restart changed', { keys: restartOnly.join(',') });
    this.config = next;
    this.host = this.readHost(next);
    this.metrics.setHost(this.host, this.config.fleet.pool);
    await this.publishLimit();
    this.alerts.reconfigure();
    const sameDiscovery =
      JSON.stringify(prev.discovery) === JSON.stringify(next.discovery) &&
      prev.guard.socketDir === next.guard.socketDir &&
      prev.guard.enabled === next.guard.enabled;
    if (!sameDiscovery) {
      this.discovery?.stop();
      await this.libvirt?.stop();
      await Promise.all([...this.supervisors.keys()].map((socket) => this.removeVm(socket)));
      this.startDiscovery();
      await this.discovery?.rescan();
      this.startLibvirt();
    }
    void this.verifyTask?.destroy();
    this.verifyTask = cron.schedule(next.verify.schedule, () => void this.verifyAll(), { noOverlap: true });
    await this.peers.refresh();
    for (const supervisor of this.supervisors.values()) supervisor.rejudge();
    this.events.publish({ type: 'config', message: 'the daemon reloaded its configuration' });
    this.logger.info('configuration reloaded', { changed: changed.join(',') || 'nothing' });
  }

  /**
   * The log stream failed for good: the one place left to say so is the event stream (`watch`);
   * the metrics show it too (physbits_log_stream_up 0).
   */
  logStreamFailed(reason: string): void {
    this.events.publish({
      type: 'log',
      message: `the log stream failed (${reason}): log lines are dropped; the daemon goes on`,
    });
  }

  /** How many VMs are supervised. */
  get vmCount(): number {
    return this.supervisors.size;
  }

  status(): VmStatus[] {
    return [...this.supervisors.values()].map((supervisor) => supervisor.status());
  }

  async stop(): Promise<void> {
    void this.verifyTask?.destroy();
    this.verifyTask = null;
    this.discovery?.stop();
    await this.libvirt?.stop();
    await Promise.all(
      [...this.supervisors.values()].map(async (supervisor) => {
        await supervisor.stop();
        this.logger.info('VM released', { vm: supervisor.name, socket: supervisor.socket });
      }),
    );
    this.supervisors.clear();
    this.heldCount = 0;
    this.health.stop();
    await this.api?.close();
    await this.metrics.close();
    await this.alerts.stop();
  }
}
