/**
 * Where a `migrate` command sends the guest: its `uri` string or its `channels` list, reduced to a
 * host the guard can look up among the configured peers. Pure.
 *
 * The uri forms follow QEMU (migration/migration.c qmp_migrate / migrate_uri_parse and
 * util/qemu-sockets.c socket_parse / inet_parse): scheme prefixes are case-sensitive; `tcp:` and
 * `rdma:` take "host:port", "[v6]:port" or ":port" followed by ",option..."; a bare "host:port"
 * without a scheme is refused by QEMU ("unknown migration protocol").
 */

import { joinHostPort } from '../../qmp/address';

export type NetworkTransport = 'tcp' | 'rdma';
export type LocalTransport = 'unix' | 'fd' | 'exec' | 'file' | 'vsock';

export type MigrationTarget =
  | { kind: 'network'; transport: NetworkTransport; host: string; port: string; channel?: string }
  | { kind: 'local'; transport: LocalTransport; detail: string; channel?: string }
  | { kind: 'invalid'; reason: string; channel?: string };

/** inet_parse keeps at most 64 characters of host and 32 of port. */
const MAX_HOST = 64;
const MAX_PORT = 32;
/** More channels than this is not a migration QEMU would start. */
export const MAX_CHANNELS = 8;

/**
 * "host:port[,opts]" / "[v6]:port[,opts]" / ":port[,opts]" as inet_parse reads it; null when QEMU
 * would reject it. The host is returned without brackets.
 */
export function parseInetAddress(text: string): { host: string; port: string } | null {
  let host: string;
  let rest: string;
  if (text.startsWith(':')) {
    host = '';
    rest = text.slice(1);
  } else if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close <= 1 || close - 1 > MAX_HOST) return null;
    host = text.slice(1, close);
    if (text[close + 1] !== ':') return null;
    rest = text.slice(close + 2);
  } else {
    const colon = text.indexOf(':');
    if (colon <= 0 || colon > MAX_HOST) return null;
    host = text.slice(0, colon);
    rest = text.slice(colon + 1);
  }
  const comma = rest.indexOf(',');
  const port = (comma < 0 ? rest : rest.slice(0, comma)).slice(0, MAX_PORT);
  if (port === '') return null;
  return { host, port };
}

function strip(text: string, prefix: string): string | null {
  return text.startsWith(prefix) ? text.slice(prefix.length) : null;
}

/** One migrate uri → its target. */
export function parseMigrateUri(uri: string): MigrationTarget {
  let rest: string | null;
  if ((rest = strip(uri, 'tcp:')) !== null || (rest = strip(uri, 'rdma:')) !== null) {
    const transport: NetworkTransport = uri.startsWith('tcp:') ? 'tcp' : 'rdma';
    const addr = parseInetAddress(rest);
    if (!addr) return { kind: 'invalid', reason: `cannot read the address of ${transport}: uri` };
    if (addr.host === '') return { kind: 'invalid', reason: `${transport}: uri names no host` };
    return { kind: 'network', transport, host: addr.host, port: addr.port };
  }
  for (const transport of ['unix', 'fd', 'exec', 'file', 'vsock'] as const) {
    const r = strip(uri, `${transport}:`);
    if (r !== null) return { kind: 'local', transport, detail: r };
  }
  return { kind: 'invalid', reason: 'not a migration uri QEMU knows (tcp:, rdma:, unix:, fd:, exec:, file:, vsock:)' };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The `addr` of a MigrationChannel (qapi/migration.json MigrationAddress). */
export function parseMigrationAddress(addr: unknown): MigrationTarget {
  if (!isRecord(addr)) return { kind: 'invalid', reason: 'channel addr is not an object' };
  const transport = addr.transport;
  if (transport === 'socket') {
    const type = addr.type;
    if (type === 'inet') {
      if (typeof addr.host !== 'string' || typeof addr.port !== 'string') {
        return { kind: 'invalid', reason: 'inet socket address needs string host and port' };
      }
      const host = addr.host.replace(/^\[(.*)\]$/, '$1');
      if (host === '') return { kind: 'invalid', reason: 'inet socket address names no host' };
      return { kind: 'network', transport: 'tcp', host, port: addr.port };
    }
    if (type === 'unix') return { kind: 'local', transport: 'unix', detail: String(addr.path ?? '') };
    if (type === 'fd') return { kind: 'local', transport: 'fd', detail: String(addr.str ?? '') };
    if (type === 'vsock')
      return { kind: 'local', transport: 'vsock', detail: `${String(addr.cid ?? '')}:${String(addr.port ?? '')}` };
    return { kind: 'invalid', reason: 'unknown socket address type' };
  }
  if (transport === 'rdma') {
    if (typeof addr.host !== 'string' || typeof addr.port !== 'string' || addr.host === '') {
      return { kind: 'invalid', reason: 'rdma address needs string host and port' };
    }
    return { kind: 'network', transport: 'rdma', host: addr.host.replace(/^\[(.*)\]$/, '$1'), port: addr.port };
  }
  if (transport === 'exec') {
    const args = Array.isArray(addr.args) ? addr.args.map(String).join(' ') : '';
    return { kind: 'local', transport: 'exec', detail: args };
  }
  if (transport === 'file') return { kind: 'local', transport: 'file', detail: String(addr.filename ?? '') };
  return { kind: 'invalid', reason: 'unknown migration transport' };
}

/** Every destination a QMP `migrate` names: its uri, and each of its channels. */
export function migrateTargets(args: Record<string, unknown> | undefined): MigrationTarget[] {
  const out: MigrationTarget[] = [];
  const uri = args?.uri;
  const channels = args?.channels;
  if (uri !== undefined) {
    out.push(typeof uri === 'string' ? parseMigrateUri(uri) : { kind: 'invalid', reason: 'uri is not a string' });
  }
  if (channels !== undefined) {
    if (!Array.isArray(channels) || channels.length === 0) {
      out.push({ kind: 'invalid', reason: 'channels is not a non-empty list' });
    } else if (channels.length > MAX_CHANNELS) {
      out.push({ kind: 'invalid', reason: `more than ${MAX_CHANNELS} channels` });
    } else {
      for (const ch of channels) {
        const type = isRecord(ch) && typeof ch['channel-type'] === 'string' ? ch['channel-type'] : undefined;
        const target = isRecord(ch)
          ? parseMigrationAddress(ch.addr)
          : ({ kind: 'invalid', reason: 'channel is not an object' } as const);
        out.push(type ? { ...target, channel: type } : target);
      }
    }
  }
  if (out.length === 0) out.push({ kind: 'invalid', reason: 'neither uri nor channels given' });
  return out;
}

/** The target for messages: "tcp:hv2:4444", "unix:/run/x.sock". */
export function describeTarget(t: MigrationTarget): string {
  if (t.kind === 'network') return `${t.transport}:${joinHostPort(t.host, t.port)}`;
  if (t.kind === 'local') return `${t.transport}:${t.detail}`;
  return `(${t.reason})`;
}
