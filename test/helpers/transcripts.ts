/**
 * Recorded QMP transcripts: what physbits sent to a real QEMU and what that QEMU answered, kept in
 * test/fixtures/qmp-transcripts/ (re-recorded by test/tools/record-transcripts.ts) and replayed by
 * unit tests of the facts reader, so that a QEMU release that answers differently shows as one
 * failing fixture test.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CommandError } from '../../qmp/errors';
import type { QmpExecutor } from '../../agent/facts/guest-facts';

export interface Exchange {
  execute: string;
  arguments?: Record<string, unknown>;
  return?: unknown;
  error?: { class: string; desc: string };
}

export interface Transcript {
  /** "7.2.22", "10.0.13". */
  qemu: string;
  /** The QEMU package ("Debian 1:10.0.13+ds-0+deb13u1"). */
  package: string;
  /** paused-dimm, seabios, ovmf. */
  scenario: string;
  /** QEMU's command line after the binary. */
  args: string[];
  exchanges: Exchange[];
  /**
   * From query-qmp-schema: each command physbits sends or guards, with its argument names (null:
   * the command does not exist on this QEMU).
   */
  commands: Record<string, string[] | null>;
  /** From qom-list: the property names of every object physbits reads (null: no such object). */
  qom: Record<string, string[] | null>;
}

export const TRANSCRIPT_DIR = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'qmp-transcripts');

/** The canonical key of one command: its name and its arguments with sorted keys. */
export function exchangeKey(command: string, args?: Record<string, unknown>): string {
  if (!args || Object.keys(args).length === 0) return command;
  const sorted = Object.fromEntries(
    Object.keys(args)
      .sort()
      .map((k) => [k, args[k]]),
  );
  return `${command} ${JSON.stringify(sorted)}`;
}

/** An executor that forwards to `q` and appends every command and its answer to `into`. */
export function recording(q: QmpExecutor, into: Exchange[]): QmpExecutor {
  return {
    async execute<T>(command: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<T> {
      const entry: Exchange = { execute: command, ...(args ? { arguments: args } : {}) };
      into.push(entry);
      try {
        const value = await q.execute<T>(command, args, opts);
        entry.return = value;
        return value;
      } catch (err) {
        if (err instanceof CommandError) entry.error = { class: err.errorClass, desc: err.desc };
        throw err;
      }
    },
  };
}

/**
 * An executor that answers from a transcript. A command the transcript does not hold is a miss:
 * it is listed in `misses` and rejected, so a change in what physbits sends fails the replay test.
 */
export function replaying(transcript: Transcript): QmpExecutor & { misses: string[]; sent: string[] } {
  const answers = new Map<string, Exchange>();
  for (const e of transcript.exchanges) answers.set(exchangeKey(e.execute, e.arguments), e);
  const misses: string[] = [];
  const sent: string[] = [];
  return {
    misses,
    sent,
    execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
      const key = exchangeKey(command, args);
      sent.push(key);
      const e = answers.get(key);
      if (!e) {
        misses.push(key);
        return Promise.reject(new Error(`not in the ${transcript.qemu} ${transcript.scenario} transcript: ${key}`));
      }
      if (e.error) return Promise.reject(new CommandError(command, e.error.class, e.error.desc));
      return Promise.resolve(e.return as T);
    },
  };
}

/** Every transcript in the fixture directory, by file name. */
export function loadTranscripts(dir = TRANSCRIPT_DIR): Map<string, Transcript> {
  const out = new Map<string, Transcript>();
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()) {
    out.set(file, JSON.parse(readFileSync(join(dir, file), 'utf8')) as Transcript);
  }
  return out;
}
