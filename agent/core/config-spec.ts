/**
 * The config's schema compiled at build time: a plain description of every key, bound and default
 * (SpecNode), made from the zod schema by contrib/package/config-spec.ts, and the check that reads a
 * config with it in well under a millisecond, without loading zod. It only ever accepts what the zod
 * schema accepts, with the same result; anything else, it declines, and the zod schema
 * (config-schema.ts) decides and says what is wrong (agent/core/config.ts). test/core/config-spec.test.ts
 * holds the two to the same answers.
 *
 * Where the zod semantics copied here live: node_modules/zod/v4/core/schemas.js ($ZodObjectJIT's
 * fast path for which keys an object's result holds, $ZodDefault, $ZodPrefault, $ZodOptional,
 * $ZodUnion's first passing option, $ZodURL) and core/checks.js.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { absentAsUndefined, asList, crossKeyProblems, isHostPort, type CrossKeyView } from './config-rules';

/** A check zod runs after a value's type is right, in the order the schema gives them. */
export type SpecCheck =
  | { kind: 'min' | 'max'; value: number; inclusive: boolean }
  | { kind: 'safeInteger' }
  | { kind: 'minLength'; value: number }
  | { kind: 'maxLength'; value: number }
  | { kind: 'regex'; source: string; flags: string }
  | { kind: 'url' }
  /** A predicate of CHECKS by name (the schema's refinements). */
  | { kind: 'code'; name: string };

/** One key of an object: its schema, and zod's optin/optout, which decide whether the result holds it. */
export interface SpecKey {
  schema: SpecNode;
  optin?: 'optional' | 'defaulted';
  optout?: 'optional';
}

export type SpecNode = (
  | { type: 'string' | 'number' | 'boolean' }
  | { type: 'enum'; values: Array<string | number> }
  /** Strict: any key not listed is a problem. */
  | { type: 'object'; keys: Record<string, SpecKey> }
  | { type: 'array'; element: SpecNode }
  | { type: 'union'; options: SpecNode[] }
  | { type: 'default' | 'prefault'; inner: SpecNode; value: unknown }
  /** `defaulted`: the inner schema supplies a value for absence (zod's optin "defaulted"). */
  | { type: 'optional'; inner: SpecNode; defaulted: boolean }
  | { type: 'nullable'; inner: SpecNode }
  | { type: 'pipe'; in: SpecNode; out: SpecNode }
  /** A function of TRANSFORMS by name. */
  | { type: 'transform'; name: string }
) & { checks?: SpecCheck[] };

/** The schema's refinements, by the names config-schema.ts's SCHEMA_CODE gives them. */
export const CHECKS: Record<string, (value: never) => boolean> = {
  isHostPort,
  crossKeyProblems: (value: CrossKeyView) => crossKeyProblems(value).length === 0,
};

/** The schema's transforms, likewise. */
export const TRANSFORMS: Record<string, (value: never) => unknown> = { absentAsUndefined, asList };

/** Returned by run() for a value the compiled check does not accept. */
const DECLINED: unique symbol = Symbol('declined');
type Result = unknown;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** A default for this one result: zod hands out a copy of an object or array default each time. */
const fresh = (v: unknown): unknown => (typeof v === 'object' && v !== null ? structuredClone(v) : v);

const canParseUrl = (text: string): boolean => {
  try {
    new URL(text);
    return true;
  } catch {
    return false;
  }
};

const regexes = new Map<string, RegExp>();
function regex(source: string, flags: string): RegExp {
  const key = `${flags}/${source}`;
  let re = regexes.get(key);
  if (!re) regexes.set(key, (re = new RegExp(source, flags)));
  re.lastIndex = 0;
  return re;
}

function passes(check: SpecCheck, value: unknown): boolean {
  switch (check.kind) {
    case 'min':
      return typeof value === 'number' && (check.inclusive ? value >= check.value : value > check.value);
    case 'max':
      return typeof value === 'number' && (check.inclusive ? value <= check.value : value < check.value);
    case 'safeInteger':
      return Number.isSafeInteger(value);
    case 'minLength':
      return (typeof value === 'string' || Array.isArray(value)) && value.length >= check.value;
    case 'maxLength':
      return (typeof value === 'string' || Array.isArray(value)) && value.length <= check.value;
    case 'regex':
      return typeof value === 'string' && regex(check.source, check.flags).test(value);
    case 'url':
      // zod trims the text and drops tabs and newlines before it keeps it: only text it keeps as it is.
      return typeof value === 'string' && value === value.trim() && !/[\t\n\r]/.test(value) && canParseUrl(value);
    case 'code':
      return CHECKS[check.name](value as never);
  }
}

function runObject(keys: Record<string, SpecKey>, input: unknown): Result {
  if (!isObject(input)) return DECLINED;
  for (const key in input) if (!Object.prototype.hasOwnProperty.call(keys, key)) return DECLINED;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(keys)) {
    const { schema, optin, optout } = keys[key];
    const present = key in input;
    const value = run(schema, input[key]);
    if (value === DECLINED) return DECLINED;
    if (optin === undefined) {
      if (!present) return DECLINED;
      out[key] = value;
    } else if (optout === 'optional') {
      if (optin === 'optional' ? present : value !== undefined || present) out[key] = value;
    } else if (optin === 'defaulted' || value !== undefined || present) out[key] = value;
  }
  return out;
}

function runType(node: SpecNode, input: unknown): Result {
  switch (node.type) {
    case 'string':
    case 'boolean':
      return typeof input === node.type ? input : DECLINED;
    case 'number':
      return typeof input === 'number' && Number.isFinite(input) ? input : DECLINED;
    case 'enum':
      return node.values.includes(input as string) ? input : DECLINED;
    case 'object':
      return runObject(node.keys, input);
    case 'array': {
      if (!Array.isArray(input)) return DECLINED;
      const out: unknown[] = [];
      for (const item of input) {
        const value = run(node.element, item);
        if (value === DECLINED) return DECLINED;
        out.push(value);
      }
      return out;
    }
    case 'union':
      for (const option of node.options) {
        const value = run(option, input);
        if (value !== DECLINED) return value;
      }
      return DECLINED;
    case 'default': {
      if (input === undefined) return fresh(node.value);
      const value = run(node.inner, input);
      return value === undefined ? fresh(node.value) : value;
    }
    case 'prefault':
      return run(node.inner, input === undefined ? fresh(node.value) : input);
    case 'optional': {
      if (input !== undefined) return run(node.inner, input);
      if (!node.defaulted) return undefined;
      const value = run(node.inner, input);
      return value === DECLINED ? undefined : value;
    }
    case 'nullable':
      return input === null ? null : run(node.inner, input);
    case 'pipe': {
      const value = run(node.in, input);
      return value === DECLINED ? DECLINED : run(node.out, value);
    }
    case 'transform':
      return TRANSFORMS[node.name](input as never);
  }
}

function run(node: SpecNode, input: unknown): Result {
  const value = runType(node, input);
  if (value === DECLINED || !node.checks) return value;
  for (const check of node.checks) if (!passes(check, value)) return DECLINED;
  return value;
}

/** The value as the schema reads it (defaults filled in), or undefined when the compiled check declines it. */
export function compiledParse(spec: SpecNode, value: unknown): unknown {
  const result = run(spec, value);
  return result === DECLINED ? undefined : result;
}

/** Replaced by the spec itself in the bundle (contrib/package/bundle.ts); undeclared elsewhere. */
declare const PHYSBITS_CONFIG_SPEC: SpecNode | undefined;

/**
 * The compiled schema: the bundle's own, else build/config-spec.json (`npm run build`); null when
 * there is none (a build made with tsc alone), and the zod schema checks every config.
 */
export function compiledSpec(): SpecNode | null {
  if (typeof PHYSBITS_CONFIG_SPEC !== 'undefined') return PHYSBITS_CONFIG_SPEC;
  try {
    // build/agent/core/config-spec.js → build/config-spec.json
    return JSON.parse(readFileSync(join(__dirname, '..', '..', 'config-spec.json'), 'utf8')) as SpecNode;
  } catch {
    return null;
  }
}
