/**
 * The `command-line` of `human-monitor-command`, read the way QEMU's HMP reads it, so that
 * `device_add` and `migrate` typed through HMP meet the same rules as their QMP forms. Pure.
 *
 * Behaviour followed (monitor/hmp.c, util/qemu-option.c):
 *  - the command name runs to the first white space or '/'; names compare exactly in QEMU (here
 *    case-insensitively, which can only refuse more);
 *  - a string argument (get_str) is either a run of non-space characters or a double-quoted string
 *    with the escapes \n \r \\ \' \"; QEMU keeps only its first 1023 bytes (a 1024-byte buffer);
 *  - `device_add`'s single argument is QemuOpts text "driver,key=value,..." where ",," stands for a
 *    literal comma in values, a first item without '=' names the driver, a later item without '='
 *    is a flag ("foo" → on, "nofoo" → off), and when a key repeats the last value wins (the first,
 *    for "id");
 *  - `migrate` takes boolean flags ("-d", "-b", "-i", "-r"; QEMU wants them in that order and they
 *    may be written without spaces, "-d-r") before the uri; nothing may follow the uri.
 */

export type HmpCommand =
  | { kind: 'device_add'; args: Record<string, string> }
  | { kind: 'migrate'; uri: string; flags: string[] }
  | { kind: 'other'; name: string }
  | { kind: 'unparsable'; name: 'device_add' | 'migrate'; reason: string };

/** monitor/hmp.c monitor_parse_arguments: char buf[1024]. */
export const HMP_ARG_BYTES = 1023;
/** The migrate flags any QEMU version has had (7.2: -d -b -i -r; 9.1+: -d -r). */
const MIGRATE_FLAGS = new Set(['d', 'b', 'i', 'r']);

const SPACE = /[ \t\n\r\f\v]/;

function isSpace(c: string | undefined): boolean {
  return c !== undefined && SPACE.test(c);
}

function skipSpace(s: string, i: number): number {
  while (i < s.length && isSpace(s[i])) i++;
  return i;
}

/** The first `max` UTF-8 bytes of `s`, as QEMU's fixed buffer keeps them. */
export function truncateBytes(s: string, max = HMP_ARG_BYTES): string {
  const buf = Buffer.from(s, 'utf8');
  return buf.length <= max ? s : buf.subarray(0, max).toString('utf8');
}

/** get_str: one (possibly quoted) string argument at `i`; null where QEMU fails. */
export function readHmpString(s: string, i: number): { value: string; next: number } | null {
  let p = skipSpace(s, i);
  if (p >= s.length) return null;
  let out = '';
  if (s[p] === '"') {
    p++;
    while (p < s.length && s[p] !== '"') {
      if (s[p] === '\\') {
        const c = s[p + 1];
        p += 2;
        if (c === 'n') out += '\n';
        else if (c === 'r') out += '\r';
        else if (c === '\\' || c === "'" || c === '"') out += c;
        else return null;
      } else {
        out += s[p];
        p++;
      }
    }
    if (s[p] !== '"') return null;
    p++;
  } else {
    const start = p;
    while (p < s.length && !isSpace(s[p])) p++;
    out = s.slice(start, p);
  }
  return { value: truncateBytes(out), next: p };
}

/** opts_do_parse with an implied first key: "pc-dimm,id=d1,addr=0x1,,2" → { driver, id, addr }. */
export function parseQemuOpts(text: string, impliedKey = 'driver'): Record<string, string> {
  const out = new Map<string, string>();
  // QEMU takes the first id (opts_parse_id), the last value of any other key.
  const put = (name: string, value: string) => {
    if (!(name === 'id' && out.has('id'))) out.set(name, value);
  };
  let p = 0;
  let first = true;
  const readValue = (): string => {
    let v = '';
    while (p < text.length) {
      if (text[p] === ',') {
        if (text[p + 1] === ',') {
          v += ',';
          p += 2;
          continue;
        }
        break;
      }
      v += text[p];
      p++;
    }
    return v;
  };
  while (p < text.length) {
    let len = 0;
    while (p + len < text.length && text[p + len] !== '=' && text[p + len] !== ',') len++;
    if (text[p + len] !== '=') {
      if (first && impliedKey) {
        out.set(impliedKey, readValue());
      } else {
        const name = text.slice(p, p + len);
        p += len;
        if (name.startsWith('no')) put(name.slice(2), 'off');
        else put(name, 'on');
      }
    } else {
      const name = text.slice(p, p + len);
      p += len + 1;
      put(name, readValue());
    }
    first = false;
    if (text[p] === ',') p++;
  }
  return Object.fromEntries(out);
}

/** One HMP command line → what it would do. */
export function parseHmpCommandLine(line: string): HmpCommand {
  let p = skipSpace(line, 0);
  const start = p;
  while (p < line.length && line[p] !== '/' && !isSpace(line[p])) p++;
  const name = line.slice(start, p);
  const lower = name.toLowerCase();
  p = skipSpace(line, p);

  if (lower === 'device_add') {
    if (p >= line.length) return { kind: 'device_add', args: {} };
    const arg = readHmpString(line, p);
    if (!arg) return { kind: 'unparsable', name: 'device_add', reason: 'bad or unterminated quoted string' };
    if (skipSpace(line, arg.next) < line.length) {
      return { kind: 'unparsable', name: 'device_add', reason: 'extraneous characters after the device options' };
    }
    return { kind: 'device_add', args: parseQemuOpts(arg.value) };
  }

  if (lower === 'migrate') {
    const flags: string[] = [];
    for (;;) {
      p = skipSpace(line, p);
      if (line[p] !== '-') break;
      const f = line[p + 1];
      if (f === undefined || !MIGRATE_FLAGS.has(f)) {
        return { kind: 'unparsable', name: 'migrate', reason: `unsupported option -${f ?? ''}` };
      }
      flags.push(`-${f}`);
      p += 2;
    }
    const arg = readHmpString(line, p);
    if (!arg) return { kind: 'unparsable', name: 'migrate', reason: 'no uri' };
    if (skipSpace(line, arg.next) < line.length) {
      return { kind: 'unparsable', name: 'migrate', reason: 'extraneous characters after the uri' };
    }
    return { kind: 'migrate', uri: arg.value, flags };
  }

  return { kind: 'other', name };
}
