/**
 * libvirt-managed guests: libvirt holds each domain's QMP monitor for the domain's whole life, so
 * the daemon never connects to it. It lists running domains on a schedule (and when the hook says
 * something changed) and reads each one's facts through `virsh qemu-monitor-command`, in poll mode.
 */
import type { Config } from '../core/config';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import type { GuestFacts } from '../core/types';
import { readGuestFacts } from '../facts/guest-facts';
import { listRunningDomainsWithUuid } from '../libvirt/libvirt-domains';
import { LibvirtExecutor } from '../libvirt/libvirt-executor';

export const LIBVIRT_PREFIX = 'libvirt:';

/** The daemon's supervised VMs, by key, as the watch adds and removes libvirt's. */
export interface SupervisedVms {
  keys(): Iterable<string>;
  has(key: string): boolean;
  add(key: string, readFacts: () => Promise<GuestFacts>): void;
  remove(key: string): Promise<void>;
}

/** What the libvirt watch needs of the daemon. */
export interface LibvirtWatchDeps {
  config: () => Config;
  logger: Logger;
  timers: Timers;
  vms: SupervisedVms;
}

export class LibvirtWatch {
  private timer: unknown = null;
  private stopped = false;
  private running: Promise<void> | null = null;
  private lastError: string | null = null;

  constructor(private readonly deps: LibvirtWatchDeps) {}

  private get uri(): string {
    return this.deps.config().discovery.libvirt!;
  }

  start(): void {
    void this.rescan();
  }

  rescan(): Promise<void> {
    if (this.running) return this.running;
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

  private async pass(): Promise<void> {
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
      return;
    }
    if (this.stopped) return;
    const keys = new Set(domains.map((dom) => `${LIBVIRT_PREFIX}${dom.name}`));
    for (const key of [...this.deps.vms.keys()]) {
      if (key.startsWith(LIBVIRT_PREFIX) && !keys.has(key)) await this.deps.vms.remove(key);
    }
    for (const dom of domains) {
      const key = `${LIBVIRT_PREFIX}${dom.name}`;
      if (this.deps.vms.has(key)) continue;
      const monitor = new LibvirtExecutor(uri, dom.name, { ...virsh, uuid: dom.uuid });
      this.deps.vms.add(key, async () => {
        const guest = await readGuestFacts(monitor, { timeoutMs: this.deps.config().qmp.timeoutMs });
        // libvirt names the domain even when QEMU was given no -name of its own.
        return { ...guest, name: guest.name || dom.name };
      });
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) this.deps.timers.clearTimeout(this.timer);
    this.timer = null;
  }
}
