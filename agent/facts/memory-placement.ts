/**
 * Where QEMU will put a memory device (pc-dimm, nvdimm, virtio-mem, virtio-pmem) that is
 * hot-plugged without an address, so the guard can tell before `device_add` whether it would
 * land above the host's physical address width.
 *
 * The rule is QEMU's (hw/mem/memory-device.c, memory_device_pre_plug and
 * memory_device_get_free_addr; first fit since the 2.x releases, in this range-based form since 5.x):
 *  - the device's alignment is, for virtio-mem, max(block-size, backend alignment) (its
 *    get_min_alignment); for pc-dimm, nvdimm and virtio-pmem, the backend region's alignment.
 *    On x86 machine types 2.1 and older (no enforce_aligned_dimm) pc-dimm/nvdimm use a fixed
 *    4 KiB "legacy_align" instead (hw/i386/pc.c pc_memory_pre_plug); later QEMU releases dropped
 *    it together with those machine types.
 *  - the backend region's alignment (backends/hostmem*.c, system/physmem.c): memory-backend-ram
 *    is mmap'ed with QEMU_VMALLOC_ALIGN, 2 MiB on x86-64 Linux (util/oslib-posix.c);
 *    memory-backend-file and -memfd use the page size of the file (4 KiB, or the huge page size
 *    on hugetlbfs) or the backend's `align` property when larger.
 *  - with an `addr` hint: it must be aligned and [hint, hint+size) inside the device-memory
 *    region and free, else device_add fails.
 *  - without: first fit. Candidate = region base aligned up; walk the plugged devices by
 *    ascending address; on overlap move the candidate to the device's end aligned up; stop at the
 *    first device that starts past the candidate's end. Fails when the candidate leaves the region.
 *  - the size must be a multiple of the alignment; base misalignment only warns (7.2).
 */
import { readFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { hex } from '../core/format';
import { alignUp, MiB } from './guest-layout';
import type { QmpExecutor } from './guest-facts';

export const KiB = 1024;
/** memory-backend-ram's region alignment on x86-64 Linux hosts (QEMU_VMALLOC_ALIGN). */
export const RAM_BACKEND_ALIGN = 2 * MiB;
/** TARGET_PAGE_SIZE on x86: the legacy pc-dimm alignment and a plain file's page size. */
export const PAGE_SIZE = 4 * KiB;
/** The transparent huge page size virtio-mem defaults its block size to on x86-64. */
export const THP_SIZE = 2 * MiB;
const HUGETLBFS_MAGIC = 0x958458f6;

export type PlacementErrorCode =
  | 'PLACEMENT_NO_DEVICE_MEMORY'
  | 'PLACEMENT_MISALIGNED_ADDR'
  | 'PLACEMENT_MISALIGNED_SIZE'
  | 'PLACEMENT_NO_SPACE'
  | 'PLACEMENT_OUT_OF_RANGE'
  | 'PLACEMENT_CONFLICT'
  | 'PLACEMENT_FRAGMENTED';

export interface PlacementInput {
  deviceMemory: { base: number; size: number };
  /** Every plugged memory device: address and region size (virtio-mem: its max-size). */
  existing: readonly { addr: number; size: number; id?: string | null }[];
  size: number;
  /** Default RAM_BACKEND_ALIGN (memory-backend-ram). */
  align?: number;
  /** The device's `addr` (pc-dimm/nvdimm) or `memaddr` (virtio-mem/pmem) property. */
  hint?: number;
  /** maxmem - mem: the total size memory devices may take (memory_device_check_addable). */
  capacity?: number;
}

export type PlacementResult = { addr: number } | { error: string; code: PlacementErrorCode };

function fail(code: PlacementErrorCode, error: string): PlacementResult {
  return { error, code };
}

/** QEMU's address for a new memory device, or the reason device_add would fail. */
export function predictPlacement(input: PlacementInput): PlacementResult {
  const { deviceMemory: dm, size } = input;
  const align = input.align && input.align > 0 ? input.align : RAM_BACKEND_ALIGN;
  if (!(dm.size > 0)) {
    return fail(
      'PLACEMENT_NO_DEVICE_MEMORY',
      'memory devices are not enabled: the machine has no device memory (maxmem)',
    );
  }
  if (input.capacity !== undefined) {
    const used = input.existing.reduce((sum, d) => sum + d.size, 0);
    if (used + size > input.capacity) {
      return fail(
        'PLACEMENT_NO_SPACE',
        `not enough space, currently ${hex(used)} in use of total space for memory devices ${hex(input.capacity)}`,
      );
    }
  }
  if (input.hint !== undefined && input.hint % align !== 0) {
    return fail('PLACEMENT_MISALIGNED_ADDR', `address must be aligned to ${hex(align)} bytes`);
  }
  if (size % align !== 0) {
    return fail('PLACEMENT_MISALIGNED_SIZE', `backend memory size must be multiple of ${hex(align)}`);
  }
  const regionEnd = dm.base + dm.size;
  let start: number;
  if (input.hint !== undefined) {
    start = input.hint;
    if (start < dm.base || start + size > regionEnd || !(size > 0)) {
      return fail(
        'PLACEMENT_OUT_OF_RANGE',
        `can't add memory device [${hex(start)}:${hex(size)}], usable range for memory devices [${hex(dm.base)}:${hex(dm.size)}]`,
      );
    }
  } else {
    start = alignUp(dm.base, align);
  }
  const sorted = [...input.existing].filter((d) => d.size > 0).sort((a, b) => a.addr - b.addr);
  for (const d of sorted) {
    const dEnd = d.addr + d.size;
    if (d.addr < start + size && start < dEnd) {
      if (input.hint !== undefined) {
        return fail('PLACEMENT_CONFLICT', `address range conflicts with memory device id='${d.id ?? '(unnamed)'}'`);
      }
      start = alignUp(dEnd, align);
    } else if (d.addr >= start + size) {
      break;
    }
  }
  if (start < dm.base || start + size > regionEnd) {
    return fail(
      'PLACEMENT_FRAGMENTED',
      'could not find position in guest address space for memory device - memory fragmented due to alignments',
    );
  }
  return { addr: start };
}

/** Drivers whose device_add plugs into the device-memory region. */
export const MEMORY_DEVICE_DRIVERS: ReadonlySet<string> = new Set([
  'pc-dimm',
  'nvdimm',
  'virtio-mem-pci',
  'virtio-mem',
  'virtio-pmem-pci',
  'virtio-pmem',
]);

export function isMemoryDeviceDriver(driver: unknown): boolean {
  return typeof driver === 'string' && MEMORY_DEVICE_DRIVERS.has(driver);
}

/** The backend id a device_add names in `memdev` ("m1" or "/objects/m1"); null when absent. */
export function memdevId(args: Record<string, unknown>): string | null {
  const m = args.memdev;
  if (typeof m !== 'string' || m.length === 0 || m.length > 256) return null;
  return m.startsWith('/objects/') ? m.slice('/objects/'.length) : m;
}

/** A size or address argument given as a number or a decimal/hex string; null otherwise. */
export function numberArg(v: unknown): number | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : null;
  if (typeof v === 'string' && /^(0x[0-9a-fA-F]{1,13}|\d{1,16})$/.test(v.trim())) {
    const n = Number(v.trim());
    return Number.isSafeInteger(n) ? n : null;
  }
  return null;
}

const SIZE_SUFFIX: Readonly<Record<string, number>> = {
  b: 1,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
  e: 2 ** 60,
};

/**
 * A size property (qdev "size", e.g. nvdimm label-size) as QEMU reads it (util/cutils.c
 * qemu_strtosz): a number, or a string: decimal with an optional fraction and a B/K/M/G/T/P/E
 * suffix (either case, bytes without one), or a hex integer without suffix. Null where QEMU refuses.
 */
export function sizeArg(v: unknown): number | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : null;
  if (typeof v !== 'string' || v.length > 64) return null;
  const text = v.trim();
  if (/^0[xX][0-9a-fA-F]{1,13}$/.test(text)) return Number(text);
  const m = /^(\d{1,16})(?:\.(\d{1,16}))?([bBkKmMgGtTpPeE]?)$/.exec(text);
  if (!m) return null;
  const unit = m[3] ? SIZE_SUFFIX[m[3].toLowerCase()] : 1;
  if (m[2] !== undefined && unit === 1) return null; // a fraction needs a unit
  const n = Math.floor(Number(`${m[1]}.${m[2] ?? '0'}`) * unit);
  return Number.isSafeInteger(n) ? n : null;
}

/** The address hint of a device_add: pc-dimm/nvdimm `addr`, virtio-mem/pmem `memaddr`; 0 means none. */
export function addressHint(args: Record<string, unknown>): number | null {
  // On virtio-mem-pci / virtio-pmem-pci `addr` is the PCI slot; their address is `memaddr`.
  const driver = String(args.driver ?? '');
  const v = numberArg(driver.startsWith('virtio-') ? args.memaddr : args.addr);
  return v ? v : null;
}

/**
 * The size a memory device takes in guest-physical space: its backend's size (query-memdev); for
 * nvdimm, the size less label-size, aligned down to the backend region's alignment `align`
 * (hw/mem/nvdimm.c nvdimm_prepare_memory_region: pmem_size = QEMU_ALIGN_DOWN(size - label_size,
 * align)). Null when the driver is not a memory device, the backend is not in the list, or an
 * nvdimm's label-size cannot be read or leaves no memory (QEMU refuses such a device).
 */
export function memoryDeviceSize(
  args: Record<string, unknown>,
  memdevs: readonly { id?: string; size: number }[],
  align = 1,
): number | null {
  if (!isMemoryDeviceDriver(args.driver)) return null;
  const id = memdevId(args);
  if (!id) return null;
  const backend = memdevs.find((m) => m.id === id);
  if (!backend || !Number.isSafeInteger(backend.size)) return null;
  if (args.driver !== 'nvdimm') return backend.size;
  const label = args['label-size'] === undefined ? 0 : sizeArg(args['label-size']);
  if (label === null || label >= backend.size) return null;
  const unit = align > 0 ? align : 1;
  const pmem = Math.floor((backend.size - label) / unit) * unit;
  return pmem > 0 ? pmem : null;
}

export interface BackendFacts {
  /** QOM type: memory-backend-ram, memory-backend-file, memory-backend-memfd, ... */
  type: string;
  /** memory-backend-file `align` (0 = unset). */
  align?: number;
  /** The page size backing the memory: 4 KiB, or the huge page size (hugetlbfs, memfd hugetlb). */
  pageSize?: number;
  /**
   * The mem-path QEMU names could not be measured where it was looked for (not found there: QEMU's
   * root unreachable and the path absent from this namespace, e.g. the unit's private /tmp): its page
   * size, and so the device's alignment, is not known.
   */
  unmeasured?: string;
}

/** The backend region's alignment (memory_region_get_alignment of the backend's region). */
export function backendAlignment(b: BackendFacts): number {
  const page = b.pageSize && b.pageSize > 0 ? b.pageSize : PAGE_SIZE;
  switch (b.type) {
    case 'memory-backend-ram':
      return Math.max(RAM_BACKEND_ALIGN, page);
    case 'memory-backend-file':
      return Math.max(page, b.align ?? 0);
    case 'memory-backend-memfd':
    case 'memory-backend-epc':
      return page;
    default:
      return RAM_BACKEND_ALIGN;
  }
}

/**
 * The alignment QEMU uses to place `driver`: see the header. `blockSize` is virtio-mem's
 * block-size argument (default max(THP size, backend page size), hw/virtio/virtio-mem.c).
 * `legacyAlign` marks x86 machine types 2.1 and older.
 */
export function deviceAlignment(
  driver: string,
  backend: BackendFacts,
  opts: { blockSize?: number | null; legacyAlign?: boolean } = {},
): number {
  const region = backendAlignment(backend);
  if (driver === 'virtio-mem-pci' || driver === 'virtio-mem') {
    const block =
      opts.blockSize && opts.blockSize > 0 ? opts.blockSize : Math.max(THP_SIZE, backend.pageSize ?? PAGE_SIZE);
    return Math.max(block, region);
  }
  if ((driver === 'pc-dimm' || driver === 'nvdimm') && opts.legacyAlign) return PAGE_SIZE;
  return region;
}

const asNumber = (v: unknown): number | null => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null);

/** Asks QEMU for the size of the memory device `args` (device_add arguments) would plug; null if unknown. */
export async function resolveDeviceSize(
  q: QmpExecutor,
  args: Record<string, unknown>,
  align = 1,
): Promise<number | null> {
  if (!isMemoryDeviceDriver(args.driver)) return null;
  const id = memdevId(args);
  if (!id) return null;
  try {
    const list = await q.execute<unknown>('query-memdev');
    if (Array.isArray(list)) {
      const entries = list
        .slice(0, 4096)
        .map((m) => ({ id: (m as { id?: unknown }).id, size: (m as { size?: unknown }).size }))
        .filter((m): m is { id: string; size: number } => typeof m.id === 'string' && asNumber(m.size) !== null);
      const size = memoryDeviceSize(args, entries, align);
      if (size !== null) return size;
    }
  } catch {
    // fall through to the backend object itself
  }
  try {
    const size = asNumber(await q.execute('qom-get', { path: `/objects/${id}`, property: 'size' }));
    if (size === null) return null;
    return memoryDeviceSize(args, [{ id, size }], align);
  } catch {
    return null;
  }
}

export interface ResolvedMemoryDevice {
  size: number;
  align: number;
  hint: number | null;
  backend: BackendFacts;
}

export interface ResolveOptions {
  /** Page size of a host path (hugetlbfs: its huge page size); default: statfs on this host. */
  pageSizeOf?: (path: string) => Promise<number | null>;
  /** x86 machine type 2.1 or older: pc-dimm/nvdimm use the 4 KiB legacy alignment. */
  legacyAlign?: boolean;
  /**
   * QEMU's view of the file system, `/proc/<pid>/root`: a mem-path names a file in QEMU's mount
   * namespace (a chrooted or containerised QEMU), so it is measured there. Default: this one.
   */
  qemuRoot?: string;
  /** The host's default huge page size (memfd hugetlbsize=0); default: /proc/meminfo Hugepagesize. */
  defaultHugePageSize?: () => Promise<number | null>;
}

/** "Hugepagesize:    2048 kB" of /proc/meminfo, in bytes; null when absent. */
export function parseHugePageSize(meminfo: string): number | null {
  const m = /^Hugepagesize:\s+(\d{1,10}) kB$/m.exec(meminfo);
  return m ? Number(m[1]) * 1024 : null;
}

/** The host's default huge page size from `<procRoot>/meminfo`; null when unreadable. */
export async function readDefaultHugePageSize(procRoot = '/proc'): Promise<number | null> {
  try {
    return parseHugePageSize((await readFile(join(procRoot, 'meminfo'), 'utf8')).slice(0, 64 * 1024));
  } catch {
    return null;
  }
}

/** Page size of `path` from statfs: the block size on hugetlbfs, else 4 KiB; null when unreadable. */
export async function hostPageSize(path: string): Promise<number | null> {
  try {
    const st = await statfs(path);
    return st.type === HUGETLBFS_MAGIC ? st.bsize : PAGE_SIZE;
  } catch {
    return null;
  }
}

async function readBackend(q: QmpExecutor, id: string, opts: ResolveOptions): Promise<BackendFacts> {
  const path = `/objects/${id}`;
  const get = (property: string) => q.execute<unknown>('qom-get', { path, property }).catch(() => undefined);
  const type = await get('type');
  const backend: BackendFacts = { type: typeof type === 'string' ? type : 'unknown' };
  if (backend.type === 'memory-backend-file') {
    const [align, memPath] = await Promise.all([get('align'), get('mem-path')]);
    backend.align = asNumber(align) ?? 0;
    if (typeof memPath === 'string' && memPath.length > 0) {
      const where = opts.qemuRoot ? join(opts.qemuRoot, memPath) : memPath;
      const measured = await (opts.pageSizeOf ?? hostPageSize)(where);
      backend.pageSize = measured ?? PAGE_SIZE;
      if (measured === null) backend.unmeasured = where;
    }
  } else if (backend.type === 'memory-backend-memfd') {
    const [hugetlb, hugetlbsize] = await Promise.all([get('hugetlb'), get('hugetlbsize')]);
    // hugetlbsize 0 means the host's default huge page size (backends/hostmem-memfd.c passes 0 to
    // memfd_create's MFD_HUGETLB, and the kernel uses default_hstate): /proc/meminfo Hugepagesize.
    if (hugetlb === true) {
      const asked = asNumber(hugetlbsize);
      backend.pageSize = asked || ((await (opts.defaultHugePageSize ?? readDefaultHugePageSize)()) ?? 2 * MiB);
    }
  }
  return backend;
}

/**
 * Everything predictPlacement needs to know about the device a device_add would create: size
 * (resolveDeviceSize), alignment (deviceAlignment on the backend read over QMP) and address hint.
 * Null when the driver is not a memory device or its backend cannot be found.
 */
export async function resolveMemoryDevice(
  q: QmpExecutor,
  args: Record<string, unknown>,
  opts: ResolveOptions = {},
): Promise<ResolvedMemoryDevice | null> {
  const id = memdevId(args);
  if (!isMemoryDeviceDriver(args.driver) || !id) return null;
  const backend = await readBackend(q, id, opts);
  const size = await resolveDeviceSize(q, args, backendAlignment(backend));
  if (size === null) return null;
  const align = deviceAlignment(args.driver as string, backend, {
    // A size property: "1G" as QEMU reads it (util/cutils.c qemu_strtosz), from HMP on every QEMU
    // and from QMP on 7.2, which turns device_add's values into text (10.0 takes JSON numbers only).
    blockSize: sizeArg(args['block-size']),
    legacyAlign: opts.legacyAlign,
  });
  return { size, align, hint: addressHint(args), backend };
}
