import test from 'ava';
import { guardSocketOwner, type GuardSocketOwner } from '../../agent/daemon/guard-attach';

const rows: { title: string; upstream: GuardSocketOwner; group?: number; expected: GuardSocketOwner }[] = [
  {
    title: 'a configured group: 0660 to that group, the upstream owner kept',
    upstream: { mode: 0o600, uid: 64055, gid: 64055 },
    group: 118,
    expected: { mode: 0o660, uid: 64055, gid: 118 },
  },
  {
    title: 'no group: the owner bits of the upstream, owned like it',
    upstream: { mode: 0o600, uid: 64055, gid: 994 },
    expected: { mode: 0o600, uid: 64055, gid: 994 },
  },
  {
    title: 'no group: a world-open upstream gives no group or other bits',
    upstream: { mode: 0o777, uid: 0, gid: 0 },
    expected: { mode: 0o600, uid: 0, gid: 0 },
  },
  {
    title: 'no group: an owner bit the upstream lacks stays off',
    upstream: { mode: 0o460, uid: 1000, gid: 1000 },
    expected: { mode: 0o400, uid: 1000, gid: 1000 },
  },
];

for (const row of rows) {
  test(`guarded socket owner: ${row.title}`, (t) => {
    t.deepEqual(guardSocketOwner(row.upstream, row.group), row.expected);
  });
}
