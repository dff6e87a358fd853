/**
 * Notices from peers' guards about guests migrating here (POST /v1/incoming), kept until the VM they
 * name arrives: at most MAX_NOTICES, each for NOTICE_TTL_MS on the injected clock. A notice matches
 * the VM QEMU receives on the port it names, else the VM of the same name; once matched it is gone.
 */
import type { IncomingNotice } from '../peers/incoming-notice';

export const MAX_NOTICES = 256;
/** Long enough for a large guest's migration to complete; a notice nobody claims then lapses. */
export const NOTICE_TTL_MS = 30 * 60 * 1000;

/** What a VM offers for matching: its name and, while QEMU waits for the stream, the port. */
export interface IncomingVm {
  name: string;
  port: string | null;
}

export class IncomingNotices {
  private notices: { notice: IncomingNotice; until: number }[] = [];

  constructor(private readonly clock: () => number) {}

  /** Keeps `notice`, replacing an older one for the same VM and port; the oldest goes past the bound. */
  add(notice: IncomingNotice): void {
    this.expire();
    this.notices = this.notices.filter((n) => !(n.notice.vm === notice.vm && n.notice.port === notice.port));
    this.notices.push({ notice, until: this.clock() + NOTICE_TTL_MS });
    if (this.notices.length > MAX_NOTICES) this.notices = this.notices.slice(-MAX_NOTICES);
  }

  /** The latest notice for `vm` (by port first, then by name), removed; null when none. */
  take(vm: IncomingVm): IncomingNotice | null {
    this.expire();
    let i = vm.port !== null ? lastIndex(this.notices, (n) => n.notice.port === vm.port) : -1;
    if (i < 0) i = lastIndex(this.notices, (n) => n.notice.vm === vm.name);
    if (i < 0) return null;
    const [found] = this.notices.splice(i, 1);
    return found.notice;
  }

  get size(): number {
    this.expire();
    return this.notices.length;
  }

  private expire(): void {
    const now = this.clock();
    if (this.notices.some((n) => n.until <= now)) this.notices = this.notices.filter((n) => n.until > now);
  }
}

function lastIndex<T>(items: readonly T[], pred: (item: T) => boolean): number {
  for (let i = items.length - 1; i >= 0; i--) if (pred(items[i])) return i;
  return -1;
}
