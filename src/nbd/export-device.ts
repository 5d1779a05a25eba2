// ExportDevice: a BlockDevice decorator applying qemu-nbd's per-export block options to any
// device: --cache (writethrough = FUA on every write, unsafe = flushes ignored), --discard
// (ignore = TRIM does nothing and zeroing never deallocates), --detect-zeroes (all-zero writes
// become zero writes, deallocating with unmap), --offset (export a window starting N bytes in),
// and the guard QEMU puts on raw images whose format was probed (writes to block 0 that would
// make the image look like another format are refused).

import type {
  BlockCapabilities,
  BlockDevice,
  BlockExtent,
  BlockStatusOptions,
  FileRange,
  ReadOptions,
  WriteOptions,
  WriteZeroesOptions,
} from '../block/device.js';
import type { Storage } from '../block/storage.js';
import { EnvironmentError, InvalidArgumentError, isZero } from '../core/index.js';

/** How far ahead a one-extent status query looks (see blockStatus). */
const STATUS_WINDOW = 64 * 1024 * 1024;

export type CacheMode = 'none' | 'writeback' | 'writethrough' | 'directsync' | 'unsafe';
export type DiscardMode = 'ignore' | 'unmap';
export type DetectZeroesMode = 'off' | 'on' | 'unmap';

export interface ExportDeviceOptions {
  /** @default 'writeback' */
  cache?: CacheMode;
  /** @default 'ignore' (qemu-nbd's default) */
  discard?: DiscardMode;
  /** @default 'off' */
  detectZeroes?: DetectZeroesMode;
  /** Bytes to skip at the start of the device (qemu-nbd -o). @default 0 */
  offset?: number;
  /** The format was probed as raw: protect block 0 from turning into a format header. */
  probedRaw?: boolean;
}

/** Magic numbers that would make a raw image probe as another format (block.c probing). */
const FORMAT_MAGICS: readonly Uint8Array[] = [
  new Uint8Array([0x51, 0x46, 0x49, 0xfb]), // qcow2 / qcow "QFI\xfb"
  new TextEncoder().encode('conectix'), // vpc
  new TextEncoder().encode('KDMV'), // vmdk
  new TextEncoder().encode('# Disk DescriptorFile'), // vmdk descriptor
];

function looksLikeFormat(first: Uint8Array): boolean {
  return FORMAT_MAGICS.some((m) => first.length >= m.length && m.every((b, i) => first[i] === b));
}

export function validateExportDeviceOptions(o: ExportDeviceOptions): void {
  if (o.detectZeroes === 'unmap' && (o.discard ?? 'ignore') !== 'unmap') {
    throw new InvalidArgumentError(
      'setting detect-zeroes to unmap is not allowed without setting discard operation to unmap',
    );
  }
  const off = o.offset ?? 0;
  if (!Number.isSafeInteger(off) || off < 0)
    throw new InvalidArgumentError(`Invalid offset '${off}'`);
}

export class ExportDevice implements BlockDevice {
  readonly inner: BlockDevice;
  readonly capabilities: BlockCapabilities;
  readonly #cache: CacheMode;
  readonly #unmap: boolean;
  readonly #detect: DetectZeroesMode;
  readonly #offset: number;
  readonly #probedRaw: boolean;
  readonly #size: number;
  readonly #statusCache = new StatusCache();
  #generation = 0;
  #modifying = 0;

  constructor(inner: BlockDevice, options: ExportDeviceOptions = {}) {
    validateExportDeviceOptions(options);
    this.inner = inner;
    this.#cache = options.cache ?? 'writeback';
    this.#unmap = (options.discard ?? 'ignore') === 'unmap';
    this.#detect = options.detectZeroes ?? 'off';
    this.#offset = options.offset ?? 0;
    this.#probedRaw = options.probedRaw ?? false;
    if (this.#offset > inner.size) {
      throw new InvalidArgumentError(
        `offset ${this.#offset} is beyond the end of '${inner.filename}' (${inner.size} bytes)`,
      );
    }
    this.#size = inner.size - this.#offset;
    this.capabilities = {
      ...inner.capabilities,
      discard: inner.capabilities.discard && this.#unmap,
    };
  }

  get format() {
    return this.inner.format;
  }
  get filename(): string {
    return this.inner.filename;
  }
  get size(): number {
    return this.#size;
  }
  /** Bytes of the inner device skipped at the start (qemu-nbd -o). */
  get offset(): number {
    return this.#offset;
  }
  get backing(): BlockDevice | undefined {
    return this.inner.backing;
  }
  get storage(): Storage {
    return this.inner.storage;
  }

  #fua(requested: boolean | undefined): boolean {
    if (this.#cache === 'unsafe') return false;
    return requested === true || this.#cache === 'writethrough' || this.#cache === 'directsync';
  }

  fileRange(
    offset: number,
    length: number,
  ): FileRange | undefined | Promise<FileRange | undefined> {
    if (offset < 0 || offset + length > this.#size) return undefined;
    return this.inner.fileRange?.(offset + this.#offset, length);
  }

  read(buf: Uint8Array, offset: number, options?: ReadOptions): Promise<void> {
    return this.inner.read(buf, offset + this.#offset, options);
  }

  async write(buf: Uint8Array, offset: number, options: WriteOptions = {}): Promise<void> {
    if (this.#probedRaw && offset + this.#offset === 0 && looksLikeFormat(buf)) {
      // QEMU (block/raw-format.c raw_co_pwritev): "write operations on block 0 will be
      // restricted" when the format was guessed.
      throw new EnvironmentError(
        `refusing to write a format header to block 0 of '${this.filename}': its format was probed as raw (specify -f raw)`,
        { errno: 'EPERM' },
      );
    }
    const fua = this.#fua(options.fua);
    if (this.#detect !== 'off' && buf.length > 0 && isZero(buf)) {
      return this.#modify(() =>
        this.inner.writeZeroes(offset + this.#offset, buf.length, {
          fua,
          mayUnmap: this.#detect === 'unmap',
        }),
      );
    }
    return this.#modify(() => this.inner.write(buf, offset + this.#offset, { ...options, fua }));
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    return this.#modify(() =>
      this.inner.writeZeroes(offset + this.#offset, length, {
        ...options,
        fua: this.#fua(options.fua),
        // QEMU honours BDRV_REQ_MAY_UNMAP only with discard=unmap.
        mayUnmap: (options.mayUnmap ?? false) && this.#unmap,
      }),
    );
  }

  async discard(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    if (!this.#unmap) return; // --discard=ignore: a valid no-op (proto.md: TRIM is advisory)
    await this.#modify(() =>
      this.inner.discard(offset + this.#offset, length, {
        ...options,
        fua: this.#fua(options.fua),
      }),
    );
  }

  async flush(): Promise<void> {
    if (this.#cache === 'unsafe') return;
    await this.inner.flush();
  }

  async blockStatus(
    offset: number,
    length: number,
    options?: BlockStatusOptions,
  ): Promise<BlockExtent[]> {
    // Every structured READ asks for status first (to send holes as holes); sequential reads
    // of one big data extent would otherwise repeat the same lseek()s or L2 lookups each time.
    const c = this.#statusCache.find(offset);
    if (c) {
      const n = Math.min(c.offset + c.length, offset + length) - offset;
      return [
        {
          ...c,
          offset,
          length: n,
          ...(c.hostOffset !== undefined ? { hostOffset: c.hostOffset + (offset - c.offset) } : {}),
        },
      ];
    }
    const generation = this.#generation;
    if (length > 0 && options?.maxExtents === 1) {
      // One extent is wanted (READ's hole check, REQ_ONE): look a little further than asked, so
      // the answer also covers the reads that follow (one lseek pair per 64 MiB, not per read).
      const window = Math.min(this.#size - offset, Math.max(length, STATUS_WINDOW));
      const [first] = await this.inner.blockStatus(offset + this.#offset, window, options);
      if (!first) return [];
      const e = this.#offset === 0 ? first : { ...first, offset: first.offset - this.#offset };
      if (generation === this.#generation && this.#modifying === 0) this.#statusCache.add(e);
      return [{ ...e, length: Math.min(e.length, length) }];
    }
    const inner = await this.inner.blockStatus(offset + this.#offset, length, options);
    const extents =
      this.#offset === 0 ? inner : inner.map((e) => ({ ...e, offset: e.offset - this.#offset }));
    // Only remember an answer no modification could have overtaken.
    if (generation === this.#generation && this.#modifying === 0 && extents[0]) {
      this.#statusCache.add(extents[0]);
    }
    return extents;
  }

  /** Any change to the device makes the cached status stale. */
  async #modify<T>(op: () => Promise<T>): Promise<T> {
    this.#statusCache.clear();
    this.#generation++;
    this.#modifying++;
    try {
      return await op();
    } finally {
      this.#modifying--;
      this.#generation++;
      this.#statusCache.clear();
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * Extents learnt from block-status queries since the last modification, merged where they
 * continue each other: random reads of a fully allocated file then stop costing an lseek pair
 * (or an L2 walk) each once the answers have covered it. At most MAX_CACHED extents are kept.
 */
class StatusCache {
  /** Disjoint, sorted by offset. */
  #extents: BlockExtent[] = [];

  find(offset: number): BlockExtent | undefined {
    const xs = this.#extents;
    let lo = 0;
    let hi = xs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const e = xs[mid]!;
      if (offset < e.offset) hi = mid - 1;
      else if (offset >= e.offset + e.length) lo = mid + 1;
      else return e;
    }
    return undefined;
  }

  add(e: BlockExtent): void {
    if (e.length <= 0) return;
    // The newer answer replaces what it overlaps; neighbours it continues merge with it.
    const xs = this.#extents.filter(
      (x) => x.offset + x.length <= e.offset || x.offset >= e.offset + e.length,
    );
    xs.push(e);
    xs.sort((a, b) => a.offset - b.offset);
    const out: BlockExtent[] = [];
    for (const x of xs) {
      const last = out[out.length - 1];
      if (last && continues(last, x))
        out[out.length - 1] = { ...last, length: last.length + x.length };
      else out.push(x);
    }
    // Bounded: keep the extents nearest the newest answer.
    if (out.length > MAX_CACHED) {
      out.sort((a, b) => Math.abs(a.offset - e.offset) - Math.abs(b.offset - e.offset));
      out.length = MAX_CACHED;
      out.sort((a, b) => a.offset - b.offset);
    }
    this.#extents = out;
  }

  clear(): void {
    this.#extents = [];
  }
}

const MAX_CACHED = 64;

/** Whether `b` starts where `a` ends and reads the same way (one extent could describe both). */
function continues(a: BlockExtent, b: BlockExtent): boolean {
  return (
    a.offset + a.length === b.offset &&
    a.allocated === b.allocated &&
    a.data === b.data &&
    a.zero === b.zero &&
    a.depth === b.depth &&
    a.file === b.file &&
    a.compressed === b.compressed &&
    (a.hostOffset === undefined
      ? b.hostOffset === undefined
      : b.hostOffset === a.hostOffset + a.length)
  );
}
