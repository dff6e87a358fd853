/**
 * Many real paused TCG guests at once (test/helpers/qemu.ts), started concurrently in batches so
 * a 2-core machine is not asked to start a hundred QEMUs in the same instant.
 */
import { startGuest, type Guest, type GuestOptions } from '../test/helpers/qemu';
import { track } from './proc';
import { nowMs } from './stats';

export interface Fleet {
  guests: Guest[];
  /** Wall time to start them all. */
  ms: number;
  kill(): Promise<void>;
}

export async function startGuests(
  count: number,
  dir: string,
  opts: { batch?: number; memory?: string; cpu?: string } = {},
): Promise<Fleet> {
  const started = nowMs();
  const guests: Guest[] = [];
  const batch = opts.batch ?? 10;
  const width = String(count - 1).length;
  const kill = () => Promise.all(guests.map((g) => g.kill())).then(() => undefined);
  try {
    for (let i = 0; i < count; i += batch) {
      const wave: Promise<Guest>[] = [];
      for (let j = i; j < Math.min(count, i + batch); j++) {
        const o: GuestOptions = {
          dir,
          socketName: `vm${String(j).padStart(width, '0')}.qmp`,
          memory: opts.memory ?? '16M',
          cpu: opts.cpu ?? 'phys-bits=40',
        };
        wave.push(startGuest(o));
      }
      const settled = await Promise.allSettled(wave);
      for (const s of settled) {
        if (s.status !== 'fulfilled') continue;
        guests.push(s.value);
        track(s.value.pid, s.value.process);
      }
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
    }
  } catch (err) {
    await kill();
    throw err;
  }
  return { guests, ms: nowMs() - started, kill };
}
