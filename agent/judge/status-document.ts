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
