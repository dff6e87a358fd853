/**
 * physbits-config(5) from docs/configuration.md, so the key reference has one source: the page's
 * prose paragraphs and its `| key | default | meaning |` tables become roff (a tagged paragraph per
 * key); fenced blocks stay verbatim; links keep their text. Only the Markdown that page uses.
 */

/** Text for roff: backslashes and hyphens escaped, a leading dot or quote made harmless. */
export function roffText(text: string): string {
  const plain = text
    .replace(/\[([^\]]+)\]\([^)]*\)/g, '$1')
    .replace(/\\\|/g, '|')
    .replace(/\*\*([^*]+)\*\*/g, '$1');
  const escaped = plain.replace(/\\/g, '\\e').replace(/-/g, '\\-');
  // `code` in bold
  const bold = escaped.replace(/`([^`]+)`/g, '\\fB$1\\fR');
  return /^[.']/.test(bold) ? `\\&${bold}` : bold;
}

function cells(line: string): string[] {
  return line
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((c) => c.trim());
}

export function configManPage(markdown: string, version: string): string {
  const out = [
    `.TH PHYSBITS\\-CONFIG 5 "" "physbits ${version}" "File Formats"`,
    '.SH NAME',
    'physbits\\-config \\- the configuration file of physbitsd and physbitsctl, /etc/physbits/config.json',
    '.SH DESCRIPTION',
  ];
  const lines = markdown.split('\n');
  let header: string[] | null = null;
  let fenced = false;
  for (const line of lines) {
    if (line.startsWith('```')) {
      fenced = !fenced;
      out.push(fenced ? '.PP\n.nf' : '.fi');
      continue;
    }
    if (fenced) {
      out.push(roffText(line.replace(/`/g, '\u0000')).replace(/\u0000/g, '`'));
      continue;
    }
    if (line.startsWith('# ')) continue;
    if (line.startsWith('## ')) {
      out.push(`.SH ${roffText(line.slice(3)).toUpperCase()}`);
      header = null;
      continue;
    }
    if (line.startsWith('### ')) {
      out.push(`.SS ${roffText(line.slice(4))}`);
      continue;
    }
    if (line.startsWith('|')) {
      const row = cells(line);
      if (!header) header = row;
      else if (row.every((c) => /^:?-+:?$/.test(c))) continue;
      else {
        const [key, ...rest] = row;
        out.push('.TP', roffText(key));
        const named = rest.map((c, i) =>
          header![i + 1] === 'meaning' || !header![i + 1] ? c : `${header![i + 1]}: ${c}.`,
        );
        out.push(roffText(named.join(' ')));
      }
      continue;
    }
    header = null;
    if (line.trim() === '') out.push('.PP');
    else if (/^\s*[-*] /.test(line)) out.push('.IP \\(bu 2', roffText(line.replace(/^\s*[-*] /, '')));
    else out.push(roffText(line.trim()));
  }
  out.push(
    '.SH FILES',
    '.TP',
    '.I /etc/physbits/config.json',
    'the configuration (a conffile).',
    '.TP',
    '.I /usr/share/doc/physbits/examples/config.example.json',
    'every key with its default; the Prometheus rules, the Alertmanager route and the Grafana dashboard lie beside it.',
    '.SH SEE ALSO',
    '.BR physbitsd (8),',
    '.BR physbitsctl (8),',
    '.I /usr/share/doc/physbits/',
  );
  // Consecutive paragraph breaks say nothing more than one.
  return `${out.join('\n').replace(/(\.PP\n)+/g, '.PP\n')}\n`;
}
