import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
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

/** A server process such as Prometheus or Alertmanager, to be started and waited for. */
export interface ReadyServerOptions {
  /** For errors: "prometheus", "alertmanager". */
  name: string;
  command: string;
  args: string[];
  /** The loopback port it was told to listen on. */
  port: number;
  /** Its own temporary directory, removed by stop(). */
  dir: string;
  /** How much of its stderr is kept for errors and checks. */
  stderrBytes: number;
  timeoutMs: number;
  intervalMs?: number;
}

export interface ReadyServer {
  url: string;
  pid: number;
  /** Kills it (SIGKILL) and removes its directory. */
  stop(): Promise<void>;
  stderr(): string;
}

/**
 * Starts `command` and waits until `http://127.0.0.1:<port>/-/ready` answers 2xx (the readiness
 * endpoint of Prometheus and Alertmanager, web/web.go `ready`); when the process exits first or
 * `timeoutMs` passes, it is stopped and the promise rejects with one line naming the server.
 */
export async function startReadyServer(o: ReadyServerOptions): Promise<ReadyServer> {
  const child: ChildProcess = spawn(o.command, o.args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < o.stderrBytes) stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const hasExited = () => child.exitCode !== null || child.signalCode !== null;
  const url = `http://127.0.0.1:${o.port}`;
  const stop = async () => {
    if (!hasExited()) child.kill('SIGKILL');
    await exited;
    rmSync(o.dir, { recursive: true, force: true });
  };
  const describe = (): string => `${child.exitCode ?? child.signalCode ?? 'running'}: ${stderr.trim()}`;
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    if (hasExited()) {
      await stop();
      throw new Error(`${o.name} exited early (${describe()})`);
    }
    try {
      const res = await fetch(`${url}/-/ready`);
      await res.body?.cancel();
      if (res.ok) return { url, pid: child.pid!, stop, stderr: () => stderr };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      const message = `timed out after ${o.timeoutMs} ms waiting for ${o.name} to be ready on ${url}: ${describe()}`;
      await stop();
      throw new Error(message);
    }
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 50));
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
