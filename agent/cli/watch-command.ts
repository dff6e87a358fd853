/** `physbitsctl watch`: the daemon's event stream, one line per event, until interrupted. */
import WebSocket from 'ws';
import { EXIT } from '../core/exit-codes';
import { DaemonUnreachableError } from '../core/errors';
import { printable } from '../core/printable';
import { parse } from './args';
import type { CliIo } from './cli-io';
import { apiSocket } from './daemon-commands';

import type { DaemonEvent } from '../api/api-types';

/** Control characters (a VM's name, QEMU's messages) shown as escapes, never sent to the terminal. */

export function describeEvent(ev: DaemonEvent): string {
  return printable(describeRaw(ev));
}

function describeRaw(ev: DaemonEvent): string {
  const who = 'vm' in ev && ev.vm ? ` ${ev.vm}` : '';
  switch (ev.type) {
    case 'verdict':
      return `${ev.time}${who}: ${ev.previous ?? 'new'} → ${ev.severity} (${ev.relation})${ev.reason ? ` ${ev.reason}` : ''}`;
    case 'refusal':
      return `${ev.time}${who}: REFUSED ${ev.command}: ${ev.code}: ${ev.message}`;
    case 'alert':
      return `${ev.time}${who}: alert ${ev.status} ${ev.alertname} (${ev.severity}, ${ev.reason})`;
    case 'vm-error':
      return `${ev.time}${who}: unreachable: ${ev.code}: ${ev.message}`;
    default:
      // The daemon may send types this CLI does not know yet: their name and message.
      return `${ev.time}${who}: ${(ev as { type: string }).type}${'message' in ev && ev.message ? `: ${ev.message}` : ''}`;
  }
}

export async function watchCommand(args: string[], io: CliIo, signal?: AbortSignal): Promise<number> {
  const { values } = parse('watch', args, {
    json: { type: 'boolean' },
    api: { type: 'string' },
    config: { type: 'string' },
  });
  const socketPath = apiSocket(values.api, values.config);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${socketPath}:/v1/events`, { maxPayload: 1024 * 1024, handshakeTimeout: 5000 });
    let opened = false;
    const stop = () => ws.close();
    signal?.addEventListener('abort', stop, { once: true });
    ws.on('open', () => {
      opened = true;
    });
    ws.on('message', (data) => {
      let ev: DaemonEvent;
      try {
        ev = JSON.parse(String(data));
      } catch {
        return;
      }
      io.stdout(values.json ? JSON.stringify(ev) : describeEvent(ev));
    });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (!opened)
        reject(
          new DaemonUnreachableError(`cannot reach the physbits daemon at ${socketPath}: ${err.code ?? err.message}`),
        );
    });
    ws.on('close', () => {
      signal?.removeEventListener('abort', stop);
      if (opened) resolve(signal?.aborted ? EXIT.OK : EXIT.UNKNOWN);
    });
  });
}
