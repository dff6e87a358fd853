/**
 * A guest-triggered event flood (SECURITY.md promise 16): a guest looping on the ACPI memory-hotplug
 * status port makes QEMU emit ACPI_DEVICE_OST tens of thousands of times a second. QEMU will not do
 * that on demand without a guest program, so a scripted QMP server emits 50 000 a second for 3 s to
 * the built daemon. Full facts reads (counted by their query-name) stay at about one a second, and the
 * daemon's CPU time over the flood is logged (from /proc/<pid>/stat).
 */
import test from 'ava';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, sleep, vmNamed } from '../helpers/daemon';
import { startFakeQmp } from '../helpers/fake-qmp';
import { tempDir } from '../helpers/tmp';

/** User + system CPU seconds of a process. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

test('50 000 ACPI_DEVICE_OST events a second cost one full read a second, not one per event', async (t) => {
  const dir = tempDir('physbits-flood-');
  mkdirSync(join(dir, 'vms'));
  const fake = await startFakeQmp({ dir: join(dir, 'vms'), socketName: 'looping.qmp', vm: { name: 'looping' } });
  t.teardown(() => fake.close());
  const d = await startDaemon({ dir });
  t.teardown(() => d.kill());
  await d.waitForStatus((s) => !!vmNamed(s, 'looping')?.verdict, 'the VM judged');
  await sleep(1500);
  const reads = () => fake.commands.filter((c) => c.name === 'query-name').length;
  const readsBefore = reads();
  const cpuBefore = cpuSeconds(d.pid);
  const started = Date.now();
  let sent = 0;
  while (Date.now() - started < 3000) {
    for (let i = 0; i < 5000; i++)
      fake.emitEvent('ACPI_DEVICE_OST', {
        info: { device: 'dimm0', slot: '0', 'slot-type': 'DIMM', source: 1, status: 0 },
      });
    sent += 5000;
    await sleep(100);
  }
  const seconds = (Date.now() - started) / 1000;
  await sleep(1500);
  const fullReads = reads() - readsBefore;
  const cpu = cpuSeconds(d.pid) - cpuBefore;
  t.log(`${sent} events in ${seconds.toFixed(1)} s: ${fullReads} full reads, daemon CPU ${cpu.toFixed(2)} s`);
  t.true(fullReads <= Math.ceil(seconds + 1.5) + 1, `${fullReads} full reads in ${seconds.toFixed(1)} s of flood`);
  t.true(fullReads >= 2, 'the flood still makes the VM be read again');
  const doc = await d.status();
  t.is(vmNamed(doc, 'looping')!.error, undefined);
});
