import test from 'ava';
import {
  chmodSync,
  chownSync,
  lchownSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { NFD_PREFIX, nfdFeatureText, writeNfdFeatureFile } from '../../agent/daemon/nfd-feature-file';
import { mergeConfig, startDaemon, writeConfig } from '../helpers/daemon';
import { tempDir } from '../helpers/tmp';

test('the feature file: the width for nodeAffinity, one phys-bits-ge label per width up to it', (t) => {
  const text = nfdFeatureText({ name: 'hv1', physBits: 34 });
  t.deepEqual(text.split('\n'), [
    "# physbitsd on hv1: this host's limit (host.physBits), kept current by schedulers.nfdFeatureFile",
    'physbits.feature.node.kubernetes.io/phys-bits=34',
    'physbits.feature.node.kubernetes.io/phys-bits-ge-32=true',
    'physbits.feature.node.kubernetes.io/phys-bits-ge-33=true',
    'physbits.feature.node.kubernetes.io/phys-bits-ge-34=true',
    '',
  ]);
  // nfd-worker ignores feature files over 64 kB.
  t.true(Buffer.byteLength(nfdFeatureText({ name: 'h'.repeat(255), physBits: 64 })) < 4096);
});

test('written atomically through a dot file, 0644, and only when the text changes', async (t) => {
  const dir = tempDir('physbits-nfd-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'features.d', 'physbits');
  t.true(await writeNfdFeatureFile(file, 'a=1\n'));
  t.is(readFileSync(file, 'utf8'), 'a=1\n');
  t.is(statSync(file).mode & 0o777, 0o644);
  t.false(await writeNfdFeatureFile(file, 'a=1\n'), 'same text: not rewritten');
  t.true(await writeNfdFeatureFile(file, 'a=2\n'));
  t.is(readFileSync(file, 'utf8'), 'a=2\n');
  t.deepEqual(readdirSync(join(dir, 'features.d')), ['physbits'], 'no temporary file left');
});

test('a planted symlink never makes it write elsewhere: a directory others may write is refused; a link at the path is replaced, not followed', async (t) => {
  const dir = tempDir('physbits-nfd-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const secret = join(dir, 'root-only');
  writeFileSync(secret, 'root secret\n', { mode: 0o600 });
  // A group-writable features.d whose group a local user (uid 65534) is in: the user plants the
  // temporary name the daemon used to take (.physbits.<pid>.tmp) as a link to a root-only file.
  const shared = join(dir, 'shared');
  mkdirSync(shared);
  chownSync(shared, 0, 65534);
  chmodSync(shared, 0o775);
  const planted = join(shared, `.physbits.${process.pid}.tmp`);
  symlinkSync(secret, planted);
  lchownSync(planted, 65534, 65534);
  const err = await t.throwsAsync(writeNfdFeatureFile(join(shared, 'physbits'), 'a=1\n'));
  t.is(err?.message, `${shared} is writable by group or others (mode 0775); the feature file is not written there`);
  t.is(readFileSync(secret, 'utf8'), 'root secret\n', 'the root-only file is untouched');
  t.deepEqual(readdirSync(shared), [`.physbits.${process.pid}.tmp`]);
  // A directory owned by someone else is refused too.
  const theirs = join(dir, 'theirs');
  mkdirSync(theirs, { mode: 0o755 });
  chownSync(theirs, 65534, 65534);
  const err2 = await t.throwsAsync(writeNfdFeatureFile(join(theirs, 'physbits'), 'a=1\n'));
  t.is(err2?.message, `${theirs} is owned by uid 65534, not root; the feature file is not written there`);
  // In a safe directory, a link at the file's own path is replaced by the file, its target untouched.
  const safe = join(dir, 'safe');
  mkdirSync(safe, { mode: 0o755 });
  symlinkSync(secret, join(safe, 'physbits'));
  t.true(await writeNfdFeatureFile(join(safe, 'physbits'), 'a=1\n'));
  t.is(readFileSync(secret, 'utf8'), 'root secret\n');
  t.false(statSync(join(safe, 'physbits'), { throwIfNoEntry: true }).isSymbolicLink());
  t.is(readFileSync(join(safe, 'physbits'), 'utf8'), 'a=1\n');
});

test('physbitsd keeps the feature file current with host.physBits across a reload', async (t) => {
  const dir = tempDir('physbits-nfd-e2e-');
  const file = join(dir, 'nfd', 'features.d', 'physbits');
  const d = await startDaemon({
    dir,
    config: { host: { name: 'hv7', physBits: 41 }, schedulers: { nfdFeatureFile: file } },
  });
  t.teardown(async () => {
    await d.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  t.is(readFileSync(file, 'utf8'), nfdFeatureText({ name: 'hv7', physBits: 41 }));
  writeConfig(d.configPath, mergeConfig(d.config, { host: { name: 'hv7', physBits: 43 } }));
  process.kill(d.pid, 'SIGHUP');
  await d.waitForLog((l) => l.message === 'configuration reloaded', 20000);
  const text = readFileSync(file, 'utf8');
  t.true(text.includes(`${NFD_PREFIX}/phys-bits=43\n`), text);
  t.true(text.includes(`${NFD_PREFIX}/phys-bits-ge-43=true\n`), text);
});
