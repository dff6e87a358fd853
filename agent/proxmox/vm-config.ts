/**
 * Proxmox VE's VM config format (`/etc/pve/qemu-server/<vmid>.conf`), read the way qemu-server reads
 * it (src/PVE/QemuServer.pm parse_vm_config), and its property strings (pve-common
 * PVE/JSONSchema.pm parse_property_string). Pure: text in, plain objects out.
 *
 * parse_vm_config, line by line (blank lines skipped):
 *  - `[PENDING]` opens the pending section, `[special:cloudinit]` / `[special:fleecing]` a special
 *    one, `[name]` (a letter, then letters, digits, `_`, `-`) a snapshot; any other `[...]` line an
 *    unknown section whose lines are skipped. The current configuration is everything before the
 *    first section line.
 *  - `#text` is part of the description, as is `description: text`.
 *  - `key: value` with key `[a-z][a-z_-]*\d*` sets the key (the last line wins); the value is
 *    trimmed. `delete: a,b` only in [PENDING].
 *  - anything else qemu-server warns about and skips.
 * The current section is what a start runs: qemu-server's vm_start_nolock applies [PENDING] (when
 * it starts fresh, not on a migration target or a resume) before it runs the hookscript, and
 * snapshot sections describe the past. This parser keeps all three apart; agent/proxmox/vm-plan.ts
 * judges the current one.
 */
import { AgentError } from '../core/errors';

/** A VM config is a few KiB; qemu-server itself reads whole files. Anything past this is refused. */
export const VM_CONFIG_MAX_BYTES = 1024 * 1024;

export type VmConfigErrorCode = 'PROXMOX_CONFIG_UNREADABLE' | 'PROXMOX_CONFIG_INVALID';

export class VmConfigError extends AgentError {
  constructor(code: VmConfigErrorCode, message: string) {
    super(code, message);
  }
}

export interface VmConfigFile {
  /** The current section: key → raw value (a null-prototype record). */
  current: Record<string, string>;
  /** The [PENDING] section's keys and its `delete:` list; null when the file has none. */
  pending: { values: Record<string, string>; delete: string[] } | null;
  /** Snapshot section names, in file order. */
  snapshots: string[];
  /** The description (comment lines and `description:`) of the current section. */
  description: string | null;
  /** Lines qemu-server would warn about and skip (1-based line number and text, at most 20). */
  skipped: { line: number; text: string }[];
}

const SECTION_PENDING = /^\[PENDING\]\s*$/i;
const SECTION_SPECIAL = /^\[special:(cloudinit|fleecing)\]\s*$/i;
const SECTION_SNAPSHOT = /^\[([a-z][a-z0-9_-]+)\]\s*$/i;
const SECTION_ANY = /^\[([^\]]*)\]\s*$/;
const KEY_VALUE = /^([a-z][a-z_-]*\d*):\s*(.+?)\s*$/;
const MAX_SKIPPED = 20;

function record(): Record<string, string> {
  return Object.create(null) as Record<string, string>;
}

/** parse_vm_config's reading of a whole file. Throws VmConfigError when the text is too large. */
export function parseVmConfig(text: string): VmConfigFile {
  if (Buffer.byteLength(text, 'utf8') > VM_CONFIG_MAX_BYTES)
    throw new VmConfigError('PROXMOX_CONFIG_INVALID', `larger than ${VM_CONFIG_MAX_BYTES} bytes`);
  const current = record();
  let pending: VmConfigFile['pending'] = null;
  const snapshots: string[] = [];
  const skipped: VmConfigFile['skipped'] = [];
  let description: string | null = null;
  // Where key lines go: the current section, pending, or nowhere (snapshot, special, unknown).
  let target: Record<string, string> | null = current;
  let section: 'current' | 'pending' | 'other' = 'current';

  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s*$/.test(line)) continue;
    if (SECTION_PENDING.test(line)) {
      pending = { values: record(), delete: [] };
      target = pending.values;
      section = 'pending';
      continue;
    }
    if (SECTION_SPECIAL.test(line)) {
      target = null;
      section = 'other';
      continue;
    }
    const snap = SECTION_SNAPSHOT.exec(line);
    if (snap) {
      snapshots.push(snap[1]);
      target = null;
      section = 'other';
      continue;
    }
    if (SECTION_ANY.test(line)) {
      target = null;
      section = 'other';
      continue;
    }
    if (section === 'other') continue;
    if (line.startsWith('#')) {
      if (section === 'current') description = `${description ?? ''}${line.slice(1)}\n`;
      continue;
    }
    const kv = KEY_VALUE.exec(line);
    if (!kv) {
      if (skipped.length < MAX_SKIPPED) skipped.push({ line: i + 1, text: line.slice(0, 80) });
      continue;
    }
    const [, key, value] = kv;
    if (key === 'description') {
      if (section === 'current') description = `${description ?? ''}${value}`;
    } else if (key === 'delete') {
      if (section === 'pending' && pending) pending.delete = value.split(/[,;\s]+/).filter(Boolean);
    } else {
      target![key] = value;
    }
  }
  return { current, pending, snapshots, description: description?.trimEnd() ?? null, skipped };
}

/**
 * A property string (`host,phys-bits=39,flags=+aes`) as pve-common's parse_property_string reads it
 * for a format with a default key: `key=value` parts separated by commas, and at most one part
 * without `=` that is the default key's value. Keys not in `keys` and repeated keys are errors.
 */
export function parsePropertyString(
  value: string,
  keys: readonly string[],
  defaultKey: string | null,
  what: string,
): Record<string, string> {
  const out = record();
  for (const part of value.split(',')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    let key: string;
    let v: string;
    if (eq < 0) {
      if (defaultKey === null) throw invalid(`${what}: '${clip(part)}' is not key=value`);
      key = defaultKey;
      v = part;
    } else {
      key = part.slice(0, eq);
      v = part.slice(eq + 1);
    }
    if (!keys.includes(key)) throw invalid(`${what}: unknown property '${clip(key)}'`);
    if (key in out) throw invalid(`${what}: '${clip(key)}' given twice`);
    out[key] = v;
  }
  return out;
}

/** pve-common's boolean: 1/0, yes/no, on/off, true/false in any case. */
export function parseBoolean(value: string, what: string): boolean {
  const v = value.toLowerCase();
  if (['1', 'yes', 'on', 'true'].includes(v)) return true;
  if (['0', 'no', 'off', 'false'].includes(v)) return false;
  throw invalid(`${what}: '${clip(value)}' is not a boolean`);
}

/** A whole number within [min, max]. */
export function parseInteger(value: string, what: string, min: number, max: number): number {
  if (!/^\d{1,10}$/.test(value)) throw invalid(`${what}: '${clip(value)}' is not a whole number`);
  const n = Number(value);
  if (n < min || n > max) throw invalid(`${what}: ${n} is not within ${min}-${max}`);
  return n;
}

export function clip(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

export function invalid(message: string): VmConfigError {
  return new VmConfigError('PROXMOX_CONFIG_INVALID', message);
}

/**
 * The custom CPU models of /etc/pve/virtual-guest/cpu-models.conf (pve-common SectionConfig as
 * qemu-server's CPUConfig.pm registers it): `cpu-model: NAME` opens a model, indented `key value`
 * lines set its properties. Returns name (without `custom-`) → properties.
 */
export function parseCpuModels(text: string): Record<string, Record<string, string>> {
  if (Buffer.byteLength(text, 'utf8') > VM_CONFIG_MAX_BYTES)
    throw new VmConfigError('PROXMOX_CONFIG_INVALID', `larger than ${VM_CONFIG_MAX_BYTES} bytes`);
  const models = Object.create(null) as Record<string, Record<string, string>>;
  let model: Record<string, string> | null = null;
  for (const line of text.split('\n')) {
    if (/^\s*(#.*)?$/.test(line)) continue;
    const header = /^cpu-model:\s*(\S+)\s*$/.exec(line);
    if (header) {
      model = record();
      models[header[1]] = model;
      continue;
    }
    const prop = /^\s+(\S+)(?:\s+(.*?))?\s*$/.exec(line);
    if (prop && model) {
      model[prop[1]] = prop[2] ?? '';
      continue;
    }
    model = null;
  }
  return models;
}
