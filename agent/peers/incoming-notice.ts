/**
 * The notice a guard sends to the agent of the host a guest migrates to (POST /v1/incoming): the
 * width a host-phys-bits=on guest booted with, which QEMU on the destination does not report
 * (docs/guard.md "host-phys-bits=on guests after a migration"). Pure: the shape and its bounds.
 */
import { isObject, isWidth } from '../core/checks';

/** What the destination remembers and matches to the VM that arrives. */
export interface IncomingNotice {
  /** The VM's name on the source (QEMU -name, libvirt's domain name). */
  vm: string;
  /** The TCP port the `migrate` named: the destination QEMU's -incoming port. */
  port: string | null;
  /** The width the guest booted with and keeps. */
  physBits: number;
  /** The source host's name (its host.name). */
  from: string | null;
}

/** A notice is a few short fields: anything larger is not one. */
export const MAX_NOTICE_BYTES = 4096;
const MAX_TEXT = 256;

const text = (v: unknown): v is string =>
  typeof v === 'string' && v.length > 0 && v.length <= MAX_TEXT && !/[\u0000-\u001f\u007f]/.test(v);

/** The notice in `body`, or the one line saying what is wrong with it. */
export function parseIncomingNotice(body: unknown): IncomingNotice | { error: string } {
  if (!isObject(body)) return { error: 'expected a JSON object' };
  const b = body;
  if (!text(b.vm)) return { error: `vm must be a name of 1 to ${MAX_TEXT} printable characters` };
  if (!isWidth(b.physBits)) return { error: 'physBits must be a whole number from 1 to 64' };
  if (b.port !== undefined && b.port !== null && !(typeof b.port === 'string' && /^[0-9]{1,5}$/.test(b.port)))
    return { error: 'port must be a TCP port number as a string' };
  if (b.from !== undefined && b.from !== null && !text(b.from))
    return { error: `from must be a host name of 1 to ${MAX_TEXT} printable characters` };
  return {
    vm: b.vm,
    port: typeof b.port === 'string' ? b.port : null,
    physBits: b.physBits,
    from: typeof b.from === 'string' ? b.from : null,
  };
}
