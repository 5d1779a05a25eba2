// Mount and unmount hugetlbfs. Node has no mount(2), so this runs util-linux mount(8)/umount(8)
// with an argv array (never a shell) and then reads /proc/mounts back to verify. Options follow
// hugetlbpage.rst "Using Huge Pages": uid, gid, mode, pagesize, size, min_size, nr_inodes.

import {
  EnvironmentError,
  formatSize,
  fromSystemError,
  InvalidArgumentError,
} from '../core/index.js';
import { mountCommandError, MOUNT_PRIVILEGE } from './errors.js';
import { localHost, recordingHost, type HostAction, type HugetlbHost } from './host.js';
import { describeUsers, findMountUsers, type MountUser } from './mount-users.js';
import { compactSize, PROC_MOUNTS } from './paths.js';
import { parseMounts, decodeHugetlbfsMount, type HugetlbfsMount } from './procfs.js';
import { readHugepageStatus, requirePool, type HostOptions, type PoolStatus } from './status.js';

/** size=/min_size=: bytes, or a percentage of the pool's persistent pages (hugetlbpage.rst). */
export type MountSize = number | { percent: number };

export interface MountHugetlbfsOptions extends HostOptions {
  /** Absolute directory; created (with parents) when missing. */
  dir: string;
  /** Page size in bytes; default the kernel's default size. Always passed explicitly. */
  pageSize?: number;
  size?: MountSize;
  minSize?: MountSize;
  nrInodes?: number;
  uid?: number;
  gid?: number;
  /** Permission bits of the root directory (the kernel keeps value & 01777); default 0755. */
  mode?: number;
  dryRun?: boolean;
}

export interface MountHugetlbfsResult {
  /** Canonical mount point, as /proc/mounts names it. */
  dir: string;
  /** The directory did not exist and was created (or would be). */
  created: boolean;
  /** An existing mount with matching options was found; nothing was mounted. */
  reused: boolean;
  /** The mount(8) argv run (or that would be); empty when reused. */
  argv: string[];
  /** The mount as /proc/mounts shows it; undefined in a dry run. */
  mount: HugetlbfsMount | undefined;
  dryRun: boolean;
  actions: HostAction[];
}

export interface UmountHugetlbfsOptions extends HostOptions {
  dir: string;
  /** Unmount even while files on it are in use: lazily (umount -l), so users keep their pages. */
  force?: boolean;
  dryRun?: boolean;
}

export interface UmountHugetlbfsResult {
  dir: string;
  /** Processes that held files on it (non-empty only with force). */
  users: MountUser[];
  /** Detached with umount --lazy because of those users. */
  lazy: boolean;
  argv: string[];
  dryRun: boolean;
  actions: HostAction[];
}

/** What the kernel will report for each option we pass, for comparing with /proc/mounts. */
interface ExpectedMount {
  pageSize: number;
  size?: number;
  minSize?: number;
  nrInodes?: number;
  uid?: number;
  gid?: number;
  mode?: number;
}

/** All mounts at `dir`, bottom to top (the last one is what a path lookup sees). */
async function mountsAt(host: HugetlbHost, dir: string) {
  let text: string;
  try {
    text = await host.readText(PROC_MOUNTS);
  } catch (err) {
    throw fromSystemError(err, `Could not read ${PROC_MOUNTS}`);
  }
  const all = parseMounts(text);
  return {
    at: all.filter((m) => m.mountPoint === dir),
    nested: all
      .map((m) => m.mountPoint)
      .filter((p) => p !== dir && p.startsWith(dir === '/' ? '/' : dir + '/')),
  };
}

/** The top mount at `dir` if it is hugetlbfs; an error if something else is mounted there. */
async function topHugetlbfsMount(
  host: HugetlbHost,
  dir: string,
  defaultPageSize: number | undefined,
): Promise<HugetlbfsMount | undefined> {
  const { at } = await mountsAt(host, dir);
  const top = at.at(-1);
  if (!top) return undefined;
  const decoded = decodeHugetlbfsMount(top, defaultPageSize);
  if (!decoded) {
    throw new EnvironmentError(
      `${dir} is already a ${top.fsType} mount point, not hugetlbfs; refusing to mount over it`,
      { code: 'VMF_MOUNT_MISMATCH' },
    );
  }
  return decoded;
}

/** Pages the kernel derives from size=/min_size= (rounded down to whole pages). */
function expectedPages(size: MountSize, pool: PoolStatus, name: string): number {
  let pages: number;
  if (typeof size === 'number') {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new InvalidArgumentError(`Invalid ${name}: ${size}`);
    }
    pages = Math.floor(size / pool.pageSize);
  } else {
    if (!(size.percent >= 0 && size.percent <= 100)) {
      throw new InvalidArgumentError(`Invalid ${name}: ${size.percent}% (0 to 100)`);
    }
    // hugetlbfs_size_to_hpages: percent of the pool's persistent pages (max_huge_pages).
    pages = Math.floor((size.percent * pool.persistent) / 100);
  }
  return pages;
}

function sizeOption(size: MountSize): string {
  return typeof size === 'number' ? String(size) : `${size.percent}%`;
}

/** Validate the options against the pool and build the expectation and the -o list. */
function prepare(options: MountHugetlbfsOptions, pool: PoolStatus) {
  const expected: ExpectedMount = { pageSize: pool.pageSize };
  const o: string[] = [`pagesize=${compactSize(pool.pageSize)}`];
  const unit = formatSize(pool.pageSize);
  let maxPages: number | undefined;
  if (options.size !== undefined) {
    maxPages = expectedPages(options.size, pool, 'size');
    if (maxPages === 0) {
      throw new InvalidArgumentError(
        `size=${sizeOption(options.size)} is less than one ${unit} page: nothing could be allocated`,
      );
    }
    expected.size = maxPages * pool.pageSize;
    o.push(`size=${sizeOption(options.size)}`);
  }
  if (options.minSize !== undefined) {
    const minPages = expectedPages(options.minSize, pool, 'min_size');
    if (maxPages !== undefined && minPages > maxPages) {
      throw new InvalidArgumentError(
        `min_size (${formatSize(minPages * pool.pageSize)}) is larger than size (${formatSize(maxPages * pool.pageSize)})`,
      );
    }
    expected.minSize = minPages * pool.pageSize;
    o.push(`min_size=${sizeOption(options.minSize)}`);
  }
  if (options.nrInodes !== undefined) {
    if (!Number.isSafeInteger(options.nrInodes) || options.nrInodes < 1) {
      throw new InvalidArgumentError(`Invalid nr_inodes: ${options.nrInodes}`);
    }
    expected.nrInodes = options.nrInodes;
    o.push(`nr_inodes=${options.nrInodes}`);
  }
  for (const key of ['uid', 'gid'] as const) {
    const v = options[key];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0 || v > 0xfffffffe) {
      throw new InvalidArgumentError(`Invalid ${key}: ${v}`);
    }
    expected[key] = v;
    o.push(`${key}=${v}`);
  }
  if (options.mode !== undefined) {
    if (!Number.isSafeInteger(options.mode) || options.mode < 0 || options.mode > 0o7777) {
      throw new InvalidArgumentError(`Invalid mode: ${options.mode}`);
    }
    expected.mode = options.mode & 0o1777;
    o.push(`mode=${options.mode.toString(8).padStart(4, '0')}`);
  }
  return { expected, optionText: o.join(',') };
}

function describeLimit(bytes: number | undefined): string {
  return bytes === undefined ? 'no limit' : formatSize(bytes);
}

/** Differences between a mount and what was asked for, as "what: found, wanted" phrases. */
function mismatches(mount: HugetlbfsMount, want: ExpectedMount): string[] {
  const out: string[] = [];
  if (mount.pageSize !== want.pageSize) {
    out.push(`pagesize is ${formatSize(mount.pageSize)}, not ${formatSize(want.pageSize)}`);
  }
  if (want.size !== undefined && mount.size !== want.size) {
    out.push(`size is ${describeLimit(mount.size)}, not ${formatSize(want.size)}`);
  }
  if (want.minSize !== undefined && (mount.minSize ?? 0) !== want.minSize) {
    out.push(`min_size is ${describeLimit(mount.minSize)}, not ${formatSize(want.minSize)}`);
  }
  if (want.nrInodes !== undefined && mount.nrInodes !== want.nrInodes) {
    out.push(`nr_inodes is ${mount.nrInodes ?? 'unlimited'}, not ${want.nrInodes}`);
  }
  if (want.uid !== undefined && mount.uid !== want.uid)
    out.push(`uid is ${mount.uid}, not ${want.uid}`);
  if (want.gid !== undefined && mount.gid !== want.gid)
    out.push(`gid is ${mount.gid}, not ${want.gid}`);
  if (want.mode !== undefined && mount.mode !== want.mode) {
    out.push(
      `mode is ${mount.mode.toString(8).padStart(4, '0')}, not ${want.mode.toString(8).padStart(4, '0')}`,
    );
  }
  return out;
}

/**
 * Mount hugetlbfs at `dir`, creating it if needed. A hugetlbfs mount already there whose page
 * size and explicitly requested options match is reused (idempotent); one that differs is an
 * error naming the differences. The result is verified against /proc/mounts.
 */
export async function mountHugetlbfs(
  options: MountHugetlbfsOptions,
): Promise<MountHugetlbfsResult> {
  const base = options.host ?? localHost();
  const dryRun = options.dryRun ?? false;
  const actions: HostAction[] = [];
  const host = recordingHost(base, actions, dryRun);
  if (!options.dir.startsWith('/')) {
    throw new InvalidArgumentError(`Mount point must be an absolute path: ${options.dir}`);
  }

  const status = await readHugepageStatus({ host: base });
  const pool = requirePool(status, options.pageSize);
  if (!status.hugetlbfsAvailable) {
    throw new EnvironmentError(
      'hugetlbfs is not listed in /proc/filesystems: this kernel cannot mount it',
      { code: 'VMF_HUGEPAGES_UNSUPPORTED' },
    );
  }
  const { expected, optionText } = prepare(options, pool);
  const dir = await base.canonical(options.dir);
  const result: MountHugetlbfsResult = {
    dir,
    created: false,
    reused: false,
    argv: [],
    mount: undefined,
    dryRun,
    actions,
  };

  const existing = await topHugetlbfsMount(base, dir, status.defaultPageSize);
  if (existing) {
    const diff = mismatches(existing, expected);
    if (diff.length) {
      throw new EnvironmentError(
        `${dir} is already a hugetlbfs mount with other options: ${diff.join('; ')} ` +
          `(unmount it first, or use another directory)`,
        { code: 'VMF_MOUNT_MISMATCH', details: { mount: existing } },
      );
    }
    result.reused = true;
    result.mount = existing;
    return result;
  }

  // min_size reserves its pages at mount time and the mount fails with ENOMEM without them
  // (hugetlbpage.rst); say so before mount(8) prints "Cannot allocate memory".
  if (expected.minSize !== undefined) {
    const needed = expected.minSize / pool.pageSize;
    if (needed > pool.available) {
      throw new EnvironmentError(
        `min_size=${formatSize(expected.minSize)} needs ${needed} free ${formatSize(pool.pageSize)} ` +
          `huge pages but only ${pool.available} are available (free ${pool.free}, reserved ` +
          `${pool.reserved}); reserve more first (vmforge hugepages reserve)`,
        { code: 'VMF_HUGEPAGES_SHORT' },
      );
    }
  }

  if (!(await base.isDirectory(dir))) {
    if (await base.exists(dir)) {
      throw new InvalidArgumentError(`${dir} exists and is not a directory`);
    }
    try {
      await host.mkdirp(dir);
    } catch (err) {
      throw fromSystemError(err, `Could not create ${dir}`);
    }
    result.created = true;
  }

  result.argv = ['mount', '-t', 'hugetlbfs', '-o', optionText, 'none', dir];
  const out = await host.run('mount', result.argv.slice(1));
  if (out.code !== 0) throw mountCommandError('mount', dir, out.stderr, out.code, out.spawnError);
  if (dryRun) return result;

  const mounted = await topHugetlbfsMount(base, dir, status.defaultPageSize).catch(() => undefined);
  if (!mounted) {
    throw new EnvironmentError(
      `mount(8) reported success but ${PROC_MOUNTS} shows no hugetlbfs at ${dir}`,
      { code: 'VMF_MOUNT_FAILED' },
    );
  }
  const diff = mismatches(mounted, expected);
  if (diff.length) {
    // Do not leave a mount the caller did not ask for.
    await host.run('umount', [dir]);
    throw new EnvironmentError(
      `The kernel mounted ${dir} with other options than requested: ${diff.join('; ')}`,
      { code: 'VMF_MOUNT_MISMATCH' },
    );
  }
  result.mount = mounted;
  return result;
}

/**
 * Unmount the hugetlbfs at `dir`. Refuses while processes hold files on it (naming them)
 * unless `force`, which detaches it lazily so their pages stay valid until they exit.
 */
export async function umountHugetlbfs(
  options: UmountHugetlbfsOptions,
): Promise<UmountHugetlbfsResult> {
  const base = options.host ?? localHost();
  const dryRun = options.dryRun ?? false;
  const actions: HostAction[] = [];
  const host = recordingHost(base, actions, dryRun);
  if (!options.dir.startsWith('/')) {
    throw new InvalidArgumentError(`Mount point must be an absolute path: ${options.dir}`);
  }
  const dir = await base.canonical(options.dir);
  const { at, nested } = await mountsAt(base, dir);
  const top = at.at(-1);
  if (!top) {
    throw new InvalidArgumentError(`${dir} is not a mount point`, { code: 'VMF_NOT_MOUNTED' });
  }
  if (top.fsType !== 'hugetlbfs') {
    throw new InvalidArgumentError(
      `${dir} is a ${top.fsType} mount, not hugetlbfs; refusing to unmount it`,
      { code: 'VMF_MOUNT_MISMATCH' },
    );
  }

  const users = await findMountUsers(base, dir, nested);
  if (users.length && !options.force) {
    throw new EnvironmentError(
      `${dir} is in use by ${describeUsers(users)}: refusing to unmount (stop them first, or ` +
        'use --force to detach it lazily; their huge pages stay allocated until they exit)',
      { code: 'VMF_MOUNT_BUSY', details: { users } },
    );
  }
  const lazy = users.length > 0;
  const argv = lazy ? ['umount', '--lazy', dir] : ['umount', dir];
  const out = await host.run('umount', argv.slice(1));
  if (out.code !== 0) {
    if (/busy/i.test(out.stderr)) {
      throw new EnvironmentError(
        `${dir} is in use (umount: ${out.stderr.trim()}): refusing to unmount; use --force`,
        { code: 'VMF_MOUNT_BUSY' },
      );
    }
    throw mountCommandError('umount', dir, out.stderr, out.code, out.spawnError);
  }
  if (!dryRun) {
    const after = await mountsAt(base, dir);
    if (after.at.length >= at.length) {
      throw new EnvironmentError(
        `umount(8) reported success but ${PROC_MOUNTS} still shows ${dir} (${MOUNT_PRIVILEGE})`,
        { code: 'VMF_MOUNT_FAILED' },
      );
    }
  }
  return { dir, users, lazy, argv, dryRun, actions };
}

/** The hugetlbfs mount at `dir` (top of the stack), or undefined. */
export async function findHugetlbfsMount(
  host: HugetlbHost,
  dir: string,
  defaultPageSize: number | undefined,
): Promise<HugetlbfsMount | undefined> {
  const canonical = await host.canonical(dir);
  const { at } = await mountsAt(host, canonical);
  const top = at.at(-1);
  return top ? decodeHugetlbfsMount(top, defaultPageSize) : undefined;
}
