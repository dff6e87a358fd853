import test from 'ava';
import { findVms, type FindableVm } from '../../agent/daemon/find-vms';

const a: FindableVm = { id: 'aaaaaaaaaaaa', name: 'dup', socket: '/run/qemu/a.qmp' };
const b: FindableVm = { id: 'bbbbbbbbbbbb', name: 'dup', socket: '/run/qemu/b.qmp' };
const c: FindableVm = { id: 'cccccccccccc', name: '/run/qemu/a.qmp', socket: 'libvirt:web1' };
const all = [a, b, c];

const cases: Array<[string, string, FindableVm[]]> = [
  ['an id names its one VM', 'bbbbbbbbbbbb', [b]],
  ['a shared name names every VM that has it', 'dup', [a, b]],
  ['a name wins over another VM socket path', '/run/qemu/a.qmp', [c]],
  ['a socket path names its VM', 'libvirt:web1', [c]],
  ['a path only a socket has', '/run/qemu/b.qmp', [b]],
  ['a key nothing has names none', 'nope', []],
];

for (const [title, key, want] of cases)
  test(`findVms: ${title}`, (t) => {
    t.deepEqual(findVms(all, key), want);
  });

test('findVms: an id wins over a name that equals it', (t) => {
  const named: FindableVm = { id: 'dddddddddddd', name: 'aaaaaaaaaaaa', socket: '/run/qemu/d.qmp' };
  t.deepEqual(findVms([named, a], 'aaaaaaaaaaaa'), [a]);
});
