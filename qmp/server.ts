/**
 * The server side of one QMP client connection, behaving as QEMU's monitor/qmp.c does: a greeting,
 * then nothing but qmp_capabilities until negotiation is done (CommandNotFound, "Expecting
 * capabilities negotiation with 'qmp_capabilities'"), every reply carrying the client's own id as
 * the client wrote it, in-band commands answered one at a time and in order, exec-oob only once
 * 'oob' was negotiated. What a command does is up to the handler.
 *
 * Each line is parsed once (JSON.parse, and one scan for what JSON.parse cannot tell: duplicate
 * keys, nesting, the spans of the top-level members). A command whose answer is ready at once (or
 * comes through the handler's callback) is answered without a promise between.
 *
 * Bounds: input lines (maxLineBytes), commands waiting (reading pauses at maxQueuedCommands, as
 * QEMU suspends its monitor at QMP_REQ_QUEUE_LEN_MAX), output waiting for a client that does not
 * read (maxQueueBytes; past it the client is dropped with SlowPeerError).
 */
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import type { QmpLogger } from './client';
import { LineConnection } from './connection';
import { SlowPeerError, type ProtocolError, type QmpError } from './errors';
import { jsonText } from './framing';
import {
  MAX_JSON_NESTING,
  qemuStringError,
  scanJson,
  withKnownTopLevelId,
  withTopLevelId,
  type MemberSpan,
} from './json-text';
import { checkCommand, type QmpEvent, type QmpVersion } from './messages';

/** Where a value is in a line: [start, end). */
export interface TextSpan {
  start: number;
  end: number;
}

export interface ServerCommand {
  name: string;
  oob: boolean;
  arguments?: Record<string, unknown>;
  hasId: boolean;
  id: unknown;
  /** The id exactly as the client wrote it; undefined when it sent none. */
  idText?: string;
  /** Where that id is in `text`; undefined when it sent none. */
  idSpan?: TextSpan;
  /** The name was written with an escape (`"device\u005fadd"`): JSON.parse decoded it to `name`. */
  nameEscaped: boolean;
  /** The command line as received. */
  text: string;
}

export type CommandOutcome =
  | { return: unknown }
  | { error: { class: string; desc: string } }
  /** A reply produced elsewhere (e.g. by QEMU); its top-level id is replaced by the client's own. */
  | {
      replyText: string;
      /** The reply's top-level id when this side knows it (the upstream client's own), for a splice without a scan. */
      replyId?: string;
    }
  | { noReply: true };

/** A handler's answer that comes later, through its `answer` callback. */
export const ANSWER_LATER = Symbol('answered later');

/**
 * What a command does: its outcome, a promise of it, or ANSWER_LATER, after which the handler
 * calls `answer` once (a callback, so that a reply relayed from elsewhere needs no promise).
 */
export type CommandHandler = (
  cmd: ServerCommand,
  session: QmpServerSession,
  answer: (outcome: CommandOutcome) => void,
) => CommandOutcome | Promise<CommandOutcome> | typeof ANSWER_LATER;

export interface QmpServerSessionOptions {
  handler: CommandHandler;
  /** The version announced in the greeting. */
  version: QmpVersion;
  /** Capabilities offered in the greeting ('oob' is the one QEMU knows). Default none. */
  capabilities?: string[];
  /** false: send no greeting at all. Default true. */
  greeting?: boolean;
  maxLineBytes?: number;
  /** Output bytes allowed to wait for the client. Default 4 MiB. */
  maxQueueBytes?: number;
  /** In-band commands waiting before reading pauses. Default 8. */
  maxQueuedCommands?: number;
  label?: string;
  logger?: QmpLogger;
  /**
   * A client that has not negotiated capabilities within this long is disconnected, so that idle
   * connections cannot hold every slot of a bounded server. 0 (default) waits for ever, as QEMU does.
   */
  negotiationTimeoutMs?: number;
}

export const NEGOTIATION_REQUIRED = "Expecting capabilities negotiation with 'qmp_capabilities'";
export const NEGOTIATION_DONE = 'Capabilities negotiation is already complete, command ignored';

type Item = { kind: 'error'; desc: string; idText?: string } | { kind: 'command'; cmd: ServerCommand };

/** QmpServerSession's events and their arguments. */
export interface QmpServerSessionEvents {
  negotiated: [capabilities: string[]];
  close: [err?: QmpError];
}

export class QmpServerSession extends EventEmitter<QmpServerSessionEvents> {
  readonly conn: LineConnection;
  private readonly opts: QmpServerSessionOptions;
  private readonly offered: string[];
  private readonly maxQueued: number;
  private enabled: string[] | null = null;
  private readonly queue: Item[] = [];
  private running = false;
  private pumping = false;
  private paused = false;
  /** The client half-closed: answer what it sent, then close (QEMU's monitor does the same). */
  private inputEnded = false;
  private oobRunning = 0;

  constructor(socket: net.Socket, opts: QmpServerSessionOptions) {
    super();
    this.opts = opts;
    this.offered = opts.capabilities ?? [];
    this.maxQueued = opts.maxQueuedCommands ?? 8;
    this.conn = LineConnection.accept(socket, {
      maxLineBytes: opts.maxLineBytes,
      maxWriteBufferBytes: opts.maxQueueBytes ?? 4 * 1024 * 1024,
      invalidLines: 'report',
      label: opts.label ?? 'QMP client',
    });
    this.conn.on('message', (value, text) => this.onMessage(value, text));
    this.conn.on('invalid', (err) => this.enqueue({ kind: 'error', desc: `JSON parse error, ${parseReason(err)}` }));
    const limit = opts.negotiationTimeoutMs ?? 0;
    const timer =
      limit > 0
        ? setTimeout(() => {
            if (!this.enabled)
              void this.close(
                new SlowPeerError(`${opts.label ?? 'QMP client'}: no capabilities negotiation within ${limit} ms`),
              );
          }, limit)
        : null;
    timer?.unref();
    this.conn.on('end', () => {
      this.inputEnded = true;
      this.closeWhenAnswered();
    });
    this.conn.on('close', (err) => {
      if (timer) clearTimeout(timer);
      this.queue.length = 0;
      this.emit('close', err);
    });
    if (opts.greeting !== false) {
      this.conn.send({ QMP: { version: opts.version, capabilities: this.offered } });
    }
  }

  get negotiated(): boolean {
    return this.enabled !== null;
  }

  /** Capabilities the client enabled (empty before negotiation). */
  get capabilities(): string[] {
    return [...(this.enabled ?? [])];
  }

  get open(): boolean {
    return this.conn.state === 'running';
  }

  /** Sends an event (an object, or its JSON text as received from QEMU). Only after negotiation, as QEMU does. */
  sendEvent(ev: QmpEvent | string): boolean {
    if (!this.enabled) return false;
    return this.conn.sendLine(typeof ev === 'string' ? ev : jsonText(ev));
  }

  /** Sends a line as it is, outside the command flow. */
  sendLine(text: string): boolean {
    return this.conn.sendLine(text);
  }

  close(err?: QmpError): Promise<void> {
    return this.conn.close(err);
  }

  private onMessage(value: unknown, text: string): void {
    const shape = scanJson(text);
    if (shape.duplicateKey !== null) return this.enqueue({ kind: 'error', desc: 'JSON parse error, duplicate key' });
    if (shape.maxDepth > MAX_JSON_NESTING)
      return this.enqueue({ kind: 'error', desc: 'JSON parse error, nesting too deep' });
    const stringError = qemuStringError(text);
    if (stringError !== null) return this.enqueue({ kind: 'error', desc: `JSON parse error, ${stringError}` });
    const allowOob = this.enabled?.includes('oob') ?? false;
    const check = checkCommand(value, allowOob);
    const idMember = check.hasId ? member(shape.members, 'id') : undefined;
    const idText = idMember ? text.slice(idMember.valueStart, idMember.valueEnd) : undefined;
    if (!check.ok) return this.enqueue({ kind: 'error', desc: check.desc, idText });
    const nameMember = member(shape.members, check.oob ? 'exec-oob' : 'execute')!;
    const cmd: ServerCommand = {
      name: check.name,
      oob: check.oob,
      arguments: check.arguments,
      hasId: check.hasId,
      id: check.id,
      idText,
      idSpan: idMember ? { start: idMember.valueStart, end: idMember.valueEnd } : undefined,
      // The name's text is its quotes around exactly the name, or it holds an escape.
      nameEscaped: nameMember.valueEnd - nameMember.valueStart !== check.name.length + 2,
      text,
    };
    if (cmd.oob) {
      this.oobRunning++;
      this.dispatch(cmd, this.oobAnswered);
      return;
    }
    this.enqueue({ kind: 'command', cmd });
  }

  private readonly oobAnswered = (): void => {
    this.oobRunning--;
    this.closeWhenAnswered();
  };

  private enqueue(item: Item): void {
    this.queue.push(item);
    if (this.queue.length >= this.maxQueued && !this.paused) {
      this.paused = true;
      this.conn.pause();
    }
    this.pump();
  }

  /**
   * Runs queued items in order, one in-band command at a time: each command waits for the one
   * before it to be answered. An answer given at once lets the loop go on in the same turn.
   */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.running && this.queue.length > 0 && this.open) {
        const item = this.queue.shift()!;
        if (this.paused && this.queue.length < this.maxQueued) {
          this.paused = false;
          this.conn.resume();
        }
        if (item.kind === 'error') {
          this.reply({ error: { class: 'GenericError', desc: item.desc } }, item.idText);
          continue;
        }
        this.running = true;
        this.dispatch(item.cmd, this.inBandAnswered);
      }
    } finally {
      this.pumping = false;
    }
    this.closeWhenAnswered();
  }

  private readonly inBandAnswered = (): void => {
    this.running = false;
    this.pump();
  };

  private closeWhenAnswered(): void {
    if (this.inputEnded && !this.running && this.oobRunning === 0 && this.queue.length === 0 && this.open)
      void this.close();
  }

  /** Answers one command (here, or through the handler), then calls `answered`. */
  private dispatch(cmd: ServerCommand, answered: () => void): void {
    if (cmd.name === 'qmp_capabilities') {
      this.reply(this.capabilitiesCommand(cmd), cmd.idText);
      return answered();
    }
    if (!this.enabled) {
      this.reply({ error: { class: 'CommandNotFound', desc: NEGOTIATION_REQUIRED } }, cmd.idText);
      return answered();
    }
    let done = false;
    const answer = (outcome: CommandOutcome): void => {
      if (done) return;
      done = true;
      if (typeof outcome !== 'object' || outcome === null)
        outcome = { error: { class: 'GenericError', desc: `${cmd.name}: no answer` } };
      this.reply(outcome, cmd.idText);
      answered();
    };
    const failed = (err: unknown): void => {
      this.opts.logger?.warn('QMP command handler failed', { command: cmd.name, error: (err as Error)?.message });
      answer({ error: { class: 'GenericError', desc: (err as Error)?.message ?? String(err) } });
    };
    let result: ReturnType<CommandHandler>;
    try {
      result = this.opts.handler(cmd, this, answer);
    } catch (err) {
      return failed(err);
    }
    if (result === ANSWER_LATER) return;
    if (result instanceof Promise) result.then(answer, failed);
    else answer(result);
  }

  /**
   * qmp_capabilities as QEMU answers it: arguments are checked first (the QAPI marshaller), then
   * "already complete" (monitor/qmp-cmds-control.c), then availability of what was asked for.
   */
  private capabilitiesCommand(cmd: ServerCommand): CommandOutcome {
    const fail = (desc: string, cls = 'GenericError'): CommandOutcome => ({ error: { class: cls, desc } });
    const args = cmd.arguments ?? {};
    for (const key of Object.keys(args)) if (key !== 'enable') return fail(`Parameter '${key}' is unexpected`);
    const enable = args.enable ?? [];
    if (!Array.isArray(enable)) return fail("Invalid parameter type for 'enable', expected: array");
    const wanted: string[] = [];
    for (let i = 0; i < enable.length; i++) {
      const cap: unknown = enable[i];
      if (typeof cap !== 'string') return fail(`Invalid parameter type for 'enable[${i}]', expected: string`);
      // 'oob' is the only member of QEMU's QMPCapability enum; the odd 'null' is QEMU 7.2's wording.
      if (cap !== 'oob') return fail(`Parameter 'null' does not accept value '${cap}'`);
      if (!wanted.includes(cap)) wanted.push(cap);
    }
    if (this.enabled) return fail(NEGOTIATION_DONE, 'CommandNotFound');
    const unavailable = wanted.filter((c) => !this.offered.includes(c));
    if (unavailable.length) return fail(`Capability ${unavailable.join(', ')} not available`);
    this.enabled = wanted;
    this.emit('negotiated', this.capabilities);
    return { return: {} };
  }

  private reply(outcome: CommandOutcome, idText: string | undefined): void {
    if ('noReply' in outcome) return;
    let text: string;
    try {
      if (!('replyText' in outcome)) text = replyLine(outcome, idText);
      else if (outcome.replyId === undefined) text = withTopLevelId(outcome.replyText, idText);
      else text = withKnownTopLevelId(outcome.replyText, outcome.replyId, idText);
    } catch (err) {
      this.opts.logger?.warn('QMP reply could not be encoded', { error: (err as Error).message });
      text = replyLine({ error: { class: 'GenericError', desc: 'the reply could not be encoded' } }, idText);
    }
    this.conn.sendLine(text);
  }
}

function replyLine(
  outcome: { return: unknown } | { error: { class: string; desc: string } },
  idText: string | undefined,
): string {
  const body =
    'error' in outcome
      ? `"error":${jsonText({ class: outcome.error.class, desc: outcome.error.desc })}`
      : `"return":${jsonText(outcome.return === undefined ? {} : outcome.return)}`;
  return idText === undefined ? `{${body}}` : `{${body},"id":${idText}}`;
}

function member(members: MemberSpan[] | null, key: string): MemberSpan | undefined {
  if (members) for (const m of members) if (m.key === key) return m;
  return undefined;
}

/** The parser's own words for a line that did not decode, without the label and the excerpt. */
function parseReason(err: ProtocolError): string {
  for (let e: unknown = err.cause; e instanceof Error; e = e.cause) {
    if (e instanceof SyntaxError) return e.message;
    if (e instanceof TypeError) return 'invalid UTF-8 sequence';
  }
  return 'invalid input';
}
