/** The daemon's answers to the control API (agent/api/api-server.ts serves them). */
import { apiError, type ApiHandlers } from '../api/api-server';
import type { RequestOrigin } from '../api/api-types';
import { noticeRefusal } from './notice-origin';
import type { Config } from '../core/config';
import type { Logger } from '../core/logger';
import type { HostFacts, VmStatus } from '../core/types';
import { buildStatusDocument, statusDocumentText } from '../judge/status-document';
import { checkMigration } from '../guard/migration-rule';
import { buildFleet, type FleetInput } from '../judge/fleet';
import type { PrometheusSource } from '../core/types';
import { AnswerCache } from '../peers/answer-cache';
import { prometheusClient, readPrometheusFleet } from '../peers/prometheus-fleet';
import { PrometheusError } from '../peers/prometheus-client';
import { advise, AdviceError } from '../judge/advise';
import type { IncomingNotice } from '../peers/incoming-notice';
import type { LivePeers } from './live-peers';
import type { VmSupervisor } from './vm-supervisor';

/** What the API's answers need of the daemon. */
export interface DaemonApiDeps {
  config: () => Config;
  host: () => HostFacts;
  logger: Logger;
  peers: Pick<LivePeers, 'findByName' | 'findByAddress' | 'factsOf' | 'statuses'>;
  /** Every VM's status, in discovery order. */
  statuses: () => VmStatus[];
  /** The supervisors of those VMs, in the same order, for each one's JSON text (VmSupervisor.statusText). */
  supervisors?: () => Iterable<Pick<VmSupervisor, 'status' | 'statusText'>>;
  /** The VM with this id; else every VM with this name; else the one with this socket path. */
  findVms: (key: string) => Array<Pick<VmSupervisor, 'id' | 'name' | 'socket' | 'status' | 'facts'>>;
  /** Libvirt's hook said something changed. */
  libvirtChanged: () => void;
  /** A peer guard's notice of a guest migrating here: kept, and matched now when its VM is here. */
  incoming: (notice: IncomingNotice) => string | null;
}

export class DaemonApi implements ApiHandlers {
  private readonly prometheusFleet = new AnswerCache<string, Awaited<ReturnType<typeof readPrometheusFleet>>>({
    clock: Date.now,
    goodSeconds: 0,
    failedSeconds: 0,
  });

  constructor(private readonly deps: DaemonApiDeps) {}

  status() {
    return buildStatusDocument(this.deps.host(), this.deps.statuses());
  }

  statusText() {
    if (!this.deps.supervisors) return JSON.stringify(this.status());
    const vms: VmStatus[] = [];
    const texts: string[] = [];
    for (const supervisor of this.deps.supervisors()) {
      vms.push(supervisor.status());
      texts.push(supervisor.statusText());
    }
    return statusDocumentText(this.deps.host(), vms, texts);
  }

  host() {
    return this.deps.host();
  }

  vm(name: string) {
    return this.oneVm(name, false)?.status() ?? null;
  }

  /**
   * The VM a request names by id, name or socket: 404 VM_NOT_FOUND when none (or null), 409
   * VM_AMBIGUOUS naming each id when a name is shared.
   */
  private oneVm(key: string, required: true): Pick<VmSupervisor, 'id' | 'name' | 'socket' | 'status' | 'facts'>;
  private oneVm(
    key: string,
    required: boolean,
  ): Pick<VmSupervisor, 'id' | 'name' | 'socket' | 'status' | 'facts'> | null;
  private oneVm(key: string, required: boolean) {
    const found = this.deps.findVms(key);
    if (found.length > 1)
      throw apiError(
        409,
        'VM_AMBIGUOUS',
        `${found.length} VMs are named '${key}': name one by its id (${found.map((vm) => `${vm.id} at ${vm.socket}`).join(', ')})`,
      );
    if (found.length === 0 && required) throw apiError(404, 'VM_NOT_FOUND', `no VM named '${key}' (nor with that id)`);
    return found[0] ?? null;
  }

  async checkMigration(body: { vm?: unknown; peer?: unknown }) {
    if (typeof body.vm !== 'string' || typeof body.peer !== 'string')
      throw apiError(400, 'API_BAD_REQUEST', 'expected {"vm": NAME, "peer": PEER}');
    const vm = this.oneVm(body.vm, true);
    const peerConfig =
      (await this.deps.peers.findByName(body.peer)) ?? (await this.deps.peers.findByAddress(body.peer));
    if (!peerConfig)
      throw apiError(
        404,
        'PEER_NOT_FOUND',
        `no peer named '${body.peer}' in the config${this.deps.config().fleet.prometheus ? ' or in fleet.prometheus' : ''}`,
      );
    const guest = vm.facts();
    if (!guest) {
      return {
        vm: vm.name,
        id: vm.id,
        peer: peerConfig.name,
        allowed: false,
        code: 'REFUSED_FACTS_UNKNOWN',
        message: `the facts of ${vm.name} are not known (${vm.status().error?.code ?? 'unknown'})`,
      };
    }
    const facts = await this.deps.peers.factsOf(peerConfig);
    const peer = { name: peerConfig.name, physBits: facts.physBits, why: facts.why };
    const answer = checkMigration({ guest, host: this.deps.host(), peer, policy: this.deps.config().policy });
    return {
      vm: vm.name,
      id: vm.id,
      peer: peerConfig.name,
      peerPhysBits: facts.physBits,
      reachable: facts.reachable,
      source: facts.source,
      ...(facts.prometheus ? { prometheus: facts.prometheus } : {}),
      ...answer,
    };
  }

  /** With fleet.prometheus: every host Prometheus sees (this one included); else this host and its peers. */
  private async fleetInput(): Promise<{ input: FleetInput; prometheus?: PrometheusSource }> {
    const cfg = this.deps.config();
    if (cfg.fleet.prometheus) {
      try {
        const url = cfg.fleet.prometheus;
        // Fleet views asked at once share one read: one ask's budget, not one per caller.
        const { peers, source } = await this.prometheusFleet.get(url, async () =>
          readPrometheusFleet(await prometheusClient(cfg.fleet, url), cfg.fleet),
        );
        return { input: { peers, policy: cfg.policy, maxMatrixCells: cfg.fleet.maxMatrixCells }, prometheus: source };
      } catch (err) {
        if (err instanceof PrometheusError) throw apiError(503, err.code, err.message);
        throw err;
      }
    }
    const peers = await this.deps.peers.statuses();
    return {
      input: {
        local: this.status(),
        localName: this.deps.host().name,
        peers,
        policy: cfg.policy,
        maxMatrixCells: cfg.fleet.maxMatrixCells,
      },
    };
  }

  async fleet() {
    const { input, prometheus } = await this.fleetInput();
    return { ...buildFleet(input), ...(prometheus ? { prometheus } : {}) };
  }

  async advise(vm: string | undefined, poolBits: number | undefined) {
    const { input: fleet, prometheus } = await this.fleetInput();
    try {
      return { ...advise({ fleet, vm, poolBits }), ...(prometheus ? { prometheus } : {}) };
    } catch (err) {
      if (err instanceof AdviceError) {
        // 404: nothing has that name (exit 3, unknown); 409: several have it, 400: a bad width (exit 64).
        throw apiError(
          err.code === 'VM_NOT_FOUND' ? 404 : err.code === 'VM_AMBIGUOUS' ? 409 : err.exitCode === 3 ? 503 : 400,
          err.code,
          err.message,
        );
      }
      throw err;
    }
  }

  async incoming(notice: IncomingNotice, origin: RequestOrigin) {
    if (origin.transport === 'tcp') {
      const refusal = await noticeRefusal(notice, origin.address ?? '', this.deps.config().peers);
      if (refusal) {
        this.deps.logger.warn('incoming migration notice refused', {
          vm: notice.vm,
          from: notice.from ?? undefined,
          address: origin.address ?? undefined,
          reason: refusal,
        });
        throw apiError(403, 'API_NOTICE_REFUSED', `incoming notice refused: ${refusal}`);
      }
    }
    const matched = this.deps.incoming(notice);
    this.deps.logger.info('incoming migration notice', {
      vm: notice.vm,
      physBits: notice.physBits,
      from: notice.from ?? undefined,
      port: notice.port ?? undefined,
      matched: matched ?? undefined,
    });
    return { accepted: true as const, matched };
  }

  libvirtEvent(body: unknown) {
    const hookEvent = body as { domain?: unknown; operation?: unknown };
    this.deps.logger.info('libvirt hook event', {
      domain: String(hookEvent.domain ?? '?'),
      operation: String(hookEvent.operation ?? '?'),
    });
    this.deps.libvirtChanged();
  }
}
