import test from 'ava';
import type { Logger } from '../../agent/core/logger';
import { NameCollisions, type NamedVm } from '../../agent/daemon/name-collisions';

function recorder(): { logger: Logger; warnings: Array<Record<string, unknown>> } {
  const warnings: Array<Record<string, unknown>> = [];
  const logger: Logger = {
    error: () => undefined,
    info: () => undefined,
    debug: () => undefined,
    warn: (message, meta) => warnings.push({ message, ...meta }),
    child: () => logger,
  };
  return { logger, warnings };
}

const a: NamedVm = { id: 'aaaaaaaaaaaa', name: 'dup', socket: '/run/qemu/a.qmp' };
const b: NamedVm = { id: 'bbbbbbbbbbbb', name: 'dup', socket: '/run/qemu/b.qmp' };
const c: NamedVm = { id: 'cccccccccccc', name: 'web1', socket: '/run/qemu/c.qmp' };

test('a shared name is warned once, naming every id and socket; a name of its own never', (t) => {
  const { logger, warnings } = recorder();
  const names = new NameCollisions(() => logger);
  names.check(a, [a, c]);
  names.check(c, [a, c]);
  t.deepEqual(warnings, []);
  names.check(b, [a, b, c]);
  names.check(b, [a, b, c]);
  names.check(a, [a, b, c]);
  t.deepEqual(warnings, [
    {
      message: 'VM names collide: the VMs are told apart by their ids',
      vm: 'dup',
      ids: 'aaaaaaaaaaaa,bbbbbbbbbbbb',
      sockets: '/run/qemu/a.qmp,/run/qemu/b.qmp',
    },
  ]);
  t.true(names.has(b.id));
  names.forget(b.id);
  t.false(names.has(b.id));
});

test('a VM renamed onto another name is looked at again; one forgotten no longer counts', (t) => {
  const { logger, warnings } = recorder();
  const names = new NameCollisions(() => logger);
  const web = { ...a, name: 'web1' };
  names.check(a, [a, c]);
  names.check(c, [a, c]);
  names.check(web, [web, c]);
  t.deepEqual(
    warnings.map((w) => w.ids),
    ['aaaaaaaaaaaa,cccccccccccc'],
  );
  names.forget(c.id);
  const d: NamedVm = { id: 'dddddddddddd', name: 'web1', socket: '/run/qemu/d.qmp' };
  names.check(d, [web, d]);
  names.check(b, [web, b, d]);
  t.deepEqual(
    warnings.map((w) => w.ids),
    ['aaaaaaaaaaaa,cccccccccccc', 'aaaaaaaaaaaa,dddddddddddd'],
  );
});
