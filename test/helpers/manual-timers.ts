/** Timers that run only when a test says so, on a clock of their own (agent/core/timers.ts Timers). */
import type { Timers } from '../../agent/core/timers';

interface Pending {
  at: number;
  ms: number;
  fn: () => void;
}

export class ManualTimers implements Timers {
  private clock = 0;
  readonly pending = new Set<Pending>();

  now(): number {
    return this.clock;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const p = { at: this.clock + ms, ms, fn };
    this.pending.add(p);
    return p;
  }

  clearTimeout(h: unknown): void {
    this.pending.delete(h as Pending);
  }

  /** Delays of the timers waiting now, shortest first. */
  delays(): number[] {
    return [...this.pending].map((p) => p.ms).sort((a, b) => a - b);
  }

  /** Moves the clock on without running anything. */
  advance(ms: number): void {
    this.clock += ms;
  }

  /** Runs the timer set with this delay (the clock moves to its time). */
  fireDelay(ms: number): void {
    const p = [...this.pending].find((x) => x.ms === ms);
    if (!p) throw new Error(`no timer of ${ms} ms (waiting: ${this.delays().join(', ')})`);
    this.pending.delete(p);
    this.clock = Math.max(this.clock, p.at);
    p.fn();
  }

  /** Runs the earliest timer (advancing the clock to it); false when none waits. */
  fire(): boolean {
    const next = [...this.pending].sort((a, b) => a.at - b.at)[0];
    if (!next) return false;
    this.pending.delete(next);
    this.clock = Math.max(this.clock, next.at);
    next.fn();
    return true;
  }
}
