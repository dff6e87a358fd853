#!/usr/bin/env node
/**
 * physbitsd: the daemon systemd runs. `--config FILE` (default /etc/physbits/config.json).
 * SIGHUP reloads the config (a bad one is logged and the old kept); SIGTERM/SIGINT close every
 * connection and socket it made and exit 0. Readiness is told to systemd once the sockets are up.
 */
import { execFile } from 'node:child_process';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../core/config';
import { Daemon } from '../daemon/daemon';
import { EXIT } from '../core/exit-codes';
import { createLogger } from '../core/logger';
import { secretFiles, worldReadableWarnings } from '../core/secret-files';

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
      options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    });
  } catch (err) {
    fatal((err as Error).message.split('\n')[0], EXIT.USAGE);
  }
  if (args.values.help) {
    process.stdout.write('usage: physbitsd [--config FILE]\n');
    return;
  }
  const configPath = args.values.config;
  let config;
  try {
    config = loadConfig(configPath);
  } catch (err) {
    if (err instanceof ConfigError) fatal(`config: ${err.message}`, EXIT.CONFIG);
    throw err;
  }
  const logger = createLogger({ level: config.log.level, format: config.log.format });
  for (const w of worldReadableWarnings(secretFiles(config, configPath))) logger.warn(w);
  let daemon: Daemon;
  try {
    daemon = new Daemon({ config, logger });
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
    await daemon.stop().catch((err) => logger.error('error while stopping', { error: (err as Error).message }));
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => {
    let next;
    try {
      next = loadConfig(configPath);
    } catch (err) {
      logger.error('reload refused: keeping the running configuration', { error: (err as Error).message });
      return;
    }
    daemon.reload(next).catch((err) => logger.error('reload failed', { error: (err as Error).message }));
  });
  process.on('uncaughtException', (err) => {
    logger.error('uncaught exception', { error: err.stack ?? String(err) });
  });
  process.on('unhandledRejection', (err) => {
    logger.error('unhandled rejection', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  });
  try {
    await daemon.start();
  } catch (err) {
    const e = err as Error & { code?: string };
    logger.error('cannot start', { code: e.code, error: e.message });
    await daemon.stop().catch(() => undefined);
    process.exit(e instanceof ConfigError ? EXIT.CONFIG : 1);
  }
  logger.info('ready', { vms: daemon.supervisors.size });
  notifySystemd('READY=1');
}

void main();
