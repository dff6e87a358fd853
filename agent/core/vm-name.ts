import { basename } from 'node:path';

/** The name a VM goes by when QEMU does not tell one: its socket's basename without the extension. */
export function nameFromSocket(socket: string): string {
  const base = basename(socket);
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(0, dot) : base;
}
