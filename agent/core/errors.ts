/**
 * Errors of the agent layer. Like the protocol layer's QmpError, every one has a stable `code`
 * listed in docs/errors.md; operator mistakes carry an exit code and print as one line.
 */
export class AgentError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A command-line mistake: exit 64. */
export class UsageError extends AgentError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** Reading host facts failed in a way that leaves no width to compare with. */
export class HostFactsError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('HOST_FACTS_UNAVAILABLE', message, options);
  }
}

/** The daemon's API could not be reached. */
export class DaemonUnreachableError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DAEMON_UNREACHABLE', message, options);
  }
}

/**
 * QEMU ended as asked: a SHUTDOWN event (QMP `quit`, the guest powering off, a signal to QEMU), then
 * the end of its monitor connection. The VM is unknown until it runs again; nothing is broken.
 */
export class VmShutDownError extends AgentError {
  readonly reason: string;
  constructor(socket: string, reason: string) {
    super('VM_SHUT_DOWN', `${socket}: QEMU shut down (${reason})`);
    this.reason = reason;
  }
}

/** A bad configuration: exit 78. The message names the offending key. */
export class ConfigError extends AgentError {
  constructor(message: string) {
    super('CONFIG_INVALID', message);
  }
}

/** The stable code and message of any error: QmpError, AgentError and system errors carry a string code. */
export function errorInfo(err: unknown): { code: string; message: string } {
  const code = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof code === 'string') return { code, message: err.message };
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}
