/** What a VM is found by: its id, its name, its upstream socket path (or `libvirt:<domain>`). */
export interface FindableVm {
  readonly id: string;
  readonly name: string;
  readonly socket: string;
}

/**
 * The VMs a `physbitsctl` key names: the one with this id; else every one with this name (names may
 * collide); else the one at this socket path. None matches: empty.
 */
export function findVms<T extends FindableVm>(all: Iterable<T>, key: string): T[] {
  const vms = [...all];
  const byId = vms.filter((vm) => vm.id === key);
  if (byId.length) return byId;
  const byName = vms.filter((vm) => vm.name === key);
  if (byName.length) return byName;
  return vms.filter((vm) => vm.socket === key);
}
