/**
 * The daemon's own conditions, alerted like a VM's but with an empty `vm` label: discovery that
 * cannot list everything (DISCOVERY_FAILED) and file descriptors near their limit
 * (DESCRIPTORS_LOW). It owns the descriptor budget every listener asks before it takes a connection.
 */
import { FdBudget, type FdPressure, type FdReadings } from '../core/fd-budget';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import type { Reason } from '../core/types';
import { REASON_SEVERITY } from '../judge/reasons';

export interface DaemonHealthDeps {
  logger: Logger;
  timers: Timers;
  /** The daemon's current conditions (all of them, each time one changes). */
  report(reasons: Reason[]): void;
  readings?: FdReadings;
}

export class DaemonHealth {
  readonly budget: FdBudget;
  private discoveryErrors: string[] = [];
  private pressure: FdPressure | null = null;

  constructor(private readonly deps: DaemonHealthDeps) {
    this.budget = new FdBudget({
      timers: deps.timers,
      readings: deps.readings,
      onPressure: (p) => this.onPressure(p),
    });
    const limit = this.budget.limit;
    if (limit !== null)
      deps.logger.info('file descriptors', {
        limit,
        reserve: this.budget.reserve,
        open: this.budget.open ?? undefined,
      });
  }

  start(): void {
    this.budget.start();
    this.publish();
  }

  stop(): void {
    this.budget.stop();
  }

  /** The errors of the last discovery pass (none: it listed everything). */
  discovery(errors: string[]): void {
    this.discoveryErrors = errors;
    this.publish();
  }

  private onPressure(p: FdPressure): void {
    this.pressure = p.high ? p : null;
    if (p.high)
      this.deps.logger.warn('file descriptors near the limit; connections from outside are refused', {
        open: p.open,
        limit: p.limit,
      });
    else this.deps.logger.info('file descriptors below the limit again', { open: p.open, limit: p.limit });
    this.publish();
  }

  reasons(): Reason[] {
    const out: Reason[] = [];
    if (this.discoveryErrors.length)
      out.push({
        code: 'DISCOVERY_FAILED',
        severity: REASON_SEVERITY.DISCOVERY_FAILED,
        message: `discovery could not list every QMP socket (${this.discoveryErrors.slice(0, 3).join('; ')}${this.discoveryErrors.length > 3 ? '; …' : ''}); the VMs already known are kept, and none is taken for gone until its socket is`,
      });
    if (this.pressure)
      out.push({
        code: 'DESCRIPTORS_LOW',
        severity: REASON_SEVERITY.DESCRIPTORS_LOW,
        message: `physbitsd has ${this.pressure.open} of its ${this.pressure.limit} file descriptors open; it refuses connections to /metrics and the API to keep ${this.budget.reserve} for its guests (raise LimitNOFILE, or find who holds the connections)`,
      });
    return out;
  }

  private publish(): void {
    this.deps.report(this.reasons());
  }
}
