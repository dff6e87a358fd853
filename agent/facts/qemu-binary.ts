/**
 * The version of a QEMU binary that has not started a guest yet: `BINARY --version`, as libvirt
 * (the domain's <emulator>) and qemu-server (PVE::QemuServer::Helpers kvm_user_version on
 * /usr/bin/kvm) find it. The hooks need it before QEMU runs (agent/judge/guest-phys-bits.ts).
 *
 * The hooks run as root, so the binary is run only when it is an absolute path to a regular file
 * that only root (or this user) can change; never through a shell, in the C locale, killed after
 * QEMU_VERSION_TIMEOUT_MS, with at most QEMU_VERSION_MAX_BYTES of output read. Anything else is
 * `unknown` with one sentence saying why; the caller then judges without the version.
 */
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import type { Version } from './qemu-version';

/** The QEMU that will run a guest, as `--version` told it, or why it is not known. */
export type QemuBinaryVersion = { version: Version; binary: string } | { unknown: string };

/** `--version` answers in milliseconds; a binary that takes longer is not answering. */
export const QEMU_VERSION_TIMEOUT_MS = 5000;
/** The banner is two lines; more than this is not QEMU's. */
export const QEMU_VERSION_MAX_BYTES = 64 * 1024;
/** qemu-server's binary for the host's own architecture (src/PVE/QemuServer/Helpers.pm get_command_for_arch). */
export const PROXMOX_KVM_BINARY = '/usr/bin/kvm';

/**
 * The version in QEMU's banner: "QEMU emulator version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)",
 * "QEMU emulator version 9.2.0 (pve-qemu-kvm_9.2.0-5)"; the same first line qemu-server's
 * kvm_user_version matches (`QEMU( PC)? emulator version X.Y[.Z]`). Null when no line has it.
 */
export function parseQemuBanner(text: string): Version | null {
  const m = /^QEMU(?: PC)? emulator version (\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?(?:\.\d{1,6})?(?=[\s,(]|$)/m.exec(text);
  return m ? { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3] ?? 0) } : null;
}

/** Why `binary` is not run, or null when it may be. */
export function binaryProblem(binary: string): string | null {
  if (!isAbsolute(binary)) return `${binary} is not an absolute path`;
  let st;
  try {
    st = statSync(binary);
  } catch (err) {
    return `${binary}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
  }
  if (!st.isFile()) return `${binary} is not a regular file`;
  if ((st.mode & 0o111) === 0) return `${binary} is not executable`;
  if ((st.mode & 0o022) !== 0) return `${binary} is writable by group or others, so it is not run`;
  const self = process.getuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== self)
    return `${binary} is owned by uid ${st.uid}, neither root nor this user, so it is not run`;
  return null;
}

export interface QemuVersionOptions {
  timeoutMs?: number;
  maxBytes?: number;
}

/** Runs `binary --version` within the bounds above; never rejects. */
export function readQemuVersion(binary: string, opts: QemuVersionOptions = {}): Promise<QemuBinaryVersion> {
  const problem = binaryProblem(binary);
  if (problem) return Promise.resolve({ unknown: problem });
  const timeoutMs = opts.timeoutMs ?? QEMU_VERSION_TIMEOUT_MS;
  const maxBuffer = opts.maxBytes ?? QEMU_VERSION_MAX_BYTES;
  return new Promise((resolve) => {
    execFile(
      binary,
      ['--version'],
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer,
        encoding: 'utf8',
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
      },
      (err, stdout) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null };
          let why: string;
          if (e.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') why = `printed more than ${maxBuffer} bytes`;
          else if (e.killed && e.signal === 'SIGKILL') why = `did not answer within ${timeoutMs} ms`;
          else why = `failed: ${(e.message.split('\n')[0] ?? '').slice(0, 200)}`;
          resolve({ unknown: `${binary} --version ${why}` });
          return;
        }
        const version = parseQemuBanner(stdout);
        resolve(
          version ? { version, binary } : { unknown: `${binary} --version printed no "QEMU emulator version" line` },
        );
      },
    );
  });
}
