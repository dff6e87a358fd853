import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../agent/core/config';
import { ConfigError } from '../../agent/core/errors';
import {
  API_TOKEN_MIN_LENGTH,
  checkPeerFiles,
  readApiToken,
  resolveWebhookSecrets,
  type SecretFileAccess,
} from '../../agent/core/secret-files';
import { PHYSBITSD } from '../helpers/daemon';

const withHook = (hook: Record<string, unknown>) =>
  parseConfig({ alerts: { webhooks: [{ url: 'http://127.0.0.1:9/hook', ...hook }] } }, 'test');

const fakeFs = (st: { uid: number; mode: number; file?: boolean }, text = 's3cret\n'): SecretFileAccess => ({
  stat: () => ({ uid: st.uid, mode: st.mode, isFile: () => st.file ?? true }),
  read: () => text,
});

test('secretFile: a root-owned 0600 file becomes the secret, trimmed', (t) => {
  const cfg = resolveWebhookSecrets(
    withHook({ secretFile: '/etc/physbits/hook.secret' }),
    fakeFs({ uid: 0, mode: 0o100600 }),
  );
  t.deepEqual(cfg.alerts.webhooks, [{ url: 'http://127.0.0.1:9/hook', secret: 's3cret' }]);
});

test('secretFile: wrong owner, open modes, not a file, empty, missing: a ConfigError naming the key and file', (t) => {
  const cases: Array<[SecretFileAccess, RegExp]> = [
    [fakeFs({ uid: 1000, mode: 0o100600 }), /owned by root \(owner uid 1000\)/],
    [fakeFs({ uid: 0, mode: 0o100640 }), /not be open to group or others \(mode 0640\)/],
    [fakeFs({ uid: 0, mode: 0o100604 }), /mode 0604/],
    [fakeFs({ uid: 0, mode: 0o100620 }), /mode 0620/],
    [fakeFs({ uid: 0, mode: 0o040700, file: false }), /not a regular file/],
    [fakeFs({ uid: 0, mode: 0o100600 }, '  \n'), /is empty/],
    [
      {
        stat: () => {
          throw Object.assign(new Error('gone'), { code: 'ENOENT' });
        },
        read: () => '',
      },
      /cannot read: ENOENT/,
    ],
  ];
  for (const [fs, message] of cases) {
    const err = t.throws(() => resolveWebhookSecrets(withHook({ secretFile: '/x/hook.secret' }), fs), {
      instanceOf: ConfigError,
    });
    t.regex(err!.message, /^alerts\.webhooks\[0\]\.secretFile: \/x\/hook\.secret: /);
    t.regex(err!.message, message);
  }
});

test('secret and secretFile together are refused by the config', (t) => {
  t.throws(() => withHook({ secret: 'a', secretFile: '/x' }), {
    instanceOf: ConfigError,
    message: /alerts\.webhooks\[0\]\.secretFile: give secret or secretFile, not both/,
  });
});

test('physbitsd exits 78 with one line naming a group-readable secret file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'physbits-secret-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const secret = join(dir, 'hook.secret');
  writeFileSync(secret, 'k\n');
  chmodSync(secret, 0o640);
  const cfg = join(dir, 'cfg.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      discovery: { sockets: [join(dir, '*.qmp')] },
      api: { socket: join(dir, 'api.sock') },
      alerts: { webhooks: [{ url: 'http://127.0.0.1:9/hook', secretFile: secret }], spoolDir: join(dir, 'spool') },
    }),
  );
  const run = spawnSync(process.execPath, [PHYSBITSD, '--config', cfg], { encoding: 'utf8', timeout: 30000 });
  t.is(run.status, 78, run.stderr);
  const lines = run.stderr.trim().split('\n');
  t.is(lines.length, 1, run.stderr);
  t.regex(lines[0], new RegExp(`alerts\\.webhooks\\[0\\]\\.secretFile: ${secret.replace(/[.]/g, '\\.')}: .*mode 0640`));
});

test('api.tokenFile: at least 32 characters after trimming, else a ConfigError naming the key and file', (t) => {
  t.is(API_TOKEN_MIN_LENGTH, 32);
  const files: Record<string, string> = {
    '/t/ok': `${'a'.repeat(32)}\n`,
    '/t/long': ` ${'b'.repeat(64)} \n`,
    '/t/short': `${'c'.repeat(31)}\n`,
    '/t/padded': `   ${'d'.repeat(20)}            \n`,
    '/t/empty': '',
  };
  const missing = () => {
    throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
  };
  const access = {
    stat: (p: string) => (p in files ? { uid: 0, mode: 0o100600, isFile: () => true } : missing()),
    read: (p: string) => (p in files ? files[p] : missing()),
  };
  t.is(readApiToken('/t/ok', access), 'a'.repeat(32));
  t.is(readApiToken('/t/long', access), 'b'.repeat(64));
  const table: Array<[string, string]> = [
    ['/t/short', 'api.tokenFile: /t/short: the token must be at least 32 characters (it has 31)'],
    ['/t/padded', 'api.tokenFile: /t/padded: the token must be at least 32 characters (it has 20)'],
    ['/t/empty', 'api.tokenFile: /t/empty: is empty'],
    ['/t/missing', 'api.tokenFile: /t/missing: cannot read: ENOENT'],
  ];
  for (const [path, message] of table) {
    const err = t.throws(() => readApiToken(path, access), { instanceOf: ConfigError }, path);
    t.is(err?.message, message);
  }
});

const livePeer = (over: Record<string, unknown> = {}) =>
  parseConfig(
    {
      tls: { caFile: '/etc/physbits/ca.pem' },
      peers: [
        { name: 'static', address: '10.0.0.1', physBits: 40 },
        {
          name: 'live',
          address: '10.0.0.2',
          url: 'https://10.0.0.2:9740',
          tokenFile: '/etc/physbits/peer.token',
          ...over,
        },
      ],
    },
    'test',
  );

test('peers[].tokenFile is checked like a webhook secretFile; the CA file (own or tls.caFile) must hold a certificate', (t) => {
  const PEM = '-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n';
  const fs = (st: { uid: number; mode: number }, files: Record<string, string>): SecretFileAccess => ({
    stat: () => ({ uid: st.uid, mode: st.mode, isFile: () => true }),
    read: (p) => {
      if (p in files) return files[p];
      throw Object.assign(new Error('gone'), { code: 'ENOENT' });
    },
  });
  const good = { '/etc/physbits/peer.token': 'tok\n', '/etc/physbits/ca.pem': PEM, '/etc/physbits/own.pem': PEM };
  t.notThrows(() => checkPeerFiles(livePeer(), fs({ uid: 0, mode: 0o100600 }, good)));
  const cases: Array<[ReturnType<typeof livePeer>, SecretFileAccess, string]> = [
    [
      livePeer(),
      fs({ uid: 0, mode: 0o100644 }, good),
      'peers[1].tokenFile: /etc/physbits/peer.token: must not be open to group or others (mode 0644); chmod 0600 it',
    ],
    [
      livePeer(),
      fs({ uid: 65534, mode: 0o100600 }, good),
      'peers[1].tokenFile: /etc/physbits/peer.token: must be owned by root (owner uid 65534)',
    ],
    [
      livePeer(),
      fs({ uid: 0, mode: 0o100600 }, { ...good, '/etc/physbits/ca.pem': 'junk' }),
      'tls.caFile (for peers[1]): /etc/physbits/ca.pem: holds no PEM certificate',
    ],
    [
      livePeer({ caFile: '/etc/physbits/missing.pem' }),
      fs({ uid: 0, mode: 0o100600 }, good),
      'peers[1].caFile: /etc/physbits/missing.pem: cannot read: ENOENT',
    ],
  ];
  for (const [cfg, access, message] of cases) {
    const err = t.throws(() => checkPeerFiles(cfg, access), { instanceOf: ConfigError });
    t.is(err?.message, message);
  }
  // An http peer has no CA file to check; caFile on one is a config error.
  t.notThrows(() =>
    checkPeerFiles(
      livePeer({ url: 'http://10.0.0.2:9740' }),
      fs({ uid: 0, mode: 0o100600 }, { ...good, '/etc/physbits/ca.pem': 'junk' }),
    ),
  );
  t.throws(() => livePeer({ url: 'http://10.0.0.2:9740', caFile: '/x.pem' }), {
    instanceOf: ConfigError,
    message: /peers\[1\]\.caFile: only for an https:\/\/ url/,
  });
});

test("physbitsd exits 78 with one line naming a peer token file that is group-readable or not root's", (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'physbits-peer-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const token = join(dir, 'peer.token');
  writeFileSync(token, `${'t'.repeat(40)}\n`, { mode: 0o600 });
  const cfg = join(dir, 'cfg.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      discovery: { sockets: [join(dir, '*.qmp')] },
      api: { socket: join(dir, 'api.sock') },
      alerts: { spoolDir: join(dir, 'spool') },
      peers: [{ name: 'hv2', address: '127.0.0.2', url: 'http://127.0.0.1:9', tokenFile: token }],
    }),
  );
  const run = () => spawnSync(process.execPath, [PHYSBITSD, '--config', cfg], { encoding: 'utf8', timeout: 30000 });
  for (const [prepare, expected] of [
    [
      () => chmodSync(token, 0o640),
      `config: peers[0].tokenFile: ${token}: must not be open to group or others (mode 0640); chmod 0600 it`,
    ],
    [
      () => {
        chmodSync(token, 0o600);
        chownSync(token, 65534, 65534);
      },
      `config: peers[0].tokenFile: ${token}: must be owned by root (owner uid 65534)`,
    ],
  ] as const) {
    prepare();
    const r = run();
    t.is(r.status, 78, r.stderr);
    t.is(r.stderr, `physbitsd: ${expected}\n`);
  }
});

test("physbitsd exits 78 with one line naming an api.tokenFile or fleet.tokenFile that is open to others or not root's", (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'physbits-own-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const token = join(dir, 'api.token');
  writeFileSync(token, `${'t'.repeat(40)}\n`, { mode: 0o600 });
  const base = {
    discovery: { sockets: [join(dir, '*.qmp')] },
    api: { socket: join(dir, 'api.sock') },
    alerts: { spoolDir: join(dir, 'spool') },
  };
  const configs = {
    api: { ...base, api: { ...base.api, listen: '127.0.0.1:0', tokenFile: token } },
    fleet: { ...base, fleet: { prometheus: 'http://127.0.0.1:9', tokenFile: token } },
  };
  for (const [key, config] of Object.entries(configs)) {
    const cfg = join(dir, `${key}.json`);
    writeFileSync(cfg, JSON.stringify(config));
    const run = () => spawnSync(process.execPath, [PHYSBITSD, '--config', cfg], { encoding: 'utf8', timeout: 30000 });
    for (const [prepare, expected] of [
      [
        () => chmodSync(token, 0o644),
        `config: ${key}.tokenFile: ${token}: must not be open to group or others (mode 0644); chmod 0600 it`,
      ],
      [
        () => {
          chmodSync(token, 0o600);
          chownSync(token, 65534, 65534);
        },
        `config: ${key}.tokenFile: ${token}: must be owned by root (owner uid 65534)`,
      ],
    ] as const) {
      prepare();
      const r = run();
      t.is(r.status, 78, r.stderr);
      t.is(r.stderr, `physbitsd: ${expected}\n`);
    }
    chownSync(token, 0, 0);
  }
});
