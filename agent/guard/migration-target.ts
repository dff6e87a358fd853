/**
 * Where a `migrate` command sends the guest: its `uri` string or its `channels` list, reduced to a
 * host the guard can look up among the configured peers. Pure.
 *
 * The uri is read exactly as the guest's QEMU reads it, or refused as invalid:
 *
 * - QEMU 7.2 (migration/migration.c qmp_migrate): "tcp:" is stripped and the rest goes to
 *   socket_parse, as do whole "unix:" and "vsock:" uris; "rdma:" rest to inet_parse
 *   (migration/rdma.c qemu_rdma_data_init); "exec:" and "fd:" rest are a command and a descriptor
 *   name; anything else is "not a valid migration protocol". 7.2's socket_parse has no "tcp:"
 *   branch, so `tcp:tcp:hv2:4444` names host "tcp", port "hv2:4444", while `tcp:unix:/run/x.sock`
 *   is a UNIX socket (both seen on QEMU 7.2.22: test/e2e/migrate-uri.test.ts).
 * - QEMU 8.0 and 8.1: qmp_migrate as in 7.2, but socket_parse strips a "tcp:" too (so
 *   `tcp:tcp:hv2:4444` would reach hv2); not run here, so read as "version unknown".
 * - QEMU 8.2 and later (10.0: migration/migration.c migrate_uri_parse): "tcp:", "unix:", "vsock:"
 *   and "fd:" uris go to socket_parse whole, "rdma:" rest to inet_parse, "exec:" and "file:" (with
 *   file_parse_offset) are local; anything else is "unknown migration protocol". So
 *   `tcp:unix:/run/x.sock` is host "unix" (and a connection that fails).
 * - util/qemu-sockets.c socket_parse: "unix:" needs a path, "fd:" a name, "vsock:" goes to
 *   vsock_parse ("%32[^:]:%32[^,]" and nothing after), "tcp:" rest (8.0+) and anything else to
 *   inet_parse: ":port", "[v6]:port" ("[%64[^]]]:%32[^,]") or "host:port" ("%64[^:]:%32[^,]"),
 *   then the options after the port: ",to=" an integer, ",ipv4", ",ipv6", ",keep-alive", ",mptcp"
 *   each bare, "=on" or "=off" (inet_parse_flag), others ignored.
 *
 * When the guest's QEMU version is not known (or is 8.0/8.1) and the readings differ, the uri is
 * invalid.
 * Scheme prefixes are case-sensitive (strstart); a bare "host:port" is no migration uri.
 */

import { isDeepStrictEqual } from 'node:util';
import { joinHostPort } from '../../qmp/address';
import { atLeast, parseVersion } from '../facts/qemu-version';
import { isObject as isRecord } from '../core/checks';

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

/** Which QEMU reads the uri: 7.x (qmp_migrate, socket_parse without "tcp:") or 8.2+ (migrate_uri_parse). */
export type UriDialect = 'qemu-7' | 'qemu-8.2';

/** The dialect of a QEMU version string ("7.2.22"); null when unknown or 8.0/8.1. */
export function uriDialect(qemuVersion: string | undefined): UriDialect | null {
  const v = qemuVersion === undefined ? null : parseVersion(qemuVersion);
  if (!v) return null;
  if (atLeast(v, 8, 2)) return 'qemu-8.2';
  return atLeast(v, 8, 0) ? null : 'qemu-7';
}

/**
 * "host:port[,opts]" / "[v6]:port[,opts]" / ":port[,opts]" as inet_parse's sscanf reads it; null
 * when QEMU would reject it. The host is returned without brackets; `rest` is what follows the port.
 */
export function parseInetAddress(text: string): { host: string; port: string; rest: string } | null {
  let host: string;
  let after: string;
  if (text.startsWith(':')) {
    host = '';
    after = text.slice(1);
  } else if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close <= 1 || close - 1 > MAX_HOST) return null;
    host = text.slice(1, close);
    if (text[close + 1] !== ':') return null;
    after = text.slice(close + 2);
  } else {
    const colon = text.indexOf(':');
    if (colon <= 0 || colon > MAX_HOST) return null;
    host = text.slice(0, colon);
    after = text.slice(colon + 1);
  }
  const comma = after.indexOf(',');
  const port = (comma < 0 ? after : after.slice(0, comma)).slice(0, MAX_PORT);
  if (port === '') return null;
  return { host, port, rest: after.slice(port.length) };
}

/** inet_parse_flag: what follows ",name" must be empty, "=on" or "=off" up to the next comma. */
function flagError(name: string, optstr: string): string | null {
  const end = optstr.indexOf(',');
  if (end >= 0 && optstr[end + 1] === ',') return `error parsing '${name}' flag`;
  const value = end >= 0 ? optstr.slice(0, end) : optstr;
  return value === '' || value === '=on' || value === '=off' ? null : `error parsing '${name}' flag`;
}

/** inet_parse's options after the port; a message when QEMU refuses them. */
export function inetOptionsError(optstr: string): string | null {
  const to = optstr.indexOf(',to=');
  if (to >= 0) {
    // sscanf "%d%n": optional spaces and sign, digits; then the end or a comma.
    const m = /^[ \t\n\v\f\r]*[+-]?\d+/.exec(optstr.slice(to + 4));
    const next = m ? optstr[to + 4 + m[0].length] : 'x';
    if (!m || (next !== undefined && next !== ',')) return 'error parsing to= argument';
  }
  for (const name of ['ipv4', 'ipv6', 'keep-alive', 'mptcp']) {
    const at = optstr.indexOf(`,${name}`);
    if (at < 0) continue;
    const err = flagError(name, optstr.slice(at + 1 + name.length));
    if (err) return err;
  }
  return null;
}

function inetTarget(transport: NetworkTransport, text: string): MigrationTarget {
  const addr = parseInetAddress(text);
  if (!addr) return { kind: 'invalid', reason: `cannot read the address of ${transport}: uri` };
  const optionError = inetOptionsError(addr.rest);
  if (optionError) return { kind: 'invalid', reason: `${transport}: uri: ${optionError}` };
  if (addr.host === '') return { kind: 'invalid', reason: `${transport}: uri names no host` };
  return { kind: 'network', transport, host: addr.host, port: addr.port };
}

/** vsock_parse: "cid:port" and nothing after. */
function vsockTarget(text: string): MigrationTarget {
  const m = /^([^:]{1,32}):([^,]{1,32})$/.exec(text);
  if (!m) return { kind: 'invalid', reason: 'cannot read the address of vsock: uri' };
  return { kind: 'local', transport: 'vsock', detail: text };
}

/** util/qemu-sockets.c socket_parse; `tcpBranch`: it strips "tcp:" (QEMU 8.0 and later). */
function socketParse(text: string, tcpBranch: boolean): MigrationTarget {
  let rest: string | null;
  if ((rest = strip(text, 'unix:')) !== null)
    return rest === '' ? { kind: 'invalid', reason: 'invalid Unix socket address' } : local('unix', rest);
  if ((rest = strip(text, 'fd:')) !== null)
    return rest === '' ? { kind: 'invalid', reason: 'invalid file descriptor address' } : local('fd', rest);
  if ((rest = strip(text, 'vsock:')) !== null) return vsockTarget(rest);
  if (tcpBranch && (rest = strip(text, 'tcp:')) !== null) return inetTarget('tcp', rest);
  return inetTarget('tcp', text);
}

function local(transport: LocalTransport, detail: string): MigrationTarget {
  return { kind: 'local', transport, detail };
}

function strip(text: string, prefix: string): string | null {
  return text.startsWith(prefix) ? text.slice(prefix.length) : null;
}

const UNKNOWN_7 = 'not a migration uri QEMU 7.2 knows (tcp:, rdma:, unix:, fd:, exec:, vsock:)';
const UNKNOWN_8 = 'not a migration uri QEMU knows (tcp:, rdma:, unix:, fd:, exec:, file:, vsock:)';

/** QEMU 7.2 (and 8.0/8.1, `tcpBranch`) migration/migration.c qmp_migrate. */
function parseUri7(uri: string, tcpBranch = false): MigrationTarget {
  let rest: string | null;
  if ((rest = strip(uri, 'tcp:')) !== null) return socketParse(rest, tcpBranch);
  if (uri.startsWith('unix:') || uri.startsWith('vsock:')) return socketParse(uri, tcpBranch);
  if ((rest = strip(uri, 'rdma:')) !== null) return inetTarget('rdma', rest);
  if ((rest = strip(uri, 'exec:')) !== null) return local('exec', rest);
  if ((rest = strip(uri, 'fd:')) !== null)
    return rest === '' ? { kind: 'invalid', reason: "no file descriptor named ''" } : local('fd', rest);
  return { kind: 'invalid', reason: UNKNOWN_7 };
}

/** QEMU 8.2+ (10.0) migration/migration.c migrate_uri_parse. */
function parseUri8(uri: string): MigrationTarget {
  let rest: string | null;
  if ((rest = strip(uri, 'exec:')) !== null) return local('exec', rest);
  if ((rest = strip(uri, 'rdma:')) !== null) return inetTarget('rdma', rest);
  if (['tcp:', 'unix:', 'vsock:', 'fd:'].some((p) => uri.startsWith(p))) return socketParse(uri, true);
  if ((rest = strip(uri, 'file:')) !== null) {
    // migration/file.c file_parse_offset: ",offset=" a size.
    const at = rest.lastIndexOf(',offset=');
    if (at >= 0 && !/^(0x[0-9a-f]+|\d+)[kmgtpe]?$/i.test(rest.slice(at + 8)))
      return { kind: 'invalid', reason: 'file: uri: invalid offset' };
    return local('file', rest);
  }
  return { kind: 'invalid', reason: UNKNOWN_8 };
}

/**
 * One migrate uri → its target, as the guest's QEMU (`qemuVersion`, "7.2.22") reads it; without a
 * version (or for 8.0/8.1), the reading every dialect agrees on, else invalid.
 */
export function parseMigrateUri(uri: string, qemuVersion?: string): MigrationTarget {
  const dialect = uriDialect(qemuVersion);
  if (dialect === 'qemu-7') return parseUri7(uri);
  if (dialect === 'qemu-8.2') return parseUri8(uri);
  const readings = [parseUri7(uri), parseUri7(uri, true), parseUri8(uri)];
  const current = readings[2];
  if (readings.every((r) => isDeepStrictEqual(r, current) || (r.kind === 'invalid' && current.kind === 'invalid')))
    return current;
  return {
    kind: 'invalid',
    reason: `QEMU releases read this uri differently (7.2: ${describeTarget(readings[0])}, 8.0: ${describeTarget(readings[1])}, 8.2+: ${describeTarget(current)}) and the guest's QEMU version is not known`,
  };
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

/**
 * Every destination a QMP `migrate` names: its uri, and each of its channels. QEMU before 8.2 has
 * no `channels`; 8.2 and later take `uri` or `channels`, never both (qmp_migrate).
 */
export function migrateTargets(args: Record<string, unknown> | undefined, qemuVersion?: string): MigrationTarget[] {
  const out: MigrationTarget[] = [];
  const uri = args?.uri;
  const channels = args?.channels;
  const dialect = uriDialect(qemuVersion);
  if (channels !== undefined && dialect === 'qemu-7')
    return [{ kind: 'invalid', reason: 'QEMU before 8.2 takes no channels argument' }];
  if (channels !== undefined && uri !== undefined)
    return [{ kind: 'invalid', reason: "QEMU takes either 'uri' or 'channels', not both" }];
  if (uri !== undefined) {
    out.push(
      typeof uri === 'string' ? parseMigrateUri(uri, qemuVersion) : { kind: 'invalid', reason: 'uri is not a string' },
    );
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
