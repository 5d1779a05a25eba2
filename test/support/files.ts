// File comparison helpers for large (possibly sparse) images.
import { open } from 'node:fs/promises';

/** True if both files have the same length and bytes; reads in 4 MiB chunks. */
export async function filesEqual(a: string, b: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([open(a), open(b)]);
  try {
    const [sa, sb] = await Promise.all([fa.stat(), fb.stat()]);
    if (sa.size !== sb.size) return false;
    const chunk = 4 * 1024 * 1024;
    const ba = Buffer.alloc(chunk);
    const bb = Buffer.alloc(chunk);
    for (let pos = 0; pos < sa.size; pos += chunk) {
      const n = Math.min(chunk, sa.size - pos);
      await Promise.all([fa.read(ba, 0, n, pos), fb.read(bb, 0, n, pos)]);
      if (ba.compare(bb, 0, n, 0, n) !== 0) return false;
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}
