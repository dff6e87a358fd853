import test from 'ava';
import { closeSync, mkdirSync, openSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { procFdReadings } from '../../agent/core/fd-budget';
import { tempDir } from '../helpers/tmp';

test("open(): this process's descriptors as the kernel counts them, following what is opened and closed", (t) => {
  const readings = procFdReadings();
  // Listing the directory opens one more descriptor for the listing itself.
  const listed = () => readdirSync('/proc/self/fd').length - 1;
  t.is(readings.open(), listed());
  const fds = Array.from({ length: 50 }, () => openSync('/dev/null', 'r'));
  t.is(readings.open(), listed());
  for (const fd of fds) closeSync(fd);
  t.is(readings.open(), listed());
});

test('open(): a /proc/self that is not procfs (a fixture tree) is counted by listing it', (t) => {
  const root = tempDir('physbits-fd-');
  mkdirSync(join(root, 'fd'));
  for (const n of ['0', '1', '2', '7']) writeFileSync(join(root, 'fd', n), '');
  t.is(procFdReadings(root).open(), 4);
  t.is(procFdReadings(join(root, 'missing')).open(), null);
});
