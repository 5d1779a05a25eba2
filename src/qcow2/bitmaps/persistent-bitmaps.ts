// The dirty bitmaps of one open qcow2 image: QEMU's per-node bitmap list (bs->dirty_bitmaps,
// block/dirty-bitmap.c), its qcow2 persistence (qcow2_load_dirty_bitmaps,
// qcow2_store_persistent_dirty_bitmaps, qcow2_co_remove_persistent_dirty_bitmap) and the QMP
// operations qemu-img uses (block/monitor/bitmap-qmp-cmds.c), with QEMU's messages.
//
// It is also the image's GuestWriteObserver. QEMU loads every bitmap when it opens an image
// read-write and marks it in use at once; vmforge waits for the first guest write of a
// read-write session, then loads the enabled (auto) bitmaps that are not in use, marks them in
// use on disk before that write can reach the disk, sets the bits of every written, zeroed or
// discarded range, and stores them (clearing the in-use flag) when the image is closed. Disabled
// bitmaps are not touched, bitmaps already in use stay as they are (inconsistent), and an image
// opened read-write but never written keeps its bytes. A killed writer leaves the in-use flag
// set, which QEMU reads as "inconsistent": never a stale bitmap that claims to be valid.
// Like QEMU, bitmaps are stored on close, not on every flush (each store moves every stored
// bitmap to new clusters and syncs the header three times).

import {
  CorruptImageError,
  InvalidArgumentError,
  NotSupportedError,
  byteLength,
  withContext,
  type VmforgeError,
} from '../../core/index.js';
import { MAX_BITMAP_DIRECTORY_SIZE, MAX_BITMAPS } from '../constants.js';
import type { GuestWriteObserver, Qcow2Device } from '../qcow2-device.js';
import {
  BME_FLAG_AUTO,
  BME_FLAG_IN_USE,
  BME_MAX_GRANULARITY_BITS,
  BME_MAX_NAME_SIZE,
  BME_MAX_PHYS_SIZE,
  BME_MAX_TABLE_SIZE,
  BME_MIN_GRANULARITY_BITS,
  BITMAP_TYPE_DIRTY_TRACKING,
  dirEntrySize,
  type Qcow2Bitmap,
} from './directory.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import {
  freeBitmapClusters,
  LoadBudget,
  loadBitmap,
  readBitmapList,
  storeBitmap,
  updateDirectory,
  updateDirectoryInPlace,
} from './io.js';

/** QEMU's hint after "... is inconsistent and cannot be used". */
export const INCONSISTENT_HINT = 'Try block-dirty-bitmap-remove to delete this bitmap from disk';

export interface AddBitmapOptions {
  /** Bytes per bit; undefined = QEMU's default (the cluster size clamped to 4 KiB..64 KiB). */
  granularity?: number | undefined;
  /** Created disabled (does not record writes). */
  disabled?: boolean;
}

type BitmapCheck = 'default' | 'allow-ro';

function bitmapError(message: string, hint?: string): VmforgeError {
  const err = new InvalidArgumentError(message, { code: 'VMF_BITMAP' });
  return hint ? err.withHint(hint) : err;
}

/**
 * bdrv_dirty_bitmap_check(): BDRV_BITMAP_DEFAULT refuses read-only and inconsistent bitmaps,
 * BDRV_BITMAP_ALLOW_RO only inconsistent ones (vmforge never has busy bitmaps).
 */
export function checkBitmapUsable(bitmap: DirtyBitmap, check: BitmapCheck): void {
  if (check === 'default' && bitmap.readonly) {
    throw bitmapError(`Bitmap '${bitmap.name}' is readonly and cannot be modified`);
  }
  if (bitmap.inconsistent) {
    throw bitmapError(
      `Bitmap '${bitmap.name}' is inconsistent and cannot be used`,
      INCONSISTENT_HINT,
    );
  }
}

/** QEMU's default granularity for new bitmaps: the cluster size, clamped to [4 KiB, 64 KiB]. */
export function defaultGranularity(clusterSize: number): number {
  return Math.min(65536, Math.max(4096, clusterSize));
}

/**
 * An auto-generated QEMU node name, as messages print it: "#block" + the node counter (1 for
 * the first image qemu-img opens) + two random digits (id_generate).
 */
export function generatedNodeName(): string {
  return `#block1${String(Math.floor(Math.random() * 100)).padStart(2, '0')}`;
}

export class PersistentBitmaps implements GuestWriteObserver {
  readonly device: Qcow2Device;
  /** The name QEMU would have given the image's node, for messages that print it. */
  readonly nodeName = generatedNodeName();
  /** In-memory bitmaps, newest first (QEMU inserts at the head of bs->dirty_bitmaps). */
  #list: DirtyBitmap[] = [];
  /** Every bitmap of the image is in memory (as after QEMU's open). */
  #allLoaded = false;
  /** The enabled bitmaps were loaded and marked in use for this write session. */
  #tracking = false;

  constructor(device: Qcow2Device) {
    this.device = device;
  }

  /** The bitmaps in memory, newest first (QEMU's FOR_EACH_DIRTY_BITMAP order). */
  get bitmaps(): readonly DirtyBitmap[] {
    return this.#list;
  }

  find(name: string): DirtyBitmap | undefined {
    return this.#list.find((b) => b.name === name);
  }

  /** bdrv_supports_persistent_dirty_bitmap(): qcow2 v3. */
  get supported(): boolean {
    return this.device.header.version >= 3;
  }

  // -----------------------------------------------------------------------------------------
  // Loading

  /**
   * Load every bitmap of the image, as QEMU does when it opens one (qcow2_load_dirty_bitmaps):
   * bitmaps not in use get their bits and, on a writable image, the in-use flag on disk;
   * bitmaps already in use become inconsistent. Idempotent.
   */
  async loadAll(): Promise<void> {
    if (this.#allLoaded) return;
    await this.#locked(() => this.#load(() => true));
    this.#allLoaded = true;
  }

  /**
   * What makes QEMU's open fail in qcow2_load_dirty_bitmaps() (a directory that breaks the
   * constraints, a duplicate name, an unreadable table or data), without its side effects: no
   * in-use flags written, nothing kept. vmforge loads bitmaps on first use, but an image QEMU
   * cannot open must not open here either.
   */
  async verifyLoadable(): Promise<void> {
    await this.#locked(() => this.#load(() => true, true));
  }

  async #load(select: (bm: Qcow2Bitmap) => boolean, dryRun = false): Promise<void> {
    const dev = this.device;
    if (!dev.header.bitmaps || dev.header.bitmaps.nbBitmaps === 0) return;
    const list = await readBitmapList(dev);
    const budget = new LoadBudget(await dev.storage.size());
    const writable = !dev.readOnly;
    const created: DirtyBitmap[] = [];
    let needsUpdate = false;
    for (const bm of list) {
      if (!select(bm)) continue;
      const existing = [...created, ...this.#list].find((b) => b.name === bm.name);
      // In use on disk and already in memory: ours (or migrated); nothing to load.
      if (bm.flags & BME_FLAG_IN_USE && existing) continue;
      if (existing) throw new CorruptImageError(`Bitmap already exists: ${bm.name}`);
      const bitmap = await loadBitmap(dev, bm, budget);
      bitmap.persistent = true;
      if (bm.flags & BME_FLAG_IN_USE) {
        bitmap.inconsistent = true;
        bitmap.enabled = false;
      } else {
        bm.flags |= BME_FLAG_IN_USE;
        needsUpdate = true;
      }
      if (!(bm.flags & BME_FLAG_AUTO)) bitmap.enabled = false;
      created.push(bitmap);
    }
    if (dryRun) return;
    if (needsUpdate && writable) {
      try {
        await updateDirectoryInPlace(dev, list);
      } catch (err) {
        throw withContext(err, "Can't update bitmap directory");
      }
    }
    for (const b of created) {
      if (!writable) b.readonly = true;
      this.#list.unshift(b);
    }
  }

  /** Run `fn` under the device's metadata lock (not from inside an observer hook). */
  #locked<T>(fn: () => Promise<T>): Promise<T> {
    return this.device.withExclusiveLock(fn);
  }

  // -----------------------------------------------------------------------------------------
  // GuestWriteObserver

  async beforeGuestWrite(offset: number, length: number): Promise<void> {
    if (!this.#tracking) {
      // Enabled bitmaps that are consistent on disk: the ones whose bits this write changes.
      await this.#load((bm) => (bm.flags & BME_FLAG_AUTO) !== 0 && !(bm.flags & BME_FLAG_IN_USE));
      this.#tracking = true;
    }
    // bdrv_set_dirty(): every enabled bitmap of the node.
    for (const b of this.#list) if (b.enabled) b.setDirty(offset, length);
  }

  async beforeResize(): Promise<void> {
    if (!this.device.header.bitmaps && this.#list.length === 0) return;
    // qcow2_truncate_bitmaps_check(): every bitmap in memory, none unusable.
    await this.#load(() => true);
    this.#allLoaded = true;
    for (const bm of await readBitmapList(this.device)) {
      const bitmap = this.find(bm.name);
      if (!bitmap) {
        throw new NotSupportedError(
          'Cannot resize qcow2 with persistent bitmaps that were not loaded into memory',
        );
      }
      try {
        checkBitmapUsable(bitmap, 'default');
      } catch (err) {
        throw new NotSupportedError((err as VmforgeError).message).withHint(INCONSISTENT_HINT);
      }
    }
  }

  afterResize(newSize: number): void {
    for (const b of this.#list) b.truncate(newSize);
  }

  async beforeClose(): Promise<void> {
    if (this.#list.length === 0) return;
    try {
      await this.#store();
    } catch (err) {
      throw withContext(
        err,
        `Lost persistent bitmaps during inactivation of node '${this.nodeName}'`,
      );
    }
  }

  // -----------------------------------------------------------------------------------------
  // Storing (qcow2_store_persistent_dirty_bitmaps with release_stored)

  /**
   * Write every persistent, consistent bitmap that changed in memory to the image and clear
   * their in-use flags; the bitmaps are then released from memory (the next write loads them
   * again). Usable as a checkpoint by long-running writers.
   */
  async store(): Promise<void> {
    await this.#locked(() => this.#store());
  }

  async #store(): Promise<void> {
    const dev = this.device;
    // Clusters the session freed (vmforge defers frees to the next metadata flush; QEMU frees at
    // once) become reusable first, so bitmap clusters land where QEMU puts them.
    await dev.flushMetadataLocked();
    const list = await readBitmapList(dev);
    const stored = new Map<Qcow2Bitmap, DirtyBitmap>();
    const dropTables: { tableOffset: number; tableSize: number }[] = [];
    let nb = list.length;
    let dirSize = dev.header.bitmaps?.directorySize ?? 0;
    let needWrite = false;
    for (const bitmap of this.#list) {
      if (!bitmap.persistent || bitmap.inconsistent || bitmap.readonly) continue;
      needWrite = true;
      const constraint = this.#constraintError(bitmap.name, bitmap.granularity);
      if (constraint) {
        throw bitmapError(`Bitmap '${bitmap.name}' doesn't satisfy the constraints: ${constraint}`);
      }
      let bm = list.find((e) => e.name === bitmap.name);
      if (!bm) {
        if (++nb > MAX_BITMAPS) throw bitmapError('Too many persistent bitmaps');
        dirSize += dirEntrySize(byteLength(bitmap.name));
        if (dirSize > MAX_BITMAP_DIRECTORY_SIZE) throw bitmapError('Bitmap directory is too large');
        bm = {
          name: bitmap.name,
          tableOffset: 0,
          tableSize: 0,
          flags: 0,
          type: BITMAP_TYPE_DIRTY_TRACKING,
          granularityBits: bitmap.granularityBits,
        };
        list.push(bm);
      } else {
        if (!(bm.flags & BME_FLAG_IN_USE)) {
          throw bitmapError(`Bitmap '${bitmap.name}' already exists in the image`);
        }
        dropTables.push({ tableOffset: bm.tableOffset, tableSize: bm.tableSize });
        bm.tableOffset = 0;
        bm.tableSize = 0;
      }
      bm.flags = bitmap.enabled ? BME_FLAG_AUTO : 0;
      bm.granularityBits = bitmap.granularityBits;
      stored.set(bm, bitmap);
    }
    if (needWrite) {
      if (dev.readOnly) throw bitmapError('No write access');
      try {
        for (const bm of list) {
          const bitmap = stored.get(bm);
          if (bitmap) await storeBitmap(dev, bm, bitmap);
        }
        try {
          await updateDirectory(dev, list);
        } catch (err) {
          throw withContext(err, 'Failed to update bitmap extension');
        }
      } catch (err) {
        // Nothing on disk names the new tables: give their clusters back.
        for (const bm of stored.keys()) {
          if (bm.tableOffset !== 0) await freeBitmapClusters(dev, bm).catch(() => undefined);
        }
        throw err;
      }
      // The directory no longer names the old tables: now they can go.
      for (const t of dropTables) await freeBitmapClusters(dev, t);
    }
    // Released from memory, as QEMU releases what it stored; inconsistent bitmaps stay.
    this.#list = this.#list.filter((b) => b.inconsistent || !b.persistent);
    this.#allLoaded = false;
    this.#tracking = false;
  }

  // -----------------------------------------------------------------------------------------
  // Operations (qemu-img bitmap; QMP block-dirty-bitmap-*)

  /** The bitmap named `name`, or QEMU's "Dirty bitmap '...' not found". */
  lookup(name: string): DirtyBitmap {
    const bitmap = this.find(name);
    if (!bitmap) throw bitmapError(`Dirty bitmap '${name}' not found`);
    return bitmap;
  }

  /** qmp_block_dirty_bitmap_add() of a persistent bitmap. */
  async add(name: string, options: AddBitmapOptions = {}): Promise<DirtyBitmap> {
    await this.loadAll();
    if (name === '') throw bitmapError('Bitmap name cannot be empty');
    let granularity = options.granularity;
    if (granularity !== undefined) {
      if (granularity < 512 || (granularity & (granularity - 1)) !== 0 || granularity > 2 ** 31) {
        throw bitmapError('Granularity must be power of 2 and at least 512');
      }
    } else {
      granularity = defaultGranularity(this.device.layout.clusterSize);
    }
    this.#checkCanStoreNew(name, granularity);
    const bitmap = new DirtyBitmap({ name, granularity, size: this.device.size });
    bitmap.persistent = true;
    if (options.disabled) bitmap.enabled = false;
    this.#list.unshift(bitmap);
    return bitmap;
  }

  /** qcow2_co_can_store_new_dirty_bitmap(). */
  #checkCanStoreNew(name: string, granularity: number): void {
    if (this.find(name)) throw bitmapError(`Bitmap already exists: ${name}`);
    const fail = (why: string) =>
      bitmapError(`Can't make bitmap '${name}' persistent in '${this.nodeName}': ${why}`);
    if (!this.supported) throw fail('Cannot store dirty bitmaps in qcow2 v2 files');
    const constraint = this.#constraintError(name, granularity);
    if (constraint) throw fail(constraint);
    let nb = 1;
    let dirSize = dirEntrySize(byteLength(name));
    for (const b of this.#list) {
      if (!b.persistent) continue;
      nb++;
      dirSize += dirEntrySize(byteLength(b.name));
    }
    if (nb > MAX_BITMAPS) throw fail('Maximum number of persistent bitmaps is already reached');
    if (dirSize > MAX_BITMAP_DIRECTORY_SIZE) {
      throw fail('Not enough space in the bitmap directory');
    }
  }

  /** check_constraints_on_bitmap(): undefined, or QEMU's reason. */
  #constraintError(name: string, granularity: number): string | undefined {
    const bits = Math.log2(granularity);
    if (bits > BME_MAX_GRANULARITY_BITS) {
      return `Granularity exceeds maximum (${2 ** BME_MAX_GRANULARITY_BITS} bytes)`;
    }
    if (bits < BME_MIN_GRANULARITY_BITS) {
      return `Granularity is under minimum (${2 ** BME_MIN_GRANULARITY_BITS} bytes)`;
    }
    const bytes = Math.ceil(Math.ceil(this.device.size / granularity) / 8);
    if (bytes > BME_MAX_PHYS_SIZE || bytes > BME_MAX_TABLE_SIZE * this.device.layout.clusterSize) {
      return 'Too much space will be occupied by the bitmap. Use larger granularity';
    }
    if (byteLength(name) > BME_MAX_NAME_SIZE) {
      return `Name length exceeds maximum (${BME_MAX_NAME_SIZE} characters)`;
    }
    return undefined;
  }

  /**
   * block_dirty_bitmap_remove(): drop the bitmap from memory and, at once, from the image
   * (qcow2_co_remove_persistent_dirty_bitmap: new directory, then its clusters freed).
   */
  async remove(name: string): Promise<void> {
    await this.loadAll();
    const bitmap = this.lookup(name);
    if (bitmap.readonly) {
      throw bitmapError(`Bitmap '${bitmap.name}' is readonly and cannot be modified`);
    }
    if (bitmap.persistent) await this.#locked(() => this.#removePersistent(name));
    this.#list = this.#list.filter((b) => b !== bitmap);
  }

  async #removePersistent(name: string): Promise<void> {
    const dev = this.device;
    if (!dev.header.bitmaps) return;
    const list = await readBitmapList(dev);
    const bm = list.find((e) => e.name === name);
    if (!bm) return; // not stored yet: nothing on disk
    const rest = list.filter((e) => e !== bm);
    try {
      await updateDirectory(dev, rest);
    } catch (err) {
      throw withContext(err, 'Failed to update bitmap extension');
    }
    await freeBitmapClusters(dev, bm);
  }

  /** qmp_block_dirty_bitmap_clear(). */
  async clear(name: string): Promise<void> {
    await this.loadAll();
    const bitmap = this.lookup(name);
    checkBitmapUsable(bitmap, 'default');
    bitmap.clear();
  }

  /** qmp_block_dirty_bitmap_enable() / _disable(). */
  async setEnabled(name: string, enabled: boolean): Promise<void> {
    await this.loadAll();
    const bitmap = this.lookup(name);
    checkBitmapUsable(bitmap, 'allow-ro');
    bitmap.enabled = enabled;
  }

  /** block_dirty_bitmap_merge() of one source bitmap (of this image or another one) into `target`. */
  async merge(target: string, source: DirtyBitmap): Promise<void> {
    await this.loadAll();
    mergeInto(this.lookup(target), source);
  }
}

/** bdrv_merge_dirty_bitmap(): permission and size checks, then the merge. */
export function mergeInto(dst: DirtyBitmap, src: DirtyBitmap): void {
  checkBitmapUsable(dst, 'default');
  checkBitmapUsable(src, 'allow-ro');
  if (src.size !== dst.size) {
    throw bitmapError(
      `Bitmaps are of different sizes (destination size is ${dst.size}, source size is ${src.size}) and can't be merged`,
    );
  }
  dst.merge(src);
}

const readOnlySets = new WeakMap<Qcow2Device, PersistentBitmaps>();

/**
 * The bitmaps of an open qcow2 image: the observer openQcow2 attached to a read-write image, or
 * a set for a read-only one (its bitmaps are read-only).
 */
export function persistentBitmaps(device: Qcow2Device): PersistentBitmaps {
  const attached = device.writeObserver;
  if (attached instanceof PersistentBitmaps) return attached;
  let set = readOnlySets.get(device);
  if (!set) {
    set = new PersistentBitmaps(device);
    if (device.readOnly) readOnlySets.set(device, set);
    else device.attachWriteObserver(set);
  }
  return set;
}
