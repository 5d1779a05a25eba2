// The in-memory refcount table (QEMU's "IMRT"): the reference count every host cluster should
// have, computed from the metadata. QEMU keeps it as one flat array in on-disk refcount format;
// vmforge keeps pages of one refcount block each, allocated on first use, so a hostile image
// with a huge file (or a repair that grows one) costs memory only where clusters are referenced.
// Pages line up with refcount blocks, so a rebuild writes a page as one refblock.

import { setRefcount } from '../refcount.js';
import type { Layout } from '../layout.js';
import { CheckAbort } from './types.js';

type Page = Uint8Array | Uint16Array | Uint32Array | Float64Array;

/** realloc_refcount_array() fails (ENOMEM) beyond this many bytes of QEMU's flat array. */
const MAX_FLAT_BYTES = 2 ** 40;

export class Imrt {
  readonly perPage: number;
  readonly order: number;
  /** s->refcount_max; an entry never exceeds it (qcow2_inc_refcounts_imrt reports overflow). */
  readonly max: number;
  /** Number of entries (QEMU's *nb_clusters / *refcount_table_size). */
  size: number;
  readonly #pages = new Map<number, Page>();
  readonly #clusterSize: number;

  constructor(layout: Layout, size: number) {
    this.perPage = layout.refblockEntries;
    this.order = layout.refcountOrder;
    this.max = this.order >= 6 ? Number.POSITIVE_INFINITY : 2 ** (2 ** this.order) - 1;
    this.#clusterSize = layout.clusterSize;
    this.size = 0;
    this.resize(size);
  }

  /** realloc_refcount_array(): grow to `n` entries (new entries are zero). */
  resize(n: number): void {
    if (n <= this.size) return;
    if ((n * 2 ** this.order) / 8 > MAX_FLAT_BYTES) throw new CheckAbort('ENOMEM');
    this.size = n;
  }

  /** The last page looked up (walks touch neighbouring clusters). */
  #lastIndex = -1;
  #lastPage: Page | undefined;

  #page(p: number): Page | undefined {
    if (p !== this.#lastIndex) {
      this.#lastIndex = p;
      this.#lastPage = this.#pages.get(p);
    }
    return this.#lastPage;
  }

  get(i: number): number {
    const page = this.#page(Math.floor(i / this.perPage));
    return page ? page[i % this.perPage]! : 0;
  }

  set(i: number, value: number): void {
    const p = Math.floor(i / this.perPage);
    let page = this.#page(p);
    if (!page) {
      if (value === 0) return;
      page = this.#newPage();
      this.#pages.set(p, page);
      this.#lastPage = page;
    }
    page[i % this.perPage] = value;
  }

  #newPage(): Page {
    if (this.order <= 3) return new Uint8Array(this.perPage);
    if (this.order === 4) return new Uint16Array(this.perPage);
    if (this.order === 5) return new Uint32Array(this.perPage);
    return new Float64Array(this.perPage);
  }

  /** Whether any entry of page `p` (refblock index) may be non-zero. */
  hasPage(p: number): boolean {
    return this.#pages.has(p);
  }

  /** Page indexes that exist, ascending. */
  pageIndexes(): number[] {
    return [...this.#pages.keys()].sort((a, b) => a - b);
  }

  /** memset(refcount_table, 0, ...). */
  clear(): void {
    this.#pages.clear();
    this.#lastIndex = -1;
    this.#lastPage = undefined;
  }

  /** Page `p` in on-disk refcount block format (one cluster). */
  encodePage(p: number): Uint8Array {
    const out = new Uint8Array(this.#clusterSize);
    const page = this.#pages.get(p);
    if (!page) return out;
    // Entries at or beyond `size` are zero in QEMU's array (realloc zero-fills).
    const limit = Math.min(this.perPage, this.size - p * this.perPage);
    for (let j = 0; j < limit; j++) {
      const v = page[j]!;
      if (v !== 0) setRefcount(out, j, this.order, v);
    }
    return out;
  }
}
