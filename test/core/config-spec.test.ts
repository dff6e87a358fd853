import test from 'ava';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { stripComments } from '../../agent/core/config';
import { absentAsUndefined } from '../../agent/core/config-rules';
import { configSchema } from '../../agent/core/config-schema';
import { compiledParse, compiledSpec, type SpecNode } from '../../agent/core/config-spec';
import { compileConfigSpec } from '../../contrib/package/config-spec';

const spec = compileConfigSpec();
const example = stripComments(
  JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'config.example.json'), 'utf8')),
);

/** A result as text that tells a key set to undefined from a key left out, in key order. */
const exact = (v: unknown) => JSON.stringify(v, (_k, x: unknown) => (x === undefined ? '<undefined>' : x));

/**
 * The compiled check and the zod schema on one value: `agree` when the compiled check gives zod's
 * own result, or declines what zod refuses; `declined` when it declines what zod accepts (safe: zod
 * then reads it, only slower).
 */
function compare(value: unknown): 'agree' | 'declined' | string {
  const zod = configSchema.safeParse(value);
  const compiled = compiledParse(spec, value);
  if (compiled === undefined) return zod.success ? 'declined' : 'agree';
  if (!zod.success) return `accepted what zod refuses: ${zod.error.issues.map((i) => i.message).join('; ')}`;
  return exact(compiled) === exact(zod.data) ? 'agree' : `another result: ${exact(compiled)} != ${exact(zod.data)}`;
}

const good: Array<[string, unknown]> = [
  ['no keys: every default', {}],
  ['config.example.json', example],
  ['null for optional keys', { host: { physBits: null, name: null }, api: { listen: null, tokenFile: null } }],
  ['optional keys set', { host: { physBits: 46, name: 'h1' }, api: { listen: '[::1]:9740', tokenFile: '/t' } }],
  [
    'static and live peers',
    {
      peers: [
        { name: 'a', address: 'a:1', physBits: 40 },
        { name: 'b', address: 'b:1', url: 'https://b:9740', tokenFile: '/t', caFile: '/ca.pem', physBits: 46 },
        { name: 'c', address: 'c:1', url: 'http://c:9740', tokenFile: '/t' },
      ],
    },
  ],
  ['patterns of both kinds', { discovery: { sockets: ['/run/*.qmp', { glob: '/x/*.qmp', mode: 'poll' }] } }],
  ['one fleet job', { fleet: { prometheus: 'http://prom:9090/', job: 'pb', pool: 'p1', tenant: 't' } }],
  ['several fleet jobs', { fleet: { job: ['a', 'b'] } }],
  [
    'webhooks',
    {
      alerts: {
        webhooks: [
          { url: 'https://h/x', secretFile: '/s' },
          { url: 'http://h', secret: 'x' },
        ],
      },
    },
  ],
  ['bounds at their ends', { qmp: { timeoutMs: 50, maxPending: 10000 }, guard: { holdMs: 0, peerCacheSeconds: 0 } }],
  ['api limits at equal values', { api: { maxConnections: 16, maxConnectionsPerAddress: 16 } }],
];

const bad: Array<[string, unknown]> = [
  ['an unknown key', { hots: {} }],
  ['an unknown nested key', { alerts: { webhookz: [] } }],
  ['a string for a number', { host: { physBits: '46' } }],
  ['a number over its bound', { host: { physBits: 65 } }],
  ['a fraction for an integer', { qmp: { timeoutMs: 100.5 } }],
  ['an unknown enum value', { guard: { unknownPeer: 'maybe' } }],
  ['not host:port', { metrics: { listen: '9741' } }],
  ['a peer of neither kind', { peers: [{ name: 'a', address: 'b' }] }],
  ['a live peer without tokenFile', { peers: [{ name: 'a', address: 'b', url: 'http://b:1' }] }],
  [
    'caFile for an http peer',
    { peers: [{ name: 'a', address: 'b', url: 'http://b:1', tokenFile: '/t', caFile: '/c' }] },
  ],
  ['not a URL', { alerts: { webhooks: [{ url: 'not a url' }] } }],
  ['not an http URL', { fleet: { prometheus: 'ftp://x/' } }],
  ['api.listen without a token', { api: { listen: '0.0.0.0:9740' } }],
  ['per-address over the total', { api: { maxConnections: 4, maxConnectionsPerAddress: 5 } }],
  ['secret and secretFile', { alerts: { webhooks: [{ url: 'http://h', secret: 'x', secretFile: '/s' }] } }],
  ['an empty job list', { fleet: { job: [] } }],
  ['an array for an object', { host: [] }],
  ['null for a section', { qmp: null }],
  ['a __proto__ key', JSON.parse('{"__proto__": {"x": 1}}')],
  ['a pool with a space', { fleet: { pool: 'a b' } }],
];

for (const [name, value] of good)
  test(`the compiled check gives the zod schema's result: ${name}`, (t) => {
    t.true(configSchema.safeParse(value).success, 'the case is a valid config');
    t.not(compiledParse(spec, value), undefined, 'the compiled check accepts it');
    t.is(compare(value), 'agree');
  });

for (const [name, value] of bad)
  test(`the compiled check declines what the zod schema refuses: ${name}`, (t) => {
    t.false(configSchema.safeParse(value).success, 'the case is an invalid config');
    t.is(compiledParse(spec, value), undefined);
  });

/** Every leaf of the compiled schema: its key path and the values at and around its bounds. */
function leaves(node: SpecNode, path: string[], out: Array<{ path: string[]; values: unknown[] }>): void {
  const bounds = (n: SpecNode): unknown[] => {
    const values: unknown[] = [null, true, 'x', 0, [], {}];
    for (const c of n.checks ?? []) {
      if (c.kind === 'min' || c.kind === 'max') values.push(c.value, c.value - 1, c.value + 1, c.value + 0.5);
      if (c.kind === 'minLength' || c.kind === 'maxLength')
        values.push('y'.repeat(c.value), 'y'.repeat(Math.max(0, c.value - 1)), 'y'.repeat(c.value + 1));
      if (c.kind === 'url') values.push('http://h/', ' http://h/', 'http://h/\t', 'ftp://h/', 'h');
    }
    if (n.type === 'enum') values.push(...n.values, 'other');
    return values;
  };
  switch (node.type) {
    case 'object':
      for (const [key, { schema }] of Object.entries(node.keys)) leaves(schema, [...path, key], out);
      return;
    case 'default':
    case 'prefault':
    case 'optional':
    case 'nullable':
      out.push({ path, values: [undefined] });
      leaves(node.inner, path, out);
      return;
    case 'pipe':
      leaves(node.in, path, out);
      return;
    case 'union':
      for (const option of node.options) leaves(option, path, out);
      return;
    case 'array':
      out.push({ path, values: [[], ['x'], [1], [{}]] });
      return;
    default:
      out.push({ path, values: bounds(node) });
  }
}

function at(path: string[], value: unknown): unknown {
  return path.reduceRight<unknown>((inner, key) => ({ [key]: inner }), value);
}

test('at every key, values at and around its bounds: the compiled check agrees with the zod schema', (t) => {
  const found: Array<{ path: string[]; values: unknown[] }> = [];
  leaves(spec, [], found);
  t.true(found.length > 100, `${found.length} leaves`);
  const wrong: string[] = [];
  let declined = 0;
  let cases = 0;
  for (const { path, values } of found)
    for (const value of values) {
      cases++;
      const answer = compare(at(path, value));
      if (answer === 'declined') declined++;
      else if (answer !== 'agree') wrong.push(`${path.join('.')} = ${JSON.stringify(value)}: ${answer}`);
    }
  t.deepEqual(wrong, []);
  // It declines only what zod would rewrite (a URL with spaces around it, or a tab in it).
  t.true(declined <= 6, `${declined} of ${cases} valid values declined`);
});

test('random configs built from the keys and values zod knows: the compiled check agrees', (t) => {
  const found: Array<{ path: string[]; values: unknown[] }> = [];
  leaves(spec, [], found);
  const entry = fc
    .constantFrom(...found)
    .chain(({ path, values }) =>
      fc.tuple(fc.constant(path), fc.oneof(fc.constantFrom(...values), fc.jsonValue({ maxDepth: 2 }))),
    );
  const merge = (entries: Array<[string[], unknown]>) => {
    const root: Record<string, unknown> = {};
    for (const [path, value] of entries) {
      let node = root;
      path.slice(0, -1).forEach((key) => {
        if (typeof node[key] !== 'object' || node[key] === null || Array.isArray(node[key])) node[key] = {};
        node = node[key] as Record<string, unknown>;
      });
      node[path[path.length - 1]] = value;
    }
    return root;
  };
  fc.assert(
    fc.property(fc.array(entry, { maxLength: 6 }), (entries) => {
      const answer = compare(merge(entries));
      return answer === 'agree' || answer === 'declined';
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

test('the build wrote the compiled schema of this schema (build/config-spec.json)', (t) => {
  t.deepEqual(compiledSpec(), JSON.parse(JSON.stringify(spec)));
});

test('the compiler refuses what it does not know, so no key is checked otherwise than zod checks it', (t) => {
  const refused: Array<[string, z.ZodType, RegExp]> = [
    ['an object that allows other keys', z.object({ a: z.string() }), /an object that is not strict/],
    [
      'a check it does not know',
      z.object({ a: z.string().startsWith('x') }).strict(),
      /the check 'string_format:starts_with'/,
    ],
    ['a type it does not know', z.object({ a: z.date() }).strict(), /the zod type 'date'/],
    ['a string format type', z.object({ a: z.email() }).strict(), /a string with 'format'|'string_format:email'/],
    [
      'an unnamed transform',
      z.object({ a: z.string().transform((s) => s.trim()) }).strict(),
      /code the compiled check does not know/,
    ],
    ['an unnamed refinement', z.object({ a: z.string().refine((s) => s !== 'x') }).strict(), /code the compiled/],
  ];
  for (const [name, schema, message] of refused) t.throws(() => compileConfigSpec(schema), { message }, name);
  t.notThrows(() => compileConfigSpec(z.object({ a: z.string().nullish().transform(absentAsUndefined) }).strict()));
});

test('loading a valid config does not load zod; a config with a problem does, for its message', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'physbits-config-spec-'));
  const goodFile = join(dir, 'good.json');
  const badFile = join(dir, 'bad.json');
  writeFileSync(goodFile, JSON.stringify(example));
  writeFileSync(badFile, JSON.stringify({ host: { physBits: 99 } }));
  const config = join(__dirname, '..', '..', 'agent', 'core', 'config.js');
  const probe = (file: string) =>
    spawnSync(
      process.execPath,
      [
        '-e',
        `const c = require(${JSON.stringify(config)});
         let said = 'ok';
         try { c.loadConfig(${JSON.stringify(file)}); } catch (err) { said = err.message; }
         const zod = Object.keys(require.cache).some((m) => /[\\\\/]node_modules[\\\\/]zod[\\\\/]/.test(m));
         console.log(JSON.stringify({ said, zod }));`,
      ],
      { encoding: 'utf8' },
    );
  const ok = probe(goodFile);
  t.is(ok.status, 0, ok.stderr);
  t.deepEqual(JSON.parse(ok.stdout), { said: 'ok', zod: false });
  const refused = probe(badFile);
  t.is(refused.status, 0, refused.stderr);
  t.deepEqual(JSON.parse(refused.stdout), {
    said: `${badFile}: host.physBits: Too big: expected number to be <=64`,
    zod: true,
  });
});
