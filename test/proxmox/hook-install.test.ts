/**
 * `physbitsctl proxmox-hook --install` against a copy of the fixture /etc/pve tree, with recording
 * `qm` and `pvesm` executables first on PATH (neither exists here): `pvesm path local:snippets/X`
 * answers the temp snippets directory; `qm set VMID --hookscript V` logs its arguments and writes
 * the line into the VM's config as qm would. The snippets it writes are then run the way qemu-server
 * runs a hookscript (`<script> VMID PHASE`).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chainedSnippet, plainSnippet, shellQuote } from '../../agent/proxmox/hook-install';
import { PHYSBITSCTL } from '../helpers/daemon';
import { tempDir } from '../helpers/tmp';

const PVE = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'proxmox', 'pve');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function exec(command: string, args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

interface Node {
  dir: string;
  tree: string;
  snippets: string;
  config: string;
  qmLog: string;
  env: Record<string, string>;
}

function node(t: ExecutionContext): Node {
  const dir = tempDir('physbits-pve-install-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tree = join(dir, 'pve');
  cpSync(PVE, tree, { recursive: true, verbatimSymlinks: true });
  const bin = join(dir, 'bin');
  const snippets = join(dir, 'snippets');
  mkdirSync(bin);
  mkdirSync(snippets);
  const qmLog = join(dir, 'qm.log');
  writeFileSync(
    join(bin, 'qm'),
    [
      '#!/bin/sh',
      `echo "$*" >> ${shellQuote(qmLog)}`,
      '[ "$1" = set ] && [ "$3" = --hookscript ] || exit 2',
      'case "$2" in 111) echo "VM is locked (backup)" >&2; exit 2 ;; esac',
      `conf=${shellQuote(join(tree, 'qemu-server'))}/"$2".conf`,
      // The current section is everything before the first [section] line.
      `sed -i '0,/^\\[/{/^hookscript:/d}' "$conf" && sed -i "1i hookscript: $4" "$conf"`,
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  writeFileSync(
    join(bin, 'pvesm'),
    [
      '#!/bin/sh',
      '[ "$1" = path ] || exit 2',
      'case "$2" in',
      `local:snippets/*) echo ${shellQuote(snippets)}/"\${2#local:snippets/}" ;;`,
      `*) echo "storage '\${2%%:*}' does not exist" >&2; exit 255 ;;`,
      'esac',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ host: { physBits: 39, name: 'pve1' }, proxmox: { configDir: tree } }));
  return { dir, tree, snippets, config, qmLog, env: { PATH: `${bin}:${process.env.PATH}` } };
}

const install = (n: Node, args: string[]) =>
  exec(process.execPath, [PHYSBITSCTL, 'proxmox-hook', '--install', '--config', n.config, ...args], n.env);

test('install: writes the snippet, sets it on the VMs named, and chains a hookscript a VM had', async (t) => {
  const n = node(t);
  // VM 101 already has a hookscript of its own, which records each call.
  const marker = join(n.dir, 'old-hook.calls');
  writeFileSync(join(n.snippets, 'old-hook.sh'), `#!/bin/sh\necho "$1 $2" >> ${shellQuote(marker)}\n`, {
    mode: 0o755,
  });
  const conf101 = join(n.tree, 'qemu-server', '101.conf');
  writeFileSync(conf101, `hookscript: local:snippets/old-hook.sh\n${readFileSync(conf101, 'utf8')}`);

  const first = await install(n, ['100', '101']);
  t.is(first.code, 0, first.stderr);
  t.is(
    first.stdout,
    `wrote ${n.snippets}/physbits-hook.sh (local:snippets/physbits-hook.sh)\n` +
      'VM 100: hookscript local:snippets/physbits-hook.sh\n' +
      'VM 101: hookscript local:snippets/physbits-hook-101.sh, which runs physbits and then local:snippets/old-hook.sh\n',
  );
  t.is(
    readFileSync(n.qmLog, 'utf8'),
    'set 100 --hookscript local:snippets/physbits-hook.sh\nset 101 --hookscript local:snippets/physbits-hook-101.sh\n',
  );
  t.is(statSync(join(n.snippets, 'physbits-hook.sh')).mode & 0o777, 0o755);
  t.is(statSync(join(n.snippets, 'physbits-hook-101.sh')).mode & 0o777, 0o755);
  t.regex(
    readFileSync(join(n.tree, 'qemu-server', '101.conf'), 'utf8'),
    /^hookscript: local:snippets\/physbits-hook-101\.sh\n/,
  );

  // The snippets, run as qemu-server runs a hookscript. VM 100 (42 bits) is refused on this 39-bit node.
  const refused = await exec(join(n.snippets, 'physbits-hook.sh'), ['100', 'pre-start'], {});
  t.is(refused.code, 1);
  t.regex(refused.stderr, /^physbits refused the start of VM 100 \(web1\): GUEST_WIDER_THAN_HOST: guest phys-bits 42 /);
  // VM 101 (cpu: host, this machine's CPU width) is refused too, and its old hookscript does not run.
  const chainedRefused = await exec(join(n.snippets, 'physbits-hook-101.sh'), ['101', 'pre-start'], {});
  t.is(chainedRefused.code, 1);
  t.regex(chainedRefused.stderr, /^physbits refused the start of VM 101 \(db1\)/);
  t.false(existsSync(marker));
  // Every other phase: physbits allows, and the old hookscript runs with the same arguments.
  t.deepEqual(await exec(join(n.snippets, 'physbits-hook-101.sh'), ['101', 'post-stop'], {}), {
    code: 0,
    stdout: '',
    stderr: '',
  });
  // A node wide enough: pre-start passes physbits, then the old hookscript.
  writeFileSync(n.config, JSON.stringify({ host: { physBits: 52, name: 'pve1' }, proxmox: { configDir: n.tree } }));
  t.is((await exec(join(n.snippets, 'physbits-hook-101.sh'), ['101', 'pre-start'], {})).code, 0);
  t.is(readFileSync(marker, 'utf8'), '101 post-stop\n101 pre-start\n');
});

test('install without VMIDs: every VM of this node; again: nothing changes; a qm failure is named', async (t) => {
  const n = node(t);
  const all = await install(n, []);
  t.is(all.code, 1);
  const vms = ['100', '101', '102', '103', '104', '105', '106', '107', '108', '109', '110'];
  t.deepEqual(
    all.stdout.split('\n').filter((l) => l.startsWith('VM ')),
    vms.map((id) => `VM ${id}: hookscript local:snippets/physbits-hook.sh`),
  );
  t.is(all.stderr, 'VM 111: qm set 111 --hookscript local:snippets/physbits-hook.sh failed: VM is locked (backup)\n');
  // VMs of other nodes (nodes/pve2) are not touched: qm set only works on this node's VMs.
  t.false(readFileSync(n.qmLog, 'utf8').includes('set 120'));

  const again = await install(n, vms);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(
    again.stdout.split('\n').filter((l) => l.startsWith('VM ')),
    vms.map((id) => `VM ${id}: already runs physbits (local:snippets/physbits-hook.sh)`),
  );
  t.is(readFileSync(n.qmLog, 'utf8').split('\n').filter(Boolean).length, 12);
});

test('install: a storage without snippets, a bad VMID, a missing VM', async (t) => {
  const n = node(t);
  const storage = await install(n, ['--storage', 'tank']);
  t.is(storage.code, 1);
  t.is(
    storage.stderr,
    "physbitsctl: proxmox-hook --install: pvesm path tank:snippets/physbits-hook.sh failed: storage 'tank' does not exist\n",
  );
  const bad = await install(n, ['10x']);
  t.is(bad.code, 64);
  t.is(bad.stderr, "physbitsctl: proxmox-hook --install: '10x' is not a VMID\n");
  const missing = await install(n, ['999']);
  t.is(missing.code, 1);
  t.is(missing.stderr, `VM 999: ${n.tree}/qemu-server/999.conf: does not exist\n`);
});

test('snippet texts: quoted words, physbits first, the old script after it', (t) => {
  const deps = {
    configDir: '/etc/pve',
    storage: 'local',
    program: ['/usr/bin/node', '/usr/bin/physbitsctl'],
    configPath: "/etc/physbits/it's.json",
    stdout: () => undefined,
    stderr: () => undefined,
  };
  t.is(
    plainSnippet(deps),
    "#!/bin/sh\n# physbits: Proxmox VE hookscript (physbitsctl proxmox-hook --install)\nexec '/usr/bin/node' '/usr/bin/physbitsctl' 'proxmox-hook' '--config' '/etc/physbits/it'\\''s.json' \"$@\"\n",
  );
  t.is(
    chainedSnippet({ ...deps, configPath: undefined }, 'local:snippets/old.pl', '/var/lib/vz/snippets/old.pl'),
    '#!/bin/sh\n# physbits: physbitsctl proxmox-hook, then the hookscript this VM had before: local:snippets/old.pl\n' +
      "'/usr/bin/node' '/usr/bin/physbitsctl' 'proxmox-hook' \"$@\" || exit $?\nexec '/var/lib/vz/snippets/old.pl' \"$@\"\n",
  );
});
