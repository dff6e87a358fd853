/**
 * The facts and documents every part of the agent exchanges. Plain data only: no behaviour here.
 * Addresses are byte counts held as JS numbers; x86 physical addresses stay below 2^52, well inside
 * Number.MAX_SAFE_INTEGER.
 */

export type Severity = 'ok' | 'info' | 'warning' | 'critical';
export type Relation = 'equal' | 'narrower' | 'wider';

/** Where a number in the host document came from. */
export type HostSource = 'config' | 'cpuinfo' | 'cpuid' | 'tdp-levels' | 'unknown';

/** The paging facts of /proc/cpuinfo the host's limit depends on; null: not shown there. */
export interface HostPaging {
  /** `la57` among the flags: Linux runs 5-level paging (null: no flags line). */
  la57: boolean | null;
  /** `ept_5level` among the "vmx flags" (null: no "vmx flags" line, e.g. AMD, or kernels before 5.8). */
  ept5Level: boolean | null;
  /** `hypervisor` among the flags: this host is itself a guest (a nested, L1, host). */
  hypervisor: boolean | null;
  /**
   * The running kernel's release (`<procRoot>/sys/kernel/osrelease`, "6.1.0-28-amd64"): Linux shows
   * `ept_5level` among the "vmx flags" only from 6.9, so before that its absence says nothing.
   * Absent or null when not read.
   */
  kernelRelease?: string | null;
  /**
   * Bit 7 (5-level page walk) of IA32_VMX_EPT_VPID_CAP (MSR 0x48c) read through `<devRoot>/cpu/0/msr`
   * on an Intel host: what KVM itself reads (arch/x86/kvm/vmx/vmx.c vmx_get_max_ept_level,
   * cpu_has_vmx_ept_5levels). Absent or null when not read (no msr module, not root, not Intel).
   */
  eptMsr5Level?: boolean | null;
}

/** How the host's limit was decided (agent/judge/host-limit.ts), beside the number in HostFacts.physBits. */
export interface HostLimitInfo {
  /** kvm_intel ept / kvm_amd npt; null when not read. */
  nestedPaging: boolean | null;
  /** The nested paging depth (5 or 4), null when unknown (4 assumed). */
  tdpLevels: 4 | 5 | null;
  /**
   * When the depth is not known and the CPU is wider than 48 bits: the width KVM maps if the depth
   * is 5 (physBits is then the 48 it maps either way). Absent or null otherwise.
   */
  upperPhysBits?: number | null;
  /** The width detection gives, before the config's host.physBits (null when nothing was read). */
  detectedPhysBits: number | null;
  /** Contradictory or missing readings. */
  problems: string[];
  /** Advice that is not a problem (nested host, unreadable cpuid on AMD). */
  notes: string[];
}

export interface HostFlags {
  sme: boolean;
  sev: boolean;
  sev_es: boolean;
  sev_snp: boolean;
  tme: boolean;
}

export interface HostKvm {
  /** 'kvm_intel', 'kvm_amd' or null when neither module's parameters are present. */
  module: 'kvm_intel' | 'kvm_amd' | null;
  /** kvm_intel allow_smaller_maxphyaddr (null when not kvm_intel or unreadable). */
  allowSmallerMaxphyaddr: boolean | null;
  /** kvm_intel ept (null when unknown). */
  ept: boolean | null;
  /** kvm_amd npt (null when unknown). */
  npt: boolean | null;
}

export interface HostFacts {
  name: string;
  /**
   * The host's limit (agent/judge/host-limit.ts): the widest guest-physical width KVM here can map,
   * after the config override. Every rule compares with this number.
   */
  physBits: number;
  physBitsSource: HostSource;
  /** How physBits was decided, step by step. */
  reasoning: string[];
  limit: HostLimitInfo;
  vendor: string;
  /** "address sizes: N bits physical" of /proc/cpuinfo; null when absent. */
  cpuinfoPhysBits: number | null;
  cpuinfoVirtBits: number | null;
  /** Raw CPUID 0x80000008 EAX[7:0] from /dev/cpu/0/cpuid; null when the device is unreadable. */
  cpuidPhysBits: number | null;
  /** AMD CPUID 0x8000001F EBX[11:6]: bits lost to memory encryption; null when not read. */
  memEncryptionReduction: number | null;
  flags: HostFlags;
  paging: HostPaging;
  kvm: HostKvm;
  /** Which source each number came from, e.g. { physBits: 'cpuinfo', cpuidPhysBits: 'cpuid' }. */
  sources: Record<string, HostSource>;
  /** Why a source was not used, e.g. "/dev/cpu/0/cpuid: EACCES" (absent when every source was read). */
  notes?: string[];
}

/**
 * What agent/facts/host-facts.ts reads of this host: HostFacts' readings before the limit is decided
 * (agent/judge/host-limit.ts judgeHost turns them into HostFacts).
 */
export interface HostReadings extends Pick<
  HostFacts,
  | 'name'
  | 'cpuinfoPhysBits'
  | 'cpuinfoVirtBits'
  | 'cpuidPhysBits'
  | 'memEncryptionReduction'
  | 'flags'
  | 'paging'
  | 'kvm'
  | 'sources'
> {
  /** vendor_id of /proc/cpuinfo, else CPUID leaf 0's vendor; null when neither was read. */
  vendor: string | null;
  /** Why a source was not used, e.g. "/dev/cpu/0/cpuid: EACCES". */
  notes: string[];
  /** Readings that contradict each other (cpuinfo's vendor against CPUID's), carried into the limit. */
  problems: string[];
}

export interface MemoryDeviceFact {
  type: string; // 'dimm' | 'nvdimm' | 'virtio-mem' | 'virtio-pmem' | 'sgx-epc' ...
  id: string | null;
  addr: number;
  size: number;
}

export interface GuestLayout {
  /** RAM mapped at and above 4 GiB (bytes). */
  ramAbove4g: number;
  ramBelow4g: number;
  /** The device-memory (hot-plug) region, when the machine has one (maxmem > mem). */
  deviceMemory: { base: number; size: number } | null;
  memoryDevices: MemoryDeviceFact[];
  /** The 64-bit PCI hole of the host bridge, when reported. */
  pciHole64: { start: number; end: number } | null;
  /** One past the highest guest-physical address the layout can use now (exclusive end). */
  highestAddress: number;
  /** One past the highest address in use now (RAM and plugged devices), ignoring empty regions. */
  usedEnd: number;
  /** `qom-get /machine memory` (QEMU 7.1+): -m size, maxmem and slots; absent or null when not read. */
  memoryConfig?: { size: number; maxSize: number; slots: number } | null;
  /**
   * The host bridge's configured pci-hole64-size. The window QEMU checks phys-bits against is
   * [pciHole64.start, start + this); firmware may later report a higher end, placed by phys-bits.
   */
  pciHole64Size?: number | null;
  /**
   * The 64-bit memory BARs firmware or the guest OS placed, from `query-pci`
   * (agent/facts/pci-layout.ts); absent when query-pci was not answered.
   */
  pciBars?: PciBarFact[];
  /** Every PCI bridge (root ports included) with the windows it forwards, from `query-pci`. */
  pciBridges?: PciBridgeFact[];
  /**
   * The host bridge's x-pci-hole64-fix (off on machine types 2.10 and older, pc_compat_2_10): with it
   * off and no BAR above 4 GiB QEMU reports the 64-bit hole as 0/0 and offers the guest none.
   * Absent or null when not read.
   */
  pciHole64Fix?: boolean | null;
}

/** A guest-physical range [start, end): end is exclusive. */
export interface AddressRange {
  start: number;
  end: number;
}

/** One placed 64-bit memory BAR. */
export interface PciBarFact {
  /** "00:02.0": bus:slot.function, hexadecimal like lspci. */
  address: string;
  bus: number;
  slot: number;
  function: number;
  /** The device's qdev id (`-device ...,id=`), null when it has none. */
  id: string | null;
  /** The BAR number (0-5). */
  bar: number;
  base: number;
  size: number;
  prefetchable: boolean;
}

/** One PCI-to-PCI bridge (pcie-root-port, pci-bridge, ...) and the windows it forwards to its bus. */
export interface PciBridgeFact {
  address: string;
  bus: number;
  slot: number;
  function: number;
  /** The bridge's qdev id: the name `device_add ...,bus=` uses for the bus behind it. */
  id: string | null;
  /** The bus behind it (0 until firmware numbers it). */
  secondaryBus: number;
  /** The non-prefetchable memory window (32-bit by the PCI spec), null when disabled (base > limit). */
  memory: AddressRange | null;
  /** The prefetchable memory window (64-bit capable), null when disabled. */
  prefetchable: AddressRange | null;
}

export interface GuestMemoryEncryption {
  active: boolean;
  /** 'sev' | 'sev-es' | 'sev-snp' | null */
  type: string | null;
  /** query-sev "reduced-phys-bits" when active. */
  reducedPhysBits: number | null;
}

/** A QEMU that received its guest by migration (read for host-phys-bits=on guests only). */
export interface GuestIncoming {
  /** 'pending': started with -incoming, the stream not loaded yet; 'completed': the guest arrived. */
  state: 'pending' | 'completed';
  /** The TCP port QEMU listens on for the stream, while it is known (pending). */
  port: string | null;
}

/**
 * A host-phys-bits=on guest that arrived by migration: the width it booted with (which it keeps)
 * beside the width QEMU here reports (this host's). docs/guard.md "host-phys-bits=on guests after a
 * migration".
 */
export interface GuestMigratedIn {
  /** The width the guest booted with, as the source's guard told this agent; null: not told. */
  bootedPhysBits: number | null;
  /** What QEMU here reports (qom-get phys-bits): this host's width, which the guest takes at its next reset. */
  qemuPhysBits: number;
  /** The source host's name, when told. */
  from: string | null;
}

export interface GuestFacts {
  name: string | null;
  qemuVersion: string;
  accelerator: string; // 'kvm' | 'tcg' | ...
  /**
   * The width the guest uses: the CPU's phys-bits as QEMU resolved it (qom-get phys-bits on the
   * first CPU), except for a host-phys-bits=on guest that arrived by migration, whose booted width
   * the source's guard told (`migratedIn`).
   */
  physBits: number;
  hostPhysBits: boolean;
  /** 0 when unset. */
  hostPhysBitsLimit: number;
  /** QEMU 9.1+ guest-phys-bits; null when the property does not exist. */
  guestPhysBits: number | null;
  cpuModel: string | null;
  memoryEncryption: GuestMemoryEncryption;
  /** QEMU run state from query-status (e.g. 'running', 'paused', 'prelaunch'). */
  runState: string | null;
  layout: GuestLayout | null;
  /**
   * Reads the layout needs that this QEMU did not answer (e.g. "qom-get /machine/device-memory[0] size"):
   * the layout lacks what they would have given; the verdict names each (GUEST_FACT_UNREADABLE).
   */
  unreadable?: string[];
  /** Set when this QEMU received its guest by migration (host-phys-bits=on guests only). */
  incoming?: GuestIncoming;
  /** A host-phys-bits=on guest that arrived by migration and has not been reset since. */
  migratedIn?: GuestMigratedIn;
  /**
   * How the guest boots: 'pflash' when the machine has a `system.flash0` child (UEFI from pflash,
   * OVMF: hw/i386/pc_sysfw.c keeps the flash devices only when a pflash drive backs them), 'bios'
   * when it has none (-bios, SeaBIOS by default); absent or null when `qom-list /machine` failed.
   */
  firmware?: 'pflash' | 'bios' | null;
  /** `qom-get /machine type`, e.g. "pc-q35-7.2-machine"; absent or null when not read. */
  machineType?: string | null;
  /**
   * The PCI device types this QEMU has (`qom-list-types implements=pci-device`), lower case; absent
   * or null when not read. The PCI rule asks it about drivers its BAR table does not list.
   */
  pciDeviceTypes?: string[] | null;
  /**
   * The guest's UUID (QMP query-uuid: QEMU's -uuid, libvirt's <uuid>) in lower case; absent when QEMU
   * did not answer or has none (all zeros). Peers find a migrating guest by it (agent/peers/source-width.ts).
   */
  uuid?: string;
}

export interface Policy {
  /** Accelerators whose guests the host limit applies to. */
  accelerators: string[];
  /** Severity for a guest narrower than the host. */
  narrowerSeverity: 'ok' | 'info';
}

/** Where a fleet or advice document read from Prometheus came from: the server, the evaluation time, the queries. */
export interface PrometheusSource {
  url: string;
  /** The instant every query was evaluated at (ISO 8601) and the same in Unix seconds. */
  time: string;
  unixTime: number;
  queries: Record<string, string>;
}

/**
 * Where a peer's width came from: 'static' the config's physBits, 'live' its agent's answer,
 * 'fallback' the config's physBits after its agent did not answer, 'prometheus' a host known only
 * from fleet.prometheus, 'none' nothing knows it.
 */
export type PeerSource = 'static' | 'live' | 'fallback' | 'prometheus' | 'none';

/**
 * What is known of another host (agent/peers/ builds it; verdicts, the guard, check-migration and the
 * fleet view read it). `physBits` is already the merge of every source asked: the lower width wins.
 */
export interface PeerFacts {
  name: string;
  /** The width to compare with; null when no source knows it. */
  physBits: number | null;
  /** Static peers: true (nothing to reach). Live peers and Prometheus hosts: whether they answered, fresh. */
  reachable: boolean;
  source?: PeerSource;
  /** Why a live peer or Prometheus host could not be had (a PEER_* or PROM_* code). */
  error?: { code: string; message: string };
  /** Why the width is unknown, for a refusal's message. */
  why?: string;
  /** The host's `pool` label in Prometheus (fleet.pool). */
  pool?: string;
  /** A live agent's host document (GET /v1/host). */
  host?: Record<string, unknown>;
  /** Its guests: a live agent's status document, or one built from Prometheus's series; null when not had. */
  status?: StatusDocument | null;
  /** What Prometheus said of the host: its width when up and fresh, null when not; absent when not asked or not listed. */
  prometheus?: { physBits: number | null; reachable: boolean; error?: string };
}

export interface Reason {
  code: string;
  severity: Severity;
  message: string;
}

export interface Verdict {
  relation: Relation;
  severity: Severity;
  reasons: Reason[];
}

export interface VmErrorInfo {
  code: string;
  message: string;
}

/** One entry of the status document's `vms` array. */
export interface VmStatus {
  socket: string;
  /**
   * The VM's identity on this host (agent/core/vm-name.ts vmId: from its socket's path); names may
   * repeat, ids do not. Set by the daemon and `scan`; absent in documents from older peers.
   */
  id?: string;
  name: string;
  /** 'hold' | 'poll' | 'libvirt' | 'scan' */
  mode?: string;
  accelerator?: string;
  guest?: GuestFacts;
  verdict?: Verdict;
  error?: VmErrorInfo;
  /** ISO time of the last successful read. */
  checkedAt?: string;
  /** Guarded socket path when the guard serves this VM. */
  guardSocket?: string | null;
}

export interface StatusDocument {
  host: HostFacts;
  vms: VmStatus[];
  /** Worst state, as the CLI's exit code would say it. */
  summary?: { worst: Severity | 'unknown'; exitCode: number; counts: Record<string, number> };
}
