/**
 * The contract's status document and the state it sums up to. Shared by `scan --json`,
 * `status --json` and `GET /v1/status`.
 */
import { exitCodeFor, worstState, type State } from '../core/exit-codes';
import type { HostFacts, StatusDocument, VmStatus } from '../core/types';

export function vmState(vm: VmStatus): State {
  if (vm.error || !vm.verdict) return 'unknown';
  return vm.verdict.severity;
}

export function buildStatusDocument(host: HostFacts, vms: VmStatus[]): StatusDocument {
  const counts: Record<string, number> = { ok: 0, info: 0, warning: 0, critical: 0, unknown: 0 };
  for (const vm of vms) counts[vmState(vm)]++;
  const worst = worstState(vms.map(vmState));
  return { host, vms, summary: { worst, exitCode: exitCodeFor(worst), counts } };
}

/**
 * The status document's JSON text from each VM's own (`texts[i]` is JSON.stringify(vms[i]), which
 * the daemon keeps until the VM's status changes): the text JSON.stringify(buildStatusDocument(host,
 * vms)) gives, without serialising every VM again for every request (a thousand VMs: about 1 MiB).
 */
export function statusDocumentText(host: HostFacts, vms: VmStatus[], texts: string[]): string {
  const { summary } = buildStatusDocument(host, vms);
  return `{"host":${JSON.stringify(host)},"vms":[${texts.join(',')}],"summary":${JSON.stringify(summary)}}`;
}
