/**
 * Processes for the benchmarks: run one and time it from spawn to exit, and read a running one's
 * memory (VmHWM, VmRSS) and CPU time (utime + stime) from /proc.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { nowMs } from './stats';

export interface TimedRun {
  ms: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end; `ms` is wall time from spawn() to the exit event. */
export function timed(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<TimedRun> {
  return new Promise((resolve, reject) => {
    const started = nowMs();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    track(child.pid, child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.slice(0, 3).join(' ')}... did not finish within ${opts.timeoutMs} ms`));
    }, opts.timeoutMs ?? 120000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      const ms = nowMs() - started;
      clearTimeout(timer);
      resolve({ ms, code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

const live = new Set<number>();

/**
 * Remembers a process the benchmark started, so that a run that fails half-way still kills it
 * (QEMU and the daemon would otherwise outlive the benchmark).
 */
export function track(pid: number | undefined, exited?: Promise<unknown> | ChildProcess): void {
  if (!pid) return;
  live.add(pid);
  if (exited && 'once' in exited) exited.once('exit', () => live.delete(pid));
  else
    exited?.then(
      () => live.delete(pid),
      () => live.delete(pid),
    );
}

/** SIGKILLs every tracked process still alive (synchronous: safe in an 'exit' handler). */
export function killTracked(): void {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

let clkTck: number | null = null;

/** Clock ticks per second of /proc/<pid>/stat times. */
export function clockTicks(): number {
  if (clkTck === null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** utime + stime of a process, in milliseconds (children not included). */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / clockTicks();
}

/**
 * CPU time of a running process in milliseconds, at the scheduler's nanosecond resolution: the sum
 * of its threads' run time (/proc/<pid>/task/<tid>/schedstat, first field). utime + stime from
 * /proc/<pid>/stat come in clock ticks (10 ms), so a 2 s slice of an idle process resolves only
 * 0.5 % of a core and one tick more or less moves a 10 s window by 0.1 %. A thread that ends inside
 * a window takes its time with it; Node's threads (V8's platform workers, libuv's pool) live as long
 * as the process. Falls back to the clock ticks where schedstat cannot be read.
 */
export function threadCpuMs(pid: number): number {
  let ns = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // The thread ended between the listing and the read.
      }
    }
  } catch {
    return cpuMs(pid);
  }
  return Number.isFinite(ns) && ns > 0 ? ns / 1e6 : cpuMs(pid);
}

/** VmHWM and VmRSS of a process, in MiB. */
export function memoryMiB(pid: number): { hwm: number; rss: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { hwm: kib('VmHWM') / 1024, rss: kib('VmRSS') / 1024 };
}

/** Kills a child (SIGTERM, then SIGKILL after `graceMs`) and waits for it to exit. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/**
 * Resolves with the next line a child writes to stdout from now on (its "ready" report first, or
 * its answer to a signal later); a child writes one line at a time and waits to be asked again.
 */
export function firstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = () => {
      clearTimeout(t);
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
    };
    const t = setTimeout(() => {
      done();
      reject(new Error(`no output within ${timeoutMs} ms`));
    }, timeoutMs);
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      done();
      resolve(buf.slice(0, nl));
    };
    const onExit = (code: number | null) => {
      done();
      reject(new Error(`exited (${code}) before reporting: ${buf.slice(0, 500)}`));
    };
    child.stdout!.on('data', onData);
    child.on('exit', onExit);
  });
}
