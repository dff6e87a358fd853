/**
 * libvirt-managed guests: libvirt holds each domain's QMP monitor for the domain's whole life, so
 * the daemon never connects to it. It lists running domains on a schedule (and when the hook says
 * something changed) and reads each one's facts through `virsh qemu-monitor-command`, in poll mode.
 */
import type { Daemon } from './daemon';
import { readGuestFacts } from '../facts/guest-facts';
import { listRunningDomainsWithUuid } from '../libvirt/libvirt-domains';
import { LibvirtExecutor } from '../libvirt/libvirt-executor';

export const LIBVIRT_PREFIX = 'libvirt:';

export class LibvirtWatch {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private running: Promise<void> | null = null;
  private lastError: string | null = null;

  constructor(private readonly d: Daemon) {}

  private get uri(): string {
    return this.d.config.discovery.libvirt!;
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
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.rescan(), this.d.config.discovery.libvirtPollSeconds * 1000);
    this.timer.unref();
  }

  private async pass(): Promise<void> {
    const uri = this.uri;
    const virsh = { virsh: this.d.config.discovery.virsh, timeoutMs: this.d.config.qmp.timeoutMs };
    let domains;
    try {
      domains = await listRunningDomainsWithUuid(uri, virsh);
      this.lastError = null;
    } catch (err) {
      const msg = (err as Error).message;
      if (msg !== this.lastError) this.d.logger.warn('cannot list libvirt domains', { uri, error: msg });
      this.lastError = msg;
      return;
    }
    if (this.stopped) return;
    const keys = new Set(domains.map((dom) => `${LIBVIRT_PREFIX}${dom.name}`));
    for (const key of [...this.d.supervisors.keys()]) {
      if (key.startsWith(LIBVIRT_PREFIX) && !keys.has(key)) await this.d.removeVm(key);
    }
    for (const dom of domains) {
      const key = `${LIBVIRT_PREFIX}${dom.name}`;
      if (this.d.supervisors.has(key)) continue;
      const q = new LibvirtExecutor(uri, dom.name, { ...virsh, uuid: dom.uuid });
      this.d.addVm(key, 'libvirt', async () => {
        const g = await readGuestFacts(q, { timeoutMs: this.d.config.qmp.timeoutMs });
        // libvirt names the domain even when QEMU was given no -name of its own.
        return { ...g, name: g.name || dom.name };
      });
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
