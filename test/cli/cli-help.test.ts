/**
 * What an operator types first: `--help` and `help CMD` for every command, `--version` on both
 * programs, `physbitsd --help` naming its config path and signals. Real processes from build/.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { COMMANDS } from '../../agent/cli/help';
import { versionLine } from '../../agent/core/version';
import { PHYSBITSD, ctl } from '../helpers/daemon';

function daemon(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [PHYSBITSD, ...args], { timeout: 20000 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number) : 0;
      done({ code, stdout, stderr });
    });
  });
}

for (const { name } of COMMANDS) {
  test(`physbitsctl ${name} --help: what it does, options, exit codes, an example; exit 0`, async (t) => {
    const r = await ctl([name, '--help']);
    t.is(r.code, 0, r.stderr);
    t.is(r.stderr, '');
    t.true(r.stdout.startsWith(`usage: physbitsctl ${name}`), r.stdout);
    t.regex(r.stdout, /\nexit: [^\n]*\b0 /);
    t.regex(r.stdout, new RegExp(`\\nexample:\\n  \\S.*${name === 'help' ? 'help' : name}`));
    const viaHelp = await ctl(['help', name]);
    t.is(viaHelp.code, 0);
    t.is(viaHelp.stdout, r.stdout);
  });
}

test('-h works after other options too, and is not taken from after --', async (t) => {
  const r = await ctl(['check-migration', 'web1', '-h']);
  t.is(r.code, 0);
  t.true(r.stdout.startsWith('usage: physbitsctl check-migration VM --to PEER'));
});

test('the overview lists every command; with no command it is a usage error', async (t) => {
  const help = await ctl(['--help']);
  t.is(help.code, 0);
  for (const { name } of COMMANDS) t.regex(help.stdout, new RegExp(`\\n  ${name} +\\S`));
  t.is((await ctl(['help'])).stdout, help.stdout);
  const none = await ctl([]);
  t.is(none.code, 64);
  t.is(none.stderr, help.stdout);
});

test('help for an unknown command: one line, exit 64', async (t) => {
  const r = await ctl(['help', 'frobnicate']);
  t.is(r.code, 64);
  t.is(r.stderr, "physbitsctl: help: unknown command 'frobnicate'\n");
});

test('--version on both programs: version and commit, the same build', async (t) => {
  const ctlVersion = await ctl(['--version']);
  const dVersion = await daemon(['--version']);
  t.is(ctlVersion.code, 0);
  t.is(dVersion.code, 0);
  const re =
    /^(physbitsctl|physbitsd) (\d+\.\d+\.\d+) \((commit [0-9a-f]{12}(, modified)?|built without git: commit unknown)\)\n$/;
  t.regex(ctlVersion.stdout, re);
  t.regex(dVersion.stdout, re);
  t.is(ctlVersion.stdout.replace('physbitsctl', ''), dVersion.stdout.replace('physbitsd', ''));
});

test('versionLine says when a build had no git, or no build step at all', (t) => {
  t.is(
    versionLine('physbitsctl', { version: '1.2.3', commit: 'a'.repeat(40), dirty: false }),
    'physbitsctl 1.2.3 (commit aaaaaaaaaaaa)',
  );
  t.is(
    versionLine('physbitsd', { version: '1.2.3', commit: 'b'.repeat(40), dirty: true }),
    'physbitsd 1.2.3 (commit bbbbbbbbbbbb, modified)',
  );
  t.is(
    versionLine('physbitsd', { version: '1.2.3', commit: null, dirty: false }),
    'physbitsd 1.2.3 (built without git: commit unknown)',
  );
  t.regex(versionLine('physbitsd', null), /^physbitsd: version unknown/);
});

test('physbitsd --help names the default config path and the signals; exit 0', async (t) => {
  const r = await daemon(['--help']);
  t.is(r.code, 0);
  t.true(r.stdout.startsWith('usage: physbitsd [--config FILE]'));
  t.regex(r.stdout, /default \/etc\/physbits\/config\.json/);
  for (const sig of ['SIGHUP', 'SIGTERM', 'SIGINT']) t.regex(r.stdout, new RegExp(`\\n  [^\\n]*${sig}`));
  t.regex(r.stdout, /--version/);
});

test('physbitsd with a bad option: one line, exit 64', async (t) => {
  const r = await daemon(['--bogus']);
  t.is(r.code, 64);
  t.is(r.stderr.trim().split('\n').length, 1);
  t.regex(r.stderr, /^physbitsd: Unknown option '--bogus'/);
});
