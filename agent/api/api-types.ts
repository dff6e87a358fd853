/**
 * The control API's documents and events, as the daemon serves them (agent/api/api-server.ts,
 * agent/daemon/daemon-api.ts) and the CLI reads them (agent/cli/). The contract names the status,
 * fleet and advice documents; the rest is documented in docs/daemon.md.
 */
import type { AlertSeverity } from '../alerts/alert-model';
import type { State } from '../core/exit-codes';
import type { HostFacts, Reason, Relation, Severity, StatusDocument, VmStatus } from '../core/types';
import type { AdviceDocument } from '../judge/advise';
import type { FleetDocument } from '../judge/fleet';
import type { IncomingNotice } from '../peers/incoming-notice';

export type { AdviceDocument, FleetDocument, HostFacts, StatusDocument, VmStatus };

/** `POST /v1/check-migration`'s answer. */
export interface MigrationCheck {
  vm: string;
  /** The VM's id on this host. */
  id?: string;
  peer: string;
  allowed: boolean;
  code?: string;
  message: string;
  /** The peer's limit as last known (null: unknown); absent when the VM's facts are not known. */
  peerPhysBits?: number | null;
  reachable?: boolean;
}

/** Every answer with HTTP status 400 or above. */
export interface ApiErrorBody {
  error: { code: string; message: string };
}

/** What the API answers, route by route. */
/** Who a request came from, for the handlers that care (POST /v1/incoming). */
export interface RequestOrigin {
  /** 'unix' for the local socket; the remote address on TCP. */
  transport: 'unix' | 'tcp';
  address: string | null;
}

export interface ApiHandlers {
  /** GET /v1/status */
  status(): StatusDocument;
  /** GET /v1/status as its JSON text, when the handlers keep it cheaper than status() and JSON.stringify. */
  statusText?(): string;
  /** GET /v1/host */
  host(): HostFacts;
  /** GET /v1/vms/NAME (null: 404) */
  vm(name: string): VmStatus | null;
  /** POST /v1/check-migration */
  checkMigration(body: { vm?: unknown; peer?: unknown }): Promise<MigrationCheck>;
  /** GET /v1/fleet */
  fleet(): Promise<FleetDocument>;
  /** GET /v1/advise[?vm=NAME][&poolBits=N] */
  advise(vm: string | undefined, poolBits: number | undefined): Promise<AdviceDocument>;
  /** POST /v1/incoming: a peer guard's notice of a guest migrating here (answered 202). */
  incoming(notice: IncomingNotice, origin: RequestOrigin): Promise<{ accepted: true; matched: string | null }>;
  /** POST /v1/libvirt-events (answered 202 { accepted: true }) */
  libvirtEvent(body: unknown): void;
}

/** The daemon's events, on `GET /v1/events` (WebSocket), one JSON object a message. */
export type DaemonEvent =
  | VerdictEvent
  | VmErrorEvent
  | VmAddedEvent
  | VmRemovedEvent
  | RefusalEvent
  | AlertChangeEvent
  | MigrationEvent
  | ConfigEvent
  | LogEvent;

interface EventBase {
  /** ISO time the daemon published it. */
  time: string;
}

/** A VM's severity changed, or its reasons did. */
export interface VerdictEvent extends EventBase {
  type: 'verdict';
  vm: string;
  /** The VM's id on this host (its name may repeat). */
  id?: string;
  socket: string;
  /** null: the VM's first verdict. */
  previous: State | null;
  severity: State;
  /** null while the VM is unknown. */
  relation: Relation | null;
  /** The first (most severe) reason's code; for severity `unknown`, the error's code (docs/errors.md). */
  reason?: string;
  reasons?: Reason[];
}

/** A VM became unreachable, or failed with another code. */
export interface VmErrorEvent extends EventBase {
  type: 'vm-error';
  vm: string;
  /** The VM's id on this host (its name may repeat). */
  id?: string;
  socket: string;
  code: string;
  message: string;
}

export interface VmAddedEvent extends EventBase {
  type: 'vm-added';
  vm: string;
  /** The VM's id on this host (its name may repeat). */
  id?: string;
  socket: string;
  mode: string;
}

export interface VmRemovedEvent extends EventBase {
  type: 'vm-removed';
  vm: string;
  /** The VM's id on this host (its name may repeat). */
  id?: string;
  socket: string;
}

/** The guard refused a command. */
export interface RefusalEvent extends EventBase {
  type: 'refusal';
  vm: string;
  /** The VM's id on this host (its name may repeat). */
  id?: string;
  /** The QMP command the client sent (`human-monitor-command` for the HMP forms). */
  command: string;
  effective: 'device_add' | 'migrate';
  code: string;
  message: string;
}

/** An alert changed state. */
export interface AlertChangeEvent extends EventBase {
  type: 'alert';
  vm: string;
  status: 'firing' | 'resolved';
  change: 'fired' | 'resolved' | 'updated' | 'refused';
  alertname: string;
  severity: AlertSeverity;
  reason: string;
  summary: string;
}

/** A migration started that the guard did not see. */
export interface MigrationEvent extends EventBase {
  type: 'migration';
  vm: string;
  status: string;
  verified: false;
  severity: Severity;
  message: string;
}

export interface ConfigEvent extends EventBase {
  type: 'config';
  message: string;
}

/** The daemon's log stream failed for good (EPIPE, …); its lines are dropped from then on. */
export interface LogEvent extends EventBase {
  type: 'log';
  message: string;
}

/** An event as published: the bus stamps the time when it is not given. */
export type PublishedEvent = DaemonEvent extends infer E
  ? E extends DaemonEvent
    ? Omit<E, 'time'> & { time?: string }
    : never
  : never;
