/**
 * libvirt-managed guests: libvirt holds each domain's QMP monitor for the domain's whole life, so
 * the daemon never connects to it. It reads each running domain's facts through
 * `virsh qemu-monitor-command`, and acts on libvirt's own events at once (agent/libvirt/
 * libvirt-event-stream.ts): a domain started is added and read, one stopped is dropped, one whose
 * devices, memory or run state changed is read again; a burst becomes one read per domain. After
 * the event stream was lost (libvirtd restarted), every domain is listed and read again. The
 * listing every `discovery.libvirtPollSeconds` (and the hook's word, POST /v1/libvirt-events) is
 * the safety net.
 */
import { mapLimit } from '../core/async-limits';
import type { Config } from '../core/config';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import type { GuestFacts } from '../core/types';
import { readGuestFacts } from '../facts/guest-facts';
import { DomainChanges, type ChangeBatch } from '../libvirt/domain-changes';
import { listRunningDomainsWithUuid } from '../libvirt/libvirt-domains';
import { LibvirtEventStream, type SpawnStream } from '../libvirt/libvirt-event-stream';
import { LibvirtExecutor } from '../libvirt/libvirt-executor';

export const LIBVIRT_PREFIX = 'libvirt:';
/** Events within this long of the first are acted on together. */
export const COALESCE_MS = 100;
/** Domains read at once after events (each read is one virsh process). */
export const EVENT_READ_CONCURRENCY = 4;

/** The daemon's supervised VMs, by key, as the watch adds and removes libvirt's. */
export interface SupervisedVms {
  keys(): Iterable<string>;
  has(key: string): boolean;
  add(key: string, readFacts: () => Promise<GuestFacts>): void;
  remove(key: string): Promise<void>;
  /** Reads the VM's facts again now. */
  refresh(key: string): Promise<void>;
}

/** What the libvirt watch needs of the daemon. */
export interface LibvirtWatchDeps {
  config: () => Config;
  logger: Logger;
  timers: Timers;
  vms: SupervisedVms;
  /** How virsh event is started; default node's spawn. */
  spawn?: SpawnStream;
}

export class LibvirtWatch {
  private timer: unknown = null;
  private stopped = false;
  private running: Promise<Set<string>> | null = null;
  private queued: Promise<Set<string>> | null = null;
  private lastError: string | null = null;
  /** The UUID each supervised domain had when it was added: a new one is a new domain. */
  private readonly uuids = new Map<string, string>();
  private readonly changes = new DomainChanges();
  private flushTimer: unknown = null;
  private flushing = false;
  private readonly events: LibvirtEventStream;
  private streamDown: string | null = null;
  /**
   * Domains libvirt last started from a save file or a snapshot ("Started Restored"/"Started
   * Snapshot"): QEMU shows such a guest as received by migration, but it booted on this host.
   */
  private readonly restored = new Set<string>();

  constructor(private readonly deps: LibvirtWatchDeps) {
    this.events = new LibvirtEventStream({
      uri: this.uri,
      virsh: () => deps.config().discovery.virsh,
      timers: deps.timers,
      spawn: deps.spawn,
      onEvent: (event) => {
        deps.logger.debug('libvirt event', { domain: event.domain, type: event.type, detail: event.detail });
        if (event.change === 'started' || event.change === 'stopped') {
          if (/^Started (Restored|Snapshot)$/.test(event.detail)) this.restored.add(event.domain);
          else this.restored.delete(event.domain);
        }
        this.changes.add(event.domain, event.change);
        this.scheduleFlush();
      },
      onUnreadable: (why) => {
        deps.logger.warn('libvirt event not understood; reading every domain again', { why });
        this.changes.addAll();
        this.scheduleFlush();
      },
      onUp: (first) => {
        if (this.streamDown !== null) deps.logger.info('libvirt events followed again', { uri: this.uri });
        this.streamDown = null;
        // A domain may have started before virsh listened; after a gap, anything may have changed.
        if (first) void this.rescan();
        else {
          this.changes.addAll();
          this.scheduleFlush();
        }
      },
      onDown: (reason, retryMs) => {
        if (reason !== this.streamDown)
          deps.logger.warn('libvirt event stream ended; domains are polled until it is back', {
            uri: this.uri,
            error: reason,
            retryMs,
          });
        this.streamDown = reason;
      },
    });
  }

  private get uri(): string {
    return this.deps.config().discovery.libvirt!;
  }

  start(): void {
    void this.rescan();
    this.events.start();
  }

  /**
   * Lists the running domains: adds the new, drops the gone. Resolves to the keys it added. A call
   * while a listing runs waits for one that starts after it.
   */
  rescan(): Promise<Set<string>> {
    if (!this.running) return this.runPass();
    this.queued ??= this.running.then(() => {
      this.queued = null;
      return this.runPass();
    });
    return this.queued;
  }

  private runPass(): Promise<Set<string>> {
    this.running = this.pass().finally(() => {
      this.running = null;
      this.schedule();
    });
    return this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.timer) this.deps.timers.clearTimeout(this.timer);
    this.timer = this.deps.timers.setTimeout(
      () => void this.rescan(),
      this.deps.config().discovery.libvirtPollSeconds * 1000,
    );
  }

  private async pass(): Promise<Set<string>> {
    const added = new Set<string>();
    const uri = this.uri;
    const config = this.deps.config();
    const virsh = { virsh: config.discovery.virsh, timeoutMs: config.qmp.timeoutMs };
    let domains;
    try {
      domains = await listRunningDomainsWithUuid(uri, virsh);
      this.lastError = null;
    } catch (err) {
      const msg = (err as Error).message;
      if (msg !== this.lastError) this.deps.logger.warn('cannot list libvirt domains', { uri, error: msg });
      this.lastError = msg;
      return added;
    }
    if (this.stopped) return added;
    const listed = new Map(domains.map((dom) => [`${LIBVIRT_PREFIX}${dom.name}`, dom.uuid]));
    for (const name of this.restored) if (!listed.has(`${LIBVIRT_PREFIX}${name}`)) this.restored.delete(name);
    for (const key of [...this.deps.vms.keys()]) {
      if (!key.startsWith(LIBVIRT_PREFIX)) continue;
      const uuid = listed.get(key);
      // Gone, or a domain of the same name that is another one (a transient domain created again).
      if (uuid === undefined || (this.uuids.has(key) && this.uuids.get(key) !== uuid)) {
        this.uuids.delete(key);
        await this.deps.vms.remove(key);
      }
    }
    for (const dom of domains) {
      const key = `${LIBVIRT_PREFIX}${dom.name}`;
      if (this.stopped || this.deps.vms.has(key)) continue;
      const monitor = new LibvirtExecutor(uri, dom.name, { ...virsh, uuid: dom.uuid });
      this.uuids.set(key, dom.uuid);
      added.add(key);
      this.deps.vms.add(key, async () => {
        const { incoming, ...guest } = await readGuestFacts(monitor, { timeoutMs: this.deps.config().qmp.timeoutMs });
        // libvirt names the domain even when QEMU was given no -name of its own.
        const named = { ...guest, name: guest.name || dom.name };
        // A restore loads the guest as a migration would (libvirt 9.0: query-migrate then answers a
        // destination's bare "completed"), but the guest booted here: no arrival.
        return incoming && !this.restored.has(dom.name) ? { ...named, incoming } : named;
      });
    }
    return added;
  }

  private scheduleFlush(): void {
    if (this.flushTimer || this.flushing || this.stopped) return;
    this.flushTimer = this.deps.timers.setTimeout(() => {
      this.flushTimer = null;
      void this.flush();
    }, COALESCE_MS);
  }

  private async flush(): Promise<void> {
    if (this.changes.empty || this.stopped) return;
    this.flushing = true;
    try {
      await this.apply(this.changes.take());
    } catch (err) {
      this.deps.logger.error('libvirt events not applied', { error: (err as Error).message });
    } finally {
      this.flushing = false;
      if (!this.changes.empty) this.scheduleFlush();
    }
  }

  /** Lists the domains when the batch needs it, then reads each domain it names (or all). */
  private async apply(batch: ChangeBatch): Promise<void> {
    const key = (domain: string) => `${LIBVIRT_PREFIX}${domain}`;
    const unknown = [...batch.changed].some((domain) => !this.deps.vms.has(key(domain)));
    const added =
      batch.all || batch.started.size > 0 || batch.stopped.size > 0 || unknown
        ? await this.rescan()
        : new Set<string>();
    const named = batch.all
      ? [...this.deps.vms.keys()].filter((k) => k.startsWith(LIBVIRT_PREFIX))
      : [...new Set([...batch.started, ...batch.changed])].map(key);
    // A domain added just now is being read for the first time already.
    const reads = named.filter((k) => this.deps.vms.has(k) && !added.has(k));
    await mapLimit(reads, EVENT_READ_CONCURRENCY, (k) => this.deps.vms.refresh(k).catch(() => undefined));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.deps.timers.clearTimeout(this.timer);
    if (this.flushTimer) this.deps.timers.clearTimeout(this.flushTimer);
    this.timer = null;
    this.flushTimer = null;
    await this.events.stop();
  }
}
