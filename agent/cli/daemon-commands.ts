/**
 * The CLI commands that ask the running daemon: status, check-migration, fleet, advise.
 * With no daemon: one line on stderr and exit 3 (unknown).
 */
import { apiRequest } from '../api/api-client';
import { existsSync } from 'node:fs';
import { DEFAULT_CONFIG_PATH, loadConfig, type Config } from '../core/config';
import { UsageError } from '../core/errors';
import { EXIT } from '../core/exit-codes';
import { printable } from '../core/printable';
import { renderStatus } from './render-status';
import type { AdviceDocument, FleetDocument, MigrationCheck, StatusDocument } from '../api/api-types';
import { intOption, parse } from './args';
import { writeJson } from './json-out';
import type { CliIo } from './cli-io';

/** `--api` wins; else the config's api.socket (the default config file when there is one). */
export function apiSocket(api: string | undefined, configPath: string | undefined): string {
  if (api) return api;
  return loadConfig(configPath).api.socket;
}

const common = { json: { type: 'boolean' }, api: { type: 'string' }, config: { type: 'string' } } as const;

export async function statusCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parse('status', args, { ...common, wide: { type: 'boolean' } });
  const doc = await apiRequest<StatusDocument>(
    { socketPath: apiSocket(values.api, values.config) },
    'GET',
    '/v1/status',
  );
  io.stdout(
    values.json ? JSON.stringify(doc, null, 2) : renderStatus(doc, { width: values.wide ? undefined : io.columns }),
  );
  return doc.summary?.exitCode ?? EXIT.UNKNOWN;
}

export async function checkMigrationCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(
    'check-migration',
    args,
    { ...common, to: { type: 'string' } },
    { min: 1, max: 1 },
  );
  if (!values.to) return usage(io, 'check-migration: --to PEER is required');
  const answer = await apiRequest<MigrationCheck>(
    { socketPath: apiSocket(values.api, values.config) },
    'POST',
    '/v1/check-migration',
    {
      vm: positionals[0],
      peer: values.to,
    },
  );
  if (values.json) io.stdout(JSON.stringify(answer, null, 2));
  else
    io.stdout(printable(`${answer.allowed ? 'allowed' : 'refused'}: ${answer.vm} → ${answer.peer}: ${answer.message}`));
  return answer.allowed ? EXIT.OK : EXIT.CRITICAL;
}

function usage(io: CliIo, message: string): number {
  io.stderr(`physbitsctl: ${message}`);
  return EXIT.USAGE;
}

/**
 * The Prometheus-compatible query API to read the fleet from: `--prometheus URL`, else the config's
 * fleet.prometheus (the default config file when there is one); undefined: ask the daemon.
 */
function prometheusSource(command: string, url: string | undefined, configPath: string | undefined) {
  if (url !== undefined && !/^https?:\/\/[^/\s]+/.test(url))
    throw new UsageError(`${command}: --prometheus takes an http:// or https:// URL, got ${JSON.stringify(url)}`);
  if (url === undefined && configPath === undefined && !existsSync(DEFAULT_CONFIG_PATH)) return undefined;
  const config = loadConfig(configPath);
  const base = url ?? config.fleet.prometheus;
  return base === undefined ? undefined : { url: base, config };
}

/** The fleet view's input from Prometheus alone, no daemon: every host and guest it knows. */
async function prometheusFleetInput(source: { url: string; config: Config }) {
  const { prometheusClient, readPrometheusFleet } = await import('../peers/prometheus-fleet');
  const client = await prometheusClient(source.config.fleet, source.url);
  const { peers, source: from } = await readPrometheusFleet(client, source.config.fleet);
  return {
    input: { peers, policy: source.config.policy, maxMatrixCells: source.config.fleet.maxMatrixCells },
    from,
  };
}

export async function fleetCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parse('fleet', args, { ...common, prometheus: { type: 'string' } });
  const { renderFleet } = await import('./render-fleet');
  const { fleetExitCode, buildFleet } = await import('../judge/fleet');
  const prom = prometheusSource('fleet', values.prometheus, values.config);
  if (prom) {
    const { input, from } = await prometheusFleetInput(prom);
    const doc = { ...buildFleet(input), prometheus: from };
    if (values.json) await writeJson(doc, io.stdout, io.drain);
    else io.stdout(renderFleet(doc));
    return fleetExitCode(doc);
  }
  const doc = await apiRequest<FleetDocument>(
    { socketPath: apiSocket(values.api, values.config) },
    'GET',
    '/v1/fleet',
    undefined,
    30000,
  );
  if (values.json) await writeJson(doc, io.stdout, io.drain);
  else io.stdout(renderFleet(doc));
  return fleetExitCode(doc);
}

export async function adviseCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(
    'advise',
    args,
    { ...common, 'pool-bits': { type: 'string' }, prometheus: { type: 'string' } },
    { min: 0, max: 1 },
  );
  const poolBits = intOption('advise', 'pool-bits', values['pool-bits'], 32, 52);
  const { renderAdvice } = await import('./render-fleet');
  const { adviceExitCode, advise, AdviceError } = await import('../judge/advise');
  const prom = prometheusSource('advise', values.prometheus, values.config);
  if (prom) {
    const { input, from } = await prometheusFleetInput(prom);
    let doc: import('../judge/advise').AdviceDocument;
    try {
      doc = { ...advise({ fleet: input, vm: positionals[0], poolBits }), prometheus: from };
    } catch (err) {
      if (err instanceof AdviceError) {
        io.stderr(`physbitsctl: ${err.code}: ${err.message}`);
        return err.exitCode;
      }
      throw err;
    }
    io.stdout(values.json ? JSON.stringify(doc, null, 2) : renderAdvice(doc));
    return adviceExitCode(doc);
  }
  const q = new URLSearchParams();
  if (positionals[0]) q.set('vm', positionals[0]);
  if (poolBits !== undefined) q.set('poolBits', String(poolBits));
  const doc = await apiRequest<AdviceDocument>(
    { socketPath: apiSocket(values.api, values.config) },
    'GET',
    `/v1/advise${q.size ? `?${q}` : ''}`,
    undefined,
    30000,
  );
  io.stdout(values.json ? JSON.stringify(doc, null, 2) : renderAdvice(doc));
  return adviceExitCode(doc);
}
