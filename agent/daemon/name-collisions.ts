/**
 * VM names may repeat on a host (two QEMUs with `-name dup`); ids do not (agent/core/vm-name.ts).
 * Every series, status entry and alert is kept by id, so a shared name breaks nothing, but a name
 * alone no longer says which VM is meant: the daemon warns once per set of VMs sharing it.
 */
import type { Logger } from '../core/logger';

export interface NamedVm {
  id: string;
  name: string;
  socket: string;
}

export class NameCollisions {
  /** VM id → the collision last warned about for it ('' when its name is its own). */
  private readonly seen = new Map<string, string>();
  /** VM id → the name it was last looked at under. */
  private readonly names = new Map<string, string>();
  /** Name → how many VMs were last looked at under it: only a name held by more is searched for among all. */
  private readonly holders = new Map<string, number>();

  constructor(private readonly logger: () => Logger) {}

  /**
   * Looks at `vm`'s name among `all` (every VM of the host) when it is new or changed; warns when a
   * new set shares it.
   */
  check(vm: NamedVm, all: Iterable<NamedVm>): void {
    const before = this.names.get(vm.id);
    if (before === vm.name) return;
    if (before !== undefined) this.release(before);
    this.names.set(vm.id, vm.name);
    const holders = (this.holders.get(vm.name) ?? 0) + 1;
    this.holders.set(vm.name, holders);
    // A name no other VM was looked at under is its own: no pass over every VM of the host.
    const same = holders > 1 ? [...all].filter((other) => other.name === vm.name) : [vm];
    const ids = same.map((other) => other.id).sort();
    const key = ids.length > 1 ? `${vm.name}\u001f${ids.join(',')}` : '';
    if (this.seen.get(vm.id) === key) return;
    this.seen.set(vm.id, key);
    if (ids.length > 1)
      this.logger().warn('VM names collide: the VMs are told apart by their ids', {
        vm: vm.name,
        ids: ids.join(','),
        sockets: same.map((other) => other.socket).join(','),
      });
  }

  /** Whether `id` was looked at since it appeared. */
  has(id: string): boolean {
    return this.seen.has(id);
  }

  forget(id: string): void {
    const name = this.names.get(id);
    if (name !== undefined) this.release(name);
    this.seen.delete(id);
    this.names.delete(id);
  }

  private release(name: string): void {
    const n = (this.holders.get(name) ?? 1) - 1;
    if (n > 0) this.holders.set(name, n);
    else this.holders.delete(name);
  }
}
