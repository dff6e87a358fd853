import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfig, stripComments } from '../../agent/core/config';

const example = join(__dirname, '..', '..', '..', 'config.example.json');

/** Every key path of an object, arrays' elements left out. */
function keyPaths(v: unknown, prefix = ''): string[] {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return [];
  return Object.entries(v).flatMap(([k, x]) => [`${prefix}${k}`, ...keyPaths(x, `${prefix}${k}.`)]);
}

test('config.example.json loads, and its values are the defaults', (t) => {
  const plain = (v: unknown) => JSON.parse(JSON.stringify(v));
  const fromExample = loadConfig(example);
  const defaults = parseConfig({});
  t.deepEqual(plain({ ...fromExample, discovery: { ...fromExample.discovery, sockets: [] } }), plain(defaults));
  t.deepEqual(fromExample.discovery.sockets, ['/run/qemu/*.qmp', { glob: '/var/run/qemu-server/*.qmp', mode: 'poll' }]);
});

test('config.example.json names every key the schema knows (the strict schema refuses any other)', (t) => {
  const raw = stripComments(JSON.parse(readFileSync(example, 'utf8')));
  // Every key of the parsed defaults, plus the optional ones, must be written in the example.
  const documented = new Set(keyPaths(raw));
  const optional = [
    'host.physBits',
    'host.name',
    'discovery.libvirt',
    'api.group',
    'api.listen',
    'api.tokenFile',
    'alerts.generatorURL',
    'fleet.pool',
    'fleet.prometheus',
    'fleet.tokenFile',
    'fleet.tenant',
    'schedulers.nfdFeatureFile',
  ];
  for (const key of [...keyPaths(parseConfig({})), ...optional])
    t.true(documented.has(key), `${key} missing from config.example.json`);
  t.notThrows(() => parseConfig(raw));
});

test('"$comment" keys are ignored at any depth', (t) => {
  const c = parseConfig({
    $comment: 'x',
    host: { $comment: 'y', physBits: 39 },
    peers: [{ $comment: 'z', name: 'a', address: 'b', physBits: 40 }],
  });
  t.is(c.host.physBits, 39);
  t.deepEqual(c.peers, [{ name: 'a', address: 'b', physBits: 40 }]);
});

test('null means "not set" for optional keys', (t) => {
  const c = parseConfig({ host: { physBits: null, name: null }, api: { listen: null, tokenFile: null } });
  t.is(c.host.physBits, undefined);
  t.is(c.api.listen, undefined);
});

const bad: Array<[string, unknown, RegExp]> = [
  ['unknown top-level key', { hots: {} }, /^config: hots: unknown key$/],
  ['unknown nested key', { alerts: { webhookz: [] } }, /^config: alerts\.webhookz: unknown key$/],
  ['wrong type', { host: { physBits: 'wide' } }, /^config: host\.physBits: /],
  ['out of range', { host: { physBits: 65 } }, /^config: host\.physBits: /],
  ['bad enum', { guard: { unknownPeer: 'maybe' } }, /^config: guard\.unknownPeer: /],
  ['bad host:port', { metrics: { listen: '9741' } }, /^config: metrics\.listen: expected host:port$/],
  ['peer without width or url', { peers: [{ name: 'a', address: 'b' }] }, /^config: peers\[0\]\.physBits: required$/],
  [
    'a peer without address',
    {
      peers: [
        { name: 'a', address: 'b', physBits: 40 },
        { name: 'b', physBits: 40 },
      ],
    },
    /^config: peers\[1\]\.address: required$/,
  ],
  [
    'a live peer without tokenFile',
    { peers: [{ name: 'a', address: 'b', url: 'http://b:9740' }] },
    /^config: peers\[0\]\.tokenFile: required$/,
  ],
  [
    'a pattern of the wrong type',
    { discovery: { sockets: [3] } },
    /^config: discovery\.sockets\[0\]: expected string or object$/,
  ],
  ['bad webhook url', { alerts: { webhooks: [{ url: 'not a url' }] } }, /^config: alerts\.webhooks\[0\]\.url: /],
  [
    'listen without token',
    { api: { listen: '0.0.0.0:9740' } },
    /^config: api\.tokenFile: required when api\.listen is set$/,
  ],
  [
    'bad mode string',
    { discovery: { sockets: [{ glob: '/x', mode: 'grab' }] } },
    /^config: discovery\.sockets\[0\]\.mode: /,
  ],
];
for (const [name, raw, re] of bad) {
  test(`a config error names the key: ${name}`, (t) => {
    const err = t.throws(() => parseConfig(raw), { instanceOf: ConfigError });
    t.regex(err!.message, re);
    t.is(err!.code, 'CONFIG_INVALID');
    t.false(err!.message.includes('\n'));
  });
}

test('loadConfig: a missing default file means defaults; a missing named file is an error', (t) => {
  t.throws(() => loadConfig('/nonexistent/physbits.json'), { instanceOf: ConfigError, message: /cannot read: ENOENT/ });
});
