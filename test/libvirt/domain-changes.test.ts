import test from 'ava';
import { DomainChanges, type ChangeBatch } from '../../agent/libvirt/domain-changes';
import type { DomainChange } from '../../agent/libvirt/libvirt-events';

const plain = (b: ChangeBatch) => ({
  all: b.all,
  started: [...b.started],
  stopped: [...b.stopped],
  changed: [...b.changed],
});

const cases: Array<{
  title: string;
  add: Array<[string, DomainChange] | 'all'>;
  max?: number;
  batch: ReturnType<typeof plain>;
}> = [
  {
    title: 'a burst on one domain is one entry',
    add: [
      ['web1', 'changed'],
      ['web1', 'changed'],
      ['web1', 'changed'],
    ],
    batch: { all: false, started: [], stopped: [], changed: ['web1'] },
  },
  {
    title: 'a restart keeps both the stop and the start',
    add: [
      ['web1', 'stopped'],
      ['web1', 'started'],
      ['db', 'changed'],
    ],
    batch: { all: false, started: ['web1'], stopped: ['web1'], changed: ['db'] },
  },
  {
    title: 'past the bound of domains the batch reads everything',
    max: 2,
    add: [
      ['a', 'changed'],
      ['b', 'changed'],
      ['a', 'started'],
      ['c', 'changed'],
      ['d', 'changed'],
    ],
    batch: { all: true, started: [], stopped: [], changed: [] },
  },
  {
    title: 'within the bound, more events on known domains are kept',
    max: 2,
    add: [
      ['a', 'changed'],
      ['b', 'changed'],
      ['a', 'stopped'],
      ['b', 'started'],
    ],
    batch: { all: false, started: ['b'], stopped: ['a'], changed: ['a', 'b'] },
  },
  {
    title: '"everything" absorbs the rest',
    add: [['a', 'changed'], 'all', ['b', 'started']],
    batch: { all: true, started: [], stopped: [], changed: [] },
  },
];

for (const c of cases)
  test(c.title, (t) => {
    const changes = new DomainChanges(c.max);
    for (const a of c.add)
      if (a === 'all') changes.addAll();
      else changes.add(a[0], a[1]);
    t.false(changes.empty);
    t.deepEqual(plain(changes.take()), c.batch);
    t.true(changes.empty);
    t.is(changes.size, 0);
  });

test('after take() the bound counts from zero again', (t) => {
  const changes = new DomainChanges(1);
  changes.add('a', 'changed');
  changes.take();
  changes.add('b', 'changed');
  t.deepEqual(plain(changes.take()), { all: false, started: [], stopped: [], changed: ['b'] });
});
