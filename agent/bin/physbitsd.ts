#!/usr/bin/env node
/**
 * physbitsd: the daemon systemd runs. `--config FILE` (default /etc/physbits/config.json).
 * SIGHUP reloads the config (a bad one is logged and the old kept); SIGTERM/SIGINT close every
 * connection and socket it made and exit 0. Readiness is told to systemd once the sockets are up.
 */
import { execFile } from 'node:child_process';
import { parseArgs } from 'node:util';
import { ConfigError } from '../core/errors';
import { EXIT } from '../core/exit-codes';
import type { Daemon } from '../daemon/daemon';

export const DAEMON_HELP = `usage: physbitsd [--config FILE] [--check-config]

The physbits daemon: discovers QEMU's QMP sockets, reads each guest's phys-bits and memory layout,
compares them with this host and its migration peers, alerts, serves the control API and /metrics, and
guards each VM's QMP socket against hot-plug and migration the host cannot back. systemd runs it
(physbitsd.service); it logs to stderr (the journal under systemd).

options:
  --config FILE  the configuration (default /etc/physbits/config.json; a missing default file
                 means every default)
  --check-config check the configuration and exit: 0 when it is valid, else 78 with every problem
                 on stderr, one a line (a JSON error with its line and column); the unit's
                 ExecReload runs it, so a reload of a broken file fails and the daemon keeps its own
  --help         this help
  --version      the version and the commit it was built from

signals:
  SIGHUP         reload the configuration; a bad file is logged and the running one kept
  SIGTERM, SIGINT  stop: close every connection, remove the sockets it made, exit 0

exit: 0 stopped by a signal, 1 could not start, 64 usage, 70 internal error (an uncaught exception
      or unhandled rejection, logged; systemd restarts the daemon), 78 config
example: physbitsd --config /etc/physbits/config.json`;

function fatal(message: string, code: number): never {
  process.stderr.write(`physbitsd: ${message}\n`);
  process.exit(code);
}

function notifySystemd(state: string): void {
  // Node has no datagram UNIX sockets; systemd-notify speaks for us (the unit sets NotifyAccess=all).
  if (!process.env.NOTIFY_SOCKET) return;
  execFile('systemd-notify', [`--pid=${process.pid}`, state], () => undefined);
}

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      args: process.argv.slice(2),
      options: {
        config: { type: 'string' },
        'check-config': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
      strict: true,
    });
  } catch (err) {
    fatal((err as Error).message.split('\n')[0], EXIT.USAGE);
  }
  if (args.values.help) {
    process.stdout.write(`${DAEMON_HELP}\n`);
    return;
  }
  if (args.values.version) {
    const { versionLine } = await import('../core/version');
    process.stdout.write(`${versionLine('physbitsd')}\n`);
    return;
  }
  // Loaded only to run: --help and --version stay quick.
  const { loadConfig } = await import('../core/config');
  const { Daemon } = await import('../daemon/daemon');
  const { createLogger } = await import('../core/logger');
  const { LogStream } = await import('../core/log-stream');
  const { checkPeerFiles, checkTokenFiles, resolveWebhookSecrets, secretFiles, worldReadableWarnings } =
    await import('../core/secret-files');
  // The config with webhook secrets read, peers' token and CA files and the daemon's own token files
  // (api.tokenFile, fleet.tokenFile) checked, at start and on SIGHUP: a token file open to others, or
  // too short to be a secret, stops the daemon before it opens anything.
  const loadDaemonConfig = (path: string | undefined) => {
    const loaded = resolveWebhookSecrets(loadConfig(path));
    checkPeerFiles(loaded);
    checkTokenFiles(loaded);
    return loaded;
  };
  const configPath = args.values.config;
  if (args.values['check-config']) {
    const { checkConfigFile } = await import('../core/config-check');
    const problems = checkConfigFile(configPath);
    // Valid as a config: the files it names (secrets, tokens, peers' CA and token files) next.
    if (!problems.length) {
      try {
        loadDaemonConfig(configPath);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        problems.push(err.message);
      }
    }
    for (const problem of problems) process.stderr.write(`physbitsd: config: ${problem}\n`);
    if (problems.length) process.exit(EXIT.CONFIG);
    process.stdout.write(`physbitsd: config ${configPath ?? '/etc/physbits/config.json'}: ok\n`);
    return;
  }
  let config;
  try {
    config = loadDaemonConfig(configPath);
  } catch (err) {
    if (err instanceof ConfigError) fatal(`config: ${err.message}`, EXIT.CONFIG);
    throw err;
  }
  // The log goes to stderr through a fuse: a stream that fails or fills never stops the daemon
  // (agent/core/log-stream.ts). What is lost is counted in the metrics and told where it still can be.
  let daemonRef: Daemon | null = null;
  const logStream = new LogStream(process.stderr, {
    onFailure: (reason) => daemonRef?.logStreamFailed(reason),
    onRecovered: (dropped) => logger.warn('the log stream was full; lines were dropped', { dropped }),
  });
  const logger = createLogger({ level: config.log.level, format: config.log.format, stream: logStream });
  for (const w of worldReadableWarnings(secretFiles(config, configPath))) logger.warn(w);
  let daemon: Daemon;
  try {
    daemon = new Daemon({ config, logger, logHealth: logStream });
    daemonRef = daemon;
  } catch (err) {
    const e = err as Error & { code?: string };
    fatal(`${e.code ? `${e.code}: ` : ''}${e.message}`, e instanceof ConfigError ? EXIT.CONFIG : 1);
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('stopping', { signal });
    notifySystemd('STOPPING=1');
    const force = setTimeout(() => {
      logger.error('shutdown took too long; exiting');
      process.exit(1);
    }, 8000);
    force.unref();
    const began = Date.now();
    await daemon.stop().catch((err) => logger.error('error while stopping', { error: (err as Error).message }));
    logger.info('stopped', { signal, ms: Date.now() - began });
    // The logger hands lines to stderr on the next ticks: let them out before exiting.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => {
    let next;
    try {
      next = loadDaemonConfig(configPath);
    } catch (err) {
      logger.error('reload refused: keeping the running configuration', { error: (err as Error).message });
      daemon.configLoaded(false);
      return;
    }
    daemon.reload(next).then(
      () => daemon.configLoaded(true),
      (err) => logger.error('reload failed', { error: (err as Error).message }),
    );
  });
  // A fault nothing caught leaves the daemon in a state nobody knows: say so once, release what it
  // holds (QEMU's sockets, its own), and exit for the service manager to restart it
  // (Restart=on-failure). A second fault while stopping exits at once.
  let faulted = false;
  const fault = (what: string, err: unknown) => {
    if (faulted) process.exit(EXIT.SOFTWARE);
    faulted = true;
    logger.error(`${what}; exiting`, { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    notifySystemd('STOPPING=1');
    process.exitCode = EXIT.SOFTWARE;
    setTimeout(() => process.exit(EXIT.SOFTWARE), 3000);
    daemon
      .stop()
      .catch(() => undefined)
      .finally(() => process.exit(EXIT.SOFTWARE));
  };
  process.on('uncaughtException', (err) => fault('uncaught exception', err));
  process.on('unhandledRejection', (err) => fault('unhandled rejection', err));
  try {
    await daemon.start();
  } catch (err) {
    const e = err as Error & { code?: string };
    logger.error('cannot start', { code: e.code, error: e.message });
    await daemon.stop().catch(() => undefined);
    process.exit(e instanceof ConfigError ? EXIT.CONFIG : 1);
  }
  logger.info('ready', { vms: daemon.vmCount });
  notifySystemd('READY=1');
}

void main();
