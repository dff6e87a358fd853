/**
 * The man pages' SYNOPSIS against what the programs take: every option in a command's synopsis in
 * agent/cli/help.ts is in that command's lines of man/physbitsctl.8, and physbitsd(8) names
 * --config FILE and --check-config, as its --help does (test/cli/cli-help.test.ts).
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMMANDS } from '../../agent/cli/help';

const MAN = join(__dirname, '..', '..', '..', 'man');

/** The SYNOPSIS as plain lines, one per `.br`-separated form, troff macros and escapes removed. */
function synopsis(page: string): string[] {
  const text = readFileSync(join(MAN, page), 'utf8');
  const section = text.split(/^\.SH SYNOPSIS\n/m)[1].split(/^\.SH /m)[0];
  return section.split(/^\.br\n/m).flatMap((form) =>
    form
      .split('\n')
      .map((line) =>
        line
          .replace(/^\.[A-Z]+ ?/, '')
          .replace(/\\-/g, '-')
          .replace(/"/g, ''),
      )
      .join(' ')
      .replace(/\[ /g, '[')
      .replace(/ \]/g, ']')
      .replace(/\s+/g, ' ')
      .split(' | ')
      .map((f) => f.trim()),
  );
}

const ctlForms = synopsis('physbitsctl.8');

for (const command of COMMANDS)
  test(`physbitsctl.8 SYNOPSIS: ${command.name} shows every option of its help synopsis`, (t) => {
    const forms = ctlForms.filter(
      (f) => f.startsWith(`physbitsctl ${command.name} `) || f === `physbitsctl ${command.name}`,
    );
    t.true(forms.length > 0, `no SYNOPSIS line for ${command.name}`);
    const man = forms.join(' ');
    for (const option of command.synopsis.match(/--[a-z-]+(?: [A-Z]+)?/g) ?? [])
      t.true(man.includes(option), `${option} missing from: ${man}`);
  });

test('physbitsd.8 SYNOPSIS: --config FILE and --check-config', (t) => {
  const forms = synopsis('physbitsd.8');
  t.true(forms[0].includes('[--config FILE]'), forms[0]);
  t.true(forms[0].includes('[--check-config]'), forms[0]);
});
