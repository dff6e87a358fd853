/**
 * The shape of QEMU's `query-pci` reply (qapi/pci.json: PciInfo, PciDeviceInfo, PciMemoryRegion,
 * PciBridgeInfo, PciMemoryRange), as hw/pci/pci-qmp-cmds.c (hw/pci/pci.c before QEMU 8.0) builds it.
 * Types only: what the values mean to a caller is the caller's business.
 */

export interface PciMemoryRange {
  base: number;
  /** Inclusive. */
  limit: number;
}

export interface PciMemoryRegion {
  bar: number;
  type: 'io' | 'memory';
  /** -1 while the BAR is not mapped (PCI_BAR_UNMAPPED, include/hw/pci/pci.h). */
  address: number;
  size: number;
  /** Memory BARs only. */
  prefetch?: boolean;
  /** Memory BARs only. */
  mem_type_64?: boolean;
}

export interface PciBusInfo {
  /** The bridge's primary bus number. */
  number: number;
  secondary: number;
  subordinate: number;
  io_range: PciMemoryRange;
  memory_range: PciMemoryRange;
  prefetchable_range: PciMemoryRange;
}

export interface PciBridgeInfo {
  bus: PciBusInfo;
  /** Listed only once the bridge's secondary bus number is set (by firmware). */
  devices?: PciDeviceInfo[];
}

export interface PciDeviceInfo {
  bus: number;
  slot: number;
  function: number;
  class_info: { desc?: string; class: number };
  id: { vendor: number; device: number; subsystem?: number; 'subsystem-vendor'?: number };
  irq?: number;
  irq_pin?: number;
  /** The qdev id, "" when the device has none. */
  qdev_id: string;
  pci_bridge?: PciBridgeInfo;
  regions: PciMemoryRegion[];
}

export interface PciInfo {
  bus: number;
  devices: PciDeviceInfo[];
}
