/**
 * One error hierarchy for the protocol layer. Every error carries a stable string `code`
 * (listed in docs/errors.md) so callers branch on codes, never on message text.
 */
export class QmpError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The socket could not be reached (ENOENT, ECONNREFUSED, EACCES...). */
export class ConnectError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_CONNECT_FAILED', message, options);
  }
}

/** The peer accepted the connection but sent no greeting in time (e.g. another client holds QEMU's monitor). */
export class NoGreetingError extends QmpError {
  constructor(message: string) {
    super('QMP_NO_GREETING', message);
  }
}

/** The peer spoke, but not QMP (bad greeting, invalid JSON, a reply of the wrong shape). */
export class ProtocolError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_PROTOCOL', message, options);
  }
}

/** A line longer than the configured bound. */
export class LineTooLongError extends QmpError {
  constructor(limit: number) {
    super('QMP_LINE_TOO_LONG', `a message exceeded the ${limit}-byte line limit`);
  }
}

/** A command got no reply within its timeout. */
export class TimeoutError extends QmpError {
  constructor(message: string) {
    super('QMP_TIMEOUT', message);
  }
}

/** The connection closed (or was closed) while the operation was pending. */
export class ClosedError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_CLOSED', message, options);
  }
}

/** Too many commands already in flight on this connection. */
export class BusyError extends QmpError {
  constructor(limit: number) {
    super('QMP_TOO_MANY_PENDING', `more than ${limit} commands pending`);
  }
}

/** The operation is not valid in the connection's current run state. */
export class StateError extends QmpError {
  constructor(message: string) {
    super('QMP_STATE', message);
  }
}

/** QEMU answered the command with an error reply. */
export class CommandError extends QmpError {
  readonly errorClass: string;
  readonly desc: string;
  readonly command: string;
  constructor(command: string, errorClass: string, desc: string) {
    super('QMP_COMMAND_FAILED', `${command}: ${errorClass}: ${desc}`);
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

/** The peer stopped reading: more than the configured bound of output waited for it, so it was dropped. */
export class SlowPeerError extends QmpError {
  constructor(message: string) {
    super('QMP_SLOW_PEER', message);
  }
}

/** The caller's AbortSignal fired before the operation completed. */
export class AbortedError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_ABORTED', message, options);
  }
}

/** A listening socket could not be created (bad directory, a non-socket in the way, permissions). */
export class ListenError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_LISTEN_FAILED', message, options);
  }
}

/** Another live process already serves the socket path. */
export class SocketInUseError extends QmpError {
  constructor(path: string) {
    super('QMP_SOCKET_IN_USE', `${path} is in use by another live listener`);
  }
}
