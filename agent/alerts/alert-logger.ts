/**
 * Time as the alert code sees it: a clock and one-shot timers, both injected so that alert timing,
 * re-sends and retry backoff are tested without sleeping.
 */
import { realTimers } from '../core/timers';

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export type TimerHandle = unknown;

export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const systemClock: Clock = realTimers;

/** The daemon's own timers (agent/core/timers.ts): unref'd, so a pending retry never holds the process. */
export const systemTimers: Timers = realTimers;

/** The logging surface the alert code needs (winston's Logger satisfies it). */
export interface AlertLogger {
  error(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
  info(message: string, meta?: Record<string, unknown>): unknown;
  debug(message: string, meta?: Record<string, unknown>): unknown;
}

export const silentLogger: AlertLogger = {
  error: () => undefined,
  warn: () => undefined,
  info: () => undefined,
  debug: () => undefined,
};
