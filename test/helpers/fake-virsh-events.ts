/** A scripted stand-in for a running `virsh event` process (agent/libvirt/libvirt-event-stream.ts StreamProcess). */
import { PassThrough } from 'node:stream';
import type { SpawnStream, StreamProcess } from '../../agent/libvirt/libvirt-event-stream';

const tick = () => new Promise((r) => setImmediate(r));

export class FakeVirshEvents implements StreamProcess {
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly signals: string[] = [];
  private readonly ends: Array<(how: string) => void> = [];

  constructor(readonly args: readonly string[]) {}

  kill(signal: NodeJS.Signals): void {
    this.signals.push(signal);
  }

  onEnd(fn: (how: string) => void): void {
    this.ends.push(fn);
  }

  /** Prints lines as virsh would, and lets them be read. */
  async print(...lines: string[]): Promise<void> {
    this.stdout.write(lines.map((l) => `${l}\n`).join(''));
    await tick();
  }

  /** Ends the process after what it printed was read. */
  async end(how = 'exited with code 1'): Promise<void> {
    await tick();
    for (const fn of this.ends) fn(how);
  }
}

/** A spawn that hands out fake processes and keeps them, newest last. */
export function fakeSpawn(): { spawn: SpawnStream; spawned: FakeVirshEvents[] } {
  const spawned: FakeVirshEvents[] = [];
  return {
    spawned,
    spawn: (file, args) => {
      const child = new FakeVirshEvents([file, ...args]);
      spawned.push(child);
      return child;
    },
  };
}
