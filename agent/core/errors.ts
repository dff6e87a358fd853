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

/** A bad configuration: exit 78. The message names the offending key. */
export class ConfigError extends AgentError {
  constructor(message: string) {
    super('CONFIG_INVALID', message);
  }
}
