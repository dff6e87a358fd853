import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * Ports handed to tests are drawn below the kernel's ephemeral range (ip_local_port_range, 32768–60999 by
 * default), so no listener bound to port 0 and no outgoing connection elsewhere in the suite can take one
 * between the moment it is chosen and the moment the program under test binds it.
 */
const FIXED_PORTS = { low: 20000, high: 32767 };
const handedOut = new Set<number>();

/** A port that was free a moment ago on `host` (default 127.0.0.1), never handed out twice in one process. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = FIXED_PORTS.low + Math.floor(Math.random() * (FIXED_PORTS.high - FIXED_PORTS.low + 1));
    if (handedOut.has(port)) continue;
    if (await canBind(port, host)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`freePort: no free port between ${FIXED_PORTS.low} and ${FIXED_PORTS.high} on ${host}`);
}

function canBind(port: number, host: string): Promise<boolean> {
  const s = createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
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
