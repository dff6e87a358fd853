/** The daemon's answers to the control API (agent/api/api-server.ts serves them). */
import { apiError, type ApiHandlers } from '../api/api-server';
import type { Daemon } from './daemon';
import { buildStatusDocument } from '../judge/status-document';
import { checkMigration } from '../guard/migration-rule';
import { buildFleet } from '../judge/fleet';
import { advise, AdviceError } from '../judge/advise';

export class DaemonApi implements ApiHandlers {
  constructor(private readonly d: Daemon) {}

  status() {
    return buildStatusDocument(this.d.host, this.d.status());
  }

  host() {
    return this.d.host;
  }

  vm(name: string) {
    return this.d.findVm(name)?.status() ?? null;
  }

  async checkMigration(body: { vm?: unknown; peer?: unknown }) {
    if (typeof body.vm !== 'string' || typeof body.peer !== 'string')
      throw apiError(400, 'API_BAD_REQUEST', 'expected {"vm": NAME, "peer": PEER}');
    const sup = this.d.findVm(body.vm);
    if (!sup) throw apiError(404, 'VM_NOT_FOUND', `no VM named '${body.vm}'`);
    const peerCfg = this.d.peers.findByName(body.peer) ?? this.d.peers.findByAddress(body.peer);
    if (!peerCfg) throw apiError(404, 'PEER_NOT_FOUND', `no peer named '${body.peer}' in the config`);
    const guest = sup.facts();
    if (!guest) {
      return {
        vm: sup.name,
        peer: peerCfg.name,
        allowed: false,
        code: 'REFUSED_FACTS_UNKNOWN',
        message: `the facts of ${sup.name} are not known (${sup.status().error?.code ?? 'unknown'})`,
      };
    }
    const facts = await this.d.peers.factsOf(peerCfg);
    const peer = facts.physBits === null ? null : { name: peerCfg.name, physBits: facts.physBits };
    const answer = checkMigration({ guest, host: this.d.host, peer, policy: this.d.config.policy });
    return { vm: sup.name, peer: peerCfg.name, peerPhysBits: facts.physBits, reachable: facts.reachable, ...answer };
  }

  private async fleetInput() {
    const peers = await this.d.peers.statuses();
    return { local: this.status(), localName: this.d.host.name, peers, policy: this.d.config.policy };
  }

  async fleet() {
    return buildFleet(await this.fleetInput());
  }

  async advise(vm: string | undefined, poolBits: number | undefined) {
    const fleet = await this.fleetInput();
    try {
      return advise({ fleet, vm, poolBits });
    } catch (err) {
      if (err instanceof AdviceError) {
        // 404/400: the operator named something wrong (exit 64); 503: a host that might hold it is unreachable (exit 3).
        throw apiError(err.exitCode === 3 ? 503 : err.code === 'VM_NOT_FOUND' ? 404 : 400, err.code, err.message);
      }
      throw err;
    }
  }

  libvirtEvent(body: unknown) {
    const b = body as { domain?: unknown; operation?: unknown };
    this.d.logger.info('libvirt hook event', {
      domain: String(b.domain ?? '?'),
      operation: String(b.operation ?? '?'),
    });
    this.d.libvirtChanged();
  }
}
