// The system side of zero-copy READ replies (Channel.sendFile): whether the native helper can
// do it, a socket's descriptor, cachestat(2) and sendfile(2) calls, and the synchronous page-cache
// read used for the small slice that waits in libuv's queue while the socket drains.
import { readSync } from 'node:fs';
import { constants } from 'node:os';
import type { Duplex } from 'node:stream';
import type { FileRange } from '../block/device.js';
import { nativeFileOps, type NativeFileOps } from '../block/native.js';

type Sender = Required<Pick<NativeFileOps, 'sendFileRange' | 'cached'>>;

let unsupported = false;
/**
 * Descriptors whose sendfile failed on the file side (e.g. a file system without splice). A
 * number reused by a later file only costs that file the zero-copy path.
 */
const failedFiles = new Set<number>();
const result = new Float64Array(2);

/** The native calls, or undefined without the helper or on kernels without cachestat. */
export function fileSender(): Sender | undefined {
  if (unsupported) return undefined;
  const native = nativeFileOps();
  if (!native?.sendFileRange || !native.cached) return undefined;
  return native as Sender;
}

/** Whether sendfile may be tried from this file (it has not failed on it before). */
export function fileUsable(fd: number): boolean {
  return !failedFiles.has(fd);
}

/** errnos of sendfile that come from the file, not the socket: stop trying on that file. */
const FILE_ERRORS = new Set(
  ['EINVAL', 'ENOSYS', 'EOPNOTSUPP', 'EOVERFLOW', 'EIO', 'ESPIPE', 'EBADF'].map(
    (name) => (constants.errno as Record<string, number>)[name],
  ),
);

/**
 * Send `header` then the file range, without blocking: bytes sent (header included; fewer when
 * the socket filled) and the errno that stopped it (0 for none or a full socket). A file-side
 * error also turns sendfile off for that descriptor.
 */
export function sendRange(
  sender: Sender,
  sockfd: number,
  header: Uint8Array,
  file: FileRange,
  length: number,
): { sent: number; errno: number } {
  sender.sendFileRange(sockfd, header, file.fd, file.offset, length, result);
  const sent = result[0]!;
  const errno = result[1]!;
  if (errno !== 0 && FILE_ERRORS.has(errno)) failedFiles.add(file.fd);
  return { sent, errno };
}

/** Whether every page of the range is in the page cache (sendfile must not wait for the disk). */
export function rangeCached(sender: Sender, file: FileRange, length: number): boolean {
  const r = sender.cached(file.fd, file.offset, length);
  if (r === -1) unsupported = true; // no cachestat (Linux < 6.5) or not allowed: no way to tell
  return r === 1;
}

/** The descriptor of a plain net.Socket (unix or TCP); undefined for TLS and other streams. */
export function socketFd(socket: Duplex): number | undefined {
  // A TLS socket's handle exposes the raw descriptor too: bytes written there would bypass
  // the encryption.
  if ((socket as { encrypted?: boolean }).encrypted) return undefined;
  const fd = (socket as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * Fill `buf` from the file at `offset` synchronously (bytes past the end of the file read as
 * zeros). Used for ranges found in the page cache, so it copies rather than waits.
 */
export function readRangeSync(fd: number, buf: Uint8Array, offset: number): void {
  let got = 0;
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, offset + got);
    if (n === 0) break;
    got += n;
  }
  buf.fill(0, got);
}
