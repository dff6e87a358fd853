import test from 'ava';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { parseQemuBanner, readQemuVersion } from '../../agent/facts/qemu-binary';
import { QEMUS } from '../helpers/qemu';
import { BANNER_10_0, BANNER_7_2, bannerScript, qemuExecutable, script } from '../helpers/qemu-binaries';

test("parseQemuBanner: the banners QEMU 7.2, 10.0 and Proxmox print; lines that are not QEMU's", (t) => {
  const rows: Array<[string, string | null]> = [
    [`${BANNER_7_2}\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n`, '7.2.22'],
    [`${BANNER_10_0}\nCopyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n`, '10.0.13'],
    ['QEMU emulator version 9.2.0 (pve-qemu-kvm_9.2.0-5)\n', '9.2.0'],
    ['QEMU emulator version 9.1.50\n', '9.1.50'],
    ['QEMU PC emulator version 0.12.5 (qemu-kvm-0.12.5), Copyright\n', '0.12.5'],
    ['QEMU emulator version 9.1\n', '9.1.0'],
    ['qemu emulator version 9.1.0\n', null],
    ['Not QEMU emulator version 9.1.0\n', null],
    ['QEMU emulator version 9.1.0abc\n', null],
    ['', null],
  ];
  for (const [text, want] of rows) {
    const v = parseQemuBanner(text);
    t.is(v === null ? null : `${v.major}.${v.minor}.${v.micro}`, want, JSON.stringify(text));
  }
});

for (const qemu of QEMUS) {
  test(`${qemu.label}: readQemuVersion runs the real binary's --version and reads its banner`, async (t) => {
    if (qemu.unavailable) t.fail(qemu.unavailable);
    const binary = qemuExecutable(t, qemu);
    const banner = execFileSync(binary, ['--version'], { encoding: 'utf8' }).split('\n')[0];
    t.is(banner, qemu.tree === null ? BANNER_7_2 : BANNER_10_0);
    const read = await readQemuVersion(binary);
    t.deepEqual(read, {
      version: qemu.tree === null ? { major: 7, minor: 2, micro: 22 } : { major: 10, minor: 0, micro: 13 },
      binary,
    });
  });
}

test('readQemuVersion: a binary that does not answer, prints too much, prints no banner, fails, or may be changed by others is not believed', async (t) => {
  const slow = script(t, 'slow', 'sleep 30');
  const started = Date.now();
  t.deepEqual(await readQemuVersion(slow, { timeoutMs: 300 }), {
    unknown: `${slow} --version did not answer within 300 ms`,
  });
  t.true(Date.now() - started < 5000);
  const chatty = script(t, 'chatty', 'yes QEMU emulator version 10.0.13');
  t.deepEqual(await readQemuVersion(chatty, { maxBytes: 4096 }), {
    unknown: `${chatty} --version printed more than 4096 bytes`,
  });
  const other = script(t, 'other', 'echo "virsh 9.0.0"');
  t.deepEqual(await readQemuVersion(other), { unknown: `${other} --version printed no "QEMU emulator version" line` });
  const failing = script(t, 'failing', 'echo "QEMU emulator version 10.0.13" ; exit 3');
  const failed = await readQemuVersion(failing);
  t.true(
    'unknown' in failed && failed.unknown.startsWith(`${failing} --version failed: Command failed`),
    JSON.stringify(failed),
  );
  const open = script(t, 'open', 'echo "QEMU emulator version 10.0.13"', 0o777);
  t.deepEqual(await readQemuVersion(open), { unknown: `${open} is writable by group or others, so it is not run` });
  t.deepEqual(await readQemuVersion('qemu-system-x86_64'), { unknown: 'qemu-system-x86_64 is not an absolute path' });
  const missing = join(open, '..', 'missing');
  t.deepEqual(await readQemuVersion(missing), { unknown: `${missing}: ENOENT` });
  t.deepEqual(await readQemuVersion('/usr'), { unknown: '/usr is not a regular file' });
  const fake = bannerScript(t, BANNER_10_0);
  t.deepEqual(await readQemuVersion(fake), { version: { major: 10, minor: 0, micro: 13 }, binary: fake });
});
