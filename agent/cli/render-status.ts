/** The status document as a table for people: one row per VM. */
import { printable } from '../core/printable';
import type { StatusDocument, VmStatus } from '../core/types';

function row(vm: VmStatus, hostBits: number): string[] {
  if (vm.error)
    return [vm.name, '-', '-', String(hostBits), '-', 'unknown', `${vm.error.code}: ${vm.error.message}`].map(
      printable,
    );
  const g = vm.guest!;
  const v = vm.verdict!;
  const first = v.reasons[0];
  return [
    vm.name,
    vm.accelerator ?? g.accelerator,
    String(g.physBits),
    String(hostBits),
    v.relation,
    v.severity,
    first ? `${first.code}: ${first.message}` : '',
  ].map(printable);
}

export function renderTable(rows: string[][], header: string[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (i === header.length - 1 ? 0 : r[i].length))));
  return all
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function renderStatus(doc: StatusDocument): string {
  const h = doc.host;
  const head = printable(`host ${h.name}: ${h.physBits} bits physical (${h.physBitsSource}), ${h.vendor}`);
  if (doc.vms.length === 0) return `${head}\nno VMs found`;
  const table = renderTable(
    doc.vms.map((vm) => row(vm, h.physBits)),
    ['VM', 'ACCEL', 'GUEST', 'HOST', 'RELATION', 'SEVERITY', 'REASON'],
  );
  return `${head}\n${table}`;
}
