#!/usr/bin/env node
/**
 * The guard's hop, variant against variant: each given physbitsd bundle holds its own paused guest
 * and serves its guarded socket, and a bare byte pipe (bench/pipe-proxy-floor.ts) leads to one more
 * guest; one client sends query-status round trips on each path, the paths taken in turn, run after
 * run, so that the machine's load falls on all of them alike. For working on the hop: the bench's
 * guard section is the figure of record.
 *
 *   node build/bench/guard-hop-ab.js [--runs 8] [--trips 2000] [--bundle NAME=FILE.js]...
 *
 * Without --bundle, the checkout's own bundle is the one variant. Prints, per run and as medians, each
 * path's p50, throughput and the CPU per command of the process in the path, and each variant's
 * ratios to the pipe of the same run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startGuest, type Guest } from '../test/helpers/qemu';
import { benchConfig, packagedPrograms, unitNodeFlags, writeConfig } from './daemon-proc';
import { runtimeDir, stateDir } from './dirs';
import { firstLine, killTracked, stopChild, threadCpuMs, track } from './proc';
import { WireClient } from './qmp-wire';
import { fmt, nowMs, percentile, sleep, spread } from './stats';

interface Path {
  name: string;
  socket: string;
  pid: number;
}

interface Figures {
  p50: number;
  throughput: number;
  cpuUs: number;
}

async function roundTrips(client: WireClient, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = nowMs();
    const r = await client.command('query-status');
    out.push(nowMs() - t0);
    if (r.error) throw new Error(`query-status failed: ${r.error.desc}`);
  }
  return out;
}

async function measure(path: Path, trips: number): Promise<Figures> {
  const client = await WireClient.connect(path.socket);
  try {
    await roundTrips(client, Math.ceil(trips / 10));
    const cpu0 = threadCpuMs(path.pid);
    const started = nowMs();
    const lat = await roundTrips(client, trips);
    const elapsed = nowMs() - started;
    return {
      p50: percentile(lat, 50) * 1000,
      throughput: (trips / elapsed) * 1000,
      cpuUs: ((threadCpuMs(path.pid) - cpu0) * 1000) / trips,
    };
  } finally {
    await client.close();
  }
}

async function main(): Promise<void> {
  process.on('exit', killTracked);
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '8' },
      trips: { type: 'string', default: '2000' },
      bundle: { type: 'string', multiple: true },
      /** Another proxy program (NAME=FILE.js, run as `node FILE.js --listen P --upstream P` to the pipe's guest). */
      proxy: { type: 'string', multiple: true },
      /** Another node option for every daemon (e.g. --cpu-prof --cpu-prof-dir=DIR). */
      'node-arg': { type: 'string', multiple: true },
      /** A proxy program that holds a guest of its own (NAME=FILE.js, run with --listen P --upstream GUEST). */
      held: { type: 'string', multiple: true },
      /** Where the daemons' logs go (kept); default a temporary directory, removed at the end. */
      'log-dir': { type: 'string' },
    },
  });
  const runs = Number(values.runs);
  const trips = Number(values.trips);
  // NAME=FILE.js, or NAME=FILE.js followed by node options for that daemon alone.
  const bundles = (values.bundle ?? []).map((b) => {
    const at = b.indexOf('=');
    const [file, ...nodeArgs] = b.slice(at + 1).split(' ');
    return { name: b.slice(0, at), file, nodeArgs };
  });
  if (bundles.length === 0)
    bundles.push({ name: 'checkout', file: (await packagedPrograms()).physbitsd, nodeArgs: [] });
  const dir = runtimeDir('physbits-guard-ab-');
  const state = stateDir('physbits-guard-ab-');
  const guests: Guest[] = [];
  const children: ChildProcess[] = [];
  const paths: Path[] = [];
  try {
    const same = { memory: '16M', cpu: 'phys-bits=40', socketName: 'vm.qmp' };
    mkdirSync(join(dir, 'direct'));
    const direct = await startGuest({ ...same, dir: join(dir, 'direct') });
    guests.push(direct);
    const piped = join(dir, 'pipe.qmp');
    const pipe = spawn(
      process.execPath,
      [join(__dirname, 'pipe-proxy-floor.js'), '--listen', piped, '--upstream', direct.socket],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    track(pipe.pid, pipe);
    children.push(pipe);
    await firstLine(pipe, 15000);
    paths.push({ name: 'pipe', socket: piped, pid: pipe.pid! });
    for (const spec of values.proxy ?? []) {
      const [name, ...rest] = spec.split('=');
      const [file, ...extra] = rest.join('=').split(' ');
      const listen = join(dir, `${name}.qmp`);
      const child = spawn(process.execPath, [file, ...extra, '--listen', listen, '--upstream', direct.socket], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      track(child.pid, child);
      children.push(child);
      await firstLine(child, 15000);
      paths.push({ name, socket: listen, pid: child.pid! });
    }
    for (const spec of values.held ?? []) {
      const [name, ...rest] = spec.split('=');
      const [file, ...extra] = rest.join('=').split(' ');
      const own = join(dir, `${name}-guest`);
      mkdirSync(own);
      const guest = await startGuest({ ...same, dir: own });
      guests.push(guest);
      const listen = join(dir, `${name}.qmp`);
      const child = spawn(process.execPath, [file, ...extra, '--listen', listen, '--upstream', guest.socket], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      track(child.pid, child);
      children.push(child);
      await firstLine(child, 15000);
      paths.push({ name, socket: listen, pid: child.pid! });
    }
    for (const b of bundles) {
      const base = join(dir, b.name);
      const watched = join(base, 'vms');
      mkdirSync(watched, { recursive: true });
      const guest = await startGuest({ ...same, dir: watched });
      guests.push(guest);
      const configPath = join(base, 'config.json');
      writeConfig(
        configPath,
        benchConfig(base, {
          host: { physBits: 40 },
          discovery: { sockets: [join(watched, '*.qmp')] },
          alerts: { spoolDir: join(state, b.name, 'spool') },
        }),
      );
      const fd = openSync(join(values['log-dir'] ?? state, `${b.name}.log`), 'a');
      const child = spawn(
        process.execPath,
        [...unitNodeFlags(), ...(values['node-arg'] ?? []), ...b.nodeArgs, b.file, '--config', configPath],
        {
          stdio: ['ignore', fd, fd],
        },
      );
      closeSync(fd);
      track(child.pid, child);
      children.push(child);
      const guarded = join(base, 'guard', 'vm.qmp');
      const deadline = Date.now() + 30000;
      while (!existsSync(guarded)) {
        if (Date.now() > deadline) throw new Error(`${b.name}: no guarded socket; see ${state}/${b.name}.log`);
        await sleep(50);
      }
      paths.push({ name: b.name, socket: guarded, pid: child.pid! });
    }
    await sleep(500);
    const results = new Map<string, Figures[]>(paths.map((p) => [p.name, []]));
    process.stdout.write(
      `load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}\n`,
    );
    for (let r = 0; r < runs; r++) {
      // Rotate the order, so that no path always follows the same one.
      const order = paths.map((_, i) => paths[(i + r) % paths.length]);
      const line: string[] = [];
      for (const p of order) {
        const f = await measure(p, trips);
        results.get(p.name)!.push(f);
      }
      const pipe = results.get('pipe')![r];
      for (const p of paths) {
        const f = results.get(p.name)![r];
        const rel =
          p.name === 'pipe' ? '' : ` (${fmt(f.p50 / pipe.p50)}× p50, ${fmt(f.throughput / pipe.throughput)}× tput)`;
        line.push(`${p.name} ${fmt(f.p50)} µs ${fmt(f.throughput)}/s cpu ${fmt(f.cpuUs)} µs${rel}`);
      }
      process.stdout.write(`run ${r + 1}: ${line.join(' | ')}\n`);
    }
    const pipeRuns = results.get('pipe')!;
    for (const p of paths) {
      const f = results.get(p.name)!;
      const p50 = spread(f.map((x) => x.p50));
      const cpu = spread(f.map((x) => x.cpuUs));
      const tput = spread(f.map((x) => x.throughput));
      let rel = '';
      if (p.name !== 'pipe') {
        const rp = spread(f.map((x, i) => x.p50 / pipeRuns[i].p50));
        const rt = spread(f.map((x, i) => x.throughput / pipeRuns[i].throughput));
        rel = `; vs pipe p50 ${fmt(rp.median)}× (${fmt(rp.min)}–${fmt(rp.max)}), tput ${fmt(rt.median)}× (${fmt(rt.min)}–${fmt(rt.max)})`;
      }
      process.stdout.write(
        `${p.name}: p50 ${fmt(p50.median)} µs (${fmt(p50.min)}–${fmt(p50.max)}), ${fmt(tput.median)}/s, cpu ${fmt(cpu.median)} µs (${fmt(cpu.min)}–${fmt(cpu.max)})${rel}\n`,
      );
    }
    process.stdout.write(
      `load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}\n`,
    );
  } finally {
    for (const c of children) await stopChild(c);
    await Promise.all(guests.map((g) => g.kill()));
    rmSync(dir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
