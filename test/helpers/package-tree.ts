/**
 * The Debian package as installed, on one Debian release: `npm run package`'s .deb goes into a fresh
 * tree of that release (contrib/debian-tree.sh with nodejs, ca-certificates, systemd,
 * init-system-helpers, procps and man-db from the release itself), through an overlay so the cached
 * tree stays clean. apt installs it with the release's own nodejs; the programs answer; `physbitsctl
 * scan` reads a guest of the tree's own QEMU; the installed physbitsd, started with its unit's
 * ExecStart, holds such a guest and refuses a migration through its guarded socket, and its unit's
 * ExecReload lines refuse a broken config and apply a good one; systemd-analyze verifies the
 * installed unit; purge leaves nothing of the package behind.
 *
 * test/e2e/package.test.ts (Debian 13) and test/e2e/package-bookworm.test.ts (Debian 12, Proxmox VE
 * 8's base) each run these tests on their tree.
 */
import test from 'ava';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { StatusDocument } from '../../agent/core/types';
import { REPO_ROOT } from '../../contrib/package/build-info';
import { EXAMPLES, makeDeb } from '../../contrib/package/make-deb';
import { LineClient, waitUntil } from './daemon';
import { startGuest, trixieQemu, type Guest } from './qemu';

/** The packages every package tree holds besides QEMU (contrib/install-deps.sh builds them). */
export const PACKAGE_TREE_PACKAGES = 'nodejs,ca-certificates,systemd,init-system-helpers,procps,man-db';

export interface PackageRelease {
  /** "Debian 12", "Debian 13". */
  release: string;
  /** Its codename, the suite contrib/debian-tree.sh builds. */
  suite: string;
  /** The tree's path (cached between runs). */
  tree: string;
  /** The major version of the release's own nodejs. */
  nodeMajor: (major: number) => boolean;
  /** What the release's QEMU reports, for titles. */
  qemu: string;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function packageTests(opts: PackageRelease): void {
  const { release, tree: TREE } = opts;
  const BUILD_TREE = `TREE_PACKAGES=${PACKAGE_TREE_PACKAGES} TREE_DOCS=keep bash contrib/debian-tree.sh ${opts.suite} ${TREE}`;
  const work = mkdtempSync(join(tmpdir(), 'physbits-package-'));
  const root = join(work, 'root');
  const mounts: string[] = [];
  let guest: Guest | undefined;
  let daemon: ChildProcess | undefined;
  let deb = '';

  /** A command inside the installed tree. */
  function inTree(args: string[], timeoutMs = 120000): Promise<Run> {
    return new Promise((done) => {
      execFile(
        'chroot',
        [root, ...args],
        {
          timeout: timeoutMs,
          env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C.UTF-8' },
        },
        (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
          done({ code, stdout, stderr });
        },
      );
    });
  }

  test.before(async () => {
    if (!existsSync(join(TREE, '.physbits-tree-complete')))
      throw new Error(`the ${release} package tree is missing at ${TREE}: ${BUILD_TREE}`);
    deb = await makeDeb(join(work, 'dist'));
    for (const d of ['upper', 'overlay-work', 'root']) mkdirSync(join(work, d));
    execFileSync('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${TREE},upperdir=${join(work, 'upper')},workdir=${join(work, 'overlay-work')}`,
      root,
    ]);
    mounts.push(root);
    execFileSync('mount', ['-t', 'proc', 'proc', join(root, 'proc')]);
    mounts.push(join(root, 'proc'));
    // apt logs the maintainer scripts' output through a pseudo-terminal.
    mkdirSync(join(root, 'dev', 'pts'), { recursive: true });
    execFileSync('mount', ['-t', 'devpts', '-o', 'newinstance,ptmxmode=0666', 'devpts', join(root, 'dev', 'pts')]);
    mounts.push(join(root, 'dev', 'pts'));
    copyFileSync(deb, join(root, 'tmp', basename(deb)));
  });

  test.after.always(async () => {
    daemon?.kill('SIGKILL');
    await guest?.kill();
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', [m]);
      } catch {
        execFileSync('umount', ['-l', m]);
      }
    }
    rmSync(work, { recursive: true, force: true });
  });

  /** What the package installed, from dpkg's own list (read before purge). */
  let installed: string[] = [];

  test.serial('lintian finds nothing to warn about (the overrides say why each is there)', async (t) => {
    const r = await new Promise<Run>((done) =>
      execFile('lintian', ['--fail-on', 'warning', '--pedantic', deb], { timeout: 300000 }, (err, stdout, stderr) =>
        done({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
      ),
    );
    t.is(r.code, 0, r.stdout + r.stderr);
    t.is(r.stdout, '');
  });

  test.serial(`apt installs the .deb into ${release}, taking nodejs from ${release}`, async (t) => {
    const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    t.is(basename(deb), `physbits_${version}_all.deb`);
    const r = await inTree(['apt-get', 'install', '-y', `/tmp/${basename(deb)}`], 300000);
    t.is(r.code, 0, r.stderr + r.stdout);
    const status = await inTree(['dpkg-query', '-W', '-f', '${Status} ${Version}', 'physbits']);
    t.is(status.stdout, `install ok installed ${version}`);
    const node = await inTree(['dpkg-query', '-W', '-f', '${Status} ${Version}', 'nodejs']);
    t.regex(node.stdout, /^install ok installed \d+\./);
    t.true(opts.nodeMajor(Number(/installed (\d+)\./.exec(node.stdout)?.[1])), node.stdout);
    // The programs run on that node: no runtime of their own in the package.
    t.regex((await inTree(['dpkg-query', '-W', '-f', '${Depends}', 'physbits'])).stdout, /\bnodejs \(>= 18\)/);
    installed = (await inTree(['dpkg', '-L', 'physbits'])).stdout.split('\n').filter((p) => p.startsWith('/'));
    for (const path of [
      '/usr/bin/physbitsctl',
      '/usr/sbin/physbitsd',
      '/usr/lib/physbits/physbitsctl.js',
      '/usr/lib/physbits/physbitsd.js',
      '/usr/lib/systemd/system/physbitsd.service',
      '/usr/lib/modules-load.d/physbits.conf',
      '/etc/physbits/config.json',
      '/usr/share/man/man8/physbitsctl.8.gz',
      '/usr/share/man/man8/physbitsd.8.gz',
      '/usr/share/man/man5/physbits-config.5.gz',
      '/usr/share/bash-completion/completions/physbitsctl',
      '/usr/share/bash-completion/completions/physbitsd',
      '/usr/share/doc/physbits/copyright',
      '/usr/share/doc/physbits/changelog.gz',
      ...Object.values(EXAMPLES).map((e) => `/usr/share/doc/physbits/examples/${e}`),
    ]) {
      t.true(installed.includes(path), `${path} in dpkg -L physbits`);
      t.true(existsSync(join(root, path)), `${path} on disk`);
    }
    // The project's maintainers, not whoever made the last commit.
    const { author } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { author: string };
    t.is((await inTree(['dpkg-query', '-W', '-f', '${Maintainer}', 'physbits'])).stdout, author);
    // physbits-config(5) points at the example config installed beside the others.
    const example = readFileSync(join(root, 'usr/share/doc/physbits/examples/config.example.json'), 'utf8');
    t.is(example, readFileSync(join(REPO_ROOT, 'config.example.json'), 'utf8'));
    const conffiles = await inTree(['dpkg-query', '-W', '-f', '${Conffiles}', 'physbits']);
    t.regex(conffiles.stdout, /^ \/etc\/physbits\/config\.json [0-9a-f]{32}$/m);
    // Enabled on installation (started only by the operator, after editing the config).
    t.true(lstatSync(join(root, 'etc/systemd/system/multi-user.target.wants/physbitsd.service')).isSymbolicLink());
  });

  test.serial('the installed programs: physbitsctl --version, physbitsd --help, the man pages', async (t) => {
    const version = await inTree(['physbitsctl', '--version']);
    t.is(version.code, 0, version.stderr);
    t.regex(
      version.stdout,
      /^physbitsctl \d+\.\d+\.\d+ \((commit [0-9a-f]{12}(, modified)?|built without git: commit unknown)\)\n$/,
    );
    const dVersion = await inTree(['physbitsd', '--version']);
    t.is(dVersion.stdout.replace('physbitsd', ''), version.stdout.replace('physbitsctl', ''));
    const help = await inTree(['physbitsd', '--help']);
    t.is(help.code, 0, help.stderr);
    t.regex(help.stdout, /default \/etc\/physbits\/config\.json/);
    t.regex(help.stdout, /SIGHUP/);
    const scanHelp = await inTree(['physbitsctl', 'scan', '--help']);
    t.is(scanHelp.code, 0);
    t.true(scanHelp.stdout.startsWith('usage: physbitsctl scan'));
    // The shipped config is the documented example and loads.
    const empty = await inTree(['physbitsctl', 'scan', '--json']);
    t.is(empty.code, 0, empty.stderr);
    t.regex(empty.stderr, /no VMs found: no socket matches discovery\.sockets in \/etc\/physbits\/config\.json/);
  });

  test.serial('systemd-analyze verify accepts the installed unit', async (t) => {
    const r = await inTree(['systemd-analyze', 'verify', '/usr/lib/systemd/system/physbitsd.service']);
    t.is(r.code, 0, r.stderr);
    t.notRegex(r.stderr, /physbitsd\.service/, r.stderr);
  });

  test.serial(`physbitsctl scan reads a guest of the tree's ${opts.qemu}`, async (t) => {
    const qemu = trixieQemu(root);
    const dir = qemu.tempDir('physbits-package-vm-');
    guest = await startGuest({ qemu, name: 'wide', dir, cpu: 'phys-bits=46' });
    const config = join(dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({ host: { physBits: 40, name: 'hv-deb' }, policy: { accelerators: ['tcg'] } }),
    );
    const r = await inTree([
      'physbitsctl',
      'scan',
      '--json',
      '--config',
      qemu.inner(config),
      '--socket',
      qemu.inner(guest.socket),
    ]);
    t.is(r.code, 2, r.stderr);
    const doc = JSON.parse(r.stdout) as StatusDocument;
    t.like(doc.host, { physBits: 40, name: 'hv-deb' });
    t.like(doc.vms[0], {
      name: 'wide',
      accelerator: 'tcg',
      guest: { physBits: 46 },
      verdict: { relation: 'wider', severity: 'critical' },
    });
    t.is(doc.vms[0].verdict!.reasons[0].code, 'GUEST_WIDER_THAN_HOST');
    await guest.kill();
    guest = undefined;
  });

  test.serial(
    `the installed physbitsd, started as its unit starts it, holds a ${opts.qemu} guest and guards it`,
    async (t) => {
      const unit = readFileSync(join(root, 'usr/lib/systemd/system/physbitsd.service'), 'utf8');
      const execStart = /^ExecStart=(.*)$/m.exec(unit)?.[1].trim().split(/\s+/) ?? [];
      t.is(execStart.at(-1), '/etc/physbits/config.json', unit);
      const qemu = trixieQemu(root);
      const dir = qemu.tempDir('physbits-package-daemon-');
      guest = await startGuest({ qemu, name: 'held', dir, cpu: 'phys-bits=46' });
      const run = join(dir, 'run');
      mkdirSync(run);
      writeFileSync(
        join(root, 'etc/physbits/config.json'),
        JSON.stringify({
          host: { physBits: 40, name: 'hv-deb' },
          policy: { accelerators: ['tcg'] },
          discovery: { sockets: [qemu.inner(guest.socket)] },
          api: { socket: qemu.inner(join(run, 'api.sock')) },
          guard: { socketDir: qemu.inner(join(run, 'guard')) },
          metrics: { listen: '127.0.0.1:0' },
        }),
      );
      let stderr = '';
      daemon = spawn('chroot', [root, ...execStart], { stdio: ['ignore', 'ignore', 'pipe'] });
      daemon.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((done) => daemon!.once('exit', (code) => done(code)));
      const status = await Promise.race([
        waitUntil(async () => {
          const r = await inTree(['physbitsctl', 'status', '--json', '--api', qemu.inner(join(run, 'api.sock'))]);
          const doc = r.code === 2 ? (JSON.parse(r.stdout) as StatusDocument) : null;
          return doc?.vms[0]?.verdict ? doc : null;
        }, 'a verdict from the installed daemon'),
        exited.then((code) => {
          throw new Error(`the installed physbitsd exited (${code}): ${stderr}`);
        }),
      ]);
      t.like(status.vms[0], {
        name: 'held',
        guest: { physBits: 46 },
        verdict: { relation: 'wider', severity: 'critical' },
      });
      const { client } = await LineClient.negotiated(join(run, 'guard', 'held.qmp'));
      t.teardown(() => client.socket.destroy());
      client.send('{"execute": "query-status", "id": 1}');
      t.is(typeof ((await client.next((m) => m.id === 1)).return as { status?: unknown }).status, 'string');
      client.send('{"execute": "migrate", "arguments": {"uri": "tcp:192.0.2.9:4444"}, "id": 2}');
      const refused = await client.next((m) => m.id === 2);
      t.regex((refused.error as { desc: string }).desc, /\[REFUSED_MIGRATION_UNKNOWN_PEER\]$/);

      // `systemctl reload` as systemd runs it: the unit's ExecReload lines in order, each in the
      // tree, stopping at the first that fails ($MAINPID is the daemon: chroot execs node).
      const reloadLines = [...unit.matchAll(/^ExecReload=(.*)$/gm)].map((m) =>
        m[1].trim().replace('$MAINPID', String(daemon!.pid)).split(/\s+/),
      );
      t.true(reloadLines.length >= 2, unit);
      const systemctlReload = async (): Promise<{ code: number | null; stderr: string }> => {
        for (const words of reloadLines) {
          const r = await inTree(words);
          if (r.code !== 0) return { code: r.code, stderr: r.stderr };
        }
        return { code: 0, stderr: '' };
      };
      const configFile = join(root, 'etc/physbits/config.json');
      const goodConfig = readFileSync(configFile, 'utf8');
      writeFileSync(configFile, goodConfig.replace('"physBits":40', '"physBits":99').replace(/}$/, ',"nope":1}'));
      const broken = await systemctlReload();
      t.is(broken.code, 78, broken.stderr);
      t.regex(broken.stderr, /host\.physBits: Too big/);
      t.regex(broken.stderr, /nope: unknown key/);
      t.false(/configuration reloaded|reload refused/.test(stderr), 'the daemon was not signalled');
      writeFileSync(configFile, goodConfig.replace('"hv-deb"', '"hv-deb-2"'));
      t.is((await systemctlReload()).code, 0);
      await waitUntil(() => /configuration reloaded/.test(stderr), 'the daemon to apply the reloaded file');
      t.is(daemon.exitCode, null, 'still running');

      daemon.kill('SIGTERM');
      t.is(await exited, 0, stderr);
      daemon = undefined;
      t.false(existsSync(join(run, 'guard', 'held.qmp')), 'the guarded socket removed at stop');
      await guest.kill();
      guest = undefined;
    },
  );

  /** Every path under `dir` (relative), for what the overlay's upper layer holds. */
  function walk(dir: string, prefix = ''): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
      const rel = `${prefix}/${e.name}`;
      return e.isDirectory() ? [rel, ...walk(join(dir, e.name), rel)] : [rel];
    });
  }

  test.serial('purge leaves nothing of the package but what Debian keeps (logs, dpkg records)', async (t) => {
    t.true(installed.length > 0, 'installed first');
    // What the daemon would have made at run time: purge removes it too.
    mkdirSync(join(root, 'var/lib/physbits/spool'), { recursive: true });
    const r = await inTree(['apt-get', 'purge', '-y', 'physbits']);
    t.is(r.code, 0, r.stderr + r.stdout);
    const status = await inTree(['dpkg-query', '-W', '-f', '${db:Status-Status}', 'physbits']);
    t.not(status.stdout, 'installed');
    for (const path of installed) {
      const onDisk = join(root, path);
      // Directories shared with other packages (/usr/share/man/man8) stay; the package's own go.
      if (existsSync(onDisk) && !lstatSync(onDisk).isDirectory()) t.fail(`${path} left after purge`);
    }
    for (const dir of ['/etc/physbits', '/usr/lib/physbits', '/usr/share/doc/physbits', '/var/lib/physbits'])
      t.false(existsSync(join(root, dir)), `${dir} left after purge`);
    // Anything named physbits that install and purge left in the tree: only dpkg's and apt's logs.
    const left = walk(join(work, 'upper')).filter(
      // /var/cache/man: man-db's formatted page from `man physbitsd`, run by systemd-analyze above (its cache, not the package's).
      (p) =>
        /physbits/.test(p) && !p.startsWith('/tmp/') && !p.startsWith('/var/log/') && !p.startsWith('/var/cache/man/'),
    );
    t.deepEqual(left, []);
  });
}
