/**
 * The daemon's events (verdict changes, refusals, alerts, VM errors), fanned out to subscribers
 * such as the WebSocket stream. Keeps no history; each subscriber bounds its own buffer.
 */
import { EventEmitter } from 'node:events';
import type { DaemonEvent, PublishedEvent } from '../api/api-types';

export class EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(ev: PublishedEvent): void {
    const full = { ...ev, time: ev.time ?? new Date().toISOString() } as DaemonEvent;
    this.emitter.emit('event', full);
  }

  subscribe(fn: (ev: DaemonEvent) => void): () => void {
    this.emitter.on('event', fn);
    return () => this.emitter.off('event', fn);
  }
}
