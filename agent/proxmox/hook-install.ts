/**
 * `physbitsctl proxmox-hook --install [--storage STORAGE] [VMID...]`: writes the hookscript snippet
 * and sets it on VMs with `qm set VMID --hookscript STORAGE:snippets/…`, keeping a hookscript a VM
 * already has by chaining it.
 *
 * Proxmox runs one hookscript per VM (qemu-server `hookscript:`), a file of a storage's `snippets`
 * content that must exist and be executable on the node that starts the VM (pve-guest-common
 * GuestHelpers.pm check_hookscript; the path comes from `pvesm path VOLID`). So:
 *  - `physbits-hook.sh`: runs physbitsctl proxmox-hook, for VMs without a hookscript;
 *  - `physbits-hook-VMID.sh`: runs physbitsctl proxmox-hook, stops on a refusal, then runs the
 *    script the VM had before (its path resolved now, on this node) with the same arguments, for
 *    every phase; for a VM that already had one.
 * VMs whose hookscript is already one of these are left alone. Without VMIDs: every VM of this
 * node (`qemu-server/*.conf` under proxmox.configDir). Each VM's outcome is one line.
 */
import { execFile } from 'node:child_process';
import { chmodSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseVmid, readTreeFile, vmConfigPath } from './config-tree';
import { parseVmConfig } from './vm-config';

export const SNIPPET = 'physbits-hook.sh';
export const chainSnippet = (vmid: number) => `physbits-hook-${vmid}.sh`;
/** A storage id as pve-storage allows one. */
const STORAGE_ID = /^[a-z][a-z0-9\-_.]*[a-z0-9]$/i;
const TIMEOUT_MS = 30000;

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface InstallDeps {
  configDir: string;
  storage: string;
  /** How the snippet starts physbitsctl: [node, script] or [program]. */
  program: string[];
  /** `--config FILE` to pass on, when one was given. */
  configPath?: string;
  /** Runs `qm` / `pvesm`; default: execFile with a timeout. */
  run?: (command: string, args: string[]) => Promise<CommandResult>;
  stdout: (line: string) => void;
  stderr: (line: string) => void;
}

export function runCommand(command: string, args: string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: TIMEOUT_MS, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
      resolve({ code, stdout: String(stdout), stderr: err && !stderr ? err.message : String(stderr) });
    });
  });
}

/** A word for /bin/sh: single-quoted. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

function hookCommand(deps: InstallDeps): string {
  const words = [...deps.program, 'proxmox-hook', ...(deps.configPath ? ['--config', deps.configPath] : [])];
  return `${words.map(shellQuote).join(' ')} "$@"`;
}

/** The snippet for VMs without a hookscript of their own. */
export function plainSnippet(deps: InstallDeps): string {
  return `#!/bin/sh\n# physbits: Proxmox VE hookscript (physbitsctl proxmox-hook --install)\nexec ${hookCommand(deps)}\n`;
}

/** The snippet for a VM that had `previous` (at `path` on this node): physbits first, then it. */
export function chainedSnippet(deps: InstallDeps, previous: string, path: string): string {
  return (
    '#!/bin/sh\n' +
    `# physbits: physbitsctl proxmox-hook, then the hookscript this VM had before: ${previous.replace(/\n/g, ' ')}\n` +
    `${hookCommand(deps)} || exit $?\n` +
    `exec ${shellQuote(path)} "$@"\n`
  );
}

/** Writes `text` to `path` as an executable file, replacing it whole. */
function writeScript(path: string, text: string): void {
  const tmp = join(dirname(path), `.${process.pid}.physbits-tmp`);
  writeFileSync(tmp, text, { mode: 0o755 });
  chmodSync(tmp, 0o755);
  renameSync(tmp, path);
}

async function pvesmPath(deps: InstallDeps, run: NonNullable<InstallDeps['run']>, volid: string): Promise<string> {
  const r = await run('pvesm', ['path', volid]);
  const path = r.stdout.trim();
  if (r.code !== 0 || !path.startsWith('/') || path.includes('\n'))
    throw new Error(`pvesm path ${volid} failed: ${(r.stderr || r.stdout).trim().split('\n')[0] || `exit ${r.code}`}`);
  return path;
}

/** This node's VMIDs: `qemu-server/*.conf` under the config tree, in order. */
export function localVmids(configDir: string): number[] {
  return readdirSync(join(configDir, 'qemu-server'))
    .map((name) => /^(\d+)\.conf$/.exec(name)?.[1])
    .map((id) => (id === undefined ? null : parseVmid(id)))
    .filter((id): id is number => id !== null)
    .sort((a, b) => a - b);
}

/** Installs for `vmids` (all of this node's when empty); resolves to the exit code (0 all done, 1 some failed). */
export async function installHook(vmids: string[], deps: InstallDeps): Promise<number> {
  const run = deps.run ?? runCommand;
  if (!STORAGE_ID.test(deps.storage)) {
    deps.stderr(`physbitsctl: proxmox-hook --install: '${deps.storage.slice(0, 40)}' is not a storage id`);
    return 64;
  }
  const ids: number[] = [];
  for (const text of vmids) {
    const id = parseVmid(text);
    if (id === null) {
      deps.stderr(`physbitsctl: proxmox-hook --install: '${text.slice(0, 20)}' is not a VMID`);
      return 64;
    }
    ids.push(id);
  }
  const volid = (name: string) => `${deps.storage}:snippets/${name}`;
  let failed = 0;
  try {
    const path = await pvesmPath(deps, run, volid(SNIPPET));
    writeScript(path, plainSnippet(deps));
    deps.stdout(`wrote ${path} (${volid(SNIPPET)})`);
    if (ids.length === 0) ids.push(...localVmids(deps.configDir));
  } catch (err) {
    deps.stderr(`physbitsctl: proxmox-hook --install: ${(err as Error).message}`);
    return 1;
  }
  for (const vmid of ids) {
    try {
      const file = parseVmConfig(readTreeFile(deps.configDir, vmConfigPath(vmid, null)));
      const previous = file.current.hookscript;
      let target = volid(SNIPPET);
      if (previous === volid(SNIPPET) || previous === volid(chainSnippet(vmid))) {
        deps.stdout(`VM ${vmid}: already runs physbits (${previous})`);
        continue;
      }
      if (previous !== undefined) {
        const previousPath = await pvesmPath(deps, run, previous);
        target = volid(chainSnippet(vmid));
        const path = await pvesmPath(deps, run, target);
        writeScript(path, chainedSnippet(deps, previous, previousPath));
      }
      const r = await run('qm', ['set', String(vmid), '--hookscript', target]);
      if (r.code !== 0)
        throw new Error(
          `qm set ${vmid} --hookscript ${target} failed: ${(r.stderr || r.stdout).trim().split('\n')[0]}`,
        );
      deps.stdout(
        previous === undefined
          ? `VM ${vmid}: hookscript ${target}`
          : `VM ${vmid}: hookscript ${target}, which runs physbits and then ${previous}`,
      );
    } catch (err) {
      failed++;
      deps.stderr(`VM ${vmid}: ${(err as Error).message}`);
    }
  }
  return failed > 0 ? 1 : 0;
}
