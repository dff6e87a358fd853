/**
 * The `qm set` line that makes a refused VM fit this node, found by planning the changed config
 * again and judging it like the original: only a change that the verdict then accepts is offered.
 * Pure: config, host and policy in, a command line (or null) out.
 *
 * Candidates, first that fits wins:
 *  1. `--cpu MODEL,phys-bits=N` with N the node's limit (for `host`/`max`, whose width phys-bits
 *     cannot lower, the model becomes x86-64-v2-AES); with memory hot-plug this also lowers the
 *     maxmem qemu-server derives from phys-bits (Memory.pm get_max_mem).
 *  2. the same and `--hotplug` without `memory`.
 *  3. the same and the most `--memory` (in GiB steps) that fits.
 */
import type { HostFacts, Policy } from '../core/types';
import { computeVerdict } from '../judge/verdict';
import { CPU_KEYS } from './cpu-config';
import { hotplugFeatures } from './memory-config';
import { guestFromPlan } from './plan-guest';
import { parsePropertyString, type VmConfigFile } from './vm-config';
import { planVm, type PlanOptions } from './vm-plan';

/** The `cpu:` value with phys-bits set to `bits` (and a model whose width phys-bits decides). */
export function cpuWithPhysBits(cpu: string | undefined, bits: number, kvm: boolean): string {
  const parsed =
    cpu === undefined ? { cputype: kvm ? 'kvm64' : 'qemu64' } : parsePropertyString(cpu, CPU_KEYS, 'cputype', 'cpu');
  const model = parsed.cputype === 'host' || parsed.cputype === 'max' ? 'x86-64-v2-AES' : (parsed.cputype ?? 'kvm64');
  const rest = Object.entries(parsed)
    .filter(([k]) => k !== 'cputype' && k !== 'phys-bits')
    .map(([k, v]) => `${k}=${v}`);
  return [model, ...rest, `phys-bits=${bits}`].join(',');
}

function fits(current: Record<string, string>, opts: PlanOptions, host: HostFacts, policy: Policy): boolean {
  try {
    const plan = planVm(
      { current, pending: null, snapshots: [], description: null, skipped: [] } as VmConfigFile,
      opts,
    );
    const verdict = computeVerdict({ host, guest: guestFromPlan(plan, host), policy });
    return !verdict.reasons.some((r) => r.severity === 'critical');
  } catch {
    return false;
  }
}

/** The `qm set` arguments of the first candidate that fits; null when none does. */
export function findFix(file: VmConfigFile, opts: PlanOptions, host: HostFacts, policy: Policy): string | null {
  const conf = { ...file.current };
  const kvm = conf.kvm === undefined || /^(1|yes|on|true)$/i.test(conf.kvm);
  let cpu: string;
  try {
    cpu = cpuWithPhysBits(conf.cpu, host.physBits, kvm);
  } catch {
    return null;
  }
  const withCpu = { ...conf, cpu };
  const set = (extra: string) => `qm set ${opts.vmid} --cpu ${cpu}${extra}`;
  if (fits(withCpu, opts, host, policy)) return set('');
  const features = (() => {
    try {
      return hotplugFeatures(conf.hotplug);
    } catch {
      return null;
    }
  })();
  if (features?.has('memory')) {
    features.delete('memory');
    const hotplug = features.size > 0 ? [...features].join(',') : '0';
    if (fits({ ...withCpu, hotplug }, opts, host, policy)) return set(` --hotplug ${hotplug}`);
  }
  const memory = Number(/^(?:current=)?(\d+)$/.exec(conf.memory ?? '512')?.[1] ?? NaN);
  for (let mib = Math.floor(memory / 1024) * 1024 - 1024; mib >= 1024; mib -= 1024) {
    if (fits({ ...withCpu, memory: String(mib) }, opts, host, policy)) return set(` --memory ${mib}`);
  }
  return null;
}
