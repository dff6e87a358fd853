/**
 * Faults among 20 real guests under one physbitsd: 10 rounds, each SIGKILLing one QEMU and
 * SIGSTOPping another right after a command through its guarded socket (the daemon is mid-read
 * from the STOP/RESUME event, and mid-proxy). The daemon stays up, the others keep answering, the
 * broken ones turn unknown (how soon is logged, not asserted: it is the heartbeat's timeout plus
 * the machine's load) and come back once restarted or continued. Then the daemon
 * itself is SIGKILLed with undelivered alerts in its spool and restarted: stale sockets are
 * replaced, every guarded socket comes back, and every spooled alert is delivered. The guests run
 * on both QEMUs at once (this machine's 7.2 and Debian 13's 10.0, two by two: g00 g01 on the first,
 * g02 g03 on the second, ...), so the rounds alternate between the QEMUs.
 */
import test from 'ava';
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { StatusDocument } from '../../agent/core/types';
import { LineClient, startDaemon, vmNamed, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { freePort, startReceiver } from '../helpers/alertmanager';
import { QEMUS, startGuest, type Guest, type Qemu } from '../helpers/qemu';

const N = 20;
const ROUNDS = 10;
const name = (i: number): string => `g${String(i).padStart(2, '0')}`;

/** `promise`, or a rejection naming `what` once `ms` have passed. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

const judged = (doc: StatusDocument, vm: string): boolean => {
  const s = vmNamed(doc, vm);
  return !!s && !s.error && !!s.verdict;
};

/** Ids of the webhook deliveries still pending in the spool log (the last state of each entry). */
function pendingSpoolIds(spoolDir: string): Map<string, string> {
  const ops = readFileSync(join(spoolDir, 'alerts.log'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map(
      (l) =>
        JSON.parse(l) as {
          op: string;
          seq: number;
          id?: string;
          pending?: string[];
          sinks?: string[];
          rec?: { labels: { reason: string; vm: string } };
        },
    );
  const bySeq = new Map<number, { id: string; pending: Set<string>; label: string }>();
  for (const o of ops) {
    if (o.op === 'put')
      bySeq.set(o.seq, {
        id: o.id!,
        pending: new Set(o.pending),
        label: `${o.rec!.labels.vm}/${o.rec!.labels.reason}`,
      });
    else if (o.op === 'settle') for (const s of o.sinks ?? []) bySeq.get(o.seq)?.pending.delete(s);
    else if (o.op === 'del') bySeq.delete(o.seq);
  }
  return new Map([...bySeq.values()].filter((e) => e.pending.size > 0).map((e) => [e.id, e.label]));
}

/** The QEMU guest `i` runs on: pairs alternate between the QEMUs. */
const qemuOf = (i: number): Qemu => QEMUS[Math.floor(i / 2) % QEMUS.length];

/** A directory every QEMU reaches: inside the tree of a chrooted one, if any. */
const sharedDir = (prefix: string): string => (QEMUS.find((q) => q.tree) ?? QEMUS[0]).tempDir(prefix);

async function startAll(dir: string): Promise<Guest[]> {
  const guests: Guest[] = [];
  for (let i = 0; i < N; i += 4) {
    const batch = await Promise.all(
      [0, 1, 2, 3]
        .filter((k) => i + k < N)
        .map((k) =>
          startGuest({
            dir: join(dir, 'vms'),
            name: name(i + k),
            cpu: `phys-bits=${(i + k) % 2 ? 46 : 40}`,
            qemu: qemuOf(i + k),
          }),
        ),
    );
    guests.push(...batch);
  }
  return guests;
}

async function allGuardedAnswer(dir: string): Promise<void> {
  await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const { client } = await LineClient.negotiated(join(dir, 'guard', `${name(i)}.qmp`));
      try {
        const r = await client.command(`{"execute":"query-status","id":"${name(i)}"}`, name(i));
        if (!('return' in r)) throw new Error(`${name(i)}: ${JSON.stringify(r)}`);
      } finally {
        await client.close();
      }
    }),
  );
}

test.serial(
  `${QEMUS.map((q) => q.label).join(' and ')}: 20 guests: SIGKILL / SIGSTOP mid-query and mid-proxy, 10 rounds; then the daemon SIGKILLed and restarted`,
  async (t) => {
    // Ten rounds of faults among 20 guests outlast AVA's default of 120 s between results on a loaded machine.
    t.timeout(900_000, 'the fault rounds and the daemon restart');
    const dir = sharedDir('physbits-faults-');
    mkdirSync(join(dir, 'vms'));
    const guests: Guest[] = [];
    t.teardown(async () => {
      for (const g of guests) {
        try {
          process.kill(g.pid, 'SIGCONT');
        } catch {
          /* gone */
        }
      }
      await Promise.all(guests.map((g) => g.kill()));
      rmSync(dir, { recursive: true, force: true });
    });
    guests.push(...(await startAll(dir)));
    const port = await freePort();
    // A SIGSTOPped QEMU is found by the heartbeat; its timeout leaves a guest that is merely slow to be
    // scheduled on a loaded machine (20 of them here) time to answer, so bystanders stay judged.
    const config = {
      qmp: { timeoutMs: 5000, heartbeatMs: 500, heartbeatTimeoutMs: 5000 },
      alerts: { webhooks: [{ url: `http://127.0.0.1:${port}/hook` }], retryMaxSeconds: 2 },
    };
    let d: DaemonProcess = await startDaemon({ dir, config });
    t.teardown(() => d.kill());
    const everyone = Array.from({ length: N }, (_, i) => name(i));
    const first = await d.waitForStatus((s) => everyone.every((vm) => judged(s, vm)), 'all 20 verdicts', 90000);
    // Each guest was read from the QEMU it runs on.
    t.deepEqual(
      everyone.map((vm) => `QEMU ${/^\d+\.\d+/.exec(vmNamed(first, vm)!.guest!.qemuVersion)![0]}`),
      everyone.map((_, i) => qemuOf(i).label),
    );
    await waitUntil(
      () => everyone.every((vm) => existsSync(join(dir, 'guard', `${vm}.qmp`))),
      'all guarded sockets',
      10000,
    );
    const startMem = d.memory();

    let faults = 0;
    let othersBroken = 0;
    let snapshots = 0;
    const detect: number[] = [];
    const recover: number[] = [];
    // A bystander's guarded socket, asked throughout.
    const bystander = (await LineClient.negotiated(join(dir, 'guard', `${name(N - 1)}.qmp`))).client;
    t.teardown(() => bystander.close());
    let asks = 0;

    for (let r = 0; r < ROUNDS; r++) {
      const ki = (2 * r) % (N - 1);
      const si = (2 * r + 1) % (N - 1);
      const victims = [name(ki), name(si)];
      // Commands through the guarded sockets; their STOP/RESUME events make the daemon re-read.
      const clients = await Promise.all(
        victims.map(async (vm) => (await LineClient.negotiated(join(dir, 'guard', `${vm}.qmp`))).client),
      );
      // Once the replies are back, QEMU's STOP/RESUME event has reached the daemon (QEMU sends it
      // before the reply) and its re-read is under way; a query is then sent, and the faults follow.
      await Promise.all([
        clients[0].command(`{"execute":"${r % 2 ? 'stop' : 'cont'}","id":"k${r}"}`, `k${r}`),
        clients[1].command(`{"execute":"${r % 2 ? 'stop' : 'cont'}","id":"s${r}"}`, `s${r}`),
      ]);
      clients[0].send('{"execute":"query-status","id":"after-kill"}');
      clients[1].send('{"execute":"query-status","id":"after-stop"}');
      process.kill(guests[ki].pid, 'SIGKILL');
      process.kill(guests[si].pid, 'SIGSTOP');
      faults += 2;
      const t0 = Date.now();
      const down = await waitUntil(
        async () => {
          const doc = await d.status();
          snapshots++;
          othersBroken += everyone.filter((vm) => !victims.includes(vm) && !judged(doc, vm)).length;
          return victims.every((vm) => vmNamed(doc, vm)?.error) ? doc : null;
        },
        `round ${r}: both victims unknown`,
        60000,
        100,
      );
      detect.push(Date.now() - t0);
      t.is(vmNamed(down, victims[0])!.error!.code === 'PENDING', false);
      // The bystander still answers.
      t.like(await bystander.command(`{"execute":"query-status","id":${++asks}}`, asks), { id: asks });
      // The guarded clients of the broken guests are let go, not left hanging.
      await Promise.all(
        clients.map((c, i) =>
          within(c.ended, 30000, `round ${r}: the guarded client of ${victims[i]} to be disconnected`),
        ),
      );

      process.kill(guests[si].pid, 'SIGCONT');
      await guests[ki].kill();
      guests[ki] = await startGuest({
        dir: join(dir, 'vms'),
        name: name(ki),
        cpu: `phys-bits=${ki % 2 ? 46 : 40}`,
        qemu: qemuOf(ki),
      });
      const t1 = Date.now();
      await d.waitForStatus((s) => victims.every((vm) => judged(s, vm)), `round ${r}: victims back`, 60000);
      recover.push(Date.now() - t1);
      await d.waitForStatus(
        (s) => victims.every((vm) => !!vmNamed(s, vm)?.guardSocket && existsSync(join(dir, 'guard', `${vm}.qmp`))),
        `round ${r}: guarded sockets back`,
        30000,
      );
    }
    t.is(d.proc.exitCode, null);
    t.is(othersBroken, 0, `bystanders seen unknown ${othersBroken} times in ${snapshots} snapshots`);
    const maxDetect = Math.max(...detect);
    const maxRecover = Math.max(...recover);
    const afterFaults = d.memory();

    // Refusals on three guests: alerts the webhook (down) has not received, held in the spool.
    for (const vm of [name(1), name(2), name(3)]) {
      const { client } = await LineClient.negotiated(join(dir, 'guard', `${vm}.qmp`));
      const reply = await client.command(
        `{"execute":"device_add","arguments":{"driver":"pc-dimm","id":"big","memdev":"nope","addr":${2 ** 41}},"id":"r"}`,
        'r',
      );
      t.regex(String((reply.error as { desc?: string } | undefined)?.desc), /^refused by physbits guard: /);
      await client.close();
    }
    const spoolDir = join(dir, 'spool');
    const pending = await waitUntil(
      () => {
        const p = pendingSpoolIds(spoolDir);
        const labels = new Set(p.values());
        return [1, 2, 3].every((i) => [...labels].some((l) => l.startsWith(`${name(i)}/REFUSED_`))) ? p : null;
      },
      'the refusals in the spool',
      10000,
    );

    await d.kill();
    t.true(lstatSync(d.apiSocket).isSocket(), 'a stale API socket is left behind');
    t.true(lstatSync(join(dir, 'guard', `${name(0)}.qmp`)).isSocket(), 'stale guarded sockets are left behind');
    const rx = await startReceiver(port);
    t.teardown(() => rx.close());
    const t2 = Date.now();
    d = await startDaemon({ dir, config });
    // A VM is judged before its guarded socket is published (the stale file of the killed daemon is
    // still there until then): wait for both.
    await d.waitForStatus(
      (s) => everyone.every((vm) => judged(s, vm) && !!vmNamed(s, vm)?.guardSocket),
      'all 20 verdicts and guarded sockets after the restart',
      90000,
    );
    await allGuardedAnswer(dir);
    const restartMs = Date.now() - t2;
    const delivered = new Set<string>();
    await waitUntil(
      () => {
        for (const req of rx.requests.splice(0))
          for (const a of (JSON.parse(req.body) as { alerts: Array<{ id: string }> }).alerts) delivered.add(a.id);
        return [...pending.keys()].every((id) => delivered.has(id));
      },
      'every spooled alert delivered',
      20000,
    ).catch(() => undefined);
    const lost = [...pending].filter(([id]) => !delivered.has(id)).map(([, label]) => label);
    t.deepEqual(lost, []);
    const peak = d.memory();
    const st = await d.stop();
    t.is(st.code, 0);
    t.log(`faults injected: ${faults} (${ROUNDS} rounds of SIGKILL + SIGSTOP) and 1 daemon SIGKILL`);
    t.log(
      `unknown within ${Math.min(...detect)}..${maxDetect} ms; back within ${Math.min(...recover)}..${maxRecover} ms of restart/SIGCONT`,
    );
    t.log(`bystanders: ${snapshots} status snapshots, ${othersBroken} unknown; ${asks} bystander commands answered`);
    t.log(
      `daemon memory: RSS ${startMem.rssKb} kB at start, ${afterFaults.rssKb} kB after the faults, peak ${afterFaults.hwmKb} kB; second run peak ${peak.hwmKb} kB`,
    );
    t.log(
      `daemon restart to all 20 guarded sockets answering: ${restartMs} ms; spooled alerts: ${pending.size}, delivered after the restart: ${pending.size - lost.length}, lost: ${lost.length}`,
    );
    t.true(afterFaults.hwmKb < 400 * 1024);
  },
);
