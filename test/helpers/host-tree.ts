/**
 * The fixture host trees of test/fixtures/hosts/<name>: proc/cpuinfo and sys/module/kvm_{amd,intel}/parameters
 * as they are, and dev/cpu/0/cpuid built from the fixture's cpuid-leaves.json
 * ({ "0x80000008": [eax, ebx, ecx, edx], "leaf.subleaf": [...] }) as the cpuid device presents it:
 * a sparse file holding each leaf's 16 bytes at offset `leaf | subleaf << 32` (the leaves sit up to
 * ~2 GiB into it, so the file is built in a temp dir instead of being kept in git).
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { cpuidPosition } from '../../agent/facts/cpuid';
import { tempDir } from './tmp';

export const HOSTS = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'hosts');

export interface HostRoots {
  procRoot: string;
  sysRoot: string;
  devRoot: string;
}

export function fixtureLeaves(host: string): Record<string, string[]> {
  return JSON.parse(readFileSync(join(HOSTS, host, 'cpuid-leaves.json'), 'utf8')) as Record<string, string[]>;
}

/** Writes `<dir>/cpu/0/cpuid` holding `leaves` at the cpuid device's offsets. */
export function writeCpuidDevice(dir: string, leaves: Record<string, string[]>): void {
  mkdirSync(join(dir, 'cpu', '0'), { recursive: true });
  const fd = openSync(join(dir, 'cpu', '0', 'cpuid'), 'w');
  try {
    for (const [key, values] of Object.entries(leaves)) {
      const [leaf, subleaf] = key.split('.').map((s) => Number(s));
      const buf = Buffer.alloc(16);
      values.forEach((v, i) => buf.writeUInt32LE(Number(v) >>> 0, i * 4));
      writeSync(fd, buf, 0, 16, Number(cpuidPosition(leaf, subleaf ?? 0)));
    }
  } finally {
    closeSync(fd);
  }
}

/** The three roots of fixture `name`; the dev tree lives until teardown. */
export function hostTree(t: { teardown(fn: () => void): void }, name: string): HostRoots {
  const devRoot = tempDir(`physbits-dev-${name}-`);
  t.teardown(() => rmSync(devRoot, { recursive: true, force: true }));
  writeCpuidDevice(devRoot, fixtureLeaves(name));
  return { procRoot: join(HOSTS, name, 'proc'), sysRoot: join(HOSTS, name, 'sys'), devRoot };
}

/** Writes `<dir>/cpu/0/msr` holding `value` at MSR `msr`'s offset, as the msr device presents it. */
export function writeMsrDevice(dir: string, msr: number, value: bigint): void {
  mkdirSync(join(dir, 'cpu', '0'), { recursive: true });
  const fd = openSync(join(dir, 'cpu', '0', 'msr'), 'w');
  try {
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64LE(value);
    writeSync(fd, buf, 0, 8, msr);
  } finally {
    closeSync(fd);
  }
}
