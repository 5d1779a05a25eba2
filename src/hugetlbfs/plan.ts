// Turn "give this guest N bytes of huge-page memory" into QEMU arguments, after checking the
// pool can supply it. memory-backend-file on a hugetlbfs mount, or memory-backend-memfd with
// hugetlb=on when no mount is wanted (qemu-options.hx -object); attached with
// -machine memory-backend= or, per guest NUMA node, -numa node,memdev= (never legacy -mem-path).

import { EnvironmentError, formatSize, InvalidArgumentError } from '../core/index.js';
import { localHost, type HugetlbHost } from './host.js';
import { findHugetlbfsMount } from './mount.js';
import { compactSize } from './paths.js';
import type { HugetlbfsMount } from './procfs.js';
import {
  readHugepageStatus,
  requireNode,
  requirePool,
  type HostOptions,
  type HugepageStatus,
  type PoolStatus,
} from './status.js';

/** Guest NUMA node i gets `size` bytes bound to host node `hostNode`. */
export interface NumaPlacement {
  hostNode: number;
  size: number;
}

export interface PlanOptions extends HostOptions {
  /** Guest RAM in bytes (a whole number of pages). */
  memory: number;
  /** Page size in bytes; default the mount's page size, else the kernel's default size. */
  pageSize?: number;
  /** A hugetlbfs mount point for memory-backend-file. */
  mount?: string;
  /**
   * 'file' (memory-backend-file) or 'memfd' (memory-backend-memfd, hugetlb=on, no mount needed).
   * Default: 'file' when `mount` is given, else 'memfd'. 'file' without `mount` picks an
   * existing hugetlbfs mount of the page size (the one with the most room).
   */
  backend?: 'file' | 'memfd';
  /** prealloc=on (default true): fault every page in at start, so a short pool fails early. */
  prealloc?: boolean;
  /** One entry per guest NUMA node, in guest node order; sizes must add up to `memory`. */
  numa?: NumaPlacement[];
  /** share=on|off; default QEMU's: off for memory-backend-file, on for memory-backend-memfd. */
  share?: boolean;
  /** Backend id ("ram0"); with NUMA the prefix of "ram-node<N>". */
  id?: string;
  /** Fail when the pool cannot supply the pages (default true). */
  check?: boolean;
}

/** One -object, as properties (for JSON -object) and in keyval form (for the command line). */
export interface BackendObject {
  qomType: 'memory-backend-file' | 'memory-backend-memfd';
  id: string;
  size: number;
  hostNode: number | undefined;
  /** QMP/JSON form: {"qom-type":…,"id":…,"size":…,…}. */
  qom: Record<string, string | number | boolean | number[]>;
  /** Command-line form: "memory-backend-file,id=ram0,size=64M,…". */
  keyval: string;
}

/** Whether enough pages are available: in the pool, on one host node, or under a mount's size=. */
export interface PoolCheck {
  scope: 'pool' | 'node' | 'mount';
  /** The host node for scope 'node'. */
  node: number | undefined;
  needed: number;
  available: number;
  ok: boolean;
}

export interface HugepagePlan {
  pageSize: number;
  /** Pages the guest needs in total. */
  pages: number;
  backend: 'file' | 'memfd';
  mount: HugetlbfsMount | undefined;
  objects: BackendObject[];
  /** Properties to merge into -machine ({"memory-backend": id}); empty with NUMA. */
  machineProperties: Record<string, string>;
  /** Guest NUMA wiring, one per node: nodeid, memdev. */
  numaNodes: { nodeid: number; memdev: string; hostNode: number; size: number }[];
  /** Argument groups, and all of them in order: -m, -object…, -machine or -numa…. */
  memoryArgs: string[];
  objectArgs: string[];
  machineArgs: string[];
  numaArgs: string[];
  args: string[];
  checks: PoolCheck[];
  ok: boolean;
}

/** QEMU keyval values double commas (QemuOpts). */
function keyvalEscape(value: string): string {
  return value.replace(/,/g, ',,');
}

function toKeyval(qomType: string, qom: BackendObject['qom']): string {
  const parts = [qomType];
  for (const [key, value] of Object.entries(qom)) {
    if (key === 'qom-type') continue;
    let text: string;
    if (typeof value === 'boolean') text = value ? 'on' : 'off';
    else if (Array.isArray(value))
      text = value.join('-'); // a single node: "0"
    else if (key === 'size' || key === 'hugetlbsize') text = compactSize(Number(value));
    else text = keyvalEscape(String(value));
    parts.push(`${key}=${text}`);
  }
  return parts.join(',');
}

function requireWholePages(bytes: number, pageSize: number, what: string): number {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new InvalidArgumentError(`Invalid ${what}: ${bytes}`);
  }
  if (bytes % pageSize !== 0) {
    throw new InvalidArgumentError(
      `${what} (${formatSize(bytes)}) is not a multiple of the ${formatSize(pageSize)} huge page size`,
    );
  }
  return bytes / pageSize;
}

async function resolveMount(
  host: HugetlbHost,
  status: HugepageStatus,
  dir: string,
): Promise<HugetlbfsMount> {
  const mount = await findHugetlbfsMount(host, dir, status.defaultPageSize);
  if (!mount) {
    throw new EnvironmentError(
      `${dir} is not a hugetlbfs mount point (mount one with: vmforge hugepages mount ${dir})`,
      { code: 'VMF_NOT_MOUNTED' },
    );
  }
  return mount;
}

/** The hugetlbfs mount of a page size with the most room (no size limit beats any limit). */
async function pickMount(
  host: HugetlbHost,
  status: HugepageStatus,
  pageSize: number | undefined,
): Promise<HugetlbfsMount> {
  const size = pageSize ?? status.defaultPageSize;
  const candidates = status.mounts.filter((m) => m.pageSize === size && !m.readOnly);
  let best: { mount: HugetlbfsMount; room: number } | undefined;
  for (const mount of candidates) {
    const room = mount.size === undefined ? Infinity : (await host.statfs(mount.mountPoint)).bfree;
    if (!best || room > best.room) best = { mount, room };
  }
  if (!best) {
    const unit = size === undefined ? '' : `${formatSize(size)} `;
    throw new EnvironmentError(
      `No hugetlbfs mount serves ${unit}pages (mount one with: vmforge hugepages mount DIR` +
        `${size === undefined ? '' : ` --pagesize ${compactSize(size)}`}, or use memory-backend-memfd)`,
      { code: 'VMF_NOT_MOUNTED' },
    );
  }
  return best.mount;
}

function checkPools(
  status: HugepageStatus,
  pool: PoolStatus,
  pages: number,
  placements: { hostNode: number; pages: number }[],
): PoolCheck[] {
  const checks: PoolCheck[] = [
    {
      scope: 'pool',
      node: undefined,
      needed: pages,
      available: pool.available,
      ok: pages <= pool.available,
    },
  ];
  // Several guest nodes may share a host node: check what each host node must supply in total.
  const perNode = new Map<number, number>();
  for (const p of placements) perNode.set(p.hostNode, (perNode.get(p.hostNode) ?? 0) + p.pages);
  for (const [hostNode, needed] of perNode) {
    const node = requireNode(status, pool, hostNode);
    // Reserved pages are accounted globally (hugetlbpage.rst), so a node can promise at most
    // its free pages and never more than the global available count.
    const available = Math.min(node.free, pool.available);
    checks.push({ scope: 'node', node: hostNode, needed, available, ok: needed <= available });
  }
  return checks;
}

function shortfallMessage(pool: PoolStatus, checks: PoolCheck[]): string {
  const unit = formatSize(pool.pageSize);
  const parts = checks
    .filter((c) => !c.ok)
    .map((c) => {
      const where = c.scope === 'node' ? ` on host node ${c.node}` : '';
      return `${c.needed} ${unit} pages needed${where}, ${c.available} available`;
    });
  const global = checks[0]!;
  const grow = Math.max(0, global.needed - global.available);
  const hint =
    grow > 0
      ? `; reserve them first, e.g. vmforge hugepages reserve --count ${pool.persistent + grow} --pagesize ${compactSize(pool.pageSize)}`
      : '; reserve them on those nodes first (vmforge hugepages reserve --node N)';
  return `Not enough free huge pages: ${parts.join('; ')}${hint}`;
}

/** Plan the memory backend for a guest; throws when the pool is short (unless check=false). */
export async function planHugepageBackend(options: PlanOptions): Promise<HugepagePlan> {
  const host = options.host ?? localHost();
  const status = await readHugepageStatus({ host });
  const wantBackend = options.backend ?? (options.mount === undefined ? 'memfd' : 'file');
  if (wantBackend === 'memfd' && options.mount !== undefined) {
    throw new InvalidArgumentError('memory-backend-memfd takes no mount point; drop the mount');
  }
  let mount: HugetlbfsMount | undefined;
  if (options.mount !== undefined) mount = await resolveMount(host, status, options.mount);
  else if (wantBackend === 'file') mount = await pickMount(host, status, options.pageSize);
  if (mount && options.pageSize !== undefined && mount.pageSize !== options.pageSize) {
    throw new InvalidArgumentError(
      `${mount.mountPoint} serves ${formatSize(mount.pageSize)} pages, not ${formatSize(options.pageSize)}`,
    );
  }
  const pool = requirePool(status, options.pageSize ?? mount?.pageSize);
  const { pageSize } = pool;
  const pages = requireWholePages(options.memory, pageSize, 'memory');

  const numa = options.numa ?? [];
  const placements = numa.map((n, i) => ({
    hostNode: n.hostNode,
    pages: requireWholePages(n.size, pageSize, `memory of guest NUMA node ${i}`),
    size: n.size,
  }));
  if (numa.length) {
    const sum = numa.reduce((a, n) => a + n.size, 0);
    if (sum !== options.memory) {
      // QEMU: "total memory for NUMA nodes (…) should equal RAM size (…)".
      throw new InvalidArgumentError(
        `NUMA node memory adds up to ${formatSize(sum)}, not the guest's ${formatSize(options.memory)}`,
      );
    }
  }

  const checks = checkPools(status, pool, pages, placements);
  // A size= limit on the mount caps what files on it may hold (statfs reports what is left).
  if (mount?.size !== undefined) {
    const fs = await host.statfs(mount.mountPoint);
    const left = fs.bfree;
    checks.push({
      scope: 'mount',
      node: undefined,
      needed: pages,
      available: left,
      ok: pages <= left,
    });
    if (pages > left && options.check !== false) {
      throw new EnvironmentError(
        `${mount.mountPoint} has room for ${left} more ${formatSize(pageSize)} pages ` +
          `(size=${formatSize(mount.size)}), the guest needs ${pages}`,
        { code: 'VMF_HUGEPAGES_SHORT' },
      );
    }
  }
  const ok = checks.every((c) => c.ok);
  if (!ok && options.check !== false) {
    throw new EnvironmentError(shortfallMessage(pool, checks), {
      code: 'VMF_HUGEPAGES_SHORT',
      details: { checks },
    });
  }

  const backend = mount ? 'file' : 'memfd';
  const qomType = mount ? 'memory-backend-file' : 'memory-backend-memfd';
  const share = options.share ?? backend === 'memfd';
  const makeObject = (id: string, size: number, hostNode: number | undefined): BackendObject => {
    const qom: BackendObject['qom'] = { 'qom-type': qomType, id, size };
    if (mount) qom['mem-path'] = mount.mountPoint;
    else {
      qom['hugetlb'] = true;
      qom['hugetlbsize'] = pageSize;
    }
    qom['prealloc'] = options.prealloc ?? true;
    qom['share'] = share;
    if (hostNode !== undefined) {
      qom['host-nodes'] = [hostNode];
      qom['policy'] = 'bind';
    }
    return { qomType, id, size, hostNode, qom, keyval: toKeyval(qomType, qom) };
  };

  const idBase = options.id ?? (numa.length ? 'ram-node' : 'ram0');
  const objects = numa.length
    ? placements.map((p, i) => makeObject(`${idBase}${i}`, p.size, p.hostNode))
    : [makeObject(idBase, options.memory, undefined)];
  const numaNodes = numa.length
    ? placements.map((p, i) => ({
        nodeid: i,
        memdev: objects[i]!.id,
        hostNode: p.hostNode,
        size: p.size,
      }))
    : [];
  const machineProperties: Record<string, string> = numa.length
    ? {}
    : { 'memory-backend': objects[0]!.id };

  const memoryArgs = ['-m', compactSize(options.memory)];
  const objectArgs = objects.flatMap((o) => ['-object', o.keyval]);
  const machineArgs = numa.length ? [] : ['-machine', `memory-backend=${objects[0]!.id}`];
  const numaArgs = numaNodes.flatMap((n) => [
    '-numa',
    `node,nodeid=${n.nodeid},memdev=${n.memdev}`,
  ]);
  return {
    pageSize,
    pages,
    backend,
    mount,
    objects,
    machineProperties,
    numaNodes,
    memoryArgs,
    objectArgs,
    machineArgs,
    numaArgs,
    args: [...memoryArgs, ...objectArgs, ...machineArgs, ...numaArgs],
    checks,
    ok,
  };
}
