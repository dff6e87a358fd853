import test from 'ava';
import {
  describeTarget,
  MAX_CHANNELS,
  migrateTargets,
  parseInetAddress,
  parseMigrateUri,
  type MigrationTarget,
} from '../../agent/guard/migration-target';

type T = MigrationTarget;
const net = (host: string, port: string, transport: 'tcp' | 'rdma' = 'tcp'): T => ({
  kind: 'network',
  transport,
  host,
  port,
});
const loc = (transport: 'unix' | 'fd' | 'exec' | 'file' | 'vsock', detail: string): T => ({
  kind: 'local',
  transport,
  detail,
});
const bad = (reason: string): T => ({ kind: 'invalid', reason });
const UNKNOWN_7 = bad('not a migration uri QEMU 7.2 knows (tcp:, rdma:, unix:, fd:, exec:, vsock:)');
const UNKNOWN_8 = bad('not a migration uri QEMU knows (tcp:, rdma:, unix:, fd:, exec:, file:, vsock:)');
const NO_ADDR = bad('cannot read the address of tcp: uri');

/** uri → [as QEMU 7.2 reads it, as QEMU 10.0 reads it]. */
const uriTable: Array<[string, T, T]> = [
  ['tcp:hv2:4444', net('hv2', '4444'), net('hv2', '4444')],
  ['tcp:10.0.0.7:49152', net('10.0.0.7', '49152'), net('10.0.0.7', '49152')],
  ['tcp:hv2.example.com:4444,ipv4', net('hv2.example.com', '4444'), net('hv2.example.com', '4444')],
  ['tcp:hv2:4444,ipv4=on', net('hv2', '4444'), net('hv2', '4444')],
  ['tcp:hv2:4444,to=4450,ipv6=off,keep-alive,mptcp=on', net('hv2', '4444'), net('hv2', '4444')],
  ['tcp:hv2:4444,numeric,whatever=1', net('hv2', '4444'), net('hv2', '4444')],
  ['tcp:hv2:4444,ipv4=yes', bad("tcp: uri: error parsing 'ipv4' flag"), bad("tcp: uri: error parsing 'ipv4' flag")],
  ['tcp:hv2:4444,ipv6=on,,x', bad("tcp: uri: error parsing 'ipv6' flag"), bad("tcp: uri: error parsing 'ipv6' flag")],
  ['tcp:hv2:4444,to=x', bad('tcp: uri: error parsing to= argument'), bad('tcp: uri: error parsing to= argument')],
  ['tcp:hv2:4444,to=12x', bad('tcp: uri: error parsing to= argument'), bad('tcp: uri: error parsing to= argument')],
  ['tcp:[2001:db8::7]:4444', net('2001:db8::7', '4444'), net('2001:db8::7', '4444')],
  ['tcp:[::1]:4444', net('::1', '4444'), net('::1', '4444')],
  ['tcp:[fe80::1%eth0]:4444,ipv6', net('fe80::1%eth0', '4444'), net('fe80::1%eth0', '4444')],
  ['tcp:hv2:44:44', net('hv2', '44:44'), net('hv2', '44:44')],
  // QEMU 7.2 strips "tcp:" and hands the rest to socket_parse, which knows "unix:", "fd:", "vsock:"
  // but not "tcp:"; 10.0 hands socket_parse the whole uri (both seen in migrate-uri.e2e.test.ts).
  ['tcp:tcp:hv2:4444', net('tcp', 'hv2:4444'), net('tcp', 'hv2:4444')],
  ['tcp:unix:/run/x.sock', loc('unix', '/run/x.sock'), net('unix', '/run/x.sock')],
  ['tcp:fd:migfd', loc('fd', 'migfd'), net('fd', 'migfd')],
  ['tcp:vsock:3:4444', loc('vsock', '3:4444'), net('vsock', '3:4444')],
  ['tcp:tcp:tcp:hv2:4444', net('tcp', 'tcp:hv2:4444'), net('tcp', 'tcp:hv2:4444')],
  ['rdma:192.168.5.2:4444', net('192.168.5.2', '4444', 'rdma'), net('192.168.5.2', '4444', 'rdma')],
  ['rdma:[2001:db8::9]:4444', net('2001:db8::9', '4444', 'rdma'), net('2001:db8::9', '4444', 'rdma')],
  ['rdma:', bad('cannot read the address of rdma: uri'), bad('cannot read the address of rdma: uri')],
  ['unix:/run/migrate.sock', loc('unix', '/run/migrate.sock'), loc('unix', '/run/migrate.sock')],
  ['unix:', bad('invalid Unix socket address'), bad('invalid Unix socket address')],
  [
    'exec:ssh hv2 nc -U /run/in.sock',
    loc('exec', 'ssh hv2 nc -U /run/in.sock'),
    loc('exec', 'ssh hv2 nc -U /run/in.sock'),
  ],
  ['exec:', loc('exec', ''), loc('exec', '')],
  ['fd:migfd', loc('fd', 'migfd'), loc('fd', 'migfd')],
  ['fd:', bad("no file descriptor named ''"), bad('invalid file descriptor address')],
  ['file:/var/lib/state.mig,offset=0x1000', UNKNOWN_7, loc('file', '/var/lib/state.mig,offset=0x1000')],
  ['file:/var/lib/state.mig,offset=junk', UNKNOWN_7, bad('file: uri: invalid offset')],
  ['vsock:3:4444', loc('vsock', '3:4444'), loc('vsock', '3:4444')],
  ['vsock:', bad('cannot read the address of vsock: uri'), bad('cannot read the address of vsock: uri')],
  ['vsock:3:4444,x', bad('cannot read the address of vsock: uri'), bad('cannot read the address of vsock: uri')],
  ['tcp::4444', bad('tcp: uri names no host'), bad('tcp: uri names no host')],
  ['tcp:hv2', NO_ADDR, NO_ADDR],
  ['tcp:hv2:', NO_ADDR, NO_ADDR],
  ['tcp:hv2:,ipv4', NO_ADDR, NO_ADDR],
  ['tcp:[2001:db8::7:4444', NO_ADDR, NO_ADDR],
  ['tcp:[]:4444', NO_ADDR, NO_ADDR],
  ['tcp:[::1]4444', NO_ADDR, NO_ADDR],
  ['hv2:4444', UNKNOWN_7, UNKNOWN_8],
  ['TCP:hv2:4444', UNKNOWN_7, UNKNOWN_8],
  ['', UNKNOWN_7, UNKNOWN_8],
];

for (const [uri, qemu7, qemu10] of uriTable) {
  test(`migrate uri ${JSON.stringify(uri)} as QEMU 7.2 and 10.0 read it`, (t) => {
    t.deepEqual(parseMigrateUri(uri, '7.2.22'), qemu7, 'QEMU 7.2');
    t.deepEqual(parseMigrateUri(uri, '10.0.2'), qemu10, 'QEMU 10.0');
    t.deepEqual(parseMigrateUri(uri, '8.2.0'), qemu10, 'QEMU 8.2 reads as 10.0 does');
    // Without a version: the common reading, else invalid.
    const unknown = parseMigrateUri(uri);
    if (qemu7.kind === 'invalid' && qemu10.kind === 'invalid') t.deepEqual(unknown, qemu10);
    else if (JSON.stringify(qemu7) !== JSON.stringify(qemu10)) {
      t.is(unknown.kind, 'invalid');
      t.regex(
        (unknown as { reason: string }).reason,
        /^QEMU releases read this uri differently \(7\.2: .*, 8\.0: .*, 8\.2\+: .*\) and the guest's QEMU version is not known$/,
      );
    }
  });
}

test('inet_parse bounds: a 64-character host is read, a 65-character one is not; the port keeps 32 characters', (t) => {
  const h64 = 'a'.repeat(64);
  t.deepEqual(parseInetAddress(`${h64}:1`), { host: h64, port: '1', rest: '' });
  t.is(parseInetAddress(`${h64}a:1`), null);
  t.deepEqual(parseInetAddress(`h:${'9'.repeat(40)}`), { host: 'h', port: '9'.repeat(32), rest: '9'.repeat(8) });
  t.deepEqual(parseInetAddress(`[${'f'.repeat(64)}]:2`), { host: 'f'.repeat(64), port: '2', rest: '' });
  t.is(parseInetAddress(`[${'f'.repeat(65)}]:2`), null);
  t.deepEqual(parseInetAddress(':80,ipv4'), { host: '', port: '80', rest: ',ipv4' });
});

test('channels: refused for QEMU 7.2 (no such argument), and with a uri beside them', (t) => {
  const channels = [{ 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: 'hv3', port: '1' } }];
  t.deepEqual(migrateTargets({ channels }, '7.2.22'), [
    { kind: 'invalid', reason: 'QEMU before 8.2 takes no channels argument' },
  ]);
  t.deepEqual(migrateTargets({ channels }, '10.0.2'), [
    { kind: 'network', transport: 'tcp', host: 'hv3', port: '1', channel: 'main' },
  ]);
  t.deepEqual(migrateTargets({ uri: 'tcp:hv2:1', channels }, '10.0.2'), [
    { kind: 'invalid', reason: "QEMU takes either 'uri' or 'channels', not both" },
  ]);
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

test('neither uri nor channels, or a uri that is not a string, is invalid', (t) => {
  t.deepEqual(migrateTargets({}), [{ kind: 'invalid', reason: 'neither uri nor channels given' }]);
  t.deepEqual(migrateTargets(undefined), [{ kind: 'invalid', reason: 'neither uri nor channels given' }]);
  t.deepEqual(migrateTargets({ uri: 5 }), [{ kind: 'invalid', reason: 'uri is not a string' }]);
});

test('describeTarget brackets IPv6 hosts', (t) => {
  t.is(describeTarget(parseMigrateUri('tcp:[2001:db8::7]:4444')), 'tcp:[2001:db8::7]:4444');
  t.is(describeTarget(parseMigrateUri('unix:/x')), 'unix:/x');
});

test('QEMU 8.0 and 8.1 (and an unknown version): tcp:tcp: reached the named host there, so only agreed readings pass', (t) => {
  for (const version of ['8.0.4', '8.1.5', undefined, 'unknown']) {
    const r = parseMigrateUri('tcp:tcp:hv2:4444', version);
    t.is(r.kind, 'invalid', String(version));
    t.regex((r as { reason: string }).reason, /8\.0: tcp:hv2:4444/);
    t.deepEqual(parseMigrateUri('tcp:hv2:4444', version), net('hv2', '4444'), String(version));
  }
});
