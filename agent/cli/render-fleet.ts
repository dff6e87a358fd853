/**
 * The fleet and advice documents for people: a guest × host matrix, and one block per guest. Names
 * and messages come from VMs and peers: every cell and line is escaped (agent/core/printable.ts)
 * before it is measured or printed, so none can move the cursor, recolour or forge a row.
 */
import type { AdviceDocument, GuestAdvice } from '../judge/advise';
import type { LayoutAdvice } from '../judge/layout-advice';
import { formatBytes } from '../core/format';
import { printable, printableLines } from '../core/printable';
import type { FleetDocument, FleetGuest } from '../judge/fleet';
import { renderTable } from './render-status';

export interface RenderOptions {
  /** Plain ASCII: "yes"/"NO"/"?" cells, "->" and "<=" instead of arrows and signs. */
  ascii?: boolean;
}

const UNICODE_TO_ASCII: Array<[RegExp, string]> = [
  [/→/g, '->'],
  [/≤/g, '<='],
];

function finish(text: string, opts: RenderOptions): string {
  let out = printableLines(text);
  if (!opts.ascii) return out;
  for (const [re, to] of UNICODE_TO_ASCII) out = out.replace(re, to);
  return out;
}

function cell(fits: boolean | null | undefined, opts: RenderOptions): string {
  if (fits === true) return opts.ascii ? 'yes' : '✓';
  if (fits === false) return opts.ascii ? 'NO' : '✗';
  return '?';
}

function hostLabel(h: FleetDocument['hosts'][number]): string {
  const bits = h.physBits === null ? 'width unknown' : `${h.physBits} bits`;
  const how =
    (h.source === 'local' ? ', this host' : h.source === 'static' ? ', configured' : '') +
    (h.pool !== undefined ? `, pool ${h.pool}` : '');
  const reach = h.reachable ? '' : `, UNREACHABLE${h.error ? ` (${h.error})` : ''}`;
  return `${h.name}: ${bits}${how}${reach}`;
}

function guestLabel(g: FleetGuest): string {
  return `${g.host}/${g.vm}`;
}

function sourceLines(doc: Pick<FleetDocument, 'prometheus'>): string[] {
  return doc.prometheus ? [printable(`from Prometheus ${doc.prometheus.url} at ${doc.prometheus.time}`)] : [];
}

function guestNote(g: FleetGuest): string {
  return g.error
    ? `${g.error.code}: ${g.error.message}`
    : g.bound === false
      ? `${g.accelerator}: not bound by host widths`
      : '';
}

/** Host widths, narrowest first, "unknown" last. */
function widthKeys(doc: Pick<FleetDocument, 'widths'>): string[] {
  return Object.keys(doc.widths).sort((a, b) => (a === 'unknown' ? 1 : b === 'unknown' ? -1 : Number(a) - Number(b)));
}

/** Above this many guests the by-width table has a row per kind of guest, not per guest. */
export const MAX_GUEST_ROWS = 1000;
/** Unreachable hosts named one by one in a summarised table; the rest are counted. */
const MAX_HOST_LINES = 50;

const widthLabel = (k: string) => (k === 'unknown' ? 'width unknown' : `${k} bits`);

/** A fleet too large for a column per host: a column per host width, and each guest's count of hosts. */
function renderByWidth(doc: FleetDocument, opts: RenderOptions): string[] {
  const keys = widthKeys(doc);
  const reachable = doc.hosts.filter((h) => h.reachable).length;
  const unreachable = doc.hosts.filter((h) => !h.reachable);
  const label = widthLabel;
  const grouped = doc.guests.length > MAX_GUEST_ROWS;
  const named = grouped ? unreachable.slice(0, MAX_HOST_LINES) : unreachable;
  const lines = [
    `hosts: ${doc.hosts.length} (${reachable} reachable); by width: ${keys.map((k) => `${label(k)}: ${doc.widths[k]}`).join(', ')}`,
    ...named.map((h) => `  ${printable(hostLabel(h))}`),
  ];
  if (named.length < unreachable.length)
    lines.push(`  ... and ${unreachable.length - named.length} more unreachable hosts (fleet --json lists every one)`);
  if (doc.guests.length === 0) return [...lines, 'no guests'];
  if (grouped) return [...lines, ...renderGuestKinds(doc, keys, opts)];
  const header = ['GUEST', 'BITS', ...keys.map((k) => (k === 'unknown' ? '?b' : `${k}b`)), 'HOSTS FIT', 'NOTE'];
  const rows = doc.guests.map((g) =>
    [
      guestLabel(g),
      g.physBits === null ? '-' : String(g.physBits),
      ...keys.map((k) => cell(g.fitsByWidth[k], opts)),
      `${g.fitCount.fits}/${doc.hosts.length}`,
      guestNote(g),
    ].map(printable),
  );
  lines.push('', renderTable(rows, header));
  const misfits: string[] = [];
  for (const g of doc.guests)
    for (const k of keys)
      if (g.fitsByWidth[k] === false)
        misfits.push(printable(`  ${guestLabel(g)} → hosts of ${label(k)} (${doc.widths[k]}): ${g.whyByWidth[k]}`));
  if (misfits.length) lines.push('', 'does not fit:', ...misfits);
  return lines;
}

/**
 * Guests grouped by their answer (width, the cell of each host width, hosts fit, the reason for
 * each misfit, and the error code of a guest not read): a row per kind with how many guests are of
 * it and the first of them, so that 200,000 guests of a few dozen kinds read as a few dozen rows.
 */
function renderGuestKinds(doc: FleetDocument, keys: string[], opts: RenderOptions): string[] {
  const kinds = new Map<string, { count: number; first: FleetGuest; note: string }>();
  for (const g of doc.guests) {
    const note = g.error ? `${g.error.code} (fleet --json gives each message)` : guestNote(g);
    const key = JSON.stringify([
      g.physBits,
      keys.map((k) => g.fitsByWidth[k] ?? null),
      keys.map((k) => (g.fitsByWidth[k] === false ? g.whyByWidth[k] : '')),
      g.fitCount,
      note,
    ]);
    const kind = kinds.get(key);
    if (kind) kind.count++;
    else kinds.set(key, { count: 1, first: g, note });
  }
  const header = [
    'GUESTS',
    'BITS',
    ...keys.map((k) => (k === 'unknown' ? '?b' : `${k}b`)),
    'HOSTS FIT',
    'FIRST',
    'NOTE',
  ];
  const rows = [...kinds.values()].map(({ count, first: g, note }) =>
    [
      String(count),
      g.physBits === null ? '-' : String(g.physBits),
      ...keys.map((k) => cell(g.fitsByWidth[k], opts)),
      `${g.fitCount.fits}/${doc.hosts.length}`,
      guestLabel(g),
      note,
    ].map(printable),
  );
  const lines = [
    '',
    `guests: ${doc.guests.length} of ${kinds.size} kinds (a row per kind; fleet --json lists every guest)`,
    '',
    renderTable(rows, header),
  ];
  const misfits: string[] = [];
  for (const { count, first: g } of kinds.values())
    for (const k of keys)
      if (g.fitsByWidth[k] === false)
        misfits.push(
          printable(
            `  ${count} like ${guestLabel(g)} → hosts of ${widthLabel(k)} (${doc.widths[k]}): ${g.whyByWidth[k]}`,
          ),
        );
  if (misfits.length) lines.push('', 'does not fit:', ...misfits);
  return lines;
}

export function renderFleet(doc: FleetDocument, opts: RenderOptions = {}): string {
  if (doc.matrix === 'by-width') return finish([...sourceLines(doc), ...renderByWidth(doc, opts)].join('\n'), opts);
  const lines = [...sourceLines(doc), 'hosts:', ...doc.hosts.map((h) => `  ${printable(hostLabel(h))}`)];
  if (doc.guests.length === 0) {
    lines.push('no guests');
    return finish(lines.join('\n'), opts);
  }
  const header = ['GUEST', 'BITS', ...doc.hosts.map((h) => printable(h.name)), 'NOTE'];
  const rows = doc.guests.map((g) =>
    [
      guestLabel(g),
      g.physBits === null ? '-' : String(g.physBits),
      ...doc.hosts.map((h) => cell(g.fits?.[h.name], opts)),
      guestNote(g),
    ].map(printable),
  );
  lines.push('', renderTable(rows, header));
  const misfits: string[] = [];
  for (const g of doc.guests) {
    for (const h of doc.hosts) {
      if (g.fits?.[h.name] === false) misfits.push(printable(`  ${guestLabel(g)} → ${h.name}: ${g.why?.[h.name]}`));
    }
  }
  if (misfits.length) lines.push('', 'does not fit:', ...misfits);
  return finish(lines.join('\n'), opts);
}

function layoutLines(l: LayoutAdvice, bits: number): string[] {
  if (l.fits) return [`  layout:   ends at ${formatBytes(l.end)}, within 2^${bits} (${formatBytes(l.limit)})`];
  const out = [
    `  layout:   ends at ${formatBytes(l.end)}, ${formatBytes(l.overshoot)} above 2^${bits} (${formatBytes(l.limit)})`,
  ];
  if (l.passes.length) {
    out.push(
      `  passes:   ${l.passes.map((p) => `${p.region}${p.id ? ` ${p.id}` : ''} (ends at ${formatBytes(p.end)})`).join(', ')}`,
    );
  }
  for (const f of l.fixes) {
    out.push(`  shrink:   ${f.message}${f.alone ? '' : ' [not enough alone]'}`);
    if (f.qemu) out.push(`            qemu:    ${f.qemu}`);
    if (f.libvirt) out.push(`            libvirt: ${f.libvirt}`);
  }
  return out;
}

function adviceBlock(g: GuestAdvice): string[] {
  const name = `${g.host}/${g.vm}`;
  if (g.error) return [`${name}: unknown: ${g.error.code}: ${g.error.message}`];
  const verdict = g.safe === null ? 'unknown' : g.safe ? 'safe' : 'NOT SAFE';
  const pool = g.poolBits === null ? 'pool width unknown' : `pool ${g.poolHosts.join(', ')} → ${g.poolBits} bits`;
  const out = [`${name}: ${g.current ?? `phys-bits ${g.physBits}`} (${g.accelerator}), ${pool}: ${verdict}`];
  if (g.layout && g.poolBits !== null) out.push(...layoutLines(g.layout, g.poolBits));
  const s = g.settings;
  if (s) {
    out.push(`  qemu:     ${s.qemu}`, `            ${s.qemuHostPhysBits}   (KVM: the host's width, capped)`);
    if (s.qemuGuestPhysBits) out.push(`            ${s.qemuGuestPhysBits}   (QEMU 9.1+)`);
    out.push(
      `  libvirt:  ${s.libvirt}   (in <cpu>, libvirt 8.7+)`,
      `            ${s.libvirtPassthrough}   (libvirt 9.3+, host-passthrough only)`,
    );
    out.push(`  proxmox:  ${s.proxmox}`);
  }
  for (const n of g.notes) out.push(`  note:     ${n}`);
  return out;
}

export function renderAdvice(doc: AdviceDocument, opts: RenderOptions = {}): string {
  const width =
    doc.poolBits === null
      ? 'unknown'
      : `${doc.poolBits} bits (${doc.poolBitsSource === 'requested' ? 'requested' : 'narrowest host'})`;
  const lines = [...sourceLines(doc), `pool width: ${width}`];
  if (doc.pool.unreachable.length)
    lines.push(printable(`unreachable: ${doc.pool.unreachable.join(', ')} (the pool may be narrower than shown)`));
  if (doc.guests.length === 0) lines.push('no guests');
  for (const g of doc.guests) lines.push('', ...adviceBlock(g).map(printable));
  return finish(lines.join('\n'), opts);
}
