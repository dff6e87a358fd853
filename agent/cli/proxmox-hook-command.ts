/**
 * `physbitsctl proxmox-hook [--config FILE] VMID PHASE`, the entry point of a Proxmox VE hookscript,
 * and `physbitsctl proxmox-hook --install [--storage STORAGE] [--config FILE] [VMID...]`, which
 * writes the snippet and sets it on VMs. The decisions live in agent/proxmox/.
 */
import { resolve } from 'node:path';
import { loadConfig } from '../core/config';
import { UsageError } from '../core/errors';
import { installHook } from '../proxmox/hook-install';
import { runProxmoxHookEntry } from '../proxmox/proxmox-hook';
import { parse } from './args';
import type { CliIo } from './cli-io';

export async function proxmoxHookCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(
    'proxmox-hook',
    args,
    { config: { type: 'string' }, install: { type: 'boolean' }, storage: { type: 'string' } },
    { min: 0, max: 4096 },
  );
  if (values.install) {
    const config = loadConfig(values.config);
    return installHook(positionals, {
      configDir: config.proxmox.configDir,
      storage: values.storage ?? 'local',
      // The snippet starts this very program the way it was started: node and the script.
      program: [process.execPath, resolve(process.argv[1])],
      configPath: values.config === undefined ? undefined : resolve(values.config),
      stdout: io.stdout,
      stderr: io.stderr,
    });
  }
  if (values.storage !== undefined) throw new UsageError('proxmox-hook: --storage is for --install');
  if (positionals.length !== 2) throw new UsageError('proxmox-hook: expected VMID PHASE (or --install [VMID...])');
  return runProxmoxHookEntry(positionals, {
    configPath: values.config,
    loadConfig,
    migratedFrom: io.env.PVE_MIGRATED_FROM,
    stderr: io.stderr,
  });
}
