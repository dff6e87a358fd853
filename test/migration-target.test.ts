import test from 'ava';
import {
  describeTarget,
  MAX_CHANNELS,
  migrateTargets,
  parseInetAddress,
  parseMigrateUri,
  type MigrationTarget,
} from '../agent/guard/migration-target';

const uriTable: Array<[string, MigrationTarget]> = [
  ['tcp:hv2:4444', { kind: 'network', transport: 'tcp', host: 'hv2', port: '4444' }],
  ['tcp:10.0.0.7:49152', { kind: 'network', transport: 'tcp', host: '10.0.0.7', port: '49152' }],
  ['tcp:hv2.example.com:4444,ipv4', { kind: 'network', transport: 'tcp', host: 'hv2.example.com', port: '4444' }],
  ['tcp:hv2:4444,to=4450,ipv6', { kind: 'network', transport: 'tcp', host: 'hv2', port: '4444' }],
  ['tcp:[2001:db8::7]:4444', { kind: 'network', transport: 'tcp', host: '2001:db8::7', port: '4444' }],
  ['tcp:[fe80::1%eth0]:4444,ipv6', { kind: 'network', transport: 'tcp', host: 'fe80::1%eth0', port: '4444' }],
  ['tcp:[::1]:1', { kind: 'network', transport: 'tcp', host: '::1', port: '1' }],
  ['rdma:192.168.5.2:4444', { kind: 'network', transport: 'rdma', host: '192.168.5.2', port: '4444' }],
  ['rdma:[2001:db8::9]:4444', { kind: 'network', transport: 'rdma', host: '2001:db8::9', port: '4444' }],
  ['unix:/run/migrate.sock', { kind: 'local', transport: 'unix', detail: '/run/migrate.sock' }],
  ['exec:ssh hv2 nc -U /run/in.sock', { kind: 'local', transport: 'exec', detail: 'ssh hv2 nc -U /run/in.sock' }],
  ['fd:migfd', { kind: 'local', transport: 'fd', detail: 'migfd' }],
  [
    'file:/var/lib/state.mig,offset=0x1000',
    { kind: 'local', transport: 'file', detail: '/var/lib/state.mig,offset=0x1000' },
  ],
  ['vsock:3:4444', { kind: 'local', transport: 'vsock', detail: '3:4444' }],
  ['tcp::4444', { kind: 'invalid', reason: 'tcp: uri names no host' }],
  ['tcp:hv2', { kind: 'invalid', reason: 'cannot read the address of tcp: uri' }],
  ['tcp:hv2:', { kind: 'invalid', reason: 'cannot read the address of tcp: uri' }],
  ['tcp:hv2:,ipv4', { kind: 'invalid', reason: 'cannot read the address of tcp: uri' }],
  ['tcp:[2001:db8::7:4444', { kind: 'invalid', reason: 'cannot read the address of tcp: uri' }],
  ['tcp:[]:4444', { kind: 'invalid', reason: 'cannot read the address of tcp: uri' }],
  ['tcp:[::1]4444', { kind: 'invalid', reason: 'cannot read the address of tcp: uri' }],
  [
    'hv2:4444',
    { kind: 'invalid', reason: 'not a migration uri QEMU knows (tcp:, rdma:, unix:, fd:, exec:, file:, vsock:)' },
  ],
  [
    'TCP:hv2:4444',
    { kind: 'invalid', reason: 'not a migration uri QEMU knows (tcp:, rdma:, unix:, fd:, exec:, file:, vsock:)' },
  ],
  ['', { kind: 'invalid', reason: 'not a migration uri QEMU knows (tcp:, rdma:, unix:, fd:, exec:, file:, vsock:)' }],
];

for (const [uri, want] of uriTable) {
  test(`migrate uri ${JSON.stringify(uri)}`, (t) => {
    t.deepEqual(parseMigrateUri(uri), want);
  });
}

test('inet_parse bounds: a 64-character host is read, a 65-character one is not; the port keeps 32 characters', (t) => {
  const h64 = 'a'.repeat(64);
  t.deepEqual(parseInetAddress(`${h64}:1`), { host: h64, port: '1' });
  t.is(parseInetAddress(`${h64}a:1`), null);
  t.deepEqual(parseInetAddress(`h:${'9'.repeat(40)}`), { host: 'h', port: '9'.repeat(32) });
  t.deepEqual(parseInetAddress(`[${'f'.repeat(64)}]:2`), { host: 'f'.repeat(64), port: '2' });
  t.is(parseInetAddress(`[${'f'.repeat(65)}]:2`), null);
  t.deepEqual(parseInetAddress(':80'), { host: '', port: '80' });
});

test('channels: the main socket channel names the host (inet, IPv6 without brackets)', (t) => {
  t.deepEqual(
    migrateTargets({
      channels: [{ 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: 'hv3', port: '4444' } }],
    }),
    [{ kind: 'network', transport: 'tcp', host: 'hv3', port: '4444', channel: 'main' }],
  );
  t.deepEqual(
    migrateTargets({
      channels: [
        { 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: '2001:db8::3', port: '4444' } },
      ],
    }),
    [{ kind: 'network', transport: 'tcp', host: '2001:db8::3', port: '4444', channel: 'main' }],
  );
  t.deepEqual(
    migrateTargets({
      channels: [{ 'channel-type': 'main', addr: { transport: 'rdma', host: '10.1.1.1', port: '7' } }],
    }),
    [{ kind: 'network', transport: 'rdma', host: '10.1.1.1', port: '7', channel: 'main' }],
  );
});

test('channels: local transports and malformed addresses', (t) => {
  t.deepEqual(
    migrateTargets({
      channels: [
        { 'channel-type': 'main', addr: { transport: 'socket', type: 'unix', path: '/run/m.sock' } },
        { 'channel-type': 'cpr', addr: { transport: 'socket', type: 'fd', str: 'cprfd' } },
      ],
    }),
    [
      { kind: 'local', transport: 'unix', detail: '/run/m.sock', channel: 'main' },
      { kind: 'local', transport: 'fd', detail: 'cprfd', channel: 'cpr' },
    ],
  );
  t.deepEqual(
    migrateTargets({
      channels: [{ 'channel-type': 'main', addr: { transport: 'exec', args: ['sh', '-c', 'nc hv2 4444'] } }],
    }),
    [{ kind: 'local', transport: 'exec', detail: 'sh -c nc hv2 4444', channel: 'main' }],
  );
  t.deepEqual(
    migrateTargets({
      channels: [{ 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: 'hv3', port: 4444 } }],
    }),
    [{ kind: 'invalid', reason: 'inet socket address needs string host and port', channel: 'main' }],
  );
  t.deepEqual(migrateTargets({ channels: [] }), [{ kind: 'invalid', reason: 'channels is not a non-empty list' }]);
  t.deepEqual(migrateTargets({ channels: 'tcp:hv2:1' }), [
    { kind: 'invalid', reason: 'channels is not a non-empty list' },
  ]);
  const many = Array.from({ length: MAX_CHANNELS + 1 }, () => ({
    'channel-type': 'main',
    addr: { transport: 'socket', type: 'inet', host: 'hv3', port: '1' },
  }));
  t.deepEqual(migrateTargets({ channels: many }), [{ kind: 'invalid', reason: `more than ${MAX_CHANNELS} channels` }]);
  t.deepEqual(migrateTargets({ channels: [null] }), [{ kind: 'invalid', reason: 'channel is not an object' }]);
});

test('uri and channels together are both judged; neither is invalid', (t) => {
  t.deepEqual(
    migrateTargets({
      uri: 'tcp:hv2:1',
      channels: [{ 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: 'hv9', port: '2' } }],
    }).map(describeTarget),
    ['tcp:hv2:1', 'tcp:hv9:2'],
  );
  t.deepEqual(migrateTargets({}), [{ kind: 'invalid', reason: 'neither uri nor channels given' }]);
  t.deepEqual(migrateTargets(undefined), [{ kind: 'invalid', reason: 'neither uri nor channels given' }]);
  t.deepEqual(migrateTargets({ uri: 5 }), [{ kind: 'invalid', reason: 'uri is not a string' }]);
});

test('describeTarget brackets IPv6 hosts', (t) => {
  t.is(describeTarget(parseMigrateUri('tcp:[2001:db8::7]:4444')), 'tcp:[2001:db8::7]:4444');
  t.is(describeTarget(parseMigrateUri('unix:/x')), 'unix:/x');
});
