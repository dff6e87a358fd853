/**
 * The daemon's events (verdict changes, refusals, alerts, VM errors), fanned out to subscribers
 * such as the WebSocket stream. Keeps no history; each subscriber bounds its own buffer.
 */
import { EventEmitter } from 'node:events';

export interface DaemonEvent {
  type: 'verdict' | 'refusal' | 'alert' | 'vm-error' | 'vm-added' | 'vm-removed' | 'migration' | 'config';
  time: string;
  vm?: string;
  [key: string]: unknown;
}

export class EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(ev: Omit<DaemonEvent, 'time'> & { time?: string }): void {
    const full = { ...ev, time: ev.time ?? new Date().toISOString() } as DaemonEvent;
    this.emitter.emit('event', full);
  }

  subscribe(fn: (ev: DaemonEvent) => void): () => void {
    this.emitter.on('event', fn);
    return () => this.emitter.off('event', fn);
  }
}
