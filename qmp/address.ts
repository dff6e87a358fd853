/**
 * Where a QMP endpoint lives: a UNIX socket path or a TCP host and port, written as QEMU's own
 * `-qmp` option spells it ('unix:/run/vm.qmp', 'tcp:127.0.0.1:4444') or bare ('/run/vm.qmp',
 * 'localhost:4444').
 */
import { ConnectError } from './errors';

export type QmpAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** Linux sun_path holds 108 bytes including the terminating NUL. */
export const MAX_UNIX_PATH_BYTES = 107;

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$/;

function tcp(hostPort: string, original: string): QmpAddress {
  const m = HOST_PORT.exec(hostPort);
  if (!m) throw new ConnectError(`${original}: not a host:port address`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new ConnectError(`${original}: port ${port} is out of range`);
  return { kind: 'tcp', host: m[1].replace(/^\[|\]$/g, ''), port };
}

/**
 * Parses an address. A bare string is a TCP address only when it has the exact form host:port
 * with no '/'; anything else is a socket path (write 'unix:' to force a path such as 'vm:1').
 */
export function parseAddress(address: string): QmpAddress {
  const a = address;
  if (a === '') throw new ConnectError('empty QMP address');
  if (a.startsWith('unix:')) {
    const path = a.slice(5);
    if (path === '') throw new ConnectError(`${address}: empty socket path`);
    return { kind: 'unix', path };
  }
  if (a.startsWith('tcp:')) return tcp(a.slice(4), address);
  if (!a.includes('/') && HOST_PORT.test(a)) return tcp(a, address);
  return { kind: 'unix', path: a };
}

/** host:port, with an IPv6 literal in brackets ([::1]:4444), as URLs and QEMU's own options write it. */
export function joinHostPort(host: string, port: number | string): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The address as a person reads it: the path itself, or host:port. */
export function formatAddress(a: QmpAddress): string {
  if (a.kind === 'unix') return a.path;
  return joinHostPort(a.host, a.port);
}
