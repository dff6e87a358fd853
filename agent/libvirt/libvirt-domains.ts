/**
 * The running domains of a libvirt connection, as virsh lists them. Parsing is pure and bounded;
 * the listing goes through virsh.ts.
 */
import { AgentError } from '../core/errors';
import { runVirsh, type VirshOptions } from './virsh';

export interface DomainsOptions extends VirshOptions {
  /** More running domains than this is an error rather than an unbounded list; default 4096. */
  maxDomains?: number;
}

export interface RunningDomain {
  name: string;
  uuid: string;
}

export const MAX_DOMAINS_DEFAULT = 4096;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function tooMany(max: number): AgentError {
  return new AgentError('LIBVIRT_TOO_MANY_DOMAINS', `libvirt lists more than ${max} running domains`);
}

/** `virsh list --uuid --name` output: "UUID NAME" a line (a name may contain spaces). */
export function parseUuidNames(stdout: string, maxDomains = MAX_DOMAINS_DEFAULT): RunningDomain[] {
  const out: RunningDomain[] = [];
  for (const line of stdout.split('\n')) {
    const t = line.trim();
    if (!t) continue;
    const space = t.indexOf(' ');
    const uuid = space < 0 ? t : t.slice(0, space);
    if (!UUID.test(uuid))
      throw new AgentError('LIBVIRT_BAD_LISTING', `virsh list: unexpected line '${t.slice(0, 80)}'`);
    if (out.length >= maxDomains) throw tooMany(maxDomains);
    out.push({ uuid: uuid.toLowerCase(), name: space < 0 ? '' : t.slice(space + 1).trim() });
  }
  return out;
}

/** Running domains with their UUIDs, which identify a domain even when its name is all digits. */
export async function listRunningDomainsWithUuid(uri: string, opts: DomainsOptions = {}): Promise<RunningDomain[]> {
  return parseUuidNames(await runVirsh(uri, ['list', '--uuid', '--name'], opts), opts.maxDomains);
}
