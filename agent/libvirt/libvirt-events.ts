/**
 * libvirt's domain events as `virsh event --all --loop --timestamp` prints them, read as a pure
 * function of one line. virsh prints each event as a header line (libvirt tools/virsh-domain-event.c,
 * virshEventPrintf: "<timestamp>: " with --timestamp, then the callback's text) followed, for some
 * types, by detail lines of its own ("alias: …", "size: …", "\tfield: value"); it ends with
 * "events received: N". Only header lines begin with "event '" after the timestamp.
 *
 * The domain name is printed as it is, quotes included; the suffix each event type prints after it
 * holds no quote, so the name ends at the line's last quote. A line cannot make the daemon do
 * anything but read: the worst a misread line causes is a domain read again, or all of them.
 */

/** What an event means for the daemon. */
export type DomainChange = 'started' | 'stopped' | 'changed';

export interface LibvirtDomainEvent {
  /** virsh's timestamp ("2026-12-07 03:54:16.136+0000"), when --timestamp printed one. */
  at: string | null;
  /** The event type as virsh names it: lifecycle, device-added, memory-device-size-change, … */
  type: string;
  domain: string;
  /** lifecycle: "Started Booted"; device-added/-removed: the device alias; otherwise "". */
  detail: string;
  change: DomainChange;
}

/** A line virsh printed: an event the daemon acts on, a header it cannot read, or nothing to do. */
export type EventLine =
  { kind: 'event'; event: LibvirtDomainEvent } | { kind: 'unreadable'; type: string | null } | { kind: 'ignored' };

const TIMESTAMP = String.raw`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d{4}`;
const HEADER = new RegExp(`^(?:(${TIMESTAMP}): )?event '([a-z0-9-]+)'(.*)$`);
const FOR_DOMAIN = " for domain '";

/** virDomainEventType's names in virsh (virshDomainEvent). */
const LIFECYCLE_CHANGES = new Map<string, DomainChange | null>(
  Object.entries({
    Defined: null,
    Undefined: null,
    Started: 'started',
    // Suspended covers "Suspended Migrated" on the source and a post-copy pause on the destination.
    Suspended: 'changed',
    // An incoming migration ends with "Resumed Migrated".
    Resumed: 'changed',
    Stopped: 'stopped',
    // "Stopped" follows a shutdown's "Shutdown Finished".
    Shutdown: null,
    PMSuspended: 'changed',
    Crashed: 'changed',
  }),
);

/** The text after the domain name's closing quote, per event type the daemon acts on. */
const SUFFIXES = new Map<string, { suffix: RegExp; change: (detail: string) => DomainChange | null }>(
  Object.entries({
    lifecycle: {
      suffix: /^: ([A-Za-z]+) ([A-Za-z/ -]+)$/,
      change: (detail: string) => LIFECYCLE_CHANGES.get(detail.split(' ')[0]) ?? null,
    },
    'device-added': { suffix: /^: ([^'\s]*)$/, change: (): DomainChange => 'changed' },
    'device-removed': { suffix: /^: ([^'\s]*)$/, change: (): DomainChange => 'changed' },
    // Its alias and size follow on lines of their own.
    'memory-device-size-change': { suffix: /^:()$/, change: (): DomainChange => 'changed' },
  }),
);

/** One line of `virsh event` output (without its line break). */
export function parseEventLine(line: string): EventLine {
  const header = HEADER.exec(line);
  if (!header) return { kind: 'ignored' };
  const [, at, type, afterType] = header;
  const shape = SUFFIXES.get(type);
  if (!shape) return { kind: 'ignored' };
  if (!afterType.startsWith(FOR_DOMAIN)) return { kind: 'unreadable', type };
  const rest = afterType.slice(FOR_DOMAIN.length);
  // No suffix holds a quote: the name ends at the line's last one.
  const quote = rest.lastIndexOf("'");
  const suffix = quote < 0 ? null : shape.suffix.exec(rest.slice(quote + 1));
  const domain = quote < 0 ? '' : rest.slice(0, quote);
  if (!suffix || domain === '') return { kind: 'unreadable', type };
  if (type === 'lifecycle' && !LIFECYCLE_CHANGES.has(suffix[1])) return { kind: 'unreadable', type };
  const detail = type === 'lifecycle' ? `${suffix[1]} ${suffix[2]}` : suffix[1];
  const change = shape.change(detail);
  if (!change) return { kind: 'ignored' };
  return { kind: 'event', event: { at: at ?? null, type, domain, detail, change } };
}
