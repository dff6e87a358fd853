/**
 * A reload (SIGHUP) applies log.level at once and says which keys changed.
 */
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { startDaemon } from '../helpers/daemon';
import { tempDir } from '../helpers/tmp';

test('SIGHUP: log.level applies at once, and the reload line names the keys that changed', async (t) => {
  const dir = tempDir('physbits-reload-');
  // At warn, the daemon's info lines (ready, configuration reloaded) are not written.
  const d = await startDaemon({ dir, config: { log: { level: 'warn' } }, waitReady: false });
  t.teardown(() => d.kill());
  await d.waitForStatus(() => true, 'the API answering');
  const config = JSON.parse(readFileSync(d.configPath, 'utf8')) as {
    log: { level: string };
    host: Record<string, unknown>;
  };
  config.log.level = 'info';
  config.host = { ...config.host, name: 'renamed-host' };
  writeFileSync(d.configPath, JSON.stringify(config));
  d.proc.kill('SIGHUP');
  // Written only if the new level took effect before it: at warn it would never come.
  const line = await d.waitForLog((l) => l.message === 'configuration reloaded');
  t.is(line.fields.changed, 'host.name,log.level');
  const status = await d.status();
  t.is(status.host.name, 'renamed-host');
});
