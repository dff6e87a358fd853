import test from 'ava';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
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
