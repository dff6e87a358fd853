/**
 * The latest facts of one guest, and a bounded way to wait for them: the guard holds a dangerous
 * command until facts arrive or guard.holdMs passes. Timers are injected.
 */
import type { Timers } from '../core/timers';
import type { GuestFacts } from '../core/types';

interface Waiter {
  resolve(f: GuestFacts | null): void;
  handle: unknown;
}

export class FactsGate {
  private current: GuestFacts | null = null;
  private readonly waiters = new Set<Waiter>();

  constructor(
    private readonly timers: Pick<Timers, 'setTimeout' | 'clearTimeout'>,
    /** Commands held at once; past this a wait answers null at once. */
    private readonly maxWaiters = 256,
  ) {}

  get(): GuestFacts | null {
    return this.current;
  }

  /** New facts (null: the guest's facts are no longer known); wakes every waiter on non-null. */
  set(facts: GuestFacts | null): void {
    this.current = facts;
    if (!facts) return;
    for (const w of [...this.waiters]) {
      this.waiters.delete(w);
      this.timers.clearTimeout(w.handle);
      w.resolve(facts);
    }
  }

  /** The facts now, else the first that arrive within `ms`, else null. */
  wait(ms: number): Promise<GuestFacts | null> {
    if (this.current) return Promise.resolve(this.current);
    if (ms <= 0 || this.waiters.size >= this.maxWaiters) return Promise.resolve(null);
    return new Promise((resolve) => {
      const w: Waiter = { resolve, handle: undefined };
      w.handle = this.timers.setTimeout(() => {
        this.waiters.delete(w);
        resolve(null);
      }, ms);
      this.waiters.add(w);
    });
  }

  /** Answers every waiter with null (the connection to the guest is going away). */
  close(): void {
    for (const w of [...this.waiters]) {
      this.waiters.delete(w);
      this.timers.clearTimeout(w.handle);
      w.resolve(null);
    }
  }

  get waiting(): number {
    return this.waiters.size;
  }
}
