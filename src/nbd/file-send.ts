// The system side of zero-copy READ replies (Channel.sendFile): whether the native helper can
// do it, a socket's descriptor, cachestat(2) and sendfile(2) calls, and the synchronous page-cache
// read used for the small slice that waits in libuv's queue while the socket drains.
import { readSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { FileRange } from '../block/device.js';
import { nativeFileOps, type NativeFileOps } from '../block/native.js';

type Sender = Required<Pick<NativeFileOps, 'sendFile' | 'cached'>>;

let unsupported = false;

/** The native calls, or undefined without the helper or on kernels without cachestat. */
export function fileSender(): Sender | undefined {
  if (unsupported) return undefined;
  const native = nativeFileOps();
  if (!native?.sendFile || !native.cached) return undefined;
  return native as Sender;
}

/** Whether every page of the range is in the page cache (sendfile must not wait for the disk). */
export function rangeCached(sender: Sender, file: FileRange, length: number): boolean {
  const r = sender.cached(file.fd, file.offset, length);
  if (r === -1) unsupported = true; // Linux < 6.5: no cachestat, no way to tell
  return r === 1;
}

/** The descriptor of a plain net.Socket (unix or TCP); undefined for TLS and other streams. */
export function socketFd(socket: Duplex): number | undefined {
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
