// Type-aware linting: typescript-eslint's recommended rules plus no-floating-promises, and the
// dependency rules of docs/architecture.md ("The parts"), one entry per folder.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** The folders of agent/ an import can name as `../<folder>/...`. */
const FOLDERS = [
  'core',
  'facts',
  'judge',
  'guard',
  'alerts',
  'api',
  'peers',
  'libvirt',
  'proxmox',
  'daemon',
  'cli',
  'bin',
];
/** Node modules that open files, sockets or processes: the judge uses none of them. */
const IO_MODULES = '^(node:)?(fs|fs/promises|net|http|https|http2|tls|dgram|dns|child_process|cluster|worker_threads)$';
/** facts/ files that read (files, /proc, a QMP socket): the judge may use their types only. */
const FACTS_READERS = '^\\.\\./facts/(host-facts|guest-facts|vm-visit|qemu-process|memory-placement)$';

/** A rule entry: imports from agent/<folder> of each folder not in `allowed` are refused. */
function folderRule(folder, allowed, { typesFrom = [], extra = [] } = {}) {
  const refused = FOLDERS.filter((f) => f !== folder && !allowed.includes(f));
  const patterns = [];
  const hard = refused.filter((f) => !typesFrom.includes(f));
  if (hard.length)
    patterns.push({
      regex: `^\\.\\./(${hard.join('|')})(/|$)`,
      message: `agent/${folder}/ may not import this folder (docs/architecture.md, "The parts").`,
    });
  if (typesFrom.length)
    patterns.push({
      regex: `^\\.\\./(${typesFrom.join('|')})(/|$)`,
      allowTypeImports: true,
      message: `agent/${folder}/ may import only types from this folder (docs/architecture.md, "The parts").`,
    });
  if (!allowed.includes('qmp'))
    patterns.push({
      regex: '^\\.\\./\\.\\./qmp(/|$)',
      allowTypeImports: typesFrom.includes('qmp'),
      message: `agent/${folder}/ may not import qmp/ (docs/architecture.md, "The parts").`,
    });
  patterns.push(...extra);
  return {
    files: [`agent/${folder}/**/*.ts`],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns }] },
  };
}

export default tseslint.config(
  { ignores: ['build/**', 'dist/**', 'node_modules/**', 'eslint.config.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      // Escaping control characters is what printable() and its tests are for.
      'no-control-regex': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['qmp/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        { patterns: [{ regex: '(^|/)agent(/|$)', message: 'qmp/ knows nothing of agent/ (docs/architecture.md).' }] },
      ],
    },
  },
  {
    files: ['agent/core/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '^\\.\\./', message: 'agent/core/ imports nothing outside itself (docs/architecture.md).' },
          ],
        },
      ],
    },
  },
  folderRule('facts', ['core', 'qmp']),
  folderRule('judge', ['core', 'facts'], {
    typesFrom: [],
    extra: [
      {
        regex: FACTS_READERS,
        allowTypeImports: true,
        message: 'The judge is pure: it may use only the types of a facts/ reader.',
      },
      { regex: IO_MODULES, message: 'The judge is pure: no files, sockets or processes (docs/architecture.md).' },
    ],
  }),
  folderRule('guard', ['core', 'facts', 'qmp'], { typesFrom: ['peers'] }),
  folderRule('alerts', ['core']),
  folderRule('peers', ['core']),
  folderRule('api', ['core', 'qmp', 'alerts', 'peers'], { typesFrom: ['judge'] }),
  folderRule('libvirt', ['core', 'facts', 'judge', 'qmp', 'api', 'peers']),
  folderRule('proxmox', ['core', 'facts', 'judge', 'peers']),
  folderRule('daemon', ['core', 'facts', 'judge', 'guard', 'alerts', 'api', 'peers', 'libvirt', 'proxmox', 'qmp'], {
    extra: [
      { regex: '^\\./daemon$', message: 'Nothing imports the daemon but its entry point (agent/bin/physbitsd.ts).' },
    ],
  }),
  folderRule('cli', ['core', 'api', 'facts', 'judge', 'libvirt', 'peers', 'proxmox']),
  folderRule('bin', ['core', 'daemon', 'cli']),
);
