/**
 * Errors of alert delivery and the spool, each with a stable code listed in docs/alerts.md.
 */
import { AgentError } from '../core/errors';

/** A sink could not take a batch; `retryable` says whether backing off and trying again can help. */
export class AlertDeliveryError extends AgentError {
  readonly retryable: boolean;
  readonly status: number | null;
  constructor(
    code: 'ALERT_DELIVERY_FAILED' | 'ALERT_DELIVERY_TIMEOUT' | 'ALERT_DELIVERY_REJECTED',
    message: string,
    opts: { retryable: boolean; status?: number | null; cause?: unknown },
  ) {
    super(code, message, { cause: opts.cause });
    this.retryable = opts.retryable;
    this.status = opts.status ?? null;
  }
}

/** Reading or writing the spool directory failed. */
export class SpoolError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ALERT_SPOOL_IO', message, options);
  }
}

/** The alert service was used before start() or after stop(). */
export class AlertServiceStateError extends AgentError {
  constructor(message: string) {
    super('ALERT_SERVICE_STATE', message);
  }
}
