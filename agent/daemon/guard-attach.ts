/**
 * The guard on a held VM: while the daemon holds the upstream QMP connection, a multiplexing proxy
 * serves the VM's guarded socket (docs/configuration.md, `guard.socketDir`: the upstream path mirrored below
 * the fixed part of its glob) and every command from its clients passes the guard's rules
 * (agent/guard/). The socket is `0660` for `guard.socketGroup`, else `0600` owned like the upstream
 * socket, never more open than it. Two VMs never share a guarded path: the second is refused
 * (GuardUnavailableError) and the supervisor releases its QEMU and raises GUARD_UNAVAILABLE.
 */
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import type { QmpClient } from '../../qmp/client';
import { QmpProxy } from '../../qmp/proxy';
import { AgentError } from '../core/errors';
import { guardSocketPath, guardSubdirs } from '../core/socket-globs';
import { groupId } from '../core/unix-groups';
import type { Config } from '../core/config';
import type { Logger } from '../core/logger';
import type { HostFacts } from '../core/types';
import {
  classifyCommand,
  createGuardInterceptor,
  INSPECTED_COMMANDS,
  type GuardAction,
  type GuardRefusal,
} from '../guard/guard-decision';
import type { PeerLookup } from '../guard/migration-rule';
import type { IncomingNotice } from '../peers/incoming-notice';
import { qemuRootOf } from '../facts/qemu-process';
import { readDefaultHugePageSize, type ResolveOptions } from '../facts/memory-placement';
import type { Attachment, VmSupervisor } from './vm-supervisor';

/** The guard could not start for a VM (its path is another VM's, or the socket cannot be made). */
export class GuardUnavailableError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('GUARD_UNAVAILABLE', message, options);
  }
}

export interface GuardSocketOwner {
  mode: number;
  uid: number;
  gid: number;
}

/**
 * Mode and owner of a guarded socket, from the upstream socket's stat: `0660` owner:socketGroup
 * when a group is configured; otherwise `0600` owned like the upstream socket, less any owner bit
 * the upstream lacks. Group and other bits never come from the upstream: its directory may be what
 * keeps others out (a `0777` socket in a `0700` directory), and the guarded directory is not that one.
 */
export function guardSocketOwner(upstream: GuardSocketOwner, socketGroupId: number | undefined): GuardSocketOwner {
  if (socketGroupId !== undefined) return { mode: 0o660, uid: upstream.uid, gid: socketGroupId };
  return { mode: upstream.mode & 0o600, uid: upstream.uid, gid: upstream.gid };
}

/** Creates the directories of a guarded path, each `0755` whatever the umask (clients must traverse them). */
function makeGuardDirs(socketDir: string, path: string): void {
  for (const dir of [socketDir, ...guardSubdirs(socketDir, path)]) {
    // Already there (every VM after the first): one stat, no EEXIST error built and thrown.
    if (statSync(dir, { throwIfNoEntry: false })?.isDirectory()) continue;
    try {
      mkdirSync(dir, { mode: 0o755 });
      chmodSync(dir, 0o755);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

/** What the guard needs of the daemon. */
export interface GuardAttachDeps {
  config: () => Config;
  host: () => HostFacts;
  peers: () => PeerLookup;
  logger: Logger;
  /** A command was refused (metrics, alerts, events): the VM by its id and name. */
  refused(vm: { id: string; name: string }, refusal: GuardRefusal): void;
  /** A `migrate` from this upstream socket passed the guard. */
  migrationApproved(socket: string): void;
  /** Tells a peer's agent the booted width of a guest migrating there (null: told; else why not). */
  notifyIncoming?(peer: string, notice: IncomingNotice): Promise<string | null>;
  /** The fixed directory part of the glob that found this upstream socket, when a glob did. */
  globBase(socket: string): string | undefined;
}

/**
 * A backend's mem-path is measured in QEMU's root and mount namespace (`<procRoot>/<pid>/root`,
 * the pid found from its QMP socket: agent/facts/qemu-process.ts), and memfd's default huge page
 * size read from `<procRoot>/meminfo`. When QEMU's process cannot be found, paths are measured here.
 */
async function qemuResolveOptions(socket: string, procRoot: string): Promise<ResolveOptions> {
  const qemuRoot = await qemuRootOf(socket, procRoot);
  return {
    ...(qemuRoot ? { qemuRoot } : {}),
    defaultHugePageSize: () => readDefaultHugePageSize(procRoot),
  };
}

export function createGuardAttach(deps: GuardAttachDeps) {
  /** Guarded socket path → the upstream socket it serves: two VMs never share one. */
  const claims = new Map<string, string>();
  return async (client: QmpClient, supervisor: VmSupervisor): Promise<Attachment | null> => {
    const config = deps.config();
    const path = guardSocketPath(config.guard.socketDir, supervisor.socket, deps.globBase(supervisor.socket));
    const holder = claims.get(path);
    if (holder !== undefined && holder !== supervisor.socket)
      throw new GuardUnavailableError(`${path} is already the guarded socket of ${holder}`);
    let owner: GuardSocketOwner;
    try {
      const st = statSync(supervisor.socket);
      owner = guardSocketOwner(
        { mode: st.mode & 0o777, uid: st.uid, gid: st.gid },
        config.guard.socketGroup ? groupId(config.guard.socketGroup, 'guard.socketGroup') : undefined,
      );
    } catch (err) {
      throw new GuardUnavailableError(
        `${supervisor.socket}: cannot read its owner and mode: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    claims.set(path, supervisor.socket);
    const release = (): void => {
      if (claims.get(path) === supervisor.socket) claims.delete(path);
    };
    const logger = deps.logger.child({ vm: supervisor.name, component: 'guard' });
    // QEMU's root, looked up once per connection, when a memory device first needs it.
    let qemuView: Promise<ResolveOptions> | undefined;
    const decide = createGuardInterceptor({
      vm: supervisor.name,
      host: deps.host,
      facts: () => supervisor.facts(),
      waitForFacts: (ms) => supervisor.waitForFacts(ms),
      q: client,
      config: deps.config,
      peers: deps.peers(),
      logger,
      onRefusal: (refusal: GuardRefusal) => deps.refused({ id: supervisor.id, name: supervisor.name }, refusal),
      notifyIncoming: deps.notifyIncoming,
      resolveOptions: () => (qemuView ??= qemuResolveOptions(supervisor.socket, config.host.procRoot)),
    });
    const proxy = new QmpProxy({
      upstream: client,
      label: supervisor.name,
      maxClients: config.guard.maxClients,
      clientQueueBytes: config.guard.clientQueueBytes,
      maxLineBytes: config.qmp.maxLineBytes,
      logger,
      // Every other command passes as the client's own line, without the interceptor.
      inspects: (name) => INSPECTED_COMMANDS.has(name),
      interceptor: (cmd) => {
        const approved = (action: GuardAction): GuardAction => {
          if (action.action === 'forward') {
            const kind = classifyCommand(cmd).kind;
            if (kind === 'migrate') deps.migrationApproved(supervisor.socket);
            // QEMU sends no event when a memory or PCI device is plugged: read the layout again after it.
            if (kind === 'memory' || kind === 'pci') supervisor.rereadSoon();
          }
          return action;
        };
        const action = decide(cmd);
        return action instanceof Promise ? action.then(approved) : approved(action);
      },
    });
    // Only root may give a socket away; otherwise it stays ours, with the mode worked out above.
    const asRoot = process.getuid?.() === 0;
    try {
      makeGuardDirs(config.guard.socketDir, path);
      await proxy.listen(path, { mode: owner.mode, ...(asRoot ? { uid: owner.uid, gid: owner.gid } : {}) });
    } catch (err) {
      release();
      await proxy.close();
      const inUse = (err as { code?: string }).code === 'QMP_SOCKET_IN_USE';
      throw new GuardUnavailableError(`${path}: ${inUse ? 'a live process serves it' : (err as Error).message}`, {
        cause: err,
      });
    }
    supervisor.setGuardSocket(path);
    logger.info('guarded socket ready', { path, mode: `0${owner.mode.toString(8)}` });
    return {
      close: async () => {
        supervisor.setGuardSocket(null);
        await proxy.close();
        release();
      },
    };
  };
}
