#!/usr/bin/env node
/**
 * The protocol floor, run as its own process: every socket at once, greeting, qmp_capabilities,
 * query-cpus-fast, qom-get phys-bits, close. Nothing is judged, validated or bounded beyond what
 * the answer needs; no process can read a guest's phys-bits with less work.
 *
 *   node build/bench/probe-floor.js [--full] [--hold] [--ping-ms N] [--dir DIR] [SOCKET...]
 *
 * --full  issues the same commands, in the same two rounds, as physbits' guest-facts read
 *         (agent/facts/guest-facts.ts): the floor for the whole fact set, not just the width.
 * --hold  keeps every connection after the read and sends query-status on each every --ping-ms
 *         (default 1000), like the daemon's heartbeat, until SIGTERM; --ping-timing together
 *         (default) | aligned | spread: see heartbeat() below.
 * Prints one JSON line: {"ok", "failed", "physBits": {width: count}, "elapsedMs", "commands"}.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WireClient } from './qmp-wire';
import { nowMs } from './stats';

interface ProbeResult {
  client: WireClient | null;
  physBits: number | null;
  commands: number;
}

const MACHINE = '/machine';

function bridgeFrom(list: unknown): string | null {
  if (!Array.isArray(list)) return null;
  const e = list.find(
    (p: { type?: string }) => p?.type === 'child<q35-pcihost>' || p?.type === 'child<i440FX-pcihost>',
  );
  return e ? `${MACHINE}/${(e as { name: string }).name}` : null;
}

async function probeMinimal(c: WireClient): Promise<{ physBits: number | null; commands: number }> {
  const cpus = await c.command('query-cpus-fast');
  const path = (cpus.return as Array<{ 'qom-path': string }> | undefined)?.[0]?.['qom-path'];
  if (!path) return { physBits: null, commands: 2 };
  const pb = await c.command('qom-get', { path, property: 'phys-bits' });
  return { physBits: typeof pb.return === 'number' ? pb.return : null, commands: 3 };
}

/**
 * The same commands as agent/facts/guest-facts.ts readGuestFacts, in its two rounds, decided by the
 * same replies (test/bench/probe-floor.test.ts holds the two lists equal against a scripted QEMU).
 */
export async function probeFull(c: WireClient): Promise<{ physBits: number | null; commands: number }> {
  const get = (path: string, property: string) => c.command('qom-get', { path, property });
  const r1 = await Promise.all([
    c.command('query-cpus-fast'),
    c.command('query-name'),
    c.command('query-version'),
    c.command('query-kvm'),
    c.command('query-status'),
    c.command('query-sev'),
    get(MACHINE, 'type'),
    c.command('qom-list', { path: MACHINE }),
    get(MACHINE, 'device-memory-region-size'),
    get(MACHINE, 'max-ram-below-4g'),
    c.command('query-memory-devices'),
    c.command('query-memory-size-summary'),
    get(MACHINE, 'confidential-guest-support'),
    get(MACHINE, 'memory'),
    c.command('query-pci'),
    c.command('query-uuid'),
    c.command('qom-list-types', { implements: 'pci-device', abstract: false }),
  ]);
  const cpu = (r1[0].return as Array<{ 'qom-path': string }> | undefined)?.[0]?.['qom-path'];
  if (!cpu) return { physBits: null, commands: 1 + r1.length };
  const kvm = (r1[3].return as { enabled?: boolean } | undefined)?.enabled === true;
  const bridge = bridgeFrom(r1[7].return);
  const dm =
    (typeof r1[8].return === 'number' && r1[8].return > 0) ||
    (Array.isArray(r1[7].return) && r1[7].return.some((p: { name?: string }) => p?.name === 'device-memory[0]'));
  const cgs = typeof r1[12].return === 'string' && r1[12].return ? r1[12].return : null;
  const round2 = [
    get(cpu, 'phys-bits'),
    get(cpu, 'host-phys-bits'),
    get(cpu, 'host-phys-bits-limit'),
    get(cpu, 'guest-phys-bits'),
    get(cpu, 'vendor'),
    get(cpu, 'type'),
    ...(kvm ? [] : [c.command('x-query-jit')]),
    ...(bridge
      ? [
          'pci-hole64-start',
          'pci-hole64-end',
          'pci-hole64-size',
          'below-4g-mem-size',
          'above-4g-mem-size',
          'x-pci-hole64-fix',
        ].map((p) => get(bridge, p))
      : []),
    ...(dm ? [get(`${MACHINE}/device-memory[0]`, 'addr'), get(`${MACHINE}/device-memory[0]`, 'size')] : []),
    ...(cgs ? [get(cgs, 'type'), get(cgs, 'reduced-phys-bits')] : []),
  ];
  const r2 = await Promise.all(round2);
  const pb = r2[0].return;
  // Only a host-phys-bits=on guest is asked about an incoming migration.
  const extra = r2[1].return === true ? [await c.command('query-migrate')] : [];
  return { physBits: typeof pb === 'number' ? pb : null, commands: 1 + r1.length + r2.length + extra.length };
}

async function probe(socket: string, full: boolean, hold: boolean): Promise<ProbeResult> {
  let c: WireClient | null = null;
  try {
    c = await WireClient.connect(socket);
    const r = full ? await probeFull(c) : await probeMinimal(c);
    if (!hold) await c.close();
    return { client: hold ? c : null, ...r };
  } catch {
    await c?.close();
    return { client: null, physBits: null, commands: 0 };
  }
}

export type PingTiming = 'together' | 'aligned' | 'spread';

/**
 * One timer per connection, re-armed after each reply, as the daemon's heartbeat is. 'together':
 * every timer armed in the same instant (all connections were read at once); 'aligned': each fires
 * on the next multiple of `ms` of the wall clock; 'spread': the first ping at a random point of the
 * period, as the daemon's timers are (each VM's heartbeat starts when its own read ends).
 */
function heartbeat(c: WireClient, ms: number, timing: PingTiming, first: boolean): void {
  const delay = timing === 'aligned' ? ms - (Date.now() % ms) : timing === 'spread' && first ? Math.random() * ms : ms;
  setTimeout(async () => {
    await c.command('query-status');
    heartbeat(c, ms, timing, false);
  }, delay);
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      full: { type: 'boolean' },
      hold: { type: 'boolean' },
      'ping-ms': { type: 'string' },
      'ping-timing': { type: 'string' },
      dir: { type: 'string' },
    },
  });
  const sockets = [...positionals];
  if (values.dir)
    for (const f of readdirSync(values.dir).sort()) if (f.endsWith('.qmp')) sockets.push(join(values.dir, f));
  const started = nowMs();
  const results = await Promise.all(sockets.map((s) => probe(s, !!values.full, !!values.hold)));
  const elapsedMs = nowMs() - started;
  const physBits: Record<string, number> = {};
  let ok = 0;
  let commands = 0;
  for (const r of results) {
    commands += r.commands;
    if (r.physBits === null) continue;
    ok++;
    physBits[r.physBits] = (physBits[r.physBits] ?? 0) + 1;
  }
  process.stdout.write(JSON.stringify({ ok, failed: sockets.length - ok, physBits, elapsedMs, commands }) + '\n');
  if (!values.hold) return;
  const pingMs = Number(values['ping-ms'] ?? 1000);
  const timing = (values['ping-timing'] ?? 'together') as PingTiming;
  for (const r of results) if (r.client) heartbeat(r.client, pingMs, timing, true);
  process.once('SIGTERM', () => process.exit(0));
}

if (require.main === module) void main();
