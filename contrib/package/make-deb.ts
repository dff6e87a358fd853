#!/usr/bin/env node
/**
 * `npm run package`: dist/physbits_<version>_all.deb (<version> is package.json's, unchanged: a native
 * Debian package, built from this repository and carrying no Debian revision), with dpkg-deb from the esbuild bundle
 * (bundle.ts) and the files kept in the repository:
 *
 *   /usr/lib/physbits/{physbitsctl,physbitsd}.js   the programs, one file each (#!/usr/bin/node)
 *   /usr/bin/physbitsctl, /usr/sbin/physbitsd       symlinks to them
 *   /usr/lib/systemd/system/physbitsd.service       systemd/physbitsd.service
 *   /usr/lib/modules-load.d/physbits.conf           systemd/physbits-modules.conf (the cpuid driver)
 *   /etc/physbits/config.json                       config.example.json, a conffile
 *   /usr/share/man/man8/physbits{ctl,d}.8.gz        man/*.8
 *   /usr/share/man/man5/physbits-config.5.gz        from docs/configuration.md (config-man.ts)
 *   /usr/share/bash-completion/completions/physbits{ctl,d}  physbitsctl.bash-completion (both)
 *   /usr/share/doc/physbits/                        copyright (with every bundled npm package's
 *                                                   licence), changelog.gz, README, docs
 *   /usr/share/doc/physbits/examples/               EXAMPLES: the example config, the Prometheus
 *                                                   rules, the Alertmanager route, the dashboard
 *
 * The Maintainer field is package.json's `author` (the project's maintainers), or DEBFULLNAME and
 * DEBEMAIL when a builder sets them for a rebuild of their own (as dch(1) takes them).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { BuildInfo } from '../../agent/core/version';
import { git, readBuildInfo, REPO_ROOT } from './build-info';
import { bundle } from './bundle';
import { configManPage } from './config-man';

const HERE = join(REPO_ROOT, 'contrib', 'package');

/** Repository file → its name under /usr/share/doc/physbits/examples/. */
export const EXAMPLES: Record<string, string> = {
  'config.example.json': 'config.example.json',
  'contrib/prometheus/physbits-rules.yml': 'prometheus/physbits-rules.yml',
  'contrib/prometheus/physbits-fleet-rules.yml': 'prometheus/physbits-fleet-rules.yml',
  'contrib/alertmanager/route-example.yml': 'alertmanager/route-example.yml',
  'contrib/grafana/physbits-dashboard.json': 'grafana/physbits-dashboard.json',
  'systemd/nfd-feature-file.conf': 'systemd/nfd-feature-file.conf',
};

/** `Name <address>` for the control file and the changelog. */
export function maintainer(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DEBFULLNAME && env.DEBEMAIL) return `${env.DEBFULLNAME} <${env.DEBEMAIL}>`;
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { author?: string };
  if (!pkg.author || !/^[^<>]+ <[^<>@\s]+@[^<>\s]+>$/.test(pkg.author))
    throw new Error('package.json has no author "Name <address>" for the Maintainer field');
  return pkg.author;
}
/**
 * The package's version is package.json's exactly: the repository is its own Debian source (a native
 * package, no `-<revision>`), so the changelog is `changelog.gz`, not `changelog.Debian.gz`
 * (Debian Policy 12.7; lintian's `wrong-name-for-changelog-of-native-package`).
 */
export function debianVersion(info: BuildInfo): string {
  return info.version;
}

export function debFileName(info: BuildInfo): string {
  return `physbits_${debianVersion(info)}_all.deb`;
}

function put(root: string, path: string, content: string | Buffer, mode = 0o644): void {
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, content);
  chmodSync(file, mode);
}

/** gzip -9n: no name, no time stamp, so the same input gives the same bytes. */
function gz(content: string | Buffer): Buffer {
  const out = gzipSync(content, { level: 9 });
  out.writeUInt32LE(0, 4); // MTIME
  out[9] = 3; // OS: Unix, as gzip writes it
  return out;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

/** The copyright file: physbits' licence and every npm package inside the bundle with its own. */
function copyright(bundledPackages: string[]): string {
  const parts = [
    'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
    'Upstream-Name: physbits',
    '',
    'Files: *',
    `Copyright: ${new Date().getUTCFullYear()} the physbits authors`,
    'License: Apache-2.0',
    '',
  ];
  for (const name of bundledPackages) {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as {
      version: string;
      license?: string;
      author?: string | { name?: string };
    };
    const author = typeof pkg.author === 'string' ? pkg.author : (pkg.author?.name ?? `the ${name} authors`);
    parts.push(
      `Files: usr/lib/physbits/*`,
      `Comment: bundled npm package ${name} ${pkg.version}`,
      `Copyright: ${author.replace(/\s*<[^>]*>/, '').replace(/\s*\([^)]*\)/, '') || `the ${name} authors`}`,
      `License: ${pkg.license ?? 'UNKNOWN'}`,
      '',
    );
  }
  parts.push(
    'License: Apache-2.0',
    ' On Debian systems, the complete text of the Apache License, Version 2.0 can be',
    ' found in /usr/share/common-licenses/Apache-2.0.',
  );
  return `${parts.join('\n')}\n`;
}

export async function makeDeb(outDir = join(REPO_ROOT, 'dist')): Promise<string> {
  const info = readBuildInfo();
  const version = debianVersion(info);
  const stage = join(outDir, 'stage');
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });

  const lib = join(stage, 'usr', 'lib', 'physbits');
  const built = await bundle(lib, info);
  for (const [program, file] of Object.entries(built.files)) {
    // Debian's node is /usr/bin/node; the sources' `env node` would find any node on PATH.
    writeFileSync(file, readFileSync(file, 'utf8').replace(/^#!.*\n/, '#!/usr/bin/node\n'));
    chmodSync(file, 0o755);
    const link = join(stage, 'usr', program === 'physbitsd' ? 'sbin' : 'bin', program);
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(relative(dirname(link), file), link);
  }
  const bundledPackages = [
    ...new Set(
      Object.keys(built.metafile.inputs)
        .map((p) => /node_modules\/((@[^/]+\/)?[^/]+)\//.exec(p)?.[1])
        .filter((p): p is string => !!p),
    ),
  ].sort();

  const read = (path: string) => readFileSync(join(REPO_ROOT, path));
  put(stage, 'usr/lib/systemd/system/physbitsd.service', read('systemd/physbitsd.service'));
  put(stage, 'usr/lib/modules-load.d/physbits.conf', read('systemd/physbits-modules.conf'));
  put(stage, 'etc/physbits/config.json', read('config.example.json'));
  for (const page of ['physbitsctl.8', 'physbitsd.8'])
    put(
      stage,
      `usr/share/man/man8/${page}.gz`,
      gz(read(`man/${page}`).toString().replace('""', `"physbits ${info.version}"`)),
    );
  put(
    stage,
    'usr/share/man/man5/physbits-config.5.gz',
    gz(configManPage(read('docs/configuration.md').toString(), info.version)),
  );
  put(stage, 'usr/share/bash-completion/completions/physbitsctl', read('contrib/package/physbitsctl.bash-completion'));
  // bash-completion loads a command's completion from the file of its name: physbitsd's is in the same file.
  put(stage, 'usr/share/bash-completion/completions/physbitsd', read('contrib/package/physbitsctl.bash-completion'));

  const doc = 'usr/share/doc/physbits';
  put(stage, `${doc}/copyright`, copyright(bundledPackages));
  const maintainedBy = maintainer();
  const date = git(['log', '-1', '--format=%cD']) ?? new Date().toUTCString().replace('GMT', '+0000');
  put(
    stage,
    `${doc}/changelog.gz`,
    gz(
      readFileSync(join(HERE, 'debian', 'changelog.in'), 'utf8')
        .replace(/@VERSION@/g, version)
        .replace(
          /@COMMIT@/g,
          info.commit
            ? `commit ${info.commit.slice(0, 12)}${info.dirty ? ' and changes not committed' : ''}`
            : 'a tree without git',
        )
        .replace(/@MAINTAINER@/g, maintainedBy)
        .replace(/@DATE@/g, date),
    ),
  );
  put(stage, `${doc}/README.md`, read('README.md'));
  for (const f of readdirSync(join(REPO_ROOT, 'docs')).filter((n) => n.endsWith('.md') && n !== 'BENCHMARKS.md'))
    put(stage, `${doc}/${f}`, read(`docs/${f}`));
  for (const [from, to] of Object.entries(EXAMPLES)) put(stage, `${doc}/examples/${to}`, read(from));
  put(stage, 'usr/share/lintian/overrides/physbits', readFileSync(join(HERE, 'debian', 'lintian-overrides')));

  // DEBIAN/: control, conffiles, maintainer scripts, md5sums.
  const files = filesUnder(stage).map((f) => relative(stage, f));
  const installedKiB = Math.ceil(files.reduce((sum, f) => sum + statSync(join(stage, f)).size, 0) / 1024);
  const control = join(stage, 'DEBIAN');
  put(
    stage,
    'DEBIAN/control',
    readFileSync(join(HERE, 'debian', 'control'), 'utf8')
      .replace('@VERSION@', version)
      .replace('@MAINTAINER@', maintainedBy)
      .replace('@INSTALLED_SIZE@', String(installedKiB)),
  );
  put(stage, 'DEBIAN/conffiles', '/etc/physbits/config.json\n');
  for (const script of ['postinst', 'prerm', 'postrm'])
    put(stage, `DEBIAN/${script}`, readFileSync(join(HERE, 'debian', script)), 0o755);
  const md5 = files
    .filter((f) => !f.startsWith('etc/'))
    .sort()
    .map(
      (f) =>
        `${createHash('md5')
          .update(readFileSync(join(stage, f)))
          .digest('hex')}  ${f}`,
    );
  put(stage, 'DEBIAN/md5sums', `${md5.join('\n')}\n`);
  if (!existsSync(control)) throw new Error('no DEBIAN directory');

  const deb = join(outDir, debFileName(info));
  rmSync(deb, { force: true });
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', stage, deb], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  rmSync(stage, { recursive: true, force: true });
  return deb;
}

if (require.main === module) {
  makeDeb().then(
    (deb) => process.stdout.write(`${relative(process.cwd(), deb)}\n`),
    (err: Error) => {
      process.stderr.write(`package: ${err.message}\n`);
      process.exit(1);
    },
  );
}
