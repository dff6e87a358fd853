/**
 * The machine a benchmark ran on: CPU model, cores, memory, kernel, and the versions of Node,
 * QEMU and socat. Parsing is pure and works on the text of /proc files.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, release } from 'node:os';
import { QEMU } from '../test/helpers/qemu';

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  qemu: string;
  socat: string;
  kvm: boolean;
}

/** The first "model name" of /proc/cpuinfo. */
export function parseCpuModel(cpuinfo: string): string {
  return /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? 'unknown';
}

/** MemTotal of /proc/meminfo, in GiB. */
export function parseMemTotalGiB(meminfo: string): number {
  const kib = Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? NaN);
  return kib / 1024 / 1024;
}

function firstLineOf(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      .split('\n')[0]
      .trim();
  } catch {
    return 'not found';
  }
}

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** "socat version 1.7.4.4 on ..." → "socat 1.7.4.4". */
export function parseSocatVersion(text: string): string {
  const v = /socat version (\S+)/.exec(text)?.[1];
  return v ? `socat ${v}` : 'unknown';
}

function socatVersion(): string {
  try {
    return parseSocatVersion(execFileSync('socat', ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  } catch {
    return 'not found';
  }
}

export function describeMachine(kvm: boolean): Machine {
  return {
    cpuModel: parseCpuModel(read('/proc/cpuinfo')),
    cores: availableParallelism(),
    memoryGiB: parseMemTotalGiB(read('/proc/meminfo')),
    kernel: release(),
    node: process.version,
    qemu: firstLineOf(QEMU, ['--version']),
    socat: socatVersion(),
    kvm,
  };
}

export function machineMarkdown(m: Machine): string {
  return [
    '| | |',
    '|---|---|',
    `| CPU | ${m.cpuModel} |`,
    `| cores | ${m.cores} |`,
    `| memory | ${m.memoryGiB.toFixed(1)} GiB |`,
    `| kernel | ${m.kernel} |`,
    `| Node | ${m.node} |`,
    `| QEMU | ${m.qemu} |`,
    `| socat | ${m.socat} |`,
    `| /dev/kvm usable | ${m.kvm ? 'yes (guests still run under TCG here, as in CI)' : 'no (guests run under TCG)'} |`,
  ].join('\n');
}
