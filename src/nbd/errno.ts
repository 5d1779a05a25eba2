// The one mapping from errors to NBD error values (proto.md "Error values"), as QEMU's
// system_errno_to_nbd_errno with nbdkit's flag-aware refinements, and its inverse for the client.

import { NotSupportedError, VmforgeError, systemErrorCode } from '../core/index.js';
import {
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
} from './protocol.js';

export interface ErrnoContext {
  /** The request carried NBD_CMD_FLAG_FAST_ZERO: ENOTSUP is then the expected answer. */
  fastZero?: boolean;
}

/** errno names (Node's `err.code`) to NBD values; anything else is EINVAL, as in QEMU. */
const BY_CODE: Record<string, number> = {
  EPERM: NBD_EPERM,
  EROFS: NBD_EPERM,
  EACCES: NBD_EPERM,
  EIO: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
  ENOSPC: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC,
  EFBIG: NBD_ENOSPC,
  EOVERFLOW: NBD_EOVERFLOW,
  ENOTSUP: NBD_ENOTSUP,
  EOPNOTSUPP: NBD_ENOTSUP,
  ESHUTDOWN: NBD_ESHUTDOWN,
  EINVAL: NBD_EINVAL,
};

/**
 * NBD error value for an error thrown by a BlockDevice.
 *
 * - system errors (Node `code`, or EnvironmentError.errno) use QEMU's table;
 * - NotSupportedError is ENOTSUP, but only for FAST_ZERO requests: proto.md says WRITE_ZEROES
 *   without FAST_ZERO "MUST NOT fail with ENOTSUP", and nbdkit sends EINVAL for other commands;
 * - corrupt data and other vmforge errors without an errno are EIO (the image could not be
 *   read), caller errors (a range the device refused) are EINVAL;
 * - an NBD error carried up from a client device keeps its value.
 */
export function toNbdErrno(err: unknown, ctx: ErrnoContext = {}): number {
  const nbd = (err as { nbdErrno?: unknown } | null)?.nbdErrno;
  if (typeof nbd === 'number') return restrictNotSup(nbd, ctx);
  if (err instanceof NotSupportedError) return ctx.fastZero ? NBD_ENOTSUP : NBD_EINVAL;
  const errno = (err as { errno?: unknown } | null)?.errno;
  const code = typeof errno === 'string' ? errno : systemErrorCode(err);
  if (code) return restrictNotSup(BY_CODE[code] ?? NBD_EINVAL, ctx);
  if (err instanceof VmforgeError) return err.kind === 'caller' ? NBD_EINVAL : NBD_EIO;
  return NBD_EIO;
}

function restrictNotSup(value: number, ctx: ErrnoContext): number {
  return value === NBD_ENOTSUP && !ctx.fastZero ? NBD_EINVAL : value;
}

/** Node-style errno name for an NBD error value; unknown values are EINVAL (proto.md). */
export function nbdErrnoToCode(value: number): string {
  switch (value) {
    case NBD_EPERM:
      return 'EPERM';
    case NBD_EIO:
      return 'EIO';
    case NBD_ENOMEM:
      return 'ENOMEM';
    case NBD_ENOSPC:
      return 'ENOSPC';
    case NBD_EOVERFLOW:
      return 'EOVERFLOW';
    case NBD_ENOTSUP:
      return 'ENOTSUP';
    case NBD_ESHUTDOWN:
      return 'ESHUTDOWN';
    default:
      return 'EINVAL';
  }
}
