/**
 * `node build/test/helpers/libvirt-hook-entry.js [--config FILE] DOMAIN OPERATION SUBOP EXTRA`:
 * runHookEntry behind a process boundary, as /etc/libvirt/hooks/qemu runs it, for tests that
 * must not depend on the physbitsctl command line.
 */
import { readFileSync } from 'node:fs';
import { loadConfig } from '../../agent/core/config';
import { readTextOrNull, runHookEntry } from '../../agent/libvirt/libvirt-hook';

const argv = process.argv.slice(2);
let configPath: string | undefined;
if (argv[0] === '--config') {
  configPath = argv[1];
  argv.splice(0, 2);
}
const stdin = readFileSync(0, 'utf8');
runHookEntry(argv, stdin, {
  configPath,
  loadConfig,
  readText: readTextOrNull,
  stderr: (line) => process.stderr.write(`${line}\n`),
}).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`physbits: hook failed: ${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
