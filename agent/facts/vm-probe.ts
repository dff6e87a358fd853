/**
 * One short visit to a VM: connect, read its facts, disconnect, judge. The socket is held only for
 * the read, since QEMU serves one QMP client at a time. Used by `scan` and by polled VMs.
 */
import { QmpClient } from '../../qmp/client';
import { TimeoutError } from '../../qmp/errors';
import type { Config } from '../core/config';
import { readGuestFacts } from './guest-facts';
import { withDeadline } from '../core/async-limits';
import { computeVerdict } from '../judge/verdict';
import type { GuestFacts, HostFacts, PeerFacts, VmErrorInfo, VmStatus } from '../core/types';
import { nameFromSocket } from '../core/vm-name';

export interface ProbeOptions {
  config: Config;
  host: HostFacts;
  peers?: PeerFacts[];
  /** Mode label for the status document. */
  mode?: string;
  /** Called with each finished QMP read's duration (seconds) for metrics. */
  observe?: (seconds: number) => void;
}

export function errorInfo(err: unknown): VmErrorInfo {
  // QmpError, AgentError (libvirt, guest facts) and system errors all carry a string code.
  const code = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof code === 'string') return { code, message: err.message };
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

export function judge(socket: string, guest: GuestFacts, opts: ProbeOptions): VmStatus {
  const verdict = computeVerdict({ host: opts.host, guest, policy: opts.config.policy, peers: opts.peers ?? [] });
  return {
    socket,
    name: guest.name || nameFromSocket(socket),
    mode: opts.mode,
    accelerator: guest.accelerator,
    guest,
    verdict,
    checkedAt: new Date().toISOString(),
  };
}

/** Never rejects: every failure becomes the VM's `error`. */
export async function probeVm(socket: string, opts: ProbeOptions): Promise<VmStatus> {
  const timeoutMs = opts.config.qmp.timeoutMs;
  let client: QmpClient | undefined;
  const started = process.hrtime.bigint();
  const work = (async () => {
    client = await QmpClient.connect(socket, {
      timeoutMs,
      maxLineBytes: opts.config.qmp.maxLineBytes,
      maxPending: opts.config.qmp.maxPending,
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
    opts.observe?.(Number(process.hrtime.bigint() - started) / 1e9);
    return judge(socket, guest, opts);
  } catch (err) {
    work.catch(() => undefined);
    return { socket, name: nameFromSocket(socket), mode: opts.mode, error: errorInfo(err) };
  } finally {
    // The client may still be connecting when the deadline passes: close it whenever it appears.
    void work.finally(() => client?.close().catch(() => undefined)).catch(() => undefined);
    await client?.close().catch(() => undefined);
  }
}
