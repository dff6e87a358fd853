/**
 * Firmware-booted guests: SeaBIOS or OVMF runs (no -S) on a q35 machine with RAM above 4 GiB,
 * several pcie-root-ports and a device with a 64-bit BAR behind one of them, until the firmware has
 * assigned that BAR. The layout read then is the one firmware produced, not QEMU's pre-boot defaults.
 *
 * Measured: SeaBIOS 1.16.2 (Debian 12) keeps small 64-bit BARs below 4 GiB; SeaBIOS 1.16.3
 * (Debian 13) and OVMF put them near the top of the guest's space (about 2^bits - 2^(bits-3)).
 */
import { QmpClient } from '../../qmp/client';
import { HOST_QEMU, startGuest, type Guest, type Qemu } from './qemu';

/** QEMU's "not mapped" BAR address (hw/pci/pci.c PCI_BAR_UNMAPPED, all ones), as query-pci prints it. */
const UNMAPPED = -1;

export interface FirmwareGuestOptions {
  qemu?: Qemu;
  firmware: 'seabios' | 'ovmf';
  name: string;
  /** Directory for the socket (must be reachable by `qemu`: see Qemu.tempDir). */
  dir?: string;
  /** -cpu properties after qemu64, default 'phys-bits=40'. */
  cpu?: string;
  /** -m, default '3G' (2 GiB below 4 GiB, 1 GiB above on q35). */
  memory?: string;
  /** pcie-root-ports rp1..rpN, default 3; the 64-bit BAR device sits on rp1. */
  rootPorts?: number;
  /** How long the firmware may take to assign the BAR under TCG (default 90 s). */
  timeoutMs?: number;
}

export interface Bar {
  bar: number;
  address: number;
  size: number;
}

export interface FirmwareGuest {
  guest: Guest;
  /** The virtio-rng-pci's 64-bit memory BAR as firmware assigned it. */
  bar64: Bar;
  kill(): Promise<void>;
}

/** The id of the device whose 64-bit BAR the firmware must place. */
export const BAR64_DEVICE = 'rng64';

interface PciDevice {
  qdev_id?: string;
  regions?: { bar: number; type: string; mem_type_64?: boolean; address: number; size: number }[];
  pci_bridge?: { devices?: PciDevice[] };
}

/** The 64-bit memory BAR of device `id` in a query-pci reply, or null. */
export function findBar64(reply: unknown, id: string): Bar | null {
  const walk = (devices: PciDevice[] | undefined): Bar | null => {
    for (const d of devices ?? []) {
      if (d.qdev_id === id) {
        const r = d.regions?.find((x) => x.type === 'memory' && x.mem_type_64 === true);
        return r ? { bar: r.bar, address: r.address, size: r.size } : null;
      }
      const inner = walk(d.pci_bridge?.devices);
      if (inner) return inner;
    }
    return null;
  };
  for (const bus of Array.isArray(reply) ? (reply as { devices?: PciDevice[] }[]) : []) {
    const found = walk(bus.devices);
    if (found) return found;
  }
  return null;
}

/** The device arguments: root ports rp1..rpN and a virtio-rng-pci (64-bit BAR 4) on rp1. */
export function firmwareGuestDevices(rootPorts = 3): string[] {
  const args: string[] = [];
  for (let i = 1; i <= rootPorts; i++) args.push('-device', `pcie-root-port,id=rp${i},chassis=${i},slot=${i}`);
  args.push('-device', `virtio-rng-pci,id=${BAR64_DEVICE},bus=rp1`);
  return args;
}

/** Polls query-pci on a short-lived connection until firmware has mapped the 64-bit BAR. */
export async function waitForBar64(socket: string, timeoutMs: number): Promise<Bar> {
  const client = await QmpClient.connect(socket, { timeoutMs: 20000 });
  try {
    const deadline = Date.now() + timeoutMs;
    let last: Bar | null = null;
    for (;;) {
      last = findBar64(await client.execute('query-pci'), BAR64_DEVICE);
      if (last && last.address !== UNMAPPED) return last;
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for the firmware to map ${BAR64_DEVICE}'s 64-bit BAR ` +
            `(query-pci: ${last ? `address ${last.address}` : 'no such device'})`,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    await client.close();
  }
}

export async function startFirmwareGuest(opts: FirmwareGuestOptions): Promise<FirmwareGuest> {
  const guest = await startGuest({
    qemu: opts.qemu ?? HOST_QEMU,
    firmware: opts.firmware,
    name: opts.name,
    dir: opts.dir,
    cpu: opts.cpu ?? 'phys-bits=40',
    memory: opts.memory ?? '3G',
    extraArgs: firmwareGuestDevices(opts.rootPorts),
  });
  try {
    const bar64 = await waitForBar64(guest.socket, opts.timeoutMs ?? 90000);
    return { guest, bar64, kill: () => guest.kill() };
  } catch (err) {
    await guest.kill();
    throw err;
  }
}
