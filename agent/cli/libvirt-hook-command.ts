/**
 * `physbitsctl libvirt-hook [--config FILE] DOMAIN OPERATION SUBOP EXTRA`, the entry point of
 * /etc/libvirt/hooks/qemu. The decision lives in agent/libvirt/libvirt-hook.ts.
 */
import { loadConfig } from '../core/config';
import { readTextOrNull, runHookEntry } from '../libvirt/libvirt-hook';
import { parse } from './args';
import type { CliIo } from './cli-io';

export async function libvirtHookCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse('libvirt-hook', args, { config: { type: 'string' } }, { min: 4, max: 8 });
  const stdin = io.readStdin ? await io.readStdin() : '';
  return runHookEntry(positionals, stdin, {
    configPath: values.config,
    loadConfig,
    readText: readTextOrNull,
    stderr: io.stderr,
  });
}
