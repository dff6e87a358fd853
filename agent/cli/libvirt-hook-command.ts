/**
 * `physbitsctl libvirt-hook [--config FILE] DOMAIN OPERATION SUBOP EXTRA`, the entry point of
 * /etc/libvirt/hooks/qemu. The decision lives in agent/libvirt/libvirt-hook.ts.
 */
import { loadConfig } from '../core/config';
import { EXIT } from '../core/exit-codes';
import { runLibvirtHook } from '../libvirt/libvirt-hook';
import { parse } from './args';
import type { CliIo } from './cli-io';

export async function libvirtHookCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse('libvirt-hook', args, { config: { type: 'string' } }, { min: 4, max: 8 });
  let config;
  try {
    config = loadConfig(values.config);
  } catch (err) {
    // A broken physbits must not stop libvirt from starting guests, unless it is configured to.
    io.stderr(`physbits: hook: ${(err as Error).message}; allowing`);
    return EXIT.OK;
  }
  const stdin = io.readStdin ? await io.readStdin() : '';
  return runLibvirtHook(positionals, stdin, { config, stderr: io.stderr });
}
