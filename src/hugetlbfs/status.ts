// Huge page pools as the kernel reports them: every page size, globally and per NUMA node
// (hugetlbpage.rst "Per Node Hugepages Attributes"), the default size from /proc/meminfo, and the
// hugetlbfs mounts. Counters race with page faults, so a pool is read until two consecutive
// samples agree, as hugeadm's get_pool_size does.

import {
  EnvironmentError,
  formatSize,
  fromSystemError,
  NotSupportedError,
  systemErrorCode,
} from '../core/index.js';
import { localHost, type HugetlbHost } from './host.js';
import {
  nodePoolDir,
  parseSizeDirName,
  poolDir,
  PROC_FILESYSTEMS,
  PROC_MEMINFO,
  PROC_MOUNTS,
  SYS_HUGEPAGES,
  SYS_NODES,
} from './paths.js';
import {
  decodeHugetlbfsMount,
  parseMeminfo,
  parseMounts,
  type HugetlbfsMount,
  type MeminfoHugepages,
} from './procfs.js';

/** One page size on one NUMA node (the node files carry no reserve/overcommit: those are global). */
export interface NodePool {
  node: number;
  /** nr_hugepages on the node: persistent + surplus. */
  total: number;
  /** total - surplus: what writing the node's nr_hugepages sets. */
  persistent: number;
  free: number;
  surplus: number;
}

/** One page size, system-wide. */
export interface PoolStatus {
  pageSize: number;
  isDefault: boolean;
  /** nr_hugepages in sysfs: persistent + surplus pages (= HugePages_Total for the default size). */
  total: number;
  /** total - surplus: the static pool, what /proc/sys/vm/nr_hugepages shows and reserve sets. */
  persistent: number;
  free: number;
  /** resv_hugepages: promised to mappings, not yet faulted; still counted in `free`. */
  reserved: number;
  surplus: number;
  /** nr_overcommit_hugepages: how many surplus pages may be allocated on demand. */
  overcommit: number;
  /** free - reserved: pages a new mapping can count on. */
  available: number;
  /** hugeadm --pool-list: Minimum = persistent, Maximum = persistent + overcommit. */
  minimum: number;
  maximum: number;
  /** Per NUMA node, ascending; empty when the kernel has no NUMA sysfs. */
  nodes: NodePool[];
}

export interface HugepageStatus {
  /** false when the kernel lacks hugetlb support; `unsupportedReason` says why. */
  supported: boolean;
  unsupportedReason?: string;
  /** Hugepagesize from /proc/meminfo. */
  defaultPageSize: number | undefined;
  /** Ascending. */
  pageSizes: number[];
  /** NUMA nodes that have huge page pools, ascending. */
  nodes: number[];
  pools: PoolStatus[];
  meminfo: MeminfoHugepages | undefined;
  /** hugetlbfs is listed in /proc/filesystems. */
  hugetlbfsAvailable: boolean;
  mounts: HugetlbfsMount[];
}

export interface HostOptions {
  /** The machine to inspect or change; default the real one (localHost()). */
  host?: HugetlbHost;
}

/** Read a decimal counter file; a malformed one is an environment error naming the file. */
export async function readCounter(host: HugetlbHost, path: string): Promise<number> {
  let text: string;
  try {
    text = await host.readText(path);
  } catch (err) {
    throw fromSystemError(err, `Could not read ${path}`);
  }
  const t = text.trim();
  if (!/^\d+$/.test(t)) {
    throw new EnvironmentError(`Unexpected content in ${path}: '${t.slice(0, 40)}'`, {
      code: 'VMF_HUGEPAGES_SYSFS',
    });
  }
  return Number(t);
}

async function readOptional(host: HugetlbHost, path: string): Promise<string | undefined> {
  try {
    return await host.readText(path);
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT') return undefined;
    throw fromSystemError(err, `Could not read ${path}`);
  }
}

/** Read a set of counters until two consecutive samples agree (at most 5 tries). */
async function stableRead<T>(read: () => Promise<T>): Promise<T> {
  let previous = await read();
  for (let i = 0; i < 4; i++) {
    const next = await read();
    if (JSON.stringify(next) === JSON.stringify(previous)) return next;
    previous = next;
  }
  return previous;
}

/** Page sizes the kernel supports (the hugepages-*kB directories), ascending. */
export async function listPageSizes(host: HugetlbHost): Promise<number[]> {
  let names: string[];
  try {
    names = await host.readDir(SYS_HUGEPAGES);
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT') return [];
    throw fromSystemError(err, `Could not list ${SYS_HUGEPAGES}`);
  }
  return names
    .map(parseSizeDirName)
    .filter((s): s is number => s !== undefined)
    .sort((a, b) => a - b);
}

/** NUMA nodes with huge page pools (only nodes with memory have a hugepages directory). */
export async function listNodes(host: HugetlbHost): Promise<number[]> {
  let names: string[];
  try {
    names = await host.readDir(SYS_NODES);
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT') return [];
    throw fromSystemError(err, `Could not list ${SYS_NODES}`);
  }
  const nodes: number[] = [];
  for (const name of names) {
    const m = /^node(\d+)$/.exec(name);
    if (m && (await host.isDirectory(`${SYS_NODES}/${name}/hugepages`))) nodes.push(Number(m[1]));
  }
  return nodes.sort((a, b) => a - b);
}

/** One node's pool of one size. */
export async function readNodePool(
  host: HugetlbHost,
  node: number,
  pageSize: number,
): Promise<NodePool> {
  const dir = nodePoolDir(node, pageSize);
  return stableRead(async () => {
    const total = await readCounter(host, `${dir}/nr_hugepages`);
    const free = await readCounter(host, `${dir}/free_hugepages`);
    const surplus = await readCounter(host, `${dir}/surplus_hugepages`);
    return { node, total, persistent: total - surplus, free, surplus };
  });
}

/** One page size, globally and per node. */
export async function readPool(
  host: HugetlbHost,
  pageSize: number,
  nodes: readonly number[],
  defaultPageSize: number | undefined,
): Promise<PoolStatus> {
  const dir = poolDir(pageSize);
  const global = await stableRead(async () => ({
    total: await readCounter(host, `${dir}/nr_hugepages`),
    free: await readCounter(host, `${dir}/free_hugepages`),
    reserved: await readCounter(host, `${dir}/resv_hugepages`),
    surplus: await readCounter(host, `${dir}/surplus_hugepages`),
    overcommit: await readCounter(host, `${dir}/nr_overcommit_hugepages`),
  }));
  const nodePools: NodePool[] = [];
  for (const node of nodes) {
    if (await host.exists(nodePoolDir(node, pageSize))) {
      nodePools.push(await readNodePool(host, node, pageSize));
    }
  }
  const persistent = global.total - global.surplus;
  return {
    pageSize,
    isDefault: pageSize === defaultPageSize,
    ...global,
    persistent,
    available: Math.max(0, global.free - global.reserved),
    minimum: persistent,
    maximum: persistent + global.overcommit,
    nodes: nodePools,
  };
}

/** The hugetlbfs mounts listed in /proc/mounts, in mount order. */
export async function readHugetlbfsMounts(
  host: HugetlbHost,
  defaultPageSize: number | undefined,
): Promise<HugetlbfsMount[]> {
  let text: string;
  try {
    text = await host.readText(PROC_MOUNTS);
  } catch (err) {
    throw fromSystemError(err, `Could not read ${PROC_MOUNTS}`);
  }
  return parseMounts(text)
    .map((e) => decodeHugetlbfsMount(e, defaultPageSize))
    .filter((m): m is HugetlbfsMount => m !== undefined);
}

/** Everything `vmforge hugepages status` shows. Never writes. */
export async function readHugepageStatus(options: HostOptions = {}): Promise<HugepageStatus> {
  const host = options.host ?? localHost();
  const meminfoText = await readOptional(host, PROC_MEMINFO);
  const meminfo = meminfoText === undefined ? undefined : parseMeminfo(meminfoText);
  const filesystems = (await readOptional(host, PROC_FILESYSTEMS)) ?? '';
  const hugetlbfsAvailable = /\bhugetlbfs\s*$/m.test(filesystems);
  const pageSizes = await listPageSizes(host);
  const defaultPageSize = meminfo?.defaultPageSize;
  const nodes = pageSizes.length ? await listNodes(host) : [];
  const pools: PoolStatus[] = [];
  for (const size of pageSizes) pools.push(await readPool(host, size, nodes, defaultPageSize));
  const mounts = await readHugetlbfsMounts(host, defaultPageSize);
  const status: HugepageStatus = {
    supported: pageSizes.length > 0,
    defaultPageSize,
    pageSizes,
    nodes,
    pools,
    meminfo,
    hugetlbfsAvailable,
    mounts,
  };
  if (!status.supported) {
    status.unsupportedReason =
      `this kernel has no huge page support (no ${SYS_HUGEPAGES}; ` +
      'it needs CONFIG_HUGETLBFS and CONFIG_HUGETLB_PAGE)';
  }
  return status;
}

/** The pool of `pageSize` (default: the default size), or an error naming what exists. */
export function requirePool(status: HugepageStatus, pageSize: number | undefined): PoolStatus {
  if (!status.supported) {
    throw new NotSupportedError(`Huge pages are not available: ${status.unsupportedReason}`, {
      code: 'VMF_HUGEPAGES_UNSUPPORTED',
    });
  }
  const size = pageSize ?? status.defaultPageSize ?? status.pageSizes[0]!;
  const pool = status.pools.find((p) => p.pageSize === size);
  if (!pool) {
    const known = status.pageSizes.map(formatSize).join(', ');
    throw new NotSupportedError(
      `Huge page size ${formatSize(size)} is not supported by this kernel (supported: ${known})`,
      { code: 'VMF_HUGEPAGES_PAGESIZE' },
    );
  }
  return pool;
}

/** Check that `node` has a pool of this size. */
export function requireNode(status: HugepageStatus, pool: PoolStatus, node: number): NodePool {
  const found = pool.nodes.find((n) => n.node === node);
  if (found) return found;
  const known = status.nodes.length ? status.nodes.join(', ') : 'none: no NUMA sysfs';
  throw new NotSupportedError(
    `NUMA node ${node} has no ${formatSize(pool.pageSize)} huge page pool (nodes: ${known})`,
    { code: 'VMF_HUGEPAGES_NODE' },
  );
}
