/**
 * contrib/package/physbitsctl.bash-completion, run by bash itself: after `physbitsctl CMD --` it offers
 * every option agent/cli/help.ts documents for CMD, and after `physbitsd --` every option of the
 * daemon. bash-completion's own helpers are stood in for (_init_completion sets the words, _filedir
 * does nothing): what is tested is the script's lists.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { COMMANDS } from '../../agent/cli/help';

const SCRIPT = join(__dirname, '..', '..', '..', 'contrib', 'package', 'physbitsctl.bash-completion');

/** What the completion offers for the words typed, the last one being completed. */
function complete(fn: string, words: string[]): string[] {
  const program = [
    '_init_completion() { words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; cur="${words[cword]}"; prev="${words[cword-1]}"; }',
    '_filedir() { :; }',
    'complete() { :; }',
    `. "${SCRIPT}"`,
    'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))',
    `${fn}`,
    'printf "%s\\n" "${COMPREPLY[@]}"',
  ].join('\n');
  const r = spawnSync('bash', ['-c', program, 'bash', ...words], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bash exited ${r.status}: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean);
}

for (const command of COMMANDS.filter((c) => c.options.length > 0))
  test(`physbitsctl ${command.name} --<TAB> offers every option its help documents`, (t) => {
    const offered = complete('_physbitsctl', ['physbitsctl', command.name, '--']);
    for (const [flag] of command.options) {
      const option = flag.split(' ')[0];
      t.true(offered.includes(option), `${option} of ${command.name} not offered: ${offered.join(' ')}`);
    }
    t.true(offered.includes('--help'));
  });

test('physbitsctl <TAB> offers every command, --help and --version', (t) => {
  const offered = complete('_physbitsctl', ['physbitsctl', '']);
  for (const name of [...COMMANDS.map((c) => c.name), '--help', '--version']) t.true(offered.includes(name), name);
});

test('physbitsd --<TAB> offers --config, --check-config, --version and --help', (t) => {
  t.deepEqual(complete('_physbitsd', ['physbitsd', '--']).sort(), [
    '--check-config',
    '--config',
    '--help',
    '--version',
  ]);
});
