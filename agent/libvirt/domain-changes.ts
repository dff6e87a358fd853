/**
 * libvirt's events gathered between two passes of the daemon, per domain: a burst (a DIMM's
 * device-added, a migration's Suspended/Resumed/Stopped, a hundred devices at once) becomes one read
 * of each domain it touched. Bounded: past `maxDomains` distinct domains the batch says "everything"
 * instead, and is read in full.
 */
import type { DomainChange } from './libvirt-events';

export const MAX_PENDING_DOMAINS = 1024;

export interface ChangeBatch {
  /** Read every domain and list them again (a lost or unreadable event, or too many domains). */
  all: boolean;
  /** Domains that started (some may have stopped first: a restart). */
  started: Set<string>;
  stopped: Set<string>;
  /** Running domains whose facts may have changed. */
  changed: Set<string>;
}

export class DomainChanges {
  private batch = DomainChanges.empty();
  /** Every domain named in the batch. */
  private readonly named = new Set<string>();

  constructor(private readonly maxDomains = MAX_PENDING_DOMAINS) {}

  private static empty(): ChangeBatch {
    return { all: false, started: new Set(), stopped: new Set(), changed: new Set() };
  }

  get empty(): boolean {
    const b = this.batch;
    return !b.all && b.started.size === 0 && b.stopped.size === 0 && b.changed.size === 0;
  }

  /** Domains noted so far (0 once the batch says "everything"). */
  get size(): number {
    return this.named.size;
  }

  add(domain: string, change: DomainChange): void {
    const b = this.batch;
    if (b.all) return;
    if (!this.named.has(domain) && this.named.size >= this.maxDomains) {
      this.addAll();
      return;
    }
    this.named.add(domain);
    b[change].add(domain);
  }

  addAll(): void {
    this.batch = { ...DomainChanges.empty(), all: true };
    this.named.clear();
  }

  /** The batch so far; the next one starts empty. */
  take(): ChangeBatch {
    const b = this.batch;
    this.batch = DomainChanges.empty();
    this.named.clear();
    return b;
  }
}
