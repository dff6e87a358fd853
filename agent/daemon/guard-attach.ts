/**
 * The guard on a held VM: while the daemon holds the upstream QMP connection, a multiplexing proxy
 * serves `<guard.socketDir>/<basename of the upstream socket>` with the upstream socket's owner and
 * mode, and every command from its clients passes the guard's rules (agent/guard/).
 */
import { mkdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { QmpClient } from '../../qmp/client';
import { QmpProxy } from '../../qmp/proxy';
import type { Config } from '../core/config';
import type { Logger } from '../core/logger';
import type { HostFacts } from '../core/types';
import { classifyCommand, createGuardInterceptor, type RefusalEvent } from '../guard/guard-decision';
import type { PeerLookup } from '../guard/migration-rule';
import type { Attachment, VmSupervisor } from './vm-supervisor';

/** What the guard needs of the daemon. */
export interface GuardAttachDeps {
  config: () => Config;
  host: () => HostFacts;
  peers: () => PeerLookup;
  logger: Logger;
  /** A command was refused (metrics, alerts, events). */
  refused(vm: string, refusal: RefusalEvent): void;
  /** A `migrate` from this upstream socket passed the guard. */
  migrationApproved(socket: string): void;
}

export function guardSocketPath(config: Config, upstream: string): string {
  return join(config.guard.socketDir, basename(upstream));
}

export function createGuardAttach(deps: GuardAttachDeps) {
  return async (client: QmpClient, supervisor: VmSupervisor): Promise<Attachment | null> => {
    const config = deps.config();
    const path = guardSocketPath(config, supervisor.socket);
    let owner: { mode: number; uid: number; gid: number };
    try {
      const st = statSync(supervisor.socket);
      owner = { mode: st.mode & 0o777, uid: st.uid, gid: st.gid };
    } catch {
      owner = { mode: 0o600, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    }
    mkdirSync(config.guard.socketDir, { recursive: true, mode: 0o755 });
    const logger = deps.logger.child({ vm: supervisor.name, component: 'guard' });
    const decide = createGuardInterceptor({
      vm: supervisor.name,
      host: deps.host,
      facts: () => supervisor.facts(),
      waitForFacts: (ms) => supervisor.waitForFacts(ms),
      q: client,
      config: deps.config,
      peers: deps.peers(),
      logger,
      onRefusal: (refusal: RefusalEvent) => deps.refused(supervisor.name, refusal),
    });
    const proxy = new QmpProxy({
      upstream: client,
      label: supervisor.name,
      maxClients: config.guard.maxClients,
      clientQueueBytes: config.guard.clientQueueBytes,
      maxLineBytes: config.qmp.maxLineBytes,
      logger,
      interceptor: async (cmd) => {
        const action = await decide(cmd);
        if (action.action === 'forward') {
          const kind = classifyCommand(cmd).kind;
          if (kind === 'migrate') deps.migrationApproved(supervisor.socket);
          // QEMU sends no event when a memory device is plugged: read the layout again after it.
          if (kind === 'memory') supervisor.rereadSoon();
        }
        return action;
      },
    });
    // Only root may give a socket away; otherwise it stays ours, with the upstream's mode.
    const asRoot = process.getuid?.() === 0;
    await proxy.listen(path, { mode: owner.mode, ...(asRoot ? { uid: owner.uid, gid: owner.gid } : {}) });
    supervisor.setGuardSocket(path);
    logger.info('guarded socket ready', { path });
    return {
      close: async () => {
        supervisor.setGuardSocket(null);
        await proxy.close();
      },
    };
  };
}
