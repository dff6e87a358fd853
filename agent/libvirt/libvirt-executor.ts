/**
 * A QmpExecutor over libvirt's own monitor connection: `virsh qemu-monitor-command`, for guests
 * whose QMP socket libvirt holds. libvirt adds its own "id" and hands back QEMU's reply line;
 * QEMU's error replies become CommandError, as on a direct connection. libvirt marks the domain
 * tainted ("custom-monitor") the first time; it changes nothing in the guest.
 */
import { CommandError, ProtocolError } from '../../qmp/errors';
import type { QmpExecutor } from '../guest-facts';
import { listRunningDomainsWithUuid } from './libvirt-domains';
import { runVirsh, VirshError, type VirshOptions } from './virsh';

export interface LibvirtExecutorOptions extends VirshOptions {
  /** The domain's UUID, when known: the unambiguous way to name it. */
  uuid?: string;
  /** virsh processes in flight at once for this domain; default 4. */
  concurrency?: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** QEMU's reply to one command, as virsh prints it → the "return" value, or CommandError. */
export function parseMonitorReply(command: string, stdout: string): unknown {
  const text = stdout.trim();
  let reply: unknown;
  try {
    reply = JSON.parse(text);
  } catch {
    throw new ProtocolError(`${command}: virsh printed something other than a QMP reply: ${text.slice(0, 200)}`);
  }
  const r = reply as { return?: unknown; error?: { class?: unknown; desc?: unknown } } | null;
  if (r !== null && typeof r === 'object' && 'return' in r) return r.return;
  if (r?.error && typeof r.error === 'object') {
    const cls = typeof r.error.class === 'string' ? r.error.class : 'GenericError';
    const desc = typeof r.error.desc === 'string' ? r.error.desc : '';
    throw new CommandError(command, cls, desc);
  }
  throw new ProtocolError(`${command}: reply has neither "return" nor "error": ${text.slice(0, 200)}`);
}

export class LibvirtExecutor implements QmpExecutor {
  readonly uri: string;
  readonly domain: string;
  private readonly opts: LibvirtExecutorOptions;
  private ref: string | null;
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(uri: string, domain: string, opts: LibvirtExecutorOptions = {}) {
    this.uri = uri;
    this.domain = domain;
    this.opts = opts;
    // virsh tries a domain reference as an ID, then a UUID, then a name: a name of digits (or
    // shaped like a UUID) could mean another domain, so such names go by UUID.
    this.ref = opts.uuid ?? (/^\d+$/.test(domain) || UUID.test(domain) ? null : domain);
  }

  private async domainRef(): Promise<string> {
    if (this.ref !== null) return this.ref;
    const found = (await listRunningDomainsWithUuid(this.uri, this.opts)).find((d) => d.name === this.domain);
    if (!found) throw new VirshError('LIBVIRT_DOMAIN_NOT_RUNNING', `libvirt domain '${this.domain}' is not running`);
    this.ref = found.uuid;
    return this.ref;
  }

  private async slot<T>(fn: () => Promise<T>): Promise<T> {
    const limit = Math.max(1, this.opts.concurrency ?? 4);
    while (this.running >= limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  async execute<T = unknown>(command: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<T> {
    const cmd = JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args });
    const ref = await this.domainRef();
    const virshOpts: VirshOptions = { ...this.opts, ...(opts?.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) };
    const stdout = await this.slot(() => runVirsh(this.uri, ['qemu-monitor-command', `--domain=${ref}`, `--cmd=${cmd}`], virshOpts));
    return parseMonitorReply(command, stdout) as T;
  }
}
