/** physbitsctl's dispatcher: subcommand → handler, every error mapped to a line and an exit code. */
import { AgentError, ConfigError, DaemonUnreachableError, UsageError } from '../core/errors';
import { EXIT } from '../core/exit-codes';
import type { CliIo } from './cli-io';
import { commandHelp, findCommand, usage } from './help';

/** `CMD --help` / `CMD -h` anywhere before a `--`. */
function asksForHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/**
 * Runs one command. Help and --version load nothing beyond this file and help.ts; each command's
 * module (and what it needs: the config schema, the QMP client, the glob library) loads on use.
 */
export async function runCli(argv: string[], io: CliIo, signal?: AbortSignal): Promise<number> {
  const [command, ...args] = argv;
  try {
    if (command === '--version' || command === '-V' || command === 'version') {
      const { versionLine } = await import('../core/version');
      io.stdout(versionLine('physbitsctl'));
      return EXIT.OK;
    }
    if (command === undefined) {
      io.stderr(usage());
      return EXIT.USAGE;
    }
    if (command === '-h' || command === '--help' || (command === 'help' && args.length === 0)) {
      io.stdout(usage());
      return EXIT.OK;
    }
    if (command === 'help' && !asksForHelp(args)) {
      const which = findCommand(args[0]);
      if (!which || args.length > 1)
        throw new UsageError(`help: ${which ? `unexpected argument '${args[1]}'` : `unknown command '${args[0]}'`}`);
      io.stdout(commandHelp(which));
      return EXIT.OK;
    }
    const help = findCommand(command);
    if (help && asksForHelp(args)) {
      io.stdout(commandHelp(help));
      return EXIT.OK;
    }
    switch (command) {
      case 'scan':
        return await (await import('./scan-command')).scanCommand(args, io);
      case 'status':
        return await (await import('./daemon-commands')).statusCommand(args, io);
      case 'check-migration':
        return await (await import('./daemon-commands')).checkMigrationCommand(args, io);
      case 'fleet':
        return await (await import('./daemon-commands')).fleetCommand(args, io);
      case 'advise':
        return await (await import('./daemon-commands')).adviseCommand(args, io);
      case 'watch':
        return await (await import('./watch-command')).watchCommand(args, io, signal);
      case 'libvirt-hook':
        return await (await import('./libvirt-hook-command')).libvirtHookCommand(args, io);
      case 'proxmox-hook':
        return await (await import('./proxmox-hook-command')).proxmoxHookCommand(args, io);
      default:
        throw new UsageError(`unknown command '${command}' (try --help)`);
    }
  } catch (err) {
    return reportError(err, io, wantsJson(args));
  }
}

/** `--json` among a command's options (before a `--`). */
function wantsJson(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--json') return true;
  }
  return false;
}

/**
 * One line on stderr and the exit code; with `--json` also the error as JSON on stdout
 * (`{"error": {"code", "message"}, "exitCode"}`), so a script reading stdout always gets JSON.
 */
export function reportError(err: unknown, io: CliIo, json = false): number {
  const { line, code, exitCode } = describeError(err);
  io.stderr(`physbitsctl: ${line}`);
  if (json) io.stdout(JSON.stringify({ error: { code, message: line }, exitCode }, null, 2));
  return exitCode;
}

function describeError(err: unknown): { line: string; code: string; exitCode: number } {
  if (err instanceof UsageError) return { line: err.message, code: err.code, exitCode: EXIT.USAGE };
  if (err instanceof ConfigError) return { line: `config: ${err.message}`, code: err.code, exitCode: EXIT.CONFIG };
  const status = (err as { status?: unknown }).status;
  if (err instanceof AgentError && status === 404)
    // The daemon knows no such VM or peer: unknown, like a VM that does not answer.
    return { line: err.message, code: err.code, exitCode: EXIT.UNKNOWN };
  if (err instanceof AgentError && (status === 400 || status === 409))
    // The request is malformed or names several things: the operator's to fix.
    return { line: err.message, code: err.code, exitCode: EXIT.USAGE };
  if (err instanceof DaemonUnreachableError) return { line: err.message, code: err.code, exitCode: EXIT.UNKNOWN };
  if (err instanceof AgentError || (err instanceof Error && typeof (err as { code?: unknown }).code === 'string')) {
    const code = (err as AgentError).code;
    return { line: `${code}: ${(err as Error).message}`, code, exitCode: EXIT.UNKNOWN };
  }
  return {
    line: `internal error: ${err instanceof Error ? err.stack : String(err)}`,
    code: 'INTERNAL',
    exitCode: EXIT.UNKNOWN,
  };
}
