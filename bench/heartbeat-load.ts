/**
 * The daemon's heartbeat load as the scale benchmark measures it: the per-VM interval the daemon
 * picks for a number of held VMs, idle-CPU windows of running processes, and the query-status
 * commands the scripted servers (bench/fake-fleet.ts) received meanwhile.
 */
import type { ChildProcess } from 'node:child_process';
import { parseConfig } from '../agent/core/config';
import { firstLine, threadCpuMs } from './proc';
import { sleep, wallMs } from './stats';

/** The largest qmp.heartbeatsPerSecond the config accepts: with it the cap does not bind below 100 000 VMs. */
export const UNCAPPED_HEARTBEATS_PER_SECOND = 100000;

/** The interval each of `held` held VMs is pinged at: agent/daemon/daemon.ts heartbeatInterval(). */
export function heartbeatIntervalFor(held: number, qmp: { heartbeatMs: number; heartbeatsPerSecond: number }): number {
  return Math.max(qmp.heartbeatMs, Math.ceil((1000 * held) / qmp.heartbeatsPerSecond));
}

/** The daemon's heartbeat settings with the defaults, and with the cap lifted. */
export interface Heartbeats {
  heartbeatMs: number;
  perSecond: number;
  timeoutMs: number;
  /** Per-VM interval at this many VMs with the defaults, and with the cap lifted. */
  capped: number;
  uncapped: number;
}

export function heartbeats(vms: number): Heartbeats {
  const q = parseConfig({}).qmp;
  const lifted = parseConfig({ qmp: { heartbeatsPerSecond: UNCAPPED_HEARTBEATS_PER_SECOND } }).qmp;
  return {
    heartbeatMs: q.heartbeatMs,
    perSecond: q.heartbeatsPerSecond,
    timeoutMs: q.heartbeatTimeoutMs,
    capped: heartbeatIntervalFor(vms, q),
    uncapped: heartbeatIntervalFor(vms, lifted),
  };
}

/** The query-status commands the scripted servers have received so far (bench/fake-fleet.ts). */
export async function queryStatusCount(fleet: ChildProcess): Promise<number> {
  const line = firstLine(fleet, 10000);
  fleet.kill('SIGUSR2');
  return (JSON.parse(await line) as { queryStatus: number }).queryStatus;
}

export interface IdleWindow {
  /** CPU % of one core per pid, one value per slice. */
  slices: number[][];
  /** query-status commands per second the scripted servers received over the window. */
  pingsPerSecond: number;
}

/**
 * The daemon's scheduled work that is not idle work: discovery's re-scan (`discovery.schedule`,
 * default every minute, at second 0) and the re-verify (`verify.schedule`, at second 0 of its
 * minute). An idle window is kept this far from every minute boundary, and the re-scan is measured
 * on its own (rescanWindow).
 */
export const MINUTE_MARGIN_MS = 3000;

/** Waits until a window of `windowMs` starting now stays MINUTE_MARGIN_MS clear of every minute boundary. */
export async function clearOfMinuteBoundary(windowMs: number): Promise<void> {
  if (windowMs + 2 * MINUTE_MARGIN_MS > 60000)
    throw new Error(`an idle window of ${windowMs} ms cannot avoid the minute`);
  const into = Date.now() % 60000;
  if (into >= MINUTE_MARGIN_MS && into + windowMs <= 60000 - MINUTE_MARGIN_MS) return;
  await sleep(into < MINUTE_MARGIN_MS ? MINUTE_MARGIN_MS - into : 60000 - into + MINUTE_MARGIN_MS);
}

/**
 * The moment of a heartbeat burst: the servers' count polled every 20 ms until it rises after a
 * poll at which it did not; NaN when none comes within `periodMs` + 2 s. The daemon pings every
 * held VM due in a slot from one wake-up per second (agent/core/timers.ts slottedTimers), the floor
 * all its VMs together once per interval: the pings arrive in bursts, not evenly.
 */
async function burstAt(fleet: ChildProcess, periodMs: number): Promise<number> {
  const deadline = wallMs() + periodMs + 2000;
  let last = await queryStatusCount(fleet);
  let quiet = false;
  while (wallMs() < deadline) {
    await sleep(20);
    const now = await queryStatusCount(fleet);
    if (now > last && quiet) return wallMs();
    quiet = now === last;
    last = now;
  }
  return NaN;
}

/**
 * CPU % of one core used by each pid over `idleSlices` consecutive slices of the window, and the
 * pings meanwhile. CPU is the threads' scheduler run time (threadCpuMs), and the window starts only
 * when it can end before the next minute's scheduled work (clearOfMinuteBoundary).
 *
 * With `periodMs` (the per-VM heartbeat interval) the window lasts a whole number of periods, at
 * least `idleMs`, and starts half a second after a burst (between two, for bursts a whole number of
 * seconds apart): it then holds exactly as many bursts, each VM's pings and their CPU, whatever the
 * phase. A window of arbitrary phase and length held one burst more or fewer (110 pings a second
 * counted from 100 VMs pinged once a second, 10 % more CPU).
 */
export async function idleWindow(
  pids: number[],
  fleet: ChildProcess | null,
  opts: { idleMs: number; idleSlices: number; periodMs?: number },
): Promise<IdleWindow> {
  const slices: number[][] = pids.map(() => []);
  const period = opts.periodMs;
  const windowMs = period ? Math.ceil(opts.idleMs / period) * period : opts.idleMs;
  const slice = windowMs / opts.idleSlices;
  await clearOfMinuteBoundary(windowMs + (period && fleet ? period + 3000 : 1000));
  if (period && fleet) {
    const burst = await burstAt(fleet, period);
    if (Number.isFinite(burst)) {
      let at = burst + 500;
      while (at < wallMs()) at += 1000;
      await sleep(at - wallMs());
    }
  }
  const q0 = fleet ? await queryStatusCount(fleet) : 0;
  const began = wallMs();
  for (let s = 0; s < opts.idleSlices; s++) {
    const c0 = pids.map(threadCpuMs);
    const t0 = wallMs();
    await sleep(began + (s + 1) * slice - t0);
    const dt = wallMs() - t0;
    pids.forEach((pid, i) => slices[i].push(((threadCpuMs(pid) - c0[i]) / dt) * 100));
  }
  const pingsPerSecond = fleet ? ((await queryStatusCount(fleet)) - q0) / ((wallMs() - began) / 1000) : NaN;
  return { slices, pingsPerSecond };
}

/**
 * CPU (ms) a process spends from 3 s before a minute boundary to 5 s after it, less what it spent
 * over the 8 s just before: what its work at the minute (discovery's re-scan) costs beyond idling.
 */
export async function rescanWindow(pid: number): Promise<number> {
  const span = MINUTE_MARGIN_MS + 5000;
  const startAt = 60000 - MINUTE_MARGIN_MS - span;
  const into = Date.now() % 60000;
  await sleep(into <= startAt ? startAt - into : 60000 - into + startAt);
  const c0 = threadCpuMs(pid);
  await sleep(span);
  const c1 = threadCpuMs(pid);
  await sleep(span);
  return threadCpuMs(pid) - c1 - (c1 - c0);
}

/** Idle CPU of one window: the mean of its equal slices (spikes such as a GC count, as they cost). */
export const idleOf = (w: IdleWindow | number[]) => {
  const slices = Array.isArray(w) ? w : w.slices[0];
  return slices.reduce((a, b) => a + b, 0) / slices.length;
};
