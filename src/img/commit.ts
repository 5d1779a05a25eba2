// qemu-img commit: copy what an overlay (and the images between it and the base) allocates
// into the base, then empty the overlay unless asked to drop it (-d, implied by -b).
// QEMU runs this as an active commit block job; the result — guest content of the base, an
// empty overlay — is the same.

import { realpath } from 'node:fs/promises';
import type { BlockDevice } from '../block/device.js';
import { InvalidArgumentError, LeakyBucket, throwIfAborted } from '../core/index.js';
import { isQcow2, openImage, type SupportedFormat } from '../image/open.js';
import { RawDevice } from '../raw/raw-device.js';
import { chainOf, findBackingImage } from './chain.js';

export interface CommitOptions {
  format?: SupportedFormat | undefined;
  /** -b: the image of the chain to commit into (default: the immediate backing file). */
  base?: string | undefined;
  /** -d: leave the overlay as it is instead of emptying it (implied by base). */
  drop?: boolean;
  cache?: 'writeback' | 'unsafe' | 'writethrough';
  /** -r: the commit job's speed in bytes per second (0 or absent: unlimited). */
  rateLimit?: number | undefined;
  onProgress?: (percent: number) => void;
  signal?: AbortSignal;
}

const CHUNK = 2 * 1024 * 1024;

export async function commitImage(filename: string, o: CommitOptions = {}): Promise<void> {
  // First pass, read-only: find the base and its format in the chain.
  const probe = await openImage(filename, { format: o.format, readOnly: true });
  let baseIndex: number;
  let basePath: string;
  let baseFormat: string;
  try {
    if (o.base !== undefined) {
      baseIndex = await findBackingImage(probe, o.base);
      if (baseIndex < 0) {
        throw new InvalidArgumentError(
          `Did not find '${o.base}' in the backing chain of '${filename}'`,
        );
      }
    } else {
      if (!probe.backing) throw new InvalidArgumentError('Image does not have a backing file');
      baseIndex = 1;
    }
    const base = chainOf(probe)[baseIndex]!;
    basePath = base.filename;
    baseFormat = base.format;
  } finally {
    await probe.close();
  }

  const baseDev = await openImage(basePath, {
    format: baseFormat as SupportedFormat,
    readOnly: false,
    backing: 'none',
    ...(o.cache ? { cache: o.cache } : {}),
  });
  let top: BlockDevice;
  try {
    top = await openImage(filename, {
      format: o.format,
      readOnly: false,
      backingDevices: new Map([[await realpath(basePath), baseDev]]),
      ...(o.cache ? { cache: o.cache } : {}),
    });
  } catch (err) {
    await baseDev.close();
    throw err;
  }
  try {
    // commit_run(): the base must be at least as large as the top.
    if (baseDev.size < top.size) await growTo(baseDev, top.size);
    await copyAbove(top, baseDev, baseIndex, o);
    await baseDev.flush();
    if (!(o.drop || o.base !== undefined) && isQcow2(top)) await top.makeEmpty();
    o.onProgress?.(100);
  } finally {
    await top.close(); // closes the chain, base included
  }
}

async function growTo(dev: BlockDevice, size: number): Promise<void> {
  if (isQcow2(dev)) await dev.grow(size);
  else if (dev instanceof RawDevice) await dev.resize(size);
  else throw new InvalidArgumentError(`Cannot resize '${dev.filename}'`);
}

/** Copy every range allocated above `baseIndex` (depth < baseIndex) from `top` into `base`. */
async function copyAbove(
  top: BlockDevice,
  base: BlockDevice,
  baseIndex: number,
  o: CommitOptions,
): Promise<void> {
  const buf = new Uint8Array(CHUNK);
  // The job's speed limit (block_job_ratelimit_processed_bytes): bytes it copies into the base.
  const throttle = o.rateLimit ? new LeakyBucket(o.rateLimit) : undefined;
  let offset = 0;
  while (offset < top.size) {
    throwIfAborted(o.signal);
    const [e] = await top.blockStatus(offset, top.size - offset, { maxExtents: 1 });
    if (!e) break;
    const above = e.allocated && e.depth < baseIndex;
    if (above) {
      if (e.zero) {
        await throttle?.take(e.length, o.signal);
        await base.writeZeroes(e.offset, e.length, { mayUnmap: true });
      } else {
        for (let pos = e.offset; pos < e.offset + e.length; pos += CHUNK) {
          const n = Math.min(CHUNK, e.offset + e.length - pos);
          await throttle?.take(n, o.signal);
          await top.read(buf.subarray(0, n), pos);
          await base.write(buf.subarray(0, n), pos);
        }
      }
    }
    offset = e.offset + e.length;
    o.onProgress?.((100 * offset) / top.size);
  }
}
