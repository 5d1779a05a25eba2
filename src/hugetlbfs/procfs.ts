// Parsers for the procfs text the helpers read: /proc/meminfo and /proc/mounts (hugetlbfs lines).

/** The huge page lines of /proc/meminfo; they describe the default page size only. */
export interface MeminfoHugepages {
  /** HugePages_Total: pool size of the default page size (persistent + surplus). */
  total: number;
  /** HugePages_Free: pages not yet allocated (reserved ones included). */
  free: number;
  /** HugePages_Rsvd: committed but not yet faulted in. */
  reserved: number;
  /** HugePages_Surp: pages above nr_hugepages, bounded by nr_overcommit_hugepages. */
  surplus: number;
  /** Hugepagesize: the default huge page size, in bytes. */
  defaultPageSize: number;
  /** Hugetlb: memory in all huge page pools of every size, in bytes (Linux >= 4.15). */
  hugetlbBytes: number | undefined;
  /** MemTotal, MemFree and MemAvailable in bytes, to bound and explain a reservation. */
  memTotal: number | undefined;
  memFree: number | undefined;
  memAvailable: number | undefined;
}

/** Every "Key: value [kB]" line of /proc/meminfo, values in the file's units. */
export function parseMeminfoLines(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([\w()]+):\s+(\d+)(\s+kB)?\s*$/.exec(line);
    if (m) values.set(m[1]!, Number(m[2]) * (m[3] ? 1024 : 1));
  }
  return values;
}

/** The huge page part of /proc/meminfo, or undefined when the kernel has no hugetlb support. */
export function parseMeminfo(text: string): MeminfoHugepages | undefined {
  const v = parseMeminfoLines(text);
  const pageSize = v.get('Hugepagesize');
  if (pageSize === undefined || v.get('HugePages_Total') === undefined) return undefined;
  return {
    total: v.get('HugePages_Total') ?? 0,
    free: v.get('HugePages_Free') ?? 0,
    reserved: v.get('HugePages_Rsvd') ?? 0,
    surplus: v.get('HugePages_Surp') ?? 0,
    defaultPageSize: pageSize,
    hugetlbBytes: v.get('Hugetlb'),
    memTotal: v.get('MemTotal'),
    memFree: v.get('MemFree'),
    memAvailable: v.get('MemAvailable'),
  };
}

/** One line of /proc/mounts. */
export interface MountEntry {
  source: string;
  mountPoint: string;
  fsType: string;
  options: string[];
}

/** getmntent(3) escapes: space, tab, newline and backslash as \ooo octal. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMounts(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4) continue;
    entries.push({
      source: unescapeMountField(fields[0]!),
      mountPoint: unescapeMountField(fields[1]!),
      fsType: fields[2]!,
      options: fields[3]!.split(','),
    });
  }
  return entries;
}

/** A hugetlbfs mount with its options decoded (as hugetlbfs_show_options prints them). */
export interface HugetlbfsMount {
  source: string;
  mountPoint: string;
  /** pagesize=: the pool this mount allocates from, in bytes. */
  pageSize: number;
  /** size=: the most this mount may hold, in bytes (undefined: no limit). */
  size: number | undefined;
  /** min_size=: pages reserved for this mount at mount time, in bytes. */
  minSize: number | undefined;
  /** nr_inodes=: the most files (undefined: no limit). */
  nrInodes: number | undefined;
  /** Owner of the root directory; the kernel omits uid=/gid= when 0 and mode= when 0755. */
  uid: number;
  gid: number;
  mode: number;
  readOnly: boolean;
  /** The raw option list, for display. */
  options: string[];
}

/** "2M", "1024M", "64K", "2097152" as hugetlbfs prints and accepts them (memparse). */
export function parseKernelSize(text: string): number | undefined {
  const m = /^(\d+)([kKmMgG]?)$/.exec(text);
  if (!m) return undefined;
  const shift = { '': 0, k: 10, m: 20, g: 30 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * 2 ** shift;
}

/**
 * Decode a hugetlbfs line. `defaultPageSize` fills in pagesize= for kernels that do not print
 * it. Returns undefined for other filesystem types.
 */
export function decodeHugetlbfsMount(
  entry: MountEntry,
  defaultPageSize: number | undefined,
): HugetlbfsMount | undefined {
  if (entry.fsType !== 'hugetlbfs') return undefined;
  const opts = new Map<string, string>();
  for (const o of entry.options) {
    const eq = o.indexOf('=');
    if (eq < 0) opts.set(o, '');
    else opts.set(o.slice(0, eq), o.slice(eq + 1));
  }
  const num = (key: string) => {
    const v = opts.get(key);
    return v === undefined ? undefined : parseKernelSize(v);
  };
  const modeText = opts.get('mode');
  return {
    source: entry.source,
    mountPoint: entry.mountPoint,
    pageSize: num('pagesize') ?? defaultPageSize ?? 0,
    size: num('size'),
    minSize: num('min_size'),
    nrInodes: num('nr_inodes'),
    uid: num('uid') ?? 0,
    gid: num('gid') ?? 0,
    mode: modeText === undefined ? 0o755 : parseInt(modeText, 8),
    readOnly: opts.has('ro'),
    options: entry.options,
  };
}
