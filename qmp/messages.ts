/**
 * The shapes of QMP messages (QEMU docs/interop/qmp-spec.txt) and pure functions that sort a parsed
 * message into one of them. Both the client side (greetings, replies, events) and the server side
 * (commands) classify with the same code.
 */

export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  package: string;
}

export interface QmpGreeting {
  QMP: { version: QmpVersion; capabilities: string[] };
}

export interface QmpCommand {
  execute?: string;
  'exec-oob'?: string;
  arguments?: Record<string, unknown>;
  /** Any JSON value; echoed unchanged in the reply. */
  id?: unknown;
}

export interface QmpReturn {
  return: unknown;
  id?: unknown;
}

export interface QmpErrorReply {
  error: { class: string; desc: string };
  id?: unknown;
}

export type QmpReply = QmpReturn | QmpErrorReply;

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export type Classified =
  | { kind: 'greeting'; greeting: QmpGreeting }
  | { kind: 'reply'; reply: QmpReply; hasId: boolean; id: unknown }
  | { kind: 'event'; event: QmpEvent }
  | { kind: 'command'; command: QmpCommand; name: string; oob: boolean; hasId: boolean; id: unknown }
  | { kind: 'invalid'; reason: string };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const has = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

function isVersion(v: unknown): v is QmpVersion {
  if (!isObject(v) || !isObject(v.qemu) || typeof v.package !== 'string') return false;
  const q = v.qemu;
  return [q.major, q.minor, q.micro].every((x) => Number.isInteger(x));
}

/** Sorts a parsed message by shape. Commands are recognised loosely here; see checkCommand. */
export function classifyMessage(obj: unknown): Classified {
  if (!isObject(obj)) return { kind: 'invalid', reason: 'a QMP message must be a JSON object' };
  if (has(obj, 'QMP')) {
    const g = obj.QMP;
    if (
      !isObject(g) ||
      !isVersion(g.version) ||
      !Array.isArray(g.capabilities) ||
      !g.capabilities.every((c) => typeof c === 'string')
    ) {
      return { kind: 'invalid', reason: 'malformed greeting' };
    }
    return { kind: 'greeting', greeting: obj as unknown as QmpGreeting };
  }
  if (has(obj, 'event')) {
    const ts = obj.timestamp;
    if (
      typeof obj.event !== 'string' ||
      !isObject(ts) ||
      typeof ts.seconds !== 'number' ||
      typeof ts.microseconds !== 'number'
    ) {
      return { kind: 'invalid', reason: 'malformed event' };
    }
    if (has(obj, 'data') && !isObject(obj.data)) return { kind: 'invalid', reason: 'malformed event data' };
    return { kind: 'event', event: obj as unknown as QmpEvent };
  }
  if (has(obj, 'return') || has(obj, 'error')) {
    if (has(obj, 'return') && has(obj, 'error'))
      return { kind: 'invalid', reason: 'a reply with both return and error' };
    if (has(obj, 'error')) {
      const e = obj.error;
      if (!isObject(e) || typeof e.class !== 'string' || typeof e.desc !== 'string')
        return { kind: 'invalid', reason: 'malformed error reply' };
    }
    return { kind: 'reply', reply: obj as unknown as QmpReply, hasId: has(obj, 'id'), id: obj.id };
  }
  if (has(obj, 'execute') || has(obj, 'exec-oob')) {
    const oob = !has(obj, 'execute');
    const name = oob ? obj['exec-oob'] : obj.execute;
    if (typeof name !== 'string') return { kind: 'invalid', reason: 'a command name must be a string' };
    return { kind: 'command', command: obj as QmpCommand, name, oob, hasId: has(obj, 'id'), id: obj.id };
  }
  return { kind: 'invalid', reason: 'not a greeting, reply, event or command' };
}

export type CommandCheck =
  | { ok: true; name: string; oob: boolean; arguments?: Record<string, unknown>; hasId: boolean; id: unknown }
  | { ok: false; desc: string; hasId: boolean; id: unknown };

/**
 * Validates a command the way QEMU's qapi/qmp-dispatch.c (qmp_dispatch_check_obj) does, with its
 * error texts: only execute (or exec-oob when out-of-band is enabled), arguments and id are allowed.
 * The id is reported even for a rejected command: QEMU echoes it on every error but the first.
 */
export function checkCommand(obj: unknown, allowOob: boolean): CommandCheck {
  if (!isObject(obj)) return { ok: false, desc: 'QMP input must be a JSON object', hasId: false, id: undefined };
  const hasId = has(obj, 'id');
  const id = obj.id;
  let execKey: string | null = null;
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    if (key === 'execute' || (key === 'exec-oob' && allowOob)) {
      if (typeof v !== 'string') return { ok: false, desc: `QMP input member '${key}' must be a string`, hasId, id };
      if (execKey) return { ok: false, desc: `QMP input member '${key}' clashes with '${execKey}'`, hasId, id };
      execKey = key;
    } else if (key === 'arguments') {
      if (!isObject(v)) return { ok: false, desc: "QMP input member 'arguments' must be an object", hasId, id };
    } else if (key !== 'id') {
      return { ok: false, desc: `QMP input member '${key}' is unexpected`, hasId, id };
    }
  }
  if (!execKey) return { ok: false, desc: "QMP input lacks member 'execute'", hasId, id };
  return {
    ok: true,
    name: obj[execKey] as string,
    oob: execKey === 'exec-oob',
    arguments: has(obj, 'arguments') ? (obj.arguments as Record<string, unknown>) : undefined,
    hasId,
    id,
  };
}
