/**
 * Compiles the config's zod schema (agent/core/config-schema.ts) into its plain description
 * (agent/core/config-spec.ts SpecNode), which every start checks configs with instead of building
 * the schema. Run as a script it writes build/config-spec.json (`npm run build`); the package's
 * bundle embeds the same description (bundle.ts).
 *
 * It reads zod's own definitions (`schema._zod.def`, zod v4) and refuses, failing the build, any
 * schema type, check or definition field it does not know: a key written with something new must be
 * taught here (and to config-spec.ts), or it would be checked differently from the zod schema.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configSchema, SCHEMA_CODE } from '../../agent/core/config-schema';
import { CHECKS, TRANSFORMS, type SpecCheck, type SpecKey, type SpecNode } from '../../agent/core/config-spec';
import { REPO_ROOT } from './build-info';

/** What this file reads of zod's internals (zod v4 core: `$ZodTypeDef`, `$ZodCheckDef`). */
interface ZodLike {
  _zod: { def: Record<string, unknown>; optin?: string; optout?: string; values?: Set<unknown> };
}
interface CheckLike {
  _zod: { def: Record<string, unknown> };
}

/** Definition fields each schema type may have; any other one set is refused. */
const TYPE_FIELDS: Record<string, string[]> = {
  string: ['checks'],
  number: ['checks'],
  boolean: ['checks'],
  enum: ['entries', 'checks'],
  object: ['shape', 'catchall', 'checks'],
  array: ['element', 'checks'],
  union: ['options', 'checks'],
  default: ['innerType', 'defaultValue', 'checks'],
  prefault: ['innerType', 'defaultValue', 'checks'],
  optional: ['innerType', 'checks'],
  nullable: ['innerType', 'checks'],
  pipe: ['in', 'out', 'checks'],
  transform: ['transform', 'checks'],
};

/** Definition fields of each check kind (`error` only words the problem; `when` only guards the type). */
const CHECK_FIELDS: Record<string, string[]> = {
  greater_than: ['value', 'inclusive'],
  less_than: ['value', 'inclusive'],
  'number_format:safeint': ['format', 'abort'],
  min_length: ['minimum', 'when'],
  max_length: ['maximum', 'when'],
  'string_format:regex': ['format', 'pattern', 'error'],
  'string_format:url': ['format', 'abort', 'error'],
  custom: ['fn', 'error', 'abort'],
};

class SpecError extends Error {}

function refuseUnknownFields(def: Record<string, unknown>, known: string[], what: string, where: string): void {
  for (const [field, value] of Object.entries(def)) {
    if (field === 'type' || field === 'check' || value === undefined || known.includes(field)) continue;
    throw new SpecError(`${where}: ${what} with '${field}' is not compiled (contrib/package/config-spec.ts)`);
  }
}

/** The name SCHEMA_CODE gives a function or check of the schema, known to config-spec.ts's `table`. */
function codeName(code: unknown, table: Record<string, unknown>, where: string): string {
  const name = SCHEMA_CODE.get(code);
  if (name === undefined || !(name in table))
    throw new SpecError(`${where}: code the compiled check does not know (name it in SCHEMA_CODE and config-spec.ts)`);
  return name;
}

function compileCheck(check: CheckLike, where: string): SpecCheck {
  const def = check._zod.def;
  const kind = def.format === undefined ? String(def.check) : `${String(def.check)}:${String(def.format)}`;
  const known = CHECK_FIELDS[kind];
  if (!known) throw new SpecError(`${where}: the check '${kind}' is not compiled (contrib/package/config-spec.ts)`);
  refuseUnknownFields(def, known, `the check '${kind}'`, where);
  switch (kind) {
    case 'greater_than':
    case 'less_than':
      if (typeof def.value !== 'number') throw new SpecError(`${where}: ${kind} of a ${typeof def.value}`);
      return { kind: kind === 'greater_than' ? 'min' : 'max', value: def.value, inclusive: def.inclusive === true };
    case 'number_format:safeint':
      return { kind: 'safeInteger' };
    case 'min_length':
      return { kind: 'minLength', value: def.minimum as number };
    case 'max_length':
      return { kind: 'maxLength', value: def.maximum as number };
    case 'string_format:regex': {
      const pattern = def.pattern as RegExp;
      return { kind: 'regex', source: pattern.source, flags: pattern.flags };
    }
    case 'string_format:url':
      return { kind: 'url' };
    default:
      // A refinement keeps its function in the definition; superRefine and .check() keep the check itself.
      return { kind: 'code', name: codeName(def.fn ?? check, CHECKS, where) };
  }
}

function compileKey(schema: ZodLike, where: string): SpecKey {
  const key: SpecKey = { schema: compileNode(schema, where) };
  const { optin, optout } = schema._zod;
  if (optin !== undefined) {
    if (optin !== 'optional' && optin !== 'defaulted') throw new SpecError(`${where}: optin '${optin}'`);
    key.optin = optin;
  }
  if (optout !== undefined) {
    if (optout !== 'optional') throw new SpecError(`${where}: optout '${optout}'`);
    key.optout = optout;
  }
  return key;
}

function jsonValue(value: unknown, where: string): unknown {
  const text = JSON.stringify(value);
  if (text === undefined || JSON.stringify(JSON.parse(text)) !== text || typeof value === 'function')
    throw new SpecError(`${where}: a default that is not JSON`);
  return JSON.parse(text);
}

function compileNode(schema: ZodLike, where: string): SpecNode {
  const def = schema._zod.def;
  const type = String(def.type);
  const known = TYPE_FIELDS[type];
  if (!known) throw new SpecError(`${where}: the zod type '${type}' is not compiled (contrib/package/config-spec.ts)`);
  refuseUnknownFields(def, known, `a ${type}`, where);
  const node = compileType(schema, type, where);
  const checks = ((def.checks as CheckLike[] | undefined) ?? []).map((c) => compileCheck(c, where));
  if (checks.length) node.checks = checks;
  return node;
}

function compileType(schema: ZodLike, type: string, where: string): SpecNode {
  const def = schema._zod.def;
  const inner = (field: string) => compileNode(def[field] as ZodLike, where);
  switch (type) {
    case 'string':
    case 'number':
    case 'boolean':
      return { type };
    case 'enum': {
      const values = [...(schema._zod.values ?? [])];
      if (!values.every((v) => typeof v === 'string' || typeof v === 'number'))
        throw new SpecError(`${where}: an enum of other than strings and numbers`);
      return { type, values: values as Array<string | number> };
    }
    case 'object': {
      const catchall = def.catchall as ZodLike | undefined;
      if (catchall?._zod.def.type !== 'never') throw new SpecError(`${where}: an object that is not strict`);
      const keys: Record<string, SpecKey> = {};
      for (const [key, value] of Object.entries(def.shape as Record<string, ZodLike>)) {
        if (key === '__proto__') throw new SpecError(`${where}: a key named __proto__`);
        keys[key] = compileKey(value, where ? `${where}.${key}` : key);
      }
      return { type, keys };
    }
    case 'array':
      return { type, element: compileNode(def.element as ZodLike, `${where}[]`) };
    case 'union':
      return { type, options: (def.options as ZodLike[]).map((o, i) => compileNode(o, `${where}|${i}`)) };
    case 'default':
    case 'prefault':
      return { type, inner: inner('innerType'), value: jsonValue(def.defaultValue, where) };
    case 'optional': {
      const innerType = def.innerType as ZodLike;
      return { type, inner: inner('innerType'), defaulted: innerType._zod.optin === 'defaulted' };
    }
    case 'nullable':
      return { type, inner: inner('innerType') };
    case 'pipe':
      return { type, in: inner('in'), out: inner('out') };
    case 'transform':
      return { type, name: codeName(def.transform, TRANSFORMS, where) };
    default:
      throw new SpecError(`${where}: the zod type '${type}' is not compiled`);
  }
}

/** The compiled form of a zod schema (by default the config's own). */
export function compileConfigSpec(schema: unknown = configSchema): SpecNode {
  return compileNode(schema as ZodLike, '');
}

if (require.main === module) {
  writeFileSync(join(REPO_ROOT, 'build', 'config-spec.json'), `${JSON.stringify(compileConfigSpec())}\n`);
}
