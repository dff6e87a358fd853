import test from 'ava';
import fg from 'fast-glob';
import { globBase, guardSocketPath, guardSubdirs } from '../../agent/core/socket-globs';

const dynamic = (segment: string): boolean => fg.isDynamicPattern(segment);

test('the fixed part of a glob: leading directories without pattern characters', (t) => {
  const cases: [string, string][] = [
    ['/run/qemu/*.qmp', '/run/qemu'],
    ['/srv/vms/*/qmp.sock', '/srv/vms'],
    ['/var/lib/libvirt/qemu/domain-*/monitor.sock', '/var/lib/libvirt/qemu'],
    ['/var/run/qemu-server/[0-9]*.qmp', '/var/run/qemu-server'],
    ['/run/qemu/web1.qmp', '/run/qemu'],
    ['/*.qmp', '/'],
    ['/srv/{a,b}/qmp.sock', '/srv'],
    ['/srv/**/qmp.sock', '/srv'],
  ];
  for (const [glob, base] of cases) t.is(globBase(glob, dynamic), base, glob);
});

test('guarded paths mirror the upstream path below the base, and fall back to the file name', (t) => {
  const cases: [string, string | undefined, string][] = [
    ['/run/qemu/web1.qmp', '/run/qemu', '/g/web1.qmp'],
    ['/srv/vms/web1/qmp.sock', '/srv/vms', '/g/web1/qmp.sock'],
    ['/srv/vms/a/b/qmp.sock', '/srv/vms', '/g/a/b/qmp.sock'],
    ['/elsewhere/web1.qmp', '/srv/vms', '/g/web1.qmp'],
    ['/run/qemu/web1.qmp', undefined, '/g/web1.qmp'],
    ['/run/qemu', '/run/qemu', '/g/qemu'],
  ];
  for (const [upstream, base, want] of cases) t.is(guardSocketPath('/g', upstream, base), want, upstream);
  t.deepEqual(guardSubdirs('/g', '/g/a/b/qmp.sock'), ['/g/a', '/g/a/b']);
  t.deepEqual(guardSubdirs('/g', '/g/web1.qmp'), []);
});
