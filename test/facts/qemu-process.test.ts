/**
 * Finding the QEMU behind a QMP socket, so that a memory backend's mem-path is measured in QEMU's
 * root and mount namespace: on a fixture proc tree (a decoy listener with the same name included),
 * and on Debian 13's QEMU run chrooted in its tree, where the mem-path QEMU names exists only there.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { QmpClient } from '../../qmp/client';
import { findSocketListener, parseNetUnix, qemuRootOf } from '../../agent/facts/qemu-process';
import { hostPageSize, resolveMemoryDevice } from '../../agent/facts/memory-placement';
import { startGuest, TRIXIE_QEMU } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const NET_UNIX = `Num       RefCount Protocol Flags    Type St Inode Path
00000000b0c8896c: 00000002 00000000 00010000 0001 01 4242 /run/vm.qmp
00000000bbd7de2e: 00000002 00000000 00010000 0001 01 777 /elsewhere/vm.qmp
0000000011111111: 00000003 00000000 00000000 0001 03 5151 /run/vm.qmp
0000000022222222: 00000002 00000000 00010000 0001 01 6161 @abstract
0000000033333333: 00000002 00000000 00000000 0002 01 7171
`;

test('parseNetUnix keeps listening sockets bound to a path', (t) => {
  t.deepEqual(parseNetUnix(NET_UNIX), [
    { inode: 4242, path: '/run/vm.qmp' },
    { inode: 777, path: '/elsewhere/vm.qmp' },
  ]);
});

test('fixture proc tree: the listener whose root holds this very socket file, not a decoy of the same name', async (t) => {
  const dir = tempDir('physbits-procroot-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // QEMU's root: the socket it bound as /run/vm.qmp is <tree>/run/vm.qmp on this side.
  const tree = join(dir, 'tree');
  mkdirSync(join(tree, 'run'), { recursive: true });
  const socket = join(tree, 'run', 'vm.qmp');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(socket, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  // A decoy root with a file of the same name (another QEMU's socket, say).
  mkdirSync(join(dir, 'decoy', 'elsewhere'), { recursive: true });
  writeFileSync(join(dir, 'decoy', 'elsewhere', 'vm.qmp'), '');
  const proc = join(dir, 'proc');
  mkdirSync(join(proc, 'net'), { recursive: true });
  writeFileSync(join(proc, 'net', 'unix'), NET_UNIX);
  for (const [pid, inode, root] of [
    ['99', 777, join(dir, 'decoy')],
    ['1234', 4242, tree],
    ['1300', 5151, tree],
  ] as const) {
    mkdirSync(join(proc, pid, 'fd'), { recursive: true });
    symlinkSync('/dev/null', join(proc, pid, 'fd', '0'));
    symlinkSync(`socket:[${inode}]`, join(proc, pid, 'fd', '5'));
    symlinkSync(root, join(proc, pid, 'root'));
  }
  t.is(await findSocketListener(socket, proc), 1234);
  t.is(await qemuRootOf(socket, proc), join(proc, '1234', 'root'));
  // Nothing listens on another name; an unreadable proc tree finds nothing.
  t.is(await findSocketListener(join(tree, 'run', 'other.qmp'), proc), null);
  t.is(await findSocketListener(socket, join(dir, 'absent')), null);
});

test(`${TRIXIE_QEMU.label} chrooted: QEMU's process is found from its socket, and a mem-path inside its tree is measured there`, async (t) => {
  const qemu = TRIXIE_QEMU;
  const dir = qemu.tempDir('physbits-memroot-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const memPath = qemu.inner(join(dir, 'f1'));
  const guest = await startGuest({
    qemu,
    name: 'chrooted',
    dir,
    memory: '32M,slots=2,maxmem=1G',
    extraArgs: ['-object', `memory-backend-file,id=f1,mem-path=${memPath},size=2M,share=on`],
  });
  t.teardown(() => guest.kill());
  // The path QEMU names does not exist on this side: only in QEMU's root.
  t.false(existsSync(memPath));
  t.is(await findSocketListener(guest.socket), guest.pid);
  const qemuRoot = await qemuRootOf(guest.socket);
  t.is(qemuRoot, `/proc/${guest.pid}/root`);
  t.true(existsSync(join(qemuRoot!, memPath)));

  const client = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
  t.teardown(() => client.close());
  const measured: string[] = [];
  const resolved = await resolveMemoryDevice(
    client,
    { driver: 'pc-dimm', id: 'd1', memdev: 'f1' },
    {
      qemuRoot: qemuRoot!,
      pageSizeOf: async (path) => {
        measured.push(path);
        return hostPageSize(path);
      },
    },
  );
  t.deepEqual(measured, [join(qemuRoot!, memPath)]);
  // statfs answered there (null would mean the path was not found); here it would not have.
  t.is(await hostPageSize(join(qemuRoot!, memPath)), 4096);
  t.is(await hostPageSize(memPath), null);
  t.like(resolved, { size: 2 * 2 ** 20, backend: { type: 'memory-backend-file', pageSize: 4096 } });
  // QEMU's root out of reach (a non-root QEMU under the unit, which has no CAP_SYS_PTRACE): measured
  // here, the path is not found, and the page size is said to be unknown rather than taken as 4 KiB.
  const here = await resolveMemoryDevice(client, { driver: 'pc-dimm', id: 'd1', memdev: 'f1' }, {});
  t.is(here?.backend.unmeasured, memPath);
});

test('real processes: a listener of the same name whose path was swapped for a link to the QMP socket is not taken for QEMU', async (t) => {
  const dir = tempDir('physbits-decoy-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o755);
  const decoyDir = join(dir, 'decoy');
  mkdirSync(decoyDir);
  chownSync(decoyDir, 65534, 65534);
  const vms = join(dir, 'vms');
  mkdirSync(vms);
  // The decoy starts first, so its pid comes first in /proc: uid 65534 binds decoy/vm.qmp, then
  // replaces that path with a link to the guest's socket.
  const decoyPath = join(decoyDir, 'vm.qmp');
  const decoy = spawn(
    '/usr/bin/setpriv',
    [
      '--reuid',
      '65534',
      '--regid',
      '65534',
      '--clear-groups',
      '--',
      process.execPath,
      '-e',
      `require('net').createServer().listen(${JSON.stringify(decoyPath)}, () => process.stdout.write('up\\n'))`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.teardown(() => decoy.kill('SIGKILL'));
  await new Promise<void>((r) => decoy.stdout.once('data', () => r()));
  const guest = await startGuest({ dir: vms, name: 'vm' });
  t.teardown(() => guest.kill());
  t.true(decoy.pid! < guest.pid, `decoy ${decoy.pid} before QEMU ${guest.pid}`);
  rmSync(decoyPath);
  symlinkSync(guest.socket, decoyPath);
  t.is(await findSocketListener(guest.socket), guest.pid);
  t.is(await qemuRootOf(guest.socket), `/proc/${guest.pid}/root`);
});
