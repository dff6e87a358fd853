/** Group names to ids, from /etc/group (no dependency on a native module). */
import { readFileSync } from 'node:fs';
import { ConfigError } from './config';

export function parseGroupFile(text: string, name: string): number | null {
  for (const line of text.split('\n')) {
    const [n, , gid] = line.split(':');
    if (n === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  return null;
}

/** A group name or number → gid; an unknown name is a config error naming the key. */
export function groupId(group: string, key = 'api.group', groupFile = '/etc/group'): number {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = readFileSync(groupFile, 'utf8');
  } catch {
    /* falls through to the error below */
  }
  const gid = parseGroupFile(text, group);
  if (gid === null) throw new ConfigError(`${key}: no group named '${group}'`);
  return gid;
}
