// Helpers over a backing chain of opened devices (top first), for commit and rebase.

import { realpath } from 'node:fs/promises';
import type { BlockDevice } from '../block/device.js';
import { resolveRelativeTo } from '../qcow2/open.js';

/** The chain top → bottom. */
export function chainOf(top: BlockDevice): BlockDevice[] {
  const out: BlockDevice[] = [];
  for (let d: BlockDevice | undefined = top; d; d = d.backing) out.push(d);
  return out;
}

const real = (path: string): Promise<string | undefined> => realpath(path).catch(() => undefined);

/**
 * bdrv_find_backing_image(): the image of the chain below `top` that `name` designates. A
 * relative name is resolved against each overlay's directory in turn, and paths are compared
 * after canonicalisation. Returns the index in chainOf(top), or -1.
 */
export async function findBackingImage(top: BlockDevice, name: string): Promise<number> {
  const chain = chainOf(top);
  for (let i = 0; i + 1 < chain.length; i++) {
    const below = chain[i + 1]!;
    const wanted = await real(resolveRelativeTo(chain[i]!.filename, name));
    if (wanted !== undefined && wanted === (await real(below.filename))) return i + 1;
  }
  return -1;
}
