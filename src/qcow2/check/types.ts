// Types shared by the qcow2 consistency check: QEMU's BdrvCheckResult and BdrvCheckMode
// (include/block/block-common.h), the diagnostic lines the check emits, and the errno-style
// failures that end a check early (qcow2_check_refcounts() returning -errno).

/** BDRV_FIX_LEAKS / BDRV_FIX_ERRORS: what a check may repair. */
export const FIX_LEAKS = 1;
export const FIX_ERRORS = 2;
export type FixMode = number;

/** `qemu-img check -r leaks` / `-r all` as a FixMode. */
export function fixModeOf(repair: 'leaks' | 'all' | undefined): FixMode {
  if (repair === 'leaks') return FIX_LEAKS;
  if (repair === 'all') return FIX_LEAKS | FIX_ERRORS;
  return 0;
}

/** BlockFragInfo. */
export interface FragInfo {
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
}

/** BdrvCheckResult: the counters every check function adds to. */
export interface CheckCounts {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number;
  bfi: FragInfo;
}

export function emptyCounts(): CheckCounts {
  return {
    corruptions: 0,
    leaks: 0,
    checkErrors: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    imageEndOffset: 0,
    bfi: { totalClusters: 0, allocatedClusters: 0, fragmentedClusters: 0, compressedClusters: 0 },
  };
}

export function copyCounts(c: CheckCounts): CheckCounts {
  return { ...c, bfi: { ...c.bfi } };
}

/** Overwrite `dst` with `src` (QEMU's `*res = saved_res`). */
export function assignCounts(dst: CheckCounts, src: CheckCounts): void {
  Object.assign(dst, src);
  dst.bfi = { ...src.bfi };
}

/**
 * One line QEMU prints on stderr during a check. `report` lines go through error_report(), which
 * prefixes the program name ("qemu-img: "); the others are plain fprintf(stderr) lines.
 * `text` never ends with a newline (multi-line reports contain inner newlines).
 */
export interface CheckMessage {
  text: string;
  report?: true;
}

export type MessageSink = (message: CheckMessage) => void;

/** errno values a check can fail with, and their strerror() text (glibc). */
export type CheckErrno =
  | 'EIO'
  | 'EFBIG'
  | 'EINVAL'
  | 'ENOMEM'
  | 'ENOMEDIUM'
  | 'ENOSPC'
  | 'EAGAIN'
  | 'EROFS'
  | 'EACCES'
  | 'ENOTSUP';

const STRERROR: Record<CheckErrno, string> = {
  EIO: 'Input/output error',
  EFBIG: 'File too large',
  EINVAL: 'Invalid argument',
  ENOMEM: 'Cannot allocate memory',
  ENOMEDIUM: 'No medium found',
  ENOSPC: 'No space left on device',
  EAGAIN: 'Resource temporarily unavailable',
  EROFS: 'Read-only file system',
  EACCES: 'Permission denied',
  ENOTSUP: 'Operation not supported',
};

export function strerror(errno: CheckErrno): string {
  return STRERROR[errno];
}

/** A check step failed with -errno (the check stops; qemu-img prints "Check failed: ..."). */
export class CheckAbort extends Error {
  override name = 'CheckAbort';
  readonly errno: CheckErrno;
  constructor(errno: CheckErrno, message = strerror(errno)) {
    super(message);
    this.errno = errno;
  }
}

/** Map an I/O exception from the storage layer to an errno, as the block layer would. */
export function errnoOf(err: unknown): CheckErrno {
  if (err instanceof CheckAbort) return err.errno;
  const code =
    typeof err === 'object' && err !== null
      ? ((err as { errno?: unknown }).errno ?? (err as { code?: unknown }).code)
      : undefined;
  if (typeof code === 'string' && code in STRERROR) return code as CheckErrno;
  return 'EIO';
}
