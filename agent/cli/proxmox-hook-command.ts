/**
 * `physbitsctl proxmox-hook [--config FILE] VMID PHASE`, the entry point of a Proxmox VE hookscript.
 * The decision lives in agent/proxmox/proxmox-hook.ts.
 */
import { loadConfig } from '../core/config';
import { runProxmoxHookEntry } from '../proxmox/proxmox-hook';
import { parse } from './args';
import type { CliIo } from './cli-io';

export async function proxmoxHookCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse('proxmox-hook', args, { config: { type: 'string' } }, { min: 2, max: 2 });
  return runProxmoxHookEntry(positionals, {
    configPath: values.config,
    loadConfig,
    migratedFrom: io.env.PVE_MIGRATED_FROM,
    stderr: io.stderr,
  });
}
