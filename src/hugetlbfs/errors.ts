// Error messages that say what the kernel refused and what would make it work: the privilege
// needed, a read-only /sys in containers, boot-time reservation for 1 GiB pages.

import {
  EnvironmentError,
  formatSize,
  fromSystemError,
  strerror,
  systemErrorCode,
  type VmforgeError,
} from '../core/index.js';
import { compactSize } from './paths.js';

/** The privilege each kind of change needs, named in permission errors. */
export const POOL_PRIVILEGE = 'changing huge page pools needs root';
export const MOUNT_PRIVILEGE = 'mounting and unmounting need root (CAP_SYS_ADMIN)';

/** The kernel command line that reserves `count` pages of `pageSize` at boot (hugetlbpage.rst). */
export function bootReservationHint(pageSize: number, count: number | string = 'N'): string {
  return `hugepagesz=${compactSize(pageSize)} hugepages=${count}`;
}

/** Translate a failed write to a pool knob (nr_hugepages and friends). */
export function poolWriteError(
  err: unknown,
  path: string,
  value: string,
  pageSize: number,
): VmforgeError {
  const errno = systemErrorCode(err);
  const what = `Could not write ${value} to ${path}`;
  if (errno === 'EACCES' || errno === 'EPERM') {
    return new EnvironmentError(`${what}: ${strerror(errno)} (${POOL_PRIVILEGE})`, {
      code: 'VMF_PERMISSION',
      cause: err,
      errno,
    });
  }
  if (errno === 'EROFS') {
    return new EnvironmentError(
      `${what}: ${strerror(errno)} (/sys and /proc/sys are read-only here, as in most ` +
        'containers: run on the host or in a privileged container)',
      { code: 'VMF_PERMISSION', cause: err, errno },
    );
  }
  if (errno === 'EINVAL' && pageSize >= 2 ** 30) {
    return new EnvironmentError(
      `${what}: ${strerror(errno)} (this kernel cannot allocate ${formatSize(pageSize)} pages ` +
        `at run time; reserve them on the kernel command line: ${bootReservationHint(pageSize)})`,
      { code: 'VMF_HUGEPAGES_GIGANTIC', cause: err, errno },
    );
  }
  return fromSystemError(err, what);
}

/** A mount(8)/umount(8) failure, with the privilege named when that is the cause. */
export function mountCommandError(
  verb: 'mount' | 'umount',
  dir: string,
  stderr: string,
  code: number,
  spawnError: string | undefined,
): EnvironmentError {
  if (spawnError === 'ENOENT') {
    return new EnvironmentError(
      `Could not ${verb} ${dir}: ${verb}(8) is not installed (it comes with util-linux)`,
      { code: 'VMF_TOOL_MISSING', errno: spawnError },
    );
  }
  const text = stderr.trim().replace(/\s*\n\s*/g, ' ') || `${verb} exited with status ${code}`;
  const permission = /only root|must be superuser|permission denied|operation not permitted/i.test(
    text,
  );
  return new EnvironmentError(
    `Could not ${verb} ${dir}: ${text}${permission ? ` (${MOUNT_PRIVILEGE})` : ''}`,
    { code: permission ? 'VMF_PERMISSION' : 'VMF_MOUNT_FAILED' },
  );
}
