/**
 * QEMU release and machine-type versions. Pure: the values come from `query-version` and from
 * `qom-get /machine type` (e.g. "pc-q35-7.2-machine"), read in guest-facts.ts.
 *
 * Several layout rules depend on the machine type's version rather than on the binary's: QEMU
 * keeps old machine types behaving as they did when they were current, so that a guest can
 * migrate between releases (compat properties in hw/i386/pc_q35.c and hw/i386/pc_piix.c).
 */

export interface Version {
  major: number;
  minor: number;
  micro: number;
}

export type MachineFamily = 'q35' | 'pc' | 'microvm' | 'other';

export interface MachineType {
  family: MachineFamily;
  /** The versioned type's "major.minor"; null for unversioned types (e.g. "microvm"). */
  version: { major: number; minor: number } | null;
}

/** "7.2.22" from a query-version reply; null when the reply does not have that shape. */
export function qemuVersionString(reply: unknown): string | null {
  const q = (reply as { qemu?: Partial<Version> } | null)?.qemu;
  if (!q || ![q.major, q.minor, q.micro].every((n) => Number.isInteger(n) && (n as number) >= 0)) return null;
  return `${q.major}.${q.minor}.${q.micro}`;
}

/** Parses "7.2.22" (extra text after the numbers is ignored); null when it does not start with numbers. */
export function parseVersion(text: string): Version | null {
  const m = /^(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?/.exec(text.trim());
  if (!m) return null;
  return { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3] ?? 0) };
}

/** True when `v` is at least major.minor. */
export function atLeast(v: { major: number; minor: number }, major: number, minor: number): boolean {
  return v.major > major || (v.major === major && v.minor >= minor);
}

const VERSIONED = /^pc-(q35|i440fx)-(\d{1,3})\.(\d{1,3})(?:-machine)?$/;
/** pc-1.0 .. pc-1.3 were the i440fx types before the "pc-i440fx-" names (hw/i386/pc_piix.c). */
const OLD_PC = /^pc-(\d)\.(\d{1,2})(?:-machine)?$/;

/**
 * The family and version of a QOM machine type name ("pc-q35-7.2-machine", "pc-i440fx-2.1-machine",
 * "microvm-machine") or of a -machine alias ("q35", "pc"; unversioned, so version null).
 */
export function parseMachineType(type: string): MachineType {
  const t = type.trim();
  const m = VERSIONED.exec(t);
  if (m) {
    return { family: m[1] === 'q35' ? 'q35' : 'pc', version: { major: Number(m[2]), minor: Number(m[3]) } };
  }
  const old = OLD_PC.exec(t);
  if (old) return { family: 'pc', version: { major: Number(old[1]), minor: Number(old[2]) } };
  const bare = t.replace(/-machine$/, '');
  // Distribution types such as "pc-q35-rhel9.2.0" keep the family but not an upstream version.
  if (bare.startsWith('pc-q35-')) return { family: 'q35', version: null };
  if (bare.startsWith('pc-i440fx-')) return { family: 'pc', version: null };
  if (bare === 'q35') return { family: 'q35', version: null };
  if (bare === 'pc' || bare === 'pc-i440fx') return { family: 'pc', version: null };
  if (bare === 'microvm') return { family: 'microvm', version: null };
  return { family: 'other', version: null };
}
