/**
 * What an alert is, as pure functions of (reasons, time): one alert per (VM, reason code, severity),
 * the labels and annotations it carries, how a VM's new reason set turns into fired and resolved
 * alerts, how a guard refusal becomes an alert that ends by itself, and the Alertmanager API v2
 * "postable alert" each state is sent as.
 */
import type { Reason, Severity } from '../core/types';
import { severityRank } from '../core/severity';

export type AlertSeverity = Exclude<Severity, 'ok'>;
export type AlertKind = 'condition' | 'refusal';

/** Every guard refusal's reason code starts with this. */
export const REFUSAL_CODE_PREFIX = 'REFUSED_';
/** A refusal means the guard stopped something dangerous: worth a look, nothing is broken. */
export const REFUSAL_SEVERITY: AlertSeverity = 'warning';
/** Prefix of every alertname. */
export const ALERTNAME_PREFIX = 'Physbits';

/** Bounds on text that comes from guests and QMP clients. */
export const MAX_LABEL_CHARS = 256;
export const MAX_TEXT_CHARS = 2048;

const ALERT_SEVERITIES: ReadonlySet<string> = new Set(['info', 'warning', 'critical']);

export interface AlertLabels {
  alertname: string;
  vm: string;
  /** The VM's id on the host (its name may repeat there); absent in records spooled before ids. */
  id?: string;
  host: string;
  severity: AlertSeverity;
  reason: string;
}

export interface AlertAnnotations {
  summary: string;
  description: string;
}

/** The durable state of one alert; times are milliseconds since the epoch. */
export interface AlertRecord {
  key: string;
  kind: AlertKind;
  labels: AlertLabels;
  annotations: AlertAnnotations;
  startsAt: number;
  /** null while a condition holds; set once it is resolved, and always set for a refusal. */
  endsAt: number | null;
}

/** The JSON object Alertmanager's POST /api/v2/alerts takes (one element of the array). */
export interface PostableAlert {
  labels: AlertLabels;
  annotations: AlertAnnotations;
  startsAt: string;
  endsAt: string;
  generatorURL?: string;
}

export function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Whether a reason's severity raises an alert at all (ok does not). */
export function isAlertSeverity(s: string): s is AlertSeverity {
  return ALERT_SEVERITIES.has(s);
}

/** 'GUEST_WIDER_THAN_HOST' → 'PhysbitsGuestWiderThanHost'. Non-alphanumerics separate words. */
export function alertName(code: string): string {
  const words = code.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return ALERTNAME_PREFIX + words.map((w) => w[0].toUpperCase() + w.slice(1).toLowerCase()).join('');
}

/** 'GUEST_WIDER_THAN_HOST' → 'guest wider than host'. */
export function humanCode(code: string): string {
  return code
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .join(' ')
    .toLowerCase();
}

/** A refusal code always carries the REFUSED_ prefix. */
export function refusalCode(code: string): string {
  const c = code.trim().toUpperCase() || 'UNSPECIFIED';
  return c.startsWith(REFUSAL_CODE_PREFIX) ? c : REFUSAL_CODE_PREFIX + c;
}

/** A VM as alerts name it: its id and name, or a bare name (the id is then the name). */
export type AlertVm = string | { id: string; name: string };

/** The key alerts of one VM are kept under: its id, else its name. */
export function vmKey(labels: Pick<AlertLabels, 'vm' | 'id'>): string {
  return labels.id ?? labels.vm;
}

/** Identity of an alert: Alertmanager fingerprints the label set, and these vary in it. */
export function alertKey(labels: Pick<AlertLabels, 'vm' | 'id' | 'reason' | 'severity'>): string {
  return `${vmKey(labels)}\u001f${labels.reason}\u001f${labels.severity}`;
}

export function isFiring(rec: AlertRecord, now: number): boolean {
  return rec.endsAt === null || rec.endsAt > now;
}

function labelsFor(host: string, vm: AlertVm, code: string, severity: AlertSeverity): AlertLabels {
  const reason = clip(code, MAX_LABEL_CHARS);
  const named = typeof vm === 'string' ? { vm } : { vm: vm.name, id: vm.id };
  return {
    alertname: clip(alertName(reason), MAX_LABEL_CHARS),
    vm: clip(named.vm, MAX_LABEL_CHARS),
    ...(named.id !== undefined ? { id: clip(named.id, MAX_LABEL_CHARS) } : {}),
    host: clip(host, MAX_LABEL_CHARS),
    severity,
    reason,
  };
}

/** The alert of a condition (a verdict reason) that starts holding at `now`. */
export function conditionAlert(host: string, vm: AlertVm, reason: Reason, now: number): AlertRecord {
  if (!isAlertSeverity(reason.severity)) throw new RangeError(`severity ${reason.severity} raises no alert`);
  const labels = labelsFor(host, vm, reason.code, reason.severity);
  return {
    key: alertKey(labels),
    kind: 'condition',
    labels,
    annotations: {
      summary: clip(`${labels.vm} on ${labels.host}: ${humanCode(reason.code)}`, MAX_TEXT_CHARS),
      description: clip(reason.message, MAX_TEXT_CHARS),
    },
    startsAt: now,
    endsAt: null,
  };
}

export function resolveAlert(rec: AlertRecord, now: number): AlertRecord {
  return { ...rec, endsAt: rec.endsAt === null ? now : Math.min(rec.endsAt, now) };
}

/**
 * Keeps the strongest reason per code; drops reasons that raise no alert. Input order is kept
 * otherwise, so the outcome is deterministic.
 */
export function alertingReasons(reasons: readonly Reason[]): Reason[] {
  const byCode = new Map<string, Reason>();
  for (const r of reasons) {
    if (!isAlertSeverity(r.severity)) continue;
    const prev = byCode.get(r.code);
    if (!prev || severityRank(r.severity) > severityRank(prev.severity)) byCode.set(r.code, r);
  }
  return [...byCode.values()];
}

export interface ConditionDiff {
  /** New alerts (startsAt = now). */
  fired: AlertRecord[];
  /** Alerts that stopped holding (endsAt = now). */
  resolved: AlertRecord[];
  /** Still firing, with a new description (startsAt kept). */
  updated: AlertRecord[];
}

/**
 * The change from a VM's active condition alerts to the set its current reasons call for. A reason
 * whose severity changed is a different alert (its labels differ): the old one resolves, the new
 * one fires.
 */
export function diffConditions(
  active: readonly AlertRecord[],
  host: string,
  vm: AlertVm,
  reasons: readonly Reason[],
  now: number,
): ConditionDiff {
  const out: ConditionDiff = { fired: [], resolved: [], updated: [] };
  const current = new Map(active.filter((a) => a.kind === 'condition').map((a) => [a.key, a]));
  const wanted = new Set<string>();
  for (const reason of alertingReasons(reasons)) {
    const next = conditionAlert(host, vm, reason, now);
    wanted.add(next.key);
    const prev = current.get(next.key);
    if (!prev) out.fired.push(next);
    else if (prev.annotations.description !== next.annotations.description) {
      out.updated.push({ ...prev, annotations: next.annotations });
    }
  }
  for (const [key, prev] of current) if (!wanted.has(key)) out.resolved.push(resolveAlert(prev, now));
  return out;
}

export interface RefusalInput {
  host: string;
  vm: AlertVm;
  code: string;
  message: string;
  command: string;
  /** When the guard refused (ms). */
  time: number;
  holdMs: number;
  /** The same VM's alert for the same code, if one exists. */
  previous?: AlertRecord;
}

/**
 * A refusal fires from its time for holdMs, so endsAt is known at once and Alertmanager ends it by
 * itself. A repeat while the previous one still fires extends it (startsAt kept).
 */
export function refusalAlert(r: RefusalInput): AlertRecord {
  const code = refusalCode(r.code);
  const labels = labelsFor(r.host, r.vm, code, REFUSAL_SEVERITY);
  const command = clip(r.command, MAX_LABEL_CHARS);
  const prev = r.previous && r.previous.key === alertKey(labels) && isFiring(r.previous, r.time) ? r.previous : null;
  return {
    key: alertKey(labels),
    kind: 'refusal',
    labels,
    annotations: {
      summary: clip(`physbits guard refused ${command} on ${labels.vm} (${labels.host})`, MAX_TEXT_CHARS),
      description: clip(
        `${r.message} (command: ${command}; refused at ${new Date(r.time).toISOString()})`,
        MAX_TEXT_CHARS,
      ),
    },
    startsAt: prev ? prev.startsAt : r.time,
    endsAt: Math.max(r.time + r.holdMs, prev?.endsAt ?? 0),
  };
}

export interface PostableOptions {
  /** alerts.resendSeconds in ms: an open alert is sent with endsAt = sendTime + 4 × this. */
  resendMs: number;
  generatorURL?: string;
}

/**
 * The Alertmanager form of a state at `sendTime`. An open condition carries an endsAt a few re-send
 * periods ahead (as Prometheus does), so Alertmanager resolves it by itself if re-sends stop.
 */
export function toPostable(rec: AlertRecord, sendTime: number, opts: PostableOptions): PostableAlert {
  const endsAt = rec.endsAt ?? sendTime + 4 * opts.resendMs;
  const out: PostableAlert = {
    labels: { ...rec.labels },
    annotations: { ...rec.annotations },
    startsAt: new Date(rec.startsAt).toISOString(),
    endsAt: new Date(endsAt).toISOString(),
  };
  if (opts.generatorURL) out.generatorURL = opts.generatorURL;
  return out;
}
