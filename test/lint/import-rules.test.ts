/**
 * The dependency rules of docs/architecture.md are lint rules (eslint.config.mjs): a wrong arrow
 * fails `npm run lint`. Each case lints a real file of the tree with one import added.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ESLint } from 'eslint';

const ROOT = resolve(__dirname, '../../..');
const eslint = new ESLint({ cwd: ROOT });

/** The restricted-import messages for `file` with `line` added at its top. */
async function refusals(file: string, line: string): Promise<string[]> {
  const text = `${line}\n${readFileSync(join(ROOT, file), 'utf8')}`;
  const [result] = await eslint.lintText(text, { filePath: join(ROOT, file) });
  return result.messages.filter((m) => m.ruleId === '@typescript-eslint/no-restricted-imports').map((m) => m.message);
}

const cases: { file: string; line: string; refused: RegExp | null }[] = [
  { file: 'agent/judge/verdict.ts', line: "import { readFileSync } from 'node:fs';", refused: /The judge is pure/ },
  {
    file: 'agent/judge/verdict.ts',
    line: "import { readHost } from '../facts/host-facts';",
    refused: /facts\/ reader/,
  },
  {
    file: 'agent/judge/verdict.ts',
    line: "import type { HostReadOptions } from '../facts/host-facts';",
    refused: null,
  },
  { file: 'agent/judge/verdict.ts', line: "import { alignUp } from '../facts/guest-layout';", refused: null },
  {
    file: 'agent/judge/verdict.ts',
    line: "import { DaemonApi } from '../daemon/daemon-api';",
    refused: /agent\/judge\/ may not/,
  },
  {
    file: 'agent/judge/verdict.ts',
    line: "import { apiRequest } from '../api/api-client';",
    refused: /agent\/judge\/ may not/,
  },
  {
    file: 'agent/guard/refusal.ts',
    line: "import { apiRequest } from '../api/api-client';",
    refused: /agent\/guard\/ may not/,
  },
  {
    file: 'agent/guard/refusal.ts',
    line: "import { judgeVm } from '../judge/vm-status';",
    refused: /agent\/guard\/ may not/,
  },
  { file: 'agent/api/metrics.ts', line: "import { advise } from '../judge/advise';", refused: /only types/ },
  { file: 'agent/api/metrics.ts', line: "import type { AdviceDocument } from '../judge/advise';", refused: null },
  {
    file: 'agent/facts/cpuid.ts',
    line: "import { judgeHost } from '../judge/host-limit';",
    refused: /agent\/facts\/ may not/,
  },
  {
    file: 'agent/peers/merge.ts',
    line: "import { QmpClient } from '../../qmp/client';",
    refused: /may not import qmp/,
  },
  { file: 'agent/core/format.ts', line: "import { hex } from '../facts/cpuid';", refused: /nothing outside itself/ },
  { file: 'qmp/address.ts', line: "import { hex } from '../agent/core/format';", refused: /knows nothing of agent/ },
  { file: 'agent/daemon/event-bus.ts', line: "import { Daemon } from './daemon';", refused: /entry point/ },
  { file: 'agent/cli/args.ts', line: "import { Daemon } from '../daemon/daemon';", refused: /agent\/cli\/ may not/ },
];

for (const c of cases) {
  test(`${c.file}: ${c.line} is ${c.refused ? 'refused' : 'allowed'}`, async (t) => {
    const messages = await refusals(c.file, c.line);
    if (c.refused === null) t.deepEqual(messages, []);
    else {
      t.is(messages.length, 1);
      t.regex(messages[0], c.refused);
    }
  });
}

test('the tree as it is has no refused import', async (t) => {
  const results = await eslint.lintFiles(['agent/judge/', 'agent/guard/', 'agent/api/']);
  const refused = results.flatMap((r) =>
    r.messages
      .filter((m) => m.ruleId === '@typescript-eslint/no-restricted-imports')
      .map((m) => `${r.filePath}: ${m.message}`),
  );
  t.deepEqual(refused, []);
});
