import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readBuildInfo } from '../../contrib/package/build-info';
import { bundle } from '../../contrib/package/bundle';

const dir = mkdtempSync(join(tmpdir(), 'physbits-bundle-'));

test('the packaged physbitsctl: its packed packages unpacked on use (zod words a bad config), a good config read without zod', async (t) => {
  const { files } = await bundle(join(dir, 'out'), readBuildInfo());
  const text = readFileSync(files.physbitsctl, 'utf8');
  t.false(text.includes('ZodType'), "zod's text is packed, not in the file as it is");
  /** The scan's exit, its output, and which packed packages it compiled. */
  const scan = (config: unknown) => {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(config));
    const ran = spawnSync(
      process.execPath,
      [
        '-e',
        `const vm = require('node:vm'); const compile = vm.compileFunction; const named = [];
         vm.compileFunction = (code, params, opts) => { named.push(opts.filename.split('#')[1]); return compile(code, params, opts); };
         process.on('exit', () => process.stderr.write('compiled: ' + JSON.stringify(named) + '\\n'));
         process.argv = [process.argv[0], ${JSON.stringify(files.physbitsctl)}, 'scan', '--json', '--config', ${JSON.stringify(file)}, '--socket', '/nonexistent.qmp'];
         require(${JSON.stringify(files.physbitsctl)});`,
      ],
      { encoding: 'utf8' },
    );
    const [said, compiled] = ran.stderr.split('compiled: ');
    return { status: ran.status, stdout: ran.stdout, said, compiled: JSON.parse(compiled) as string[], file };
  };
  const refused = scan({ host: { physBits: 99 } });
  t.is(refused.status, 78);
  t.is(refused.said, `physbitsctl: config: ${refused.file}: host.physBits: Too big: expected number to be <=64\n`);
  t.deepEqual(refused.compiled, ['zod']);
  const ran = scan({ host: { physBits: 46 } });
  t.is(ran.status, 3, ran.said);
  t.is((JSON.parse(ran.stdout) as { vms: Array<{ socket: string }> }).vms[0].socket, '/nonexistent.qmp');
  t.deepEqual(ran.compiled, []);
});
