/**
 * parseEventLine on the literal text virsh prints: lines copied from `virsh event --all --loop
 * --timestamp` on libvirt 9.0 here (a domain created, paused, resumed, a DIMM attached with
 * attach-device --live, destroyed, libvirtd stopped), and lines built from the format strings of
 * libvirt tools/virsh-domain-event.c for what cannot be caused here (a migration, virtio-mem
 * resizing, which needs a guest driver).
 */
import test from 'ava';
import { parseEventLine, type EventLine } from '../../agent/libvirt/libvirt-events';

const TS = '2026-12-07 03:54:16.136+0000';

function event(type: string, domain: string, detail: string, change: string, at: string | null = TS): EventLine {
  return { kind: 'event', event: { at, type, domain, detail, change } } as EventLine;
}

test('lifecycle lines seen on libvirt 9.0: started, paused, resumed, stopped; shutdown is left to Stopped', (t) => {
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'pbexp1': Started Booted`),
    event('lifecycle', 'pbexp1', 'Started Booted', 'started'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'pbexp1': Suspended Paused`),
    event('lifecycle', 'pbexp1', 'Suspended Paused', 'changed'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'pbexp1': Resumed Unpaused`),
    event('lifecycle', 'pbexp1', 'Resumed Unpaused', 'changed'),
  );
  t.deepEqual(parseEventLine(`${TS}: event 'lifecycle' for domain 'pbexp1': Shutdown Finished after host request`), {
    kind: 'ignored',
  });
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'pbexp1': Stopped Destroyed`),
    event('lifecycle', 'pbexp1', 'Stopped Destroyed', 'stopped'),
  );
  t.deepEqual(parseEventLine(`${TS}: event 'lifecycle' for domain 'pbexp1': Defined Added`), { kind: 'ignored' });
  t.deepEqual(parseEventLine(`${TS}: event 'lifecycle' for domain 'pbexp1': Undefined Removed`), { kind: 'ignored' });
});

test('migration lifecycle details, from virsh-domain-event.c', (t) => {
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'web1': Started Migrated`),
    event('lifecycle', 'web1', 'Started Migrated', 'started'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'web1': Resumed Migrated`),
    event('lifecycle', 'web1', 'Resumed Migrated', 'changed'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'web1': Suspended Post-copy Error`),
    event('lifecycle', 'web1', 'Suspended Post-copy Error', 'changed'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'web1': Stopped Migrated`),
    event('lifecycle', 'web1', 'Stopped Migrated', 'stopped'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'web1': Suspended I/O Error`),
    event('lifecycle', 'web1', 'Suspended I/O Error', 'changed'),
  );
});

test('devices: device-added as libvirt 9.0 printed it for a DIMM, device-removed, memory-device-size-change', (t) => {
  t.deepEqual(
    parseEventLine(`${TS}: event 'device-added' for domain 'pbexp1': memdimm0`),
    event('device-added', 'pbexp1', 'memdimm0', 'changed'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'device-removed' for domain 'pbexp1': dimm0`),
    event('device-removed', 'pbexp1', 'dimm0', 'changed'),
  );
  // The alias and the size follow on lines of their own, which are not events.
  t.deepEqual(
    parseEventLine(`${TS}: event 'memory-device-size-change' for domain 'pbexp1':`),
    event('memory-device-size-change', 'pbexp1', '', 'changed'),
  );
  t.deepEqual(parseEventLine('alias: virtiomem0'), { kind: 'ignored' });
  t.deepEqual(parseEventLine('size: 1048576'), { kind: 'ignored' });
});

test('without --timestamp the same lines read the same, with no time', (t) => {
  t.deepEqual(
    parseEventLine(`event 'device-added' for domain 'db': dimm1`),
    event('device-added', 'db', 'dimm1', 'changed', null),
  );
});

test('names with quotes, colons and event-like text end at the last quote', (t) => {
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'a': Started Booted': Stopped Destroyed`),
    event('lifecycle', "a': Started Booted", 'Stopped Destroyed', 'stopped'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'device-added' for domain 'it's: x y': dimm0`),
    event('device-added', "it's: x y", 'dimm0', 'changed'),
  );
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'we b;1 ''': Resumed Unpaused`),
    event('lifecycle', "we b;1 ''", 'Resumed Unpaused', 'changed'),
  );
});

test('event types that change no width are ignored, and so are the detail lines and the summary', (t) => {
  for (const line of [
    `${TS}: event 'rtc-change' for domain 'x': 0`,
    `${TS}: event 'balloon-change' for domain 'x': 131072KiB`,
    `${TS}: event 'agent-lifecycle' for domain 'x': state: 'connected' reason: 'channel event'`,
    `${TS}: event 'job-completed' for domain 'x':`,
    '\toperation: 3',
    `${TS}: event 'tunable' for domain 'x':`,
    '\tcputune.vcpu_period: 100000',
    `${TS}: event 'memory-failure' for domain 'x':`,
    'recipient: guest',
    `${TS}: event 'graphics' for domain 'x': connect local[IPv4 127.0.0.1 5900] remote[IPv4 127.0.0.1 40000] none`,
    'events received: 3',
    '',
    'error: Disconnected from qemu:///system due to end of file',
  ])
    t.deepEqual(parseEventLine(line), { kind: 'ignored' }, line);
});

test('names that look like object keys are names, not lookups', (t) => {
  t.deepEqual(parseEventLine(`${TS}: event 'constructor' for domain 'x': y`), { kind: 'ignored' });
  t.deepEqual(parseEventLine(`${TS}: event '__proto__' for domain 'x': y`), { kind: 'ignored' });
  t.deepEqual(parseEventLine(`${TS}: event 'lifecycle' for domain 'x': toString Booted`), {
    kind: 'unreadable',
    type: 'lifecycle',
  });
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain 'constructor': Started Booted`),
    event('lifecycle', 'constructor', 'Started Booted', 'started'),
  );
});

test('a header of a type acted on that does not read as its format is unreadable (everything is read again)', (t) => {
  for (const line of [
    `${TS}: event 'lifecycle' for domain 'x': Started`,
    `${TS}: event 'lifecycle' for domain 'x': Exploded Loudly`,
    `${TS}: event 'lifecycle' for domain 'x'`,
    `${TS}: event 'lifecycle' for domain '': Started Booted`,
    `${TS}: event 'device-added' for domain 'x': two words`,
    `${TS}: event 'memory-device-size-change' for domain 'x': alias virtiomem0 size 1`,
    `${TS}: event 'device-removed' for domain x`,
  ])
    t.deepEqual(parseEventLine(line).kind, 'unreadable', line);
});

test('a name of many quotes ends at the last one', (t) => {
  const name = "'".repeat(8000);
  t.deepEqual(
    parseEventLine(`${TS}: event 'lifecycle' for domain '${name}': Started Booted`),
    event('lifecycle', name, 'Started Booted', 'started'),
  );
  t.is(parseEventLine(`${TS}: event 'lifecycle' for domain '${name}x: Started Booted`).kind, 'unreadable');
});
