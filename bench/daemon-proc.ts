/**
 * The real daemon as the benchmarks run it, as the package installs it: `node [the unit's node flags]
 * physbitsd.js --config FILE`, where physbitsd.js is the packaged bundle (contrib/package/bundle.ts,
 * /usr/lib/physbits/physbitsd.js once installed), built once per benchmark run; its log in a file,
 * its API read over the UNIX control socket. The node flags are read from
 * systemd/physbitsd.service's ExecStart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StatusDocument } from '../agent/core/types';
import { readBuildInfo } from '../contrib/package/build-info';
import { bundle } from '../contrib/package/bundle';
import { stopChild, track } from './proc';
import { sleep, wallMs } from './stats';

export const BUILD = join(__dirname, '..');
export const PHYSBITSCTL = join(BUILD, 'agent', 'bin', 'physbitsctl.js');
export const UNIT_FILE = join(BUILD, '..', 'systemd', 'physbitsd.service');

/**
 * The node options in a unit's `ExecStart=/usr/bin/node [FLAG...] /…/physbitsd.js …`: the words
 * between the node binary and the daemon's script. Anything else (several ExecStart lines, another
 * program, quoting, a word that is not an option) is refused, so the benchmark cannot silently run
 * the daemon differently from the unit.
 */
export function nodeFlagsOfUnit(unitText: string): string[] {
  const lines = unitText
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('ExecStart='));
  if (lines.length !== 1) throw new Error(`expected one ExecStart= line in the unit, found ${lines.length}`);
  const line = lines[0];
  if (/["'\\]/.test(line)) throw new Error(`ExecStart with quoting or escapes is not understood here: ${line}`);
  const words = line.slice('ExecStart='.length).trim().split(/\s+/);
  const script = words.findIndex((w) => w.endsWith('/physbitsd.js'));
  if (!/(^|\/)node$/.test(words[0].replace(/^[-@:+!]+/, '')) || script < 1)
    throw new Error(`ExecStart is not "node [FLAG...] …/physbitsd.js …": ${line}`);
  const flags = words.slice(1, script);
  const bad = flags.find((f) => !/^--[a-z0-9-]+(=\S+)?$/.test(f));
  if (bad !== undefined) throw new Error(`ExecStart node option "${bad}" is not of the form --name[=value]`);
  return flags;
}

let packaged: Promise<{ physbitsd: string; physbitsctl: string }> | null = null;

/** The packaged programs (the .deb's /usr/lib/physbits/*.js), bundled on first use in this process. */
export function packagedPrograms(): Promise<{ physbitsd: string; physbitsctl: string }> {
  packaged ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'physbits-bench-bundle-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    return (await bundle(dir, readBuildInfo())).files;
  })();
  return packaged;
}

/** The node options systemd/physbitsd.service starts the daemon with. */
export function unitNodeFlags(): string[] {
  return nodeFlagsOfUnit(readFileSync(UNIT_FILE, 'utf8'));
}

export interface DaemonProc {
  child: ChildProcess;
  pid: number;
  /** Wall-clock ms when spawn() was called. */
  spawnedAt: number;
  apiSocket: string;
  logPath: string;
  stop(): Promise<void>;
}

/** A config with every path under `dir` and quiet logs; `extra` is merged key by key at the top level. */
export function benchConfig(
  dir: string,
  extra: Record<string, Record<string, unknown> | unknown[]>,
): Record<string, unknown> {
  const base: Record<string, Record<string, unknown> | unknown[]> = {
    guard: { socketDir: join(dir, 'guard') },
    api: { socket: join(dir, 'api.sock') },
    metrics: { listen: '127.0.0.1:0' },
    alerts: { spoolDir: join(dir, 'spool') },
    log: { level: 'warn', format: 'text' },
  };
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const b = base[k];
    out[k] = Array.isArray(v) || !b || Array.isArray(b) ? v : { ...b, ...v };
  }
  return out;
}

export function writeConfig(path: string, cfg: Record<string, unknown>): void {
  writeFileSync(path, JSON.stringify(cfg, null, 2));
}

/** Starts the packaged physbitsd; `nodeArgs` default to the unit's node flags. */
export async function startDaemon(
  configPath: string,
  apiSocket: string,
  logPath: string,
  nodeArgs: string[] = unitNodeFlags(),
): Promise<DaemonProc> {
  const { physbitsd } = await packagedPrograms();
  const fd = openSync(logPath, 'a');
  const spawnedAt = wallMs();
  const child = spawn(process.execPath, [...nodeArgs, physbitsd, '--config', configPath], {
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  track(child.pid, child);
  const deadline = Date.now() + 30000;
  while (!existsSync(apiSocket)) {
    if (child.exitCode !== null) throw new Error(`physbitsd exited (${child.exitCode}); see ${logPath}`);
    if (Date.now() > deadline) throw new Error(`physbitsd did not create ${apiSocket}; see ${logPath}`);
    await sleep(5);
  }
  return { child, pid: child.pid!, spawnedAt, apiSocket, logPath, stop: () => stopChild(child, 10000) };
}

/** GET over the daemon's UNIX control socket; the parsed JSON body. */
export function apiGet<T = unknown>(socketPath: string, path: string, timeoutMs = 30000): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as T);
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export function getStatus(d: DaemonProc): Promise<StatusDocument> {
  return apiGet<StatusDocument>(d.apiSocket, '/v1/status');
}

/** Polls GET /v1/status until `done` holds; returns that document. */
export async function waitForStatus(
  d: DaemonProc,
  done: (doc: StatusDocument) => boolean,
  timeoutMs: number,
  everyMs = 100,
): Promise<StatusDocument> {
  const deadline = Date.now() + timeoutMs;
  let last: StatusDocument | null = null;
  for (;;) {
    try {
      last = await getStatus(d);
      if (done(last)) return last;
    } catch {
      // Not listening yet, or busy: ask again.
    }
    if (Date.now() > deadline) {
      const n = last?.vms.length ?? 0;
      const judged = last?.vms.filter((v) => v.verdict).length ?? 0;
      throw new Error(`daemon status not reached within ${timeoutMs} ms (${judged}/${n} VMs judged); see ${d.logPath}`);
    }
    await sleep(everyMs);
  }
}

/** The latest `checkedAt` in a status document, as wall-clock ms. */
export function lastCheckedAt(doc: StatusDocument): number {
  let max = -Infinity;
  for (const v of doc.vms) if (v.checkedAt) max = Math.max(max, Date.parse(v.checkedAt));
  return max;
}
