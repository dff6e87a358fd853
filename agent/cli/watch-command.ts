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
      // A VM turning unknown has no relation: its reason is the error's code (never "(null)").
      return `${ev.time}${who}: ${ev.previous ?? 'new'} → ${ev.severity}${ev.relation ? ` (${ev.relation})` : ''}${ev.reason ? ` ${ev.reason}` : ''}`;
    case 'refusal':
      return `${ev.time}${who}: REFUSED ${ev.command}: ${ev.code}: ${ev.message}`;
    case 'alert':
      return `${ev.time}${who}: alert ${ev.status} ${ev.alertname} (${ev.severity}, ${ev.reason})`;
    case 'vm-error':
      return ev.code === 'VM_SHUT_DOWN'
        ? `${ev.time}${who}: ${ev.message}`
        : `${ev.time}${who}: unreachable: ${ev.code}: ${ev.message}`;
    case 'config':
      return `${ev.time}: ${ev.message}`;
    default:
      // The daemon may send types this CLI does not know yet: their name and message.
      return `${ev.time}${who}: ${(ev as { type: string }).type}${'message' in ev && ev.message ? `: ${ev.message}` : ''}`;
  }
}

/**
 * Events go to stdout, one per line (JSON with --json); what the command itself has to say goes to
 * stderr, so a pipe of events stays events: one line when connected, one line when the daemon goes
 * away (exit 3), nothing when stopped by Ctrl-C (exit 0).
 */
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
      io.stderr(printable(`physbitsctl: watching physbitsd at ${socketPath}; events follow until Ctrl-C`));
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
    ws.on('close', (code: number) => {
      signal?.removeEventListener('abort', stop);
      if (!opened) return;
      if (signal?.aborted) return resolve(EXIT.OK);
      io.stderr(
        printable(
          code === 1001
            ? `physbitsctl: physbitsd at ${socketPath} stopped; no more events`
            : `physbitsctl: lost the connection to physbitsd at ${socketPath} (${code === 1006 ? 'closed without a word' : `close code ${code}`}); no more events`,
        ),
      );
      resolve(EXIT.UNKNOWN);
    });
  });
}
