/**
 * A QmpExecutor over libvirt's own monitor connection: `virsh qemu-monitor-command`, for guests
 * whose QMP socket libvirt holds. libvirt adds its own "id" and hands back QEMU's reply line;
 * QEMU's error replies become CommandError, as on a direct connection. libvirt marks the domain
 * tainted ("custom-monitor") the first time; it changes nothing in the guest.
 *
 * Commands issued together (readGuestFacts sends a round of a dozen at once) share one virsh
 * process and one libvirt connection (virsh.ts runVirshBatch): a virsh process costs tens of
 * milliseconds of CPU, a monitor command a fraction of one.
 */
import { CommandError, ProtocolError } from '../../qmp/errors';
import type { QmpExecutor } from '../facts/guest-facts';
import { listRunningDomainsWithUuid } from './libvirt-domains';
import { runVirsh, runVirshBatch, VirshError, VIRSH_DEFAULTS, type VirshOptions } from './virsh';

export interface LibvirtExecutorOptions extends VirshOptions {
  /** The domain's UUID, when known: the unambiguous way to name it. */
  uuid?: string;
  /** virsh processes in flight at once for this domain; default 2. */
  concurrency?: number;
  /** Commands sent in one virsh process at most; default 32 (1: no batching). */
  batchSize?: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Failures that concern the domain or the connection, not one command: they hold for a whole batch. */
const WHOLE_BATCH = new Set([
  'LIBVIRT_DOMAIN_NOT_FOUND',
  'LIBVIRT_DOMAIN_NOT_RUNNING',
  'LIBVIRT_UNREACHABLE',
  'VIRSH_NOT_FOUND',
]);

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

interface Pending {
  command: string;
  json: string;
  timeoutMs: number;
  resolve: (stdout: string) => void;
  reject: (err: unknown) => void;
}

export class LibvirtExecutor implements QmpExecutor {
  readonly uri: string;
  readonly domain: string;
  private readonly opts: LibvirtExecutorOptions;
  private ref: Promise<string> | null = null;
  private queue: Pending[] = [];
  private flushScheduled = false;
  private inFlight = 0;

  constructor(uri: string, domain: string, opts: LibvirtExecutorOptions = {}) {
    this.uri = uri;
    this.domain = domain;
    this.opts = opts;
    // virsh tries a domain reference as an ID, then a UUID, then a name: a name of digits (or
    // shaped like a UUID) could mean another domain, so such names go by UUID.
    if (opts.uuid) this.ref = Promise.resolve(opts.uuid);
    else if (!(/^\d+$/.test(domain) || UUID.test(domain))) this.ref = Promise.resolve(domain);
  }

  private domainRef(): Promise<string> {
    if (!this.ref) {
      this.ref = listRunningDomainsWithUuid(this.uri, this.opts).then((list) => {
        const found = list.find((d) => d.name === this.domain);
        if (!found)
          throw new VirshError('LIBVIRT_DOMAIN_NOT_RUNNING', `libvirt domain '${this.domain}' is not running`);
        return found.uuid;
      });
      this.ref.catch(() => {
        this.ref = null;
      });
    }
    return this.ref;
  }

  async execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts?: { timeoutMs?: number },
  ): Promise<T> {
    const json = JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args });
    const timeoutMs = opts?.timeoutMs ?? this.opts.timeoutMs ?? VIRSH_DEFAULTS.timeoutMs;
    const stdout = await new Promise<string>((resolve, reject) => {
      this.queue.push({ command, json, timeoutMs, resolve, reject });
      this.schedule();
    });
    return parseMonitorReply(command, stdout) as T;
  }

  private schedule(): void {
    if (this.flushScheduled || this.queue.length === 0) return;
    if (this.inFlight >= Math.max(1, this.opts.concurrency ?? 2)) return;
    this.flushScheduled = true;
    // setImmediate: commands issued in the same turn (Promise.all) join one batch.
    setImmediate(() => {
      this.flushScheduled = false;
      if (this.queue.length === 0) return;
      const batch = this.queue.splice(0, Math.max(1, this.opts.batchSize ?? 32));
      this.inFlight++;
      void this.run(batch).finally(() => {
        this.inFlight--;
        this.schedule();
      });
      this.schedule();
    });
  }

  private single(ref: string, p: Pending): Promise<string> {
    return runVirsh(this.uri, ['qemu-monitor-command', `--domain=${ref}`, `--cmd=${p.json}`], {
      ...this.opts,
      timeoutMs: p.timeoutMs,
    });
  }

  private async run(batch: Pending[]): Promise<void> {
    let ref: string;
    try {
      ref = await this.domainRef();
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    if (batch.length === 1) {
      await this.single(ref, batch[0]).then(batch[0].resolve, batch[0].reject);
      return;
    }
    let outputs: Array<string | null>;
    try {
      const timeoutMs = Math.max(...batch.map((p) => p.timeoutMs));
      outputs = await runVirshBatch(
        this.uri,
        batch.map((p) => ['qemu-monitor-command', `--domain=${ref}`, `--cmd=${p.json}`]),
        { ...this.opts, timeoutMs },
      );
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    // A command that printed nothing failed in virsh: run it alone to learn why. When the reason
    // concerns the domain or the connection, it is the reason for every silent command.
    let shared: unknown = null;
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i];
      const out = outputs[i];
      if (out !== null) {
        p.resolve(out);
      } else if (shared !== null) {
        p.reject(shared);
      } else {
        try {
          p.resolve(await this.single(ref, p));
        } catch (err) {
          if (WHOLE_BATCH.has((err as { code?: string }).code ?? '')) shared = err;
          p.reject(err);
        }
      }
    }
  }
}
