// Which processes use files on a mount: open descriptors (/proc/PID/fd/*), mappings
// (/proc/PID/maps) and working or root directories (/proc/PID/cwd, /proc/PID/root), everything
// that makes umount(2) fail with EBUSY. QEMU's memory-backend-file creates its file in mem-path, unlinks it and keeps
// it mapped, so the paths show up with a " (deleted)" suffix; both are checked.

import type { HugetlbHost } from './host.js';

export interface MountUser {
  pid: number;
  /** /proc/PID/comm ("qemu-system-x86"). */
  command: string;
  /** Paths on the mount it holds, open or mapped (at most a few, for messages). */
  paths: string[];
}

function stripDeleted(path: string): string {
  return path.endsWith(' (deleted)') ? path.slice(0, -' (deleted)'.length) : path;
}

/** Is `path` on the mount at `dir`, and not on another mount nested below it? */
function onMount(path: string, dir: string, nested: readonly string[]): boolean {
  const inside = (p: string, d: string) => p === d || p.startsWith(d === '/' ? '/' : d + '/');
  return inside(path, dir) && !nested.some((n) => inside(path, n));
}

/** The path column of a /proc/PID/maps line (empty for anonymous mappings). */
function mapsPath(line: string): string {
  const m = /^\S+\s+\S+\s+\S+\s+\S+\s+\d+\s+(.*)$/.exec(line);
  return m ? m[1]!.trim() : '';
}

async function tryRead<T>(read: () => Promise<T>, fallback: T): Promise<T> {
  try {
    return await read();
  } catch {
    return fallback; // the process exited, or we may not look (non-root): skip it
  }
}

/**
 * Processes holding files on the mount at `dir` (canonical path). `nestedMounts` are mount
 * points below `dir`, whose files belong to those other mounts.
 */
export async function findMountUsers(
  host: HugetlbHost,
  dir: string,
  nestedMounts: readonly string[] = [],
): Promise<MountUser[]> {
  const users: MountUser[] = [];
  const pids = (await tryRead(() => host.readDir('/proc'), [] as string[]))
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
  for (const pid of pids) {
    const found = new Set<string>();
    const fds = await tryRead(() => host.readDir(`/proc/${pid}/fd`), [] as string[]);
    const links = [...fds.map((fd) => `fd/${fd}`), 'cwd', 'root'];
    for (const link of links) {
      const target = await tryRead(() => host.readLink(`/proc/${pid}/${link}`), '');
      const path = stripDeleted(target);
      if (path.startsWith('/') && onMount(path, dir, nestedMounts)) found.add(path);
    }
    const maps = await tryRead(() => host.readText(`/proc/${pid}/maps`), '');
    for (const line of maps.split('\n')) {
      const path = stripDeleted(mapsPath(line));
      if (path.startsWith('/') && onMount(path, dir, nestedMounts)) found.add(path);
    }
    if (found.size === 0) continue;
    const command = (await tryRead(() => host.readText(`/proc/${pid}/comm`), '?')).trim();
    users.push({ pid, command, paths: [...found].slice(0, 4) });
  }
  return users;
}

/** "qemu-system-x86 (pid 1234), bash (pid 99)". */
export function describeUsers(users: readonly MountUser[]): string {
  const shown = users.slice(0, 5).map((u) => `${u.command} (pid ${u.pid})`);
  if (users.length > 5) shown.push(`${users.length - 5} more`);
  return shown.join(', ');
}
