// A bounded write-back cache of cluster-sized metadata tables (L2 tables, refcount blocks),
// keyed by host offset, evicting least recently used. Writing back a dirty entry first runs the
// cache's `beforeWriteback` hook: the L2 cache uses it to write refcount blocks first, so an L2
// entry never reaches the disk before the refcount of the cluster it points to (qcow2 crash
// ordering; QEMU's qcow2_cache_set_dependency).

import type { Storage } from '../block/storage.js';

interface Entry {
  data: Uint8Array;
  dirty: boolean;
}

export class TableCache {
  readonly #storage: Storage;
  readonly #tableSize: number;
  readonly #maxEntries: number;
  /** Map iteration order is our LRU order: oldest first. */
  readonly #entries = new Map<number, Entry>();
  beforeWriteback: (() => Promise<void>) | undefined;
  /** Called before any write to the storage, for overlap checks. */
  checkWrite: ((offset: number, length: number, what: string) => void) | undefined;

  constructor(storage: Storage, tableSize: number, maxBytes: number) {
    this.#storage = storage;
    this.#tableSize = tableSize;
    this.#maxEntries = Math.max(8, Math.floor(maxBytes / tableSize));
  }

  get size(): number {
    return this.#entries.size;
  }

  has(offset: number): boolean {
    return this.#entries.has(offset);
  }

  /** The table at `offset`, read from storage on a miss. */
  async get(offset: number): Promise<Uint8Array> {
    const hit = this.#entries.get(offset);
    if (hit) {
      this.#entries.delete(offset);
      this.#entries.set(offset, hit);
      return hit.data;
    }
    const data = new Uint8Array(this.#tableSize);
    await this.#storage.read(data, offset);
    // Another caller may have loaded it while we awaited.
    const raced = this.#entries.get(offset);
    if (raced) return raced.data;
    await this.#makeRoom();
    this.#entries.set(offset, { data, dirty: false });
    return data;
  }

  /** Insert a zeroed table at `offset` without reading (a newly allocated cluster), dirty. */
  async getEmpty(offset: number): Promise<Uint8Array> {
    const existing = this.#entries.get(offset);
    if (existing) {
      existing.data.fill(0);
      existing.dirty = true;
      return existing.data;
    }
    await this.#makeRoom();
    const data = new Uint8Array(this.#tableSize);
    this.#entries.set(offset, { data, dirty: true });
    return data;
  }

  markDirty(offset: number): void {
    const e = this.#entries.get(offset);
    if (!e) throw new Error(`internal error: table at ${offset} marked dirty after eviction`);
    e.dirty = true;
  }

  /** Drop a table without writing it (its cluster was freed). */
  discard(offset: number): void {
    this.#entries.delete(offset);
  }

  /** Drop everything (after the image was rewritten underneath, e.g. by a repair). */
  clear(): void {
    this.#entries.clear();
  }

  get dirtyCount(): number {
    let n = 0;
    for (const e of this.#entries.values()) if (e.dirty) n++;
    return n;
  }

  /** Write every dirty table, in ascending offset order. */
  async flush(): Promise<void> {
    const dirty = [...this.#entries].filter(([, e]) => e.dirty).sort((a, b) => a[0] - b[0]);
    if (dirty.length === 0) return;
    if (this.beforeWriteback) await this.beforeWriteback();
    for (const [offset, e] of dirty) {
      if (!e.dirty) continue;
      this.checkWrite?.(offset, this.#tableSize, 'metadata');
      e.dirty = false;
      try {
        await this.#storage.write(e.data, offset);
      } catch (err) {
        e.dirty = true;
        throw err;
      }
    }
  }

  async #makeRoom(): Promise<void> {
    while (this.#entries.size >= this.#maxEntries) {
      // Prefer the oldest clean entry; write back the oldest dirty one if all are dirty.
      let victim: number | undefined;
      for (const [offset, e] of this.#entries) {
        if (!e.dirty) {
          victim = offset;
          break;
        }
      }
      if (victim === undefined) {
        const first = this.#entries.entries().next().value;
        if (!first) return;
        const [offset, e] = first;
        if (this.beforeWriteback) await this.beforeWriteback();
        if (e.dirty) {
          this.checkWrite?.(offset, this.#tableSize, 'metadata');
          e.dirty = false;
          await this.#storage.write(e.data, offset);
        }
        victim = offset;
      }
      this.#entries.delete(victim);
    }
  }
}
