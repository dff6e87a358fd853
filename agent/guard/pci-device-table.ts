/**
 * Which PCI devices a `device_add` can create with a 64-bit memory BAR, under the name QEMU resolves.
 * Pure tables and lookups; the PCI hot-plug rule (pci-hotplug-rule.ts) uses them.
 *
 * Names are resolved as QEMU resolves them (system/qdev-monitor.c, softmmu/qdev-monitor.c in 7.2:
 * qdev_get_device_class tries the type name first, then find_typename_by_alias in
 * qdev_alias_table). On x86 the virtio aliases (QEMU_ARCH_VIRTIO_PCI includes QEMU_ARCH_I386) name
 * the -pci devices: `virtio-rng` is `virtio-rng-pci`. QEMU compares names exactly; here they are
 * compared without case, which can only refuse more.
 *
 * The BAR table lists every PCI device type QEMU 7.2 and 10.0 register on x86_64 (qom-list-types
 * implements=pci-device), each measured with query-pci on both (test/guard/pci-device-table.test.ts
 * measures it again) and checked against the source that registers the BAR:
 *  - virtio-pci: hw/virtio/virtio-pci.c virtio_pci_device_plugged registers the modern (virtio 1.0)
 *    BAR, 64-bit prefetchable (BAR 4; BAR 2 on virtio-vga, hw/display/virtio-vga.c), unless
 *    disable-modern=on; hw_compat_2_6 (hw/core/machine.c) sets disable-modern=on for machine types
 *    2.6 and older, so their virtio devices are legacy-only by default. virtio-mem-pci and
 *    virtio-pmem-pci have it too (they also meet the memory rule).
 *  - nvme: hw/nvme/ctrl.c nvme_init_pci: BAR 0 64-bit; nvme_init_cmb: BAR 2 (NVME_CMB_BIR) 64-bit
 *    prefetchable when cmb_size_mb > 0; nvme_init_pmr: BAR 4 (NVME_PMR_BIR) 64-bit prefetchable,
 *    the pmrdev backend's host memory, when pmrdev is set.
 *  - qxl, qxl-vga: hw/display/qxl.c qxl_realize_common: BAR 4 (QXL_VRAM64_RANGE_INDEX) 64-bit
 *    prefetchable RAM when vram64_size_mb exceeds the 32-bit vram (vram_size_mb, default 64).
 *  - igb, igbvf: hw/net/igb.c igb_pci_realize (igbvf.c): BAR 3, the MSI-X table, 64-bit.
 *  - megasas, megasas-gen2: hw/scsi/megasas.c megasas_scsi_realize: the MMIO BAR (0, or 1 on gen2)
 *    and BAR 3 are PCI_BASE_ADDRESS_MEM_TYPE_64.
 *  - pci-bridge, pci-bridge-seat, pcie-pci-bridge: hw/pci-bridge/pci_bridge_dev.c
 *    pci_bridge_dev_realize and pcie_pci_bridge.c: the SHPC BAR 0 is 64-bit unless shpc=off.
 *  - qemu-xhci, nec-usb-xhci (hw/usb/hcd-xhci-pci.c), ivshmem (hw/misc/ivshmem.c), the CXL ports
 *    and type-3 device (hw/pci-bridge/cxl_*.c, hw/mem/cxl_type3.c), vfio-pci (hw/vfio/pci.c:
 *    the host device's BARs, any kind).
 */

export interface Bar64Kinds {
  /** The device has (or may have) a 64-bit prefetchable memory BAR. */
  prefetchable: boolean;
  /** The device has (or may have) a 64-bit non-prefetchable memory BAR. */
  nonPrefetchable: boolean;
  /** Where the classification comes from, for the message and the docs. */
  source: string;
}

/** What the table knows of a driver. */
export type PciClass =
  /** A PCI device with the 64-bit BAR kinds given; `virtio`: the modern BAR, absent on legacy-only machines. */
  | { kind: 'bar64'; kinds: Bar64Kinds; virtio: boolean; modernAsked: boolean }
  /** A PCI device measured without a 64-bit BAR, or with its 64-bit BAR turned off by a property. */
  | { kind: 'none'; why: string }
  /** Not in the table: perhaps a PCI device, perhaps not (the guest's QEMU says which). */
  | { kind: 'unlisted' };

/**
 * qdev_alias_table's x86 entries (QEMU 7.2 and 10.0; `-device help` prints them as "alias"): the
 * entries without an arch mask and those for QEMU_ARCH_VIRTIO_PCI.
 */
export const QDEV_ALIASES: Readonly<Record<string, string>> = {
  ac97: 'AC97',
  'e1000-82540em': 'e1000',
  es1370: 'ES1370',
  ahci: 'ich9-ahci',
  lsi: 'lsi53c895a',
  'virtio-9p': 'virtio-9p-pci',
  'virtio-balloon': 'virtio-balloon-pci',
  'virtio-blk': 'virtio-blk-pci',
  'virtio-gpu': 'virtio-gpu-pci',
  'virtio-gpu-gl': 'virtio-gpu-gl-pci',
  'virtio-gpu-rutabaga': 'virtio-gpu-rutabaga-pci',
  'virtio-input-host': 'virtio-input-host-pci',
  'virtio-iommu': 'virtio-iommu-pci',
  'virtio-keyboard': 'virtio-keyboard-pci',
  'virtio-mouse': 'virtio-mouse-pci',
  'virtio-net': 'virtio-net-pci',
  'virtio-rng': 'virtio-rng-pci',
  'virtio-scsi': 'virtio-scsi-pci',
  'virtio-serial': 'virtio-serial-pci',
  'virtio-sound': 'virtio-sound-pci',
  'virtio-tablet': 'virtio-tablet-pci',
};

/** The type QEMU creates for `name` (lower case): the alias's type, else the name itself. */
export function resolveDriver(name: string): { driver: string; alias: string | null } {
  const lower = name.toLowerCase();
  const target = Object.prototype.hasOwnProperty.call(QDEV_ALIASES, lower) ? QDEV_ALIASES[lower] : undefined;
  return target ? { driver: target.toLowerCase(), alias: lower } : { driver: lower, alias: null };
}

/** true, "on", "yes" as QEMU's bool property parser reads them (qapi/qobject-input-visitor.c). */
export function isOn(v: unknown): boolean {
  return v === true || (typeof v === 'string' && /^(on|yes|true|y)$/i.test(v));
}
function isOff(v: unknown): boolean {
  return v === false || (typeof v === 'string' && /^(off|no|false|n)$/i.test(v));
}
/** A positive integer property (decimal, as a number or a string); null when absent or unreadable. */
function intProp(v: unknown): number | null {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  if (typeof v === 'string' && /^\s*\d{1,15}\s*$/.test(v)) return Number(v);
  return null;
}

const NP = (source: string): Bar64Kinds => ({ prefetchable: false, nonPrefetchable: true, source });
const PF = (source: string): Bar64Kinds => ({ prefetchable: true, nonPrefetchable: false, source });
const BOTH = (source: string): Bar64Kinds => ({ prefetchable: true, nonPrefetchable: true, source });

const VIRTIO_SOURCE = 'the virtio 1.0 BAR 4 (hw/virtio/virtio-pci.c virtio_pci_device_plugged: 64-bit, prefetchable)';
const VIRTIO_VGA_SOURCE =
  'the virtio 1.0 BAR 2 (hw/virtio/virtio-pci.c virtio_pci_device_plugged, hw/display/virtio-vga.c: 64-bit, prefetchable)';
const VFIO_SOURCE = "the host device's BARs (hw/vfio/pci.c)";
const IVSHMEM_SOURCE = 'the shared memory BAR 2 (hw/misc/ivshmem.c: 64-bit, prefetchable)';
const XHCI_SOURCE = 'BAR 0 (hw/usb/hcd-xhci-pci.c: 64-bit)';
const CXL_SOURCE = 'the CXL component registers BAR (hw/pci-bridge/cxl_*.c, hw/mem/cxl_type3.c: 64-bit)';
const SHPC_SOURCE = 'the SHPC BAR 0 (hw/pci-bridge/pci_bridge_dev.c, pcie_pci_bridge.c: 64-bit), unless shpc=off';

type Rule = (args: Record<string, unknown>) => Bar64Kinds | string;

const fixed =
  (kinds: Bar64Kinds): Rule =>
  () =>
    kinds;

function nvme(args: Record<string, unknown>): Bar64Kinds {
  const cmb = (intProp(args.cmb_size_mb) ?? (args.cmb_size_mb === undefined ? 0 : 1)) > 0;
  const pmr = typeof args.pmrdev === 'string' && args.pmrdev !== '';
  if (!cmb && !pmr) return NP('BAR 0 (hw/nvme/ctrl.c nvme_init_pci: 64-bit)');
  const extra = [
    cmb ? 'the controller memory buffer BAR 2 (nvme_init_cmb: 64-bit, prefetchable)' : null,
    pmr
      ? "the persistent memory region BAR 4 (nvme_init_pmr: 64-bit, prefetchable: the pmrdev backend's host memory)"
      : null,
  ].filter(Boolean);
  return BOTH(`BAR 0 (hw/nvme/ctrl.c nvme_init_pci: 64-bit) and ${extra.join(' and ')}`);
}

function qxl(args: Record<string, unknown>): Bar64Kinds | string {
  if (args.vram64_size_mb === undefined) return 'qxl has no 64-bit BAR without vram64_size_mb';
  const vram64 = intProp(args.vram64_size_mb);
  const vram32 = args.vram_size_mb === undefined ? 64 : intProp(args.vram_size_mb);
  // Unreadable sizes: assume the BAR is there (QEMU would refuse the line or create it).
  if (vram64 !== null && vram32 !== null && vram64 <= vram32)
    return `qxl's vram64_size_mb (${vram64}) does not exceed its 32-bit vram (${vram32} MiB): no 64-bit BAR`;
  return PF('the 64-bit VRAM BAR 4 (hw/display/qxl.c qxl_realize_common: 64-bit, prefetchable, RAM)');
}

function shpc(args: Record<string, unknown>): Bar64Kinds | string {
  return isOff(args.shpc) ? 'shpc=off: no SHPC BAR' : NP(SHPC_SOURCE);
}

/** PCI device types with a 64-bit BAR (always, or as their properties say). */
const BAR64_RULES: Readonly<Record<string, Rule>> = {
  'vfio-pci': fixed(BOTH(VFIO_SOURCE)),
  'vfio-pci-nohotplug': fixed(BOTH(VFIO_SOURCE)),
  'ivshmem-plain': fixed(PF(IVSHMEM_SOURCE)),
  'ivshmem-doorbell': fixed(PF(IVSHMEM_SOURCE)),
  nvme,
  'qemu-xhci': fixed(NP(XHCI_SOURCE)),
  'nec-usb-xhci': fixed(NP(XHCI_SOURCE)),
  qxl,
  'qxl-vga': qxl,
  igb: fixed(NP('the MSI-X BAR 3 (hw/net/igb.c igb_pci_realize: 64-bit)')),
  igbvf: fixed(NP('the MSI-X BAR 3 (hw/net/igbvf.c igbvf_pci_realize: 64-bit)')),
  megasas: fixed(NP('BARs 0 and 3 (hw/scsi/megasas.c megasas_scsi_realize: 64-bit)')),
  'megasas-gen2': fixed(NP('BARs 1 and 3 (hw/scsi/megasas.c megasas_scsi_realize: 64-bit)')),
  'pci-bridge': shpc,
  'pci-bridge-seat': shpc,
  'pcie-pci-bridge': shpc,
  'cxl-rp': fixed(NP(CXL_SOURCE)),
  'cxl-upstream': fixed(NP(CXL_SOURCE)),
  'cxl-downstream': fixed(NP(CXL_SOURCE)),
  'cxl-type3': fixed(NP(CXL_SOURCE)),
  'cxl-switch-mailbox-cci': fixed(NP(CXL_SOURCE)),
};

/** virtio-vga and its relatives: the modern BAR is BAR 2. */
const VIRTIO_VGA = new Set(['virtio-vga', 'virtio-vga-gl', 'vhost-user-vga', 'virtio-vga-rutabaga']);

/**
 * PCI device types measured with query-pci on QEMU 7.2 and 10.0 without a 64-bit memory BAR (lower
 * case). The list is of what was measured; a type not here and not above is "unlisted".
 */
export const NO_BAR64: ReadonlySet<string> = new Set(
  [
    'AC97',
    'AMDVI-PCI',
    'ES1370',
    'VGA',
    'am53c974',
    'ati-vga',
    'bochs-display',
    'cirrus-vga',
    'dc390',
    'e1000',
    'e1000-82544gc',
    'e1000-82545em',
    'e1000e',
    'edu',
    'i6300esb',
    'i82550',
    'i82551',
    'i82557a',
    'i82557b',
    'i82557c',
    'i82558a',
    'i82558b',
    'i82559a',
    'i82559b',
    'i82559c',
    'i82559er',
    'i82562',
    'i82801',
    'i82801b11-bridge',
    'ich9-ahci',
    'ich9-intel-hda',
    'ich9-usb-ehci1',
    'ich9-usb-ehci2',
    'ich9-usb-uhci1',
    'ich9-usb-uhci2',
    'ich9-usb-uhci3',
    'ich9-usb-uhci4',
    'ich9-usb-uhci5',
    'ich9-usb-uhci6',
    'intel-hda',
    'ioh3420',
    'lsi53c810',
    'lsi53c895a',
    'mptsas1068',
    'ne2k_pci',
    'pci-ohci',
    'pci-serial',
    'pci-serial-2x',
    'pci-serial-4x',
    'pci-testdev',
    'pcie-root-port',
    'pcnet',
    'piix3-ide',
    'piix3-usb-uhci',
    'piix4-ide',
    'piix4-usb-uhci',
    'pvpanic-pci',
    'pvscsi',
    'rocker',
    'rtl8139',
    'sdhci-pci',
    'secondary-vga',
    'tpci200',
    'tulip',
    'ufs',
    'usb-ehci',
    'vmware-svga',
    'vmxnet3',
    'x3130-upstream',
    'xio3130-downstream',
  ].map((n) => n.toLowerCase()),
);

/** virtio-*-pci, vhost-*-pci, vhost-user-*-pci and their -transitional / -non-transitional forms. */
const VIRTIO_PCI = /^(virtio|vhost|vhost-user|vhost-vdpa)-[a-z0-9-]+-pci(-non-transitional|-transitional)?$/;

/** Whether `driver` (resolved, lower case) is a virtio PCI device. */
export function isVirtioPci(driver: string): boolean {
  return VIRTIO_PCI.test(driver) || VIRTIO_VGA.has(driver);
}

/** The class of a resolved driver (lower case) with the device_add's arguments. */
export function classifyPciDriver(driver: string, args: Record<string, unknown>): PciClass {
  if (isVirtioPci(driver)) {
    if (isOn(args['disable-modern']))
      return { kind: 'none', why: 'disable-modern=on: legacy virtio only, no 64-bit BAR' };
    return {
      kind: 'bar64',
      kinds: PF(VIRTIO_VGA.has(driver) ? VIRTIO_VGA_SOURCE : VIRTIO_SOURCE),
      virtio: true,
      modernAsked: isOff(args['disable-modern']),
    };
  }
  if (Object.prototype.hasOwnProperty.call(BAR64_RULES, driver)) {
    const got = BAR64_RULES[driver](args);
    return typeof got === 'string'
      ? { kind: 'none', why: got }
      : { kind: 'bar64', kinds: got, virtio: false, modernAsked: false };
  }
  if (NO_BAR64.has(driver)) return { kind: 'none', why: `${driver} has no 64-bit memory BAR` };
  return { kind: 'unlisted' };
}

/** Every driver name the BAR table lists (for the measurement test). */
export function listedDrivers(): string[] {
  return [...Object.keys(BAR64_RULES), ...VIRTIO_VGA, ...NO_BAR64];
}
