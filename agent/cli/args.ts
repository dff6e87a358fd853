/** Argument parsing on node:util parseArgs; every mistake is a UsageError (exit 64). */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../core/errors';

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  args: string[],
  options: T,
  positionals: { min: number; max: number } = { min: 0, max: 0 },
) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: positionals.max > 0 });
  } catch (err) {
    throw new UsageError(`${command}: ${(err as Error).message.split('\n')[0]}`);
  }
  const n = parsed.positionals.length;
  if (n < positionals.min) throw new UsageError(`${command}: missing argument`);
  if (n > positionals.max)
    throw new UsageError(`${command}: unexpected argument '${parsed.positionals[positionals.max]}'`);
  return parsed;
}

export function intOption(
  command: string,
  name: string,
  value: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new UsageError(`${command}: --${name} takes a whole number from ${min} to ${max}`);
  return n;
}
