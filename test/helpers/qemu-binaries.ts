/**
 * QEMU binaries as the hooks run them (`BINARY --version`, agent/facts/qemu-binary.ts): the real
 * QEMU 7.2 and 10.0 of test/helpers/qemu.ts as one executable path each (10.0 through a script that
 * runs it the way the helpers do), and small scripts standing in for binaries that misbehave.
 */
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { HOST_QEMU, type Qemu } from './qemu';
import { tempDir } from './tmp';

/** The first line `qemu-system-x86_64 --version` prints on this machine (Debian 12) and in the Debian 13 tree. */
export const BANNER_7_2 = 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)';
export const BANNER_10_0 = 'QEMU emulator version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)';

function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** An executable `#!/bin/sh` script `name` holding `body`, mode 0755, removed at teardown. */
export function script(t: { teardown(fn: () => void): void }, name: string, body: string, mode = 0o755): string {
  const dir = tempDir('physbits-bin-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, mode);
  return path;
}

/** A script that prints `banner` and a copyright line, as QEMU's --version does. */
export function bannerScript(t: { teardown(fn: () => void): void }, banner: string): string {
  return script(
    t,
    'qemu-system-x86_64',
    `printf '%s\\n' ${shellQuote(banner)} 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers'`,
  );
}

/** This machine's QEMU (7.2) as an absolute path. */
export function hostQemuPath(): string {
  return execFileSync('sh', ['-c', `command -v ${shellQuote(HOST_QEMU.command[0])}`], { encoding: 'utf8' }).trim();
}

/** `qemu` as one absolute executable path: this machine's binary itself, the tree's through a script. */
export function qemuExecutable(t: { teardown(fn: () => void): void }, qemu: Qemu): string {
  if (qemu.tree === null) return hostQemuPath();
  return script(t, 'qemu-system-x86_64', `exec ${qemu.command.map(shellQuote).join(' ')} "$@"`);
}
