// Set the persistent pool of one page size, globally or on one NUMA node, then read back what
// the kernel actually granted: it silently allocates fewer pages when it cannot find enough
// physically contiguous memory (hugetlbpage.rst), so the read-back is the only truth.

import { formatSize, InvalidArgumentError } from '../core/index.js';
import { bootReservationHint, poolWriteError } from './errors.js';
import { localHost, recordingHost, type HostAction } from './host.js';
import { nodePoolDir, poolDir } from './paths.js';
import {
  readHugepageStatus,
  readNodePool,
  readPool,
  requireNode,
  requirePool,
  type HostOptions,
  type PoolStatus,
} from './status.js';

export interface ReserveOptions extends HostOptions {
  /** Pages (with `adjust`: the change). Give this or `memory`. */
  count?: number;
  /** Memory to cover, in bytes: rounded up to whole pages. Give this or `count`. */
  memory?: number;
  /** 'set' (default) makes the pool exactly that size; 'add'/'remove' change it (hugeadm +N/-N). */
  adjust?: 'set' | 'add' | 'remove';
  /** Page size in bytes; default the kernel's default size. */
  pageSize?: number;
  /** NUMA node whose pool to set; default the global pool (spread over nodes by the kernel). */
  node?: number;
  /** Record the write without performing it. */
  dryRun?: boolean;
}

export interface ReserveResult {
  pageSize: number;
  node: number | undefined;
  /** The knob written (or that would be). */
  path: string;
  /** Persistent pages before (global or on the node). */
  previous: number;
  requested: number;
  /** Persistent pages after, read back; undefined in a dry run. */
  granted: number | undefined;
  /** Pages the kernel did not grant when growing (0 when it granted everything). */
  shortfall: number;
  /** Pages the kernel could not free when shrinking. */
  notFreed: number;
  /**
   * Surplus pages after the change: overcommitted pages in use, plus in-use pages beyond a
   * shrunk pool, which the kernel converts to surplus until they are released.
   */
  surplus: number;
  ok: boolean;
  /** Why it fell short and what to do, when !ok. */
  message: string | undefined;
  dryRun: boolean;
  actions: HostAction[];
  /** The pool after the change (before it in a dry run). */
  pool: PoolStatus;
}

function pagesFor(options: ReserveOptions, pageSize: number): number {
  const { count, memory } = options;
  if ((count === undefined) === (memory === undefined)) {
    throw new InvalidArgumentError('Give either a page count or a memory size to reserve');
  }
  const pages = count ?? Math.ceil(memory! / pageSize);
  if (!Number.isSafeInteger(pages) || pages < 0) {
    throw new InvalidArgumentError(`Invalid page count: ${String(count ?? memory)}`);
  }
  return pages;
}

/** Why the kernel granted fewer pages than asked, and what to do about it. */
function explainShortfall(
  pageSize: number,
  requested: number,
  granted: number,
  node: number | undefined,
  memAvailable: number | undefined,
): string {
  const where = node === undefined ? '' : ` on node ${node}`;
  const short = requested - granted;
  let text =
    `The kernel granted ${granted} of ${requested} ${formatSize(pageSize)} huge pages${where} ` +
    `(short by ${short}, ${formatSize(short * pageSize)})`;
  if (pageSize >= 2 ** 30) {
    text +=
      `: each ${formatSize(pageSize)} page needs a free, aligned, physically contiguous block, ` +
      'which a running system rarely has; 1 GiB pages are best reserved on the kernel command ' +
      `line: ${bootReservationHint(pageSize, requested)}`;
  } else if (memAvailable !== undefined && memAvailable < short * pageSize) {
    text +=
      `: not enough free memory (MemAvailable is ${formatSize(memAvailable)}); ` +
      'free memory or ask for fewer pages';
  } else {
    const avail =
      memAvailable === undefined ? '' : ` (MemAvailable is ${formatSize(memAvailable)})`;
    text +=
      `: free memory${avail} is too fragmented to form enough contiguous ` +
      `${formatSize(pageSize)} blocks; retry after compaction (echo 1 > /proc/sys/vm/compact_memory) ` +
      `or reserve at boot: ${bootReservationHint(pageSize, requested)}`;
  }
  return text;
}

/**
 * Set a huge page pool and verify it. Never throws for a partial grant: the result says how
 * many pages the kernel granted (`ok`, `shortfall`, `message`), since a launcher may live with
 * fewer. Throws for bad arguments, missing sizes/nodes and refused writes (permission).
 */
export async function reserveHugepages(options: ReserveOptions): Promise<ReserveResult> {
  const base = options.host ?? localHost();
  const dryRun = options.dryRun ?? false;
  const actions: HostAction[] = [];
  const host = recordingHost(base, actions, dryRun);

  const before = await readHugepageStatus({ host });
  const pool = requirePool(before, options.pageSize);
  const { pageSize } = pool;
  const node = options.node;
  if (node !== undefined && (!Number.isSafeInteger(node) || node < 0)) {
    throw new InvalidArgumentError(`Invalid NUMA node: ${node}`);
  }
  const previous =
    node === undefined ? pool.persistent : requireNode(before, pool, node).persistent;

  const pages = pagesFor(options, pageSize);
  const adjust = options.adjust ?? 'set';
  const requested =
    adjust === 'set' ? pages : adjust === 'add' ? previous + pages : Math.max(0, previous - pages);

  // Growing the pool beyond physical memory cannot succeed and would push the machine into
  // reclaim and OOM while the kernel tries; refuse before writing.
  const memTotal = before.meminfo?.memTotal;
  const growth = (requested - previous) * pageSize;
  if (memTotal !== undefined && growth > memTotal) {
    throw new InvalidArgumentError(
      `Refusing to reserve ${requested} ${formatSize(pageSize)} huge pages: ` +
        `${formatSize(growth)} more than now exceeds all memory (MemTotal ${formatSize(memTotal)})`,
      { code: 'VMF_HUGEPAGES_TOO_MANY' },
    );
  }

  // Writing nr_hugepages of a node sets that node's persistent pages regardless of mempolicy;
  // the global file spreads them over the nodes with memory (hugetlbpage.rst).
  const path = `${node === undefined ? poolDir(pageSize) : nodePoolDir(node, pageSize)}/nr_hugepages`;
  try {
    await host.writeText(path, `${requested}\n`);
  } catch (err) {
    throw poolWriteError(err, path, String(requested), pageSize);
  }

  const result: ReserveResult = {
    pageSize,
    node,
    path,
    previous,
    requested,
    granted: undefined,
    shortfall: 0,
    notFreed: 0,
    surplus: 0,
    ok: true,
    message: undefined,
    dryRun,
    actions,
    pool,
  };
  if (dryRun) return result;

  const after = await readPool(base, pageSize, before.nodes, before.defaultPageSize);
  const nodeAfter = node === undefined ? undefined : await readNodePool(base, node, pageSize);
  const granted = nodeAfter ? nodeAfter.persistent : after.persistent;
  result.pool = after;
  result.granted = granted;
  result.surplus = nodeAfter ? nodeAfter.surplus : after.surplus;
  if (granted < requested) {
    result.ok = false;
    result.shortfall = requested - granted;
    result.message = explainShortfall(
      pageSize,
      requested,
      granted,
      node,
      before.meminfo?.memAvailable,
    );
  } else if (granted > requested) {
    // With HugeTLB Vmemmap Optimization, freeing a page needs memory for its struct pages and
    // can fail under pressure; hugetlbpage.rst says to try again later.
    result.ok = false;
    result.notFreed = granted - requested;
    result.message =
      `The kernel kept ${granted} ${formatSize(pageSize)} huge pages instead of ${requested} ` +
      `(${result.notFreed} not freed, likely memory pressure); try again later`;
  }
  return result;
}
