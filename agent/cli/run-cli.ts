/** physbitsctl's dispatcher: subcommand → handler, every error mapped to a line and an exit code. */
import { ApiError } from '../api/api-client';
import { ConfigError } from '../core/config';
import { AgentError, DaemonUnreachableError, UsageError } from '../core/errors';
import { EXIT } from '../core/exit-codes';
import type { CliIo } from './cli-io';

export const USAGE = `usage: physbitsctl COMMAND [OPTIONS]
  scan [--json] [--config FILE] [--socket PATH]...   check QMP sockets now, without the daemon
  status [--json] [--api SOCKET]                     the running daemon's view
  watch [--json] [--api SOCKET]                      stream the daemon's events
  check-migration VM --to PEER [--json] [--api SOCKET]
  fleet [--json] [--api SOCKET]                      every guest x every host: fits or not
  advise [VM] [--pool-bits N] [--json] [--api SOCKET]
  libvirt-hook [--config FILE] DOMAIN OPERATION SUBOP EXTRA   (domain XML on stdin)
exit: 0 ok, 1 warning, 2 critical, 3 unknown, 64 usage, 78 config`;

export async function runCli(argv: string[], io: CliIo, signal?: AbortSignal): Promise<number> {
  const [command, ...args] = argv;
  try {
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
      case '-h':
      case '--help':
      case 'help':
        io.stdout(USAGE);
        return EXIT.OK;
      case undefined:
        io.stderr(USAGE);
        return EXIT.USAGE;
      default:
        throw new UsageError(`unknown command '${command}' (try --help)`);
    }
  } catch (err) {
    return reportError(err, io);
  }
}

export function reportError(err: unknown, io: CliIo): number {
  if (err instanceof UsageError) {
    io.stderr(`physbitsctl: ${err.message}`);
    return EXIT.USAGE;
  }
  if (err instanceof ConfigError) {
    io.stderr(`physbitsctl: config: ${err.message}`);
    return EXIT.CONFIG;
  }
  if (err instanceof ApiError && (err.status === 400 || err.status === 404)) {
    // The daemon says the request names something that is not there: the operator's mistake.
    io.stderr(`physbitsctl: ${err.message}`);
    return EXIT.USAGE;
  }
  if (err instanceof DaemonUnreachableError) {
    io.stderr(`physbitsctl: ${err.message}`);
    return EXIT.UNKNOWN;
  }
  if (err instanceof AgentError || (err instanceof Error && typeof (err as { code?: unknown }).code === 'string')) {
    io.stderr(`physbitsctl: ${(err as AgentError).code}: ${(err as Error).message}`);
    return EXIT.UNKNOWN;
  }
  io.stderr(`physbitsctl: internal error: ${err instanceof Error ? err.stack : String(err)}`);
  return EXIT.UNKNOWN;
}
