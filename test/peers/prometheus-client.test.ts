/**
 * A large Prometheus answer does not stall the process that reads it: a scripted server on loopback
 * answers every query with a 20 MB instant vector; the reader's event loop is measured with
 * perf_hooks.monitorEventLoopDelay meanwhile.
 */
import test from 'ava';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { configSchema } from '../../agent/core/config-schema';
import { PrometheusClient, PrometheusError } from '../../agent/peers/prometheus-client';
import { readPrometheusFleet } from '../../agent/peers/prometheus-fleet';
import { startBigAnswerServer } from '../helpers/big-prometheus';

/**
 * The event loop watched while `work` runs: the longest wall-clock delay (monitorEventLoopDelay; on a
 * loaded machine it counts the time other processes had the CPU) and the most CPU time the process
 * spent between two turns of a setImmediate ticker (what the reader itself blocks for, whatever the load).
 */
async function watchLoop<T>(work: () => Promise<T>): Promise<{ result: T; wallMs: number; cpuMs: number }> {
  const delay = monitorEventLoopDelay({ resolution: 5 });
  let cpuMs = 0;
  let last = process.cpuUsage();
  let running = true;
  const tick = () => {
    const now = process.cpuUsage();
    cpuMs = Math.max(cpuMs, (now.user - last.user + now.system - last.system) / 1000);
    last = now;
    if (running) setImmediate(tick);
  };
  delay.enable();
  setImmediate(tick);
  try {
    const result = await work();
    return { result, wallMs: delay.max / 1e6, cpuMs };
  } finally {
    running = false;
    delay.disable();
  }
}

test.serial('a 20 MB answer is read without blocking the event loop for more than a few tens of ms', async (t) => {
  const url = await startBigAnswerServer(t, 20);
  const client = new PrometheusClient({ url, timeoutMs: 60000, maxBytes: 64 * 1024 * 1024, maxSeries: 1_000_000 });
  const { result: samples, wallMs, cpuMs } = await watchLoop(() => client.query('physbits_host_info', 1700000000));
  t.true(samples.length > 80_000, String(samples.length));
  t.is(samples[12345].labels.host, 'hv12345');
  t.log(
    `20 MB answer, ${samples.length} series: most CPU between two turns ${cpuMs.toFixed(1)} ms, longest delay ${wallMs.toFixed(1)} ms`,
  );
  // The readers give the loop a turn after every 8 ms of work; JSON.parse of the whole answer alone
  // took 150 to 270 ms of CPU here. The bound is generous: a garbage collection's threads count too.
  t.true(cpuMs < 100, `most CPU between two turns of the event loop: ${cpuMs.toFixed(1)} ms`);
});

test.serial('seven 20 MB answers in one ask: one budget for all, a typed error, the loop kept turning', async (t) => {
  const url = await startBigAnswerServer(t, 20);
  const fleet = configSchema.parse({ fleet: { prometheus: url } }).fleet;
  const client = new PrometheusClient({
    url,
    timeoutMs: 60000,
    maxBytes: fleet.maxResponseBytes,
    maxSeries: fleet.maxSeries,
  });
  const heapBefore = process.memoryUsage().heapUsed;
  const {
    result: err,
    wallMs,
    cpuMs,
  } = await watchLoop(() =>
    readPrometheusFleet(client, fleet).then(
      () => null,
      (e: unknown) => e as PrometheusError,
    ),
  );
  if (!(err instanceof PrometheusError)) return t.fail('the ask did not fail');
  // 64 MiB and 200,000 series across the seven answers: whichever is passed first.
  t.true(['PROM_RESPONSE_TOO_LARGE', 'PROM_TOO_MANY_SERIES'].includes(err.code), err.code);
  t.regex(
    err.message,
    /the answers of one ask passed fleet\.(maxResponseBytes \(67108864 bytes\)|maxSeries \(200000 series\))/,
  );
  const heapMb = (process.memoryUsage().heapUsed - heapBefore) / 1e6;
  t.log(
    `7 x 20 MB: ${err!.code}; most CPU between two turns ${cpuMs.toFixed(1)} ms, longest delay ${wallMs.toFixed(1)} ms; heap +${heapMb.toFixed(0)} MB`,
  );
  t.true(cpuMs < 100, `most CPU between two turns of the event loop: ${cpuMs.toFixed(1)} ms`);
});

test.serial('past fleet.maxHosts is PROM_TOO_MANY_HOSTS', async (t) => {
  const url = await startBigAnswerServer(t, 0.5);
  const fleet = configSchema.parse({ fleet: { prometheus: url, maxHosts: 100 } }).fleet;
  const client = new PrometheusClient({ url, timeoutMs: 60000, maxBytes: fleet.maxResponseBytes });
  const err = (await t.throwsAsync(readPrometheusFleet(client, fleet))) as PrometheusError;
  t.is(err.code, 'PROM_TOO_MANY_HOSTS');
  t.regex(err.message, /more than fleet\.maxHosts \(100\) hosts$/);
});
