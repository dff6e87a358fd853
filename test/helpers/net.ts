import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';

/** A port that was free a moment ago on `host` (default 127.0.0.1). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, host, resolve);
  });
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** What waitHttpReady needs of the server it waits for. */
export interface ReadyWait {
  /** For the error: "prometheus", "alertmanager". */
  name: string;
  /** The server's base URL; `${url}/-/ready` is asked. */
  url: string;
  /** Whether the process has exited (then waiting is over). */
  exited(): boolean;
  /** Its exit code or signal and what it printed, for the error. */
  describe(): string;
  timeoutMs: number;
  intervalMs?: number;
}

/**
 * Waits until `${url}/-/ready` answers 2xx (the readiness endpoint of Prometheus and Alertmanager,
 * web/web.go `ready`); rejects with one line when the process exits first or after `timeoutMs`.
 */
export async function waitHttpReady(w: ReadyWait): Promise<void> {
  const deadline = Date.now() + w.timeoutMs;
  for (;;) {
    if (w.exited()) throw new Error(`${w.name} exited early (${w.describe()})`);
    try {
      const res = await fetch(`${w.url}/-/ready`);
      await res.body?.cancel();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${w.timeoutMs} ms waiting for ${w.name} to be ready on ${w.url}: ${w.describe()}`,
      );
    }
    await new Promise((r) => setTimeout(r, w.intervalMs ?? 50));
  }
}

/**
 * Whether a socket listens on IPv4 ip:port, from /proc/net/tcp (state 0A, TCP_LISTEN): for a port
 * that must not be connected to just to find out, such as a migration destination's.
 */
export function tcpListening(ip: string, port: number): boolean {
  const hexIp = ip
    .split('.')
    .reverse()
    .map((o) => Number(o).toString(16).padStart(2, '0'))
    .join('')
    .toUpperCase();
  const local = `${hexIp}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .some((line) => {
      const f = line.trim().split(/\s+/);
      return f[1] === local && f[3] === '0A';
    });
}
