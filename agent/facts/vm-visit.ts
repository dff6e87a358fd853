/**
 * One short visit to a VM: connect, read its facts, disconnect. The socket is held only for the
 * read, since QEMU serves one QMP client at a time. Used by `scan` and by polled VMs.
 */
import { QmpClient } from '../../qmp/client';
import { TimeoutError } from '../../qmp/errors';
import type { Config } from '../core/config';
import { withDeadline } from '../core/async-limits';
import type { GuestFacts } from '../core/types';
import { readGuestFacts } from './guest-facts';

export interface VisitOptions {
  qmp: Config['qmp'];
  /** Called with each QMP command's round trip (seconds, send to reply) for metrics. */
  observe?: (seconds: number) => void;
}

/** The VM's facts, or a rejection with a coded error (QmpError, AgentError, a system error). */
export async function visitVm(socket: string, opts: VisitOptions): Promise<GuestFacts> {
  const timeoutMs = opts.qmp.timeoutMs;
  let client: QmpClient | undefined;
  const work = (async () => {
    client = await QmpClient.connect(socket, {
      timeoutMs,
      maxLineBytes: opts.qmp.maxLineBytes,
      maxPending: opts.qmp.maxPending,
      onReply: opts.observe && ((_command, seconds) => opts.observe!(seconds)),
    });
    return readGuestFacts(client, { timeoutMs });
  })();
  try {
    // One deadline for the whole visit, so a guest that answers each command slowly still ends in time.
    const guest = await withDeadline(
      work,
      timeoutMs * 2,
      () => new TimeoutError(`${socket}: no complete answer within ${timeoutMs * 2} ms`),
    );
    return guest;
  } catch (err) {
    work.catch(() => undefined);
    throw err;
  } finally {
    // The client may still be connecting when the deadline passes: close it whenever it appears.
    void work.finally(() => client?.close().catch(() => undefined)).catch(() => undefined);
    await client?.close().catch(() => undefined);
  }
}
