/**
 * The packaged programs: one JavaScript file per program (esbuild, target Node 18), every npm
 * dependency inside it, the version and commit embedded (agent/core/version.ts). A command's module
 * stays behind a lazy `import()` in the bundle too (esbuild wraps it in an initialiser run on first
 * use), so `--help` and `--version` evaluate almost nothing of the file.
 */
import { build, type Metafile, type Plugin } from 'esbuild';
import { chmodSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import type { BuildInfo } from '../../agent/core/version';
import { REPO_ROOT } from './build-info';
import { compileConfigSpec } from './config-spec';

export const PROGRAMS = ['physbitsctl', 'physbitsd'] as const;

/**
 * The oldest Node.js the package runs on: Debian 12's nodejs (18.19 in bookworm, 18.20 from its
 * security archive; Proxmox VE 8 is Debian 12). The control file depends on `nodejs (>= 18)`, and
 * test/e2e/package-bookworm.test.ts runs the installed programs on Debian 12's own node.
 */
export const NODE_TARGET = 'node18';
export type Program = (typeof PROGRAMS)[number];

export interface Bundle {
  /** Program → the bundle's path. */
  files: Record<Program, string>;
  metafile: Metafile;
}

/**
 * zod re-exports every locale's messages (`export * as locales` in v4/core/index.js and
 * v4/classic/external.js): 370 kB in the bundle that physbits never selects; the schemas import
 * English themselves (v4/classic/schemas.js). Only English stays.
 */
const englishOnly: Plugin = {
  name: 'zod-english-only',
  setup(b) {
    b.onResolve({ filter: /\/locales\/index\.js$/ }, (args) =>
      /[\\/]node_modules[\\/]zod[\\/]/.test(args.importer) ? { path: 'zod-locales', namespace: 'physbits' } : undefined,
    );
    b.onLoad({ filter: /^zod-locales$/, namespace: 'physbits' }, () => ({
      contents: `export { default as en } from './en.js';`,
      resolveDir: join(REPO_ROOT, 'node_modules', 'zod', 'v4', 'locales'),
      loader: 'js',
    }));
  },
};

/**
 * npm packages resolved as Node resolves them for the compiled program: by `require` (tsc emits
 * CommonJS), so a package's `exports` give their "require" entry, as at run time from build/. esbuild
 * would otherwise take the "import" entry for an `import` statement; node-cron's is an ES module that
 * reads `import.meta.url` at load, which a CommonJS bundle leaves undefined (the daemon then failed
 * before its first line of work).
 */
const asRequired: Plugin = {
  name: 'resolve-as-required',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, async (args) => {
      // pluginData marks a resolution another plugin asked for (deferred's own): left to it.
      if (args.kind !== 'import-statement' || args.pluginData !== undefined || args.path.startsWith('node:'))
        return undefined;
      const found = await b.resolve(args.path, {
        kind: 'require-call',
        resolveDir: args.resolveDir,
        importer: args.importer,
        pluginData: 'as-required',
      });
      return found.errors.length ? { errors: found.errors } : found;
    });
  },
};

/**
 * The large npm packages a command may not need, kept in the bundle as gzip-packed text and compiled
 * on first use: V8 parses every function of a file at load (lazily, but still every byte), and these
 * are most of the file (zod alone about 300 kB). `--version`, `--help` and `scan --socket` then parse
 * a fraction of it; packed, the text V8 reads past at every start is a third as long (about 8 ms less
 * CPU for `--version` here). Each becomes one CommonJS module built by esbuild, unpacked and compiled
 * with vm.compileFunction when first required; its stack frames name `<bundle>#<package>`.
 */
export const DEFERRED = ['zod', 'ws', 'fast-glob', 'fast-xml-parser'];

function deferred(target: string): Plugin {
  const filter = new RegExp(`^(${DEFERRED.join('|')})$`);
  return {
    name: 'deferred-packages',
    setup(b) {
      b.onResolve({ filter }, async (args) => {
        if (args.pluginData === 'deferred-inner') return undefined;
        const found = await b.resolve(args.path, {
          kind: 'import-statement',
          resolveDir: args.resolveDir,
          pluginData: 'deferred-inner',
        });
        if (found.errors.length) return { errors: found.errors };
        return { path: args.path, namespace: 'deferred', pluginData: found.path };
      });
      b.onLoad({ filter: /.*/, namespace: 'deferred' }, async (args) => {
        const inner = await build({
          entryPoints: [args.pluginData as string],
          bundle: true,
          platform: 'node',
          target,
          format: 'cjs',
          write: false,
          external: ['bufferutil', 'utf-8-validate'],
          legalComments: 'none',
          minifySyntax: true,
          minifyWhitespace: true,
          plugins: [englishOnly, deferred(NODE_TARGET)],
          logLevel: 'warning',
        });
        const packed = gzipSync(inner.outputFiles[0].contents, { level: 9 }).toString('base64');
        const contents = [
          `const code = require('node:zlib').gunzipSync(Buffer.from(${JSON.stringify(packed)}, 'base64')).toString('utf8');`,
          "const compiled = require('node:vm').compileFunction(code, ['exports', 'require', 'module', '__filename', '__dirname'],",
          `  { filename: __filename + '#${args.path}' });`,
          'const inner = { exports: {} };',
          'compiled.call(inner.exports, inner.exports, require, inner, __filename, __dirname);',
          'module.exports = inner.exports;',
        ].join('\n');
        return { contents, loader: 'js', resolveDir: REPO_ROOT };
      });
    },
  };
}

/** Writes OUT_DIR/physbitsctl.js and OUT_DIR/physbitsd.js, each starting `#!/usr/bin/node`. */
export async function bundle(outDir: string, info: BuildInfo): Promise<Bundle> {
  const result = await build({
    entryPoints: Object.fromEntries(PROGRAMS.map((p) => [p, join(REPO_ROOT, 'agent', 'bin', `${p}.ts`)])),
    outdir: outDir,
    bundle: true,
    platform: 'node',
    target: NODE_TARGET,
    format: 'cjs',
    // The sources start with `#!/usr/bin/env node`; esbuild keeps it. Debian runs /usr/bin/node.
    banner: { js: '' },
    // The config's schema compiled (config-spec.ts): a start checks its config without loading zod.
    define: { PHYSBITS_BUILD_INFO: JSON.stringify(info), PHYSBITS_CONFIG_SPEC: JSON.stringify(compileConfigSpec()) },
    // Optional native helpers of ws: absent, ws uses its JavaScript fallbacks.
    external: ['bufferutil', 'utf-8-validate'],
    legalComments: 'none',
    minifySyntax: true,
    minifyWhitespace: true,
    plugins: [englishOnly, deferred(NODE_TARGET), asRequired],
    treeShaking: true,
    metafile: true,
    logLevel: 'warning',
  });
  const files = Object.fromEntries(PROGRAMS.map((p) => [p, join(outDir, `${p}.js`)])) as Record<Program, string>;
  for (const f of Object.values(files)) chmodSync(f, 0o755);
  return { files, metafile: result.metafile };
}
