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
import type { Daemon } from './daemon';
import { classifyCommand, createGuardInterceptor, type RefusalEvent } from '../guard/guard-decision';
import type { Attachment, VmSupervisor } from './vm-supervisor';

export function guardSocketPath(config: Config, upstream: string): string {
  return join(config.guard.socketDir, basename(upstream));
}

export function createGuardAttach(d: Daemon) {
  return async (client: QmpClient, sup: VmSupervisor): Promise<Attachment | null> => {
    const cfg = d.config;
    const path = guardSocketPath(cfg, sup.socket);
    let owner: { mode: number; uid: number; gid: number };
    try {
      const st = statSync(sup.socket);
      owner = { mode: st.mode & 0o777, uid: st.uid, gid: st.gid };
    } catch {
      owner = { mode: 0o600, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    }
    mkdirSync(cfg.guard.socketDir, { recursive: true, mode: 0o755 });
    const logger = d.logger.child({ vm: sup.name, component: 'guard' });
    const decide = createGuardInterceptor({
      vm: sup.name,
      host: () => d.host,
      facts: () => sup.facts(),
      waitForFacts: (ms) => sup.waitForFacts(ms),
      q: client,
      get config() {
        return d.config;
      },
      peers: d.peers.lookup(),
      logger,
      onRefusal: (r: RefusalEvent) => {
        const vm = sup.name;
        d.metrics.refused(vm, r.command === 'human-monitor-command' ? `hmp:${r.effective}` : r.command);
        d.alerts.refusal(vm, r.code, r.desc, r.command);
        d.events.publish({
          type: 'refusal',
          vm,
          command: r.command,
          effective: r.effective,
          code: r.code,
          message: r.desc,
        });
      },
    });
    const proxy = new QmpProxy({
      upstream: client,
      label: sup.name,
      maxClients: cfg.guard.maxClients,
      clientQueueBytes: cfg.guard.clientQueueBytes,
      maxLineBytes: cfg.qmp.maxLineBytes,
      logger,
      interceptor: async (cmd) => {
        const action = await decide(cmd);
        if (action.action === 'forward') {
          const kind = classifyCommand(cmd).kind;
          if (kind === 'migrate') d.alerts.migrationApproved(sup.socket);
          // QEMU sends no event when a memory device is plugged: read the layout again after it.
          if (kind === 'memory') sup.rereadSoon();
        }
        return action;
      },
    });
    // Only root may give a socket away; otherwise it stays ours, with the upstream's mode.
    const asRoot = process.getuid?.() === 0;
    await proxy.listen(path, { mode: owner.mode, ...(asRoot ? { uid: owner.uid, gid: owner.gid } : {}) });
    sup.setGuardSocket(path);
    logger.info('guarded socket ready', { path });
    return {
      close: async () => {
        sup.setGuardSocket(null);
        await proxy.close();
      },
    };
  };
}
