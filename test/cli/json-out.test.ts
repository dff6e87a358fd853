/**
 * writeJson prints what JSON.stringify(value, null, 2) prints, in pieces of whole lines: the pieces,
 * each ended with the newline CliIo.stdout adds, are the text and its final newline, byte for byte.
 */
import test from 'ava';
import { writeJson } from '../../agent/cli/json-out';
import { buildFleet } from '../../agent/judge/fleet';
import type { PeerFacts } from '../../agent/core/types';

async function printed(value: unknown): Promise<{ text: string; pieces: string[]; drains: number }> {
  const pieces: string[] = [];
  let drains = 0;
  await writeJson(
    value,
    (p) => pieces.push(p),
    async () => {
      drains++;
    },
  );
  return { text: pieces.map((p) => `${p}\n`).join(''), pieces, drains };
}

const values: Array<[string, unknown]> = [
  ['a number', 3],
  ['a string with a newline and a quote', 'a\n"b"'],
  ['null', null],
  ['an empty object', {}],
  ['an empty array', []],
  ['a flat object', { a: 1, b: 'x', c: true, d: null }],
  ['undefined and function members left out', { a: undefined, b: () => 1, c: [undefined, 2], d: {} }],
  ['empty and nested arrays at the top level', { a: [], b: [[1, [2]], { c: [] }], e: { f: { g: [1] } } }],
  ['a top-level array', [1, { a: [1, 2] }, 'x\ny', [], {}]],
  ['a Date (toJSON)', { at: new Date(0), list: [new Date(1)] }],
];

for (const [title, value] of values)
  test(`writeJson equals JSON.stringify(…, null, 2): ${title}`, async (t) => {
    t.is((await printed(value)).text, `${JSON.stringify(value, null, 2)}\n`);
  });

test('writeJson: a fleet document of 2,000 guests in pieces of whole lines, equal to JSON.stringify, the output drained after each', async (t) => {
  const peers: PeerFacts[] = Array.from({ length: 100 }, (_, h) => ({
    name: `hv${h}`,
    physBits: 39 + (h % 4) * 3,
    reachable: true,
    source: 'prometheus',
    status: {
      host: { name: `hv${h}`, physBits: 39 + (h % 4) * 3 },
      vms: Array.from({ length: 20 }, (_, g) => ({
        socket: '',
        name: `vm${g} "é\u2028"`,
        accelerator: 'kvm',
        guest: { physBits: 39 + (g % 10), accelerator: 'kvm', layout: { highestAddress: (g + 1) * 2 ** 34 } },
      })),
    },
  })) as unknown as PeerFacts[];
  const doc = buildFleet({ peers, policy: { accelerators: ['kvm'] }, maxMatrixCells: 1000 });
  const { text, pieces, drains } = await printed(doc);
  t.is(text, `${JSON.stringify(doc, null, 2)}\n`);
  t.true(pieces.length > 10, `${pieces.length} pieces`);
  t.true(drains >= pieces.length - 2, `${drains} drains for ${pieces.length} pieces`);
  for (const p of pieces) t.false(p.endsWith('\n'));
});
