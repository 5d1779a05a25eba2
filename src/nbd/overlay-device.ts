// OverlayDevice: qemu-nbd -s ("snapshot"): the image is opened read-only and every write goes to
// a throwaway overlay, a sparse temporary file in $TMPDIR (default /var/tmp, like QEMU's
// get_tmp_filename) that is unlinked as soon as it is open, so nothing is left behind even after
// kill -9. Works over any BlockDevice. The overlay tracks which 64 KiB clusters it owns (qcow2's
// default cluster size); a partial write to a cluster it does not own copies the cluster up
// from the base first, under a per-cluster lock so concurrent writers cannot lose each other's
// bytes.

import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  BlockCapabilities,
  BlockDevice,
  BlockExtent,
  BlockStatusOptions,
  WriteOptions,
  WriteZeroesOptions,
} from '../block/device.js';
import { FileStorage } from '../block/file-storage.js';
import type { Storage } from '../block/storage.js';
import { assertRange } from '../block/range.js';

const CLUSTER = 64 * 1024;
const NOT_OWNED = 0;
const DATA = 1;
const ZERO = 2;

/** Where QEMU puts temporary snapshot overlays. */
export function snapshotTmpDir(): string {
  return process.env['TMPDIR'] || '/var/tmp';
}

export class OverlayDevice implements BlockDevice {
  readonly format = 'raw' as const;
  readonly filename: string;
  readonly backing: BlockDevice;
  readonly storage: Storage;
  readonly capabilities: BlockCapabilities;
  readonly #top: FileStorage;
  /** Per 64 KiB cluster: NOT_OWNED, DATA (the overlay holds it) or ZERO (reads as zeros). */
  readonly #state: Uint8Array;
  readonly #locks = new Map<number, Promise<void>>();
  #closed = false;

  private constructor(base: BlockDevice, top: FileStorage) {
    this.backing = base;
    this.#top = top;
    this.storage = top;
    this.filename = base.filename;
    this.#state = new Uint8Array(Math.ceil(base.size / CLUSTER));
    this.capabilities = {
      readOnly: false,
      fastZero: true,
      discard: true,
      zeroInit: false,
      multiConn: true,
      allocationGranularity: CLUSTER,
      requestAlignment: 1,
      hasAllocationStatus: true,
    };
  }

  /** Put a throwaway overlay over `base` (which is never written). */
  static async create(base: BlockDevice, dir = snapshotTmpDir()): Promise<OverlayDevice> {
    const tmp = await mkdtemp(join(dir, 'vmforge-snapshot-'));
    const path = join(tmp, 'overlay');
    try {
      // Never synced (QEMU's temporary snapshots are cache.no-flush=on): it is thrown away.
      const top = await FileStorage.open(path, { create: true, cache: 'unsafe' });
      await top.truncate(base.size);
      return new OverlayDevice(base, top);
    } finally {
      // Unlinked while open: the space is returned when the process exits, however it exits.
      await rm(tmp, { recursive: true, force: true });
    }
  }

  get size(): number {
    return this.backing.size;
  }

  #isOwned(c: number): boolean {
    return this.#state[c] !== NOT_OWNED;
  }

  async #withCluster<T>(c: number, fn: () => Promise<T>): Promise<T> {
    for (let held = this.#locks.get(c); held; held = this.#locks.get(c)) await held;
    let release!: () => void;
    this.#locks.set(c, new Promise<void>((r) => (release = r)));
    try {
      return await fn();
    } finally {
      this.#locks.delete(c);
      release();
    }
  }

  /** Copy cluster `c` from the base into the overlay (caller holds the cluster lock). */
  async #copyUp(c: number): Promise<void> {
    const start = c * CLUSTER;
    const len = Math.min(CLUSTER, this.size - start);
    const buf = Buffer.allocUnsafe(len);
    await this.backing.read(buf, start);
    await this.#top.write(buf, start);
    this.#state[c] = DATA;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    assertRange('read', offset, buf.length, this.size);
    let pos = offset;
    const end = offset + buf.length;
    while (pos < end) {
      const owned = this.#isOwned(Math.floor(pos / CLUSTER));
      let runEnd = Math.min(end, (Math.floor(pos / CLUSTER) + 1) * CLUSTER);
      while (runEnd < end && this.#isOwned(Math.floor(runEnd / CLUSTER)) === owned) {
        runEnd = Math.min(end, runEnd + CLUSTER);
      }
      const part = buf.subarray(pos - offset, runEnd - offset);
      if (owned) await this.#top.read(part, pos);
      else await this.backing.read(part, pos);
      pos = runEnd;
    }
  }

  /**
   * Apply `op` to [offset, offset+length): whole clusters are taken over directly, partial ones
   * are copied up first. `op` writes the given sub-range into the overlay.
   */
  async #modify(
    offset: number,
    length: number,
    op: (offset: number, length: number) => Promise<void>,
  ): Promise<void> {
    const end = offset + length;
    const jobs: Promise<void>[] = [];
    for (let pos = offset; pos < end;) {
      const c = Math.floor(pos / CLUSTER);
      const cEnd = Math.min((c + 1) * CLUSTER, this.size);
      const n = Math.min(end, cEnd) - pos;
      const whole = pos === c * CLUSTER && n === cEnd - c * CLUSTER;
      const at = pos;
      jobs.push(
        this.#withCluster(c, async () => {
          if (!this.#isOwned(c) && !whole) await this.#copyUp(c);
          await op(at, n);
          this.#state[c] = DATA;
        }),
      );
      pos += n;
    }
    await Promise.all(jobs);
  }

  async write(buf: Uint8Array, offset: number, _options: WriteOptions = {}): Promise<void> {
    assertRange('write', offset, buf.length, this.size);
    // The overlay is thrown away at exit, so FUA has nothing to make durable.
    await this.#modify(offset, buf.length, (at, n) =>
      this.#top.write(buf.subarray(at - offset, at - offset + n), at),
    );
  }

  async writeZeroes(
    offset: number,
    length: number,
    _options: WriteZeroesOptions = {},
  ): Promise<void> {
    assertRange('write zeroes', offset, length, this.size);
    const end = offset + length;
    const jobs: Promise<void>[] = [];
    for (let pos = offset; pos < end;) {
      const c = Math.floor(pos / CLUSTER);
      const cStart = c * CLUSTER;
      const cEnd = Math.min(cStart + CLUSTER, this.size);
      const n = Math.min(end, cEnd) - pos;
      const at = pos;
      jobs.push(
        this.#withCluster(c, async () => {
          // Like a qcow2 overlay: if the rest of the cluster already reads as zeros, the whole
          // cluster becomes a zero cluster instead of being copied up.
          const whole =
            (at === cStart && n === cEnd - cStart) ||
            ((await this.#readsZero(cStart, at)) && (await this.#readsZero(at + n, cEnd)));
          if (whole) {
            await this.#top.writeZeroes(cStart, cEnd - cStart, true);
            this.#state[c] = ZERO;
          } else {
            // Part of a data cluster: it stays a data cluster (qcow2 reports status per cluster).
            if (!this.#isOwned(c)) await this.#copyUp(c);
            await this.#top.writeZeroes(at, n, true);
          }
        }),
      );
      pos += n;
    }
    await Promise.all(jobs);
  }

  /** [from, to) is known to read as zeros (status only, no data read: qcow2's is_zero_fast). */
  async #readsZero(from: number, to: number): Promise<boolean> {
    for (let pos = from; pos < to;) {
      const [e] = await this.blockStatus(pos, to - pos, { maxExtents: 1 });
      if (!e || !e.zero) return false;
      pos = e.offset + e.length;
    }
    return true;
  }

  /** Discarded clusters read as zeros (a qcow2 overlay's zero clusters); partial ones are kept. */
  async discard(offset: number, length: number): Promise<void> {
    assertRange('discard', offset, length, this.size);
    const first = Math.ceil(offset / CLUSTER) * CLUSTER;
    const last = Math.min(Math.floor((offset + length) / CLUSTER) * CLUSTER, this.size);
    if (last > first) await this.writeZeroes(first, last - first);
  }

  async flush(): Promise<void> {
    // Nothing here outlives the process; the base is never written.
  }

  async blockStatus(
    offset: number,
    length: number,
    options: BlockStatusOptions = {},
  ): Promise<BlockExtent[]> {
    assertRange('block status', offset, length, this.size);
    if (length === 0) return [];
    const end = offset + length;
    const state = this.#state[Math.floor(offset / CLUSTER)]!;
    let runEnd = Math.min(end, (Math.floor(offset / CLUSTER) + 1) * CLUSTER);
    while (runEnd < end && this.#state[Math.floor(runEnd / CLUSTER)] === state) {
      runEnd = Math.min(end, runEnd + CLUSTER);
    }
    if (state === NOT_OWNED) {
      const below = await this.backing.blockStatus(offset, runEnd - offset, options);
      return below.map((e) => ({ ...e, depth: e.depth + 1 }));
    }
    const zero = state === ZERO;
    return [{ offset, length: runEnd - offset, allocated: true, data: !zero, zero, depth: 0 }];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#top.close();
    } finally {
      await this.backing.close();
    }
  }
}
