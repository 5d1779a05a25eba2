// Page-aligned I/O buffers. Where a buffer starts within its page decides how fast the kernel
// copies between it and the page cache: measured on x86-64 (Linux 6.x), a 2 MiB pread into a
// buffer that starts 16 bytes into a page (where glibc puts every large malloc, hence every
// large ArrayBuffer) takes ~1.6x as long as into a page-aligned one, and a pwrite from it ~1.4x
// (split cache lines, 4K aliasing against the page-cache side). QEMU allocates its I/O buffers
// aligned for the same reason (qemu_blockalign).
import { nativeFileOps } from './native.js';

const PAGE = 4096;
/** glibc's header in front of an mmap'ed chunk: where a large ArrayBuffer starts in its page. */
const GLIBC_MMAP_OFFSET = 16;

/**
 * A zero-filled buffer of `size` bytes that starts on a page boundary. Without the native helper
 * (which tells the real address), glibc's layout for large allocations is assumed; a wrong
 * guess only costs speed.
 */
export function allocIoBuffer(size: number): Uint8Array {
  const backing = new Uint8Array(size + PAGE);
  const at = nativeFileOps()?.pageOffset?.(backing) ?? GLIBC_MMAP_OFFSET;
  const skip = at < 0 ? 0 : (PAGE - at) % PAGE;
  return backing.subarray(skip, skip + size);
}
