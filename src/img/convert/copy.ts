// The copy engine of qemu-img convert (qemu-img.c convert_do_copy / convert_co_do_copy):
// a cursor over the concatenated sources hands out chunks classified by block status; up to
// `workers` chunks are read (and compressed) concurrently; writes happen in order unless
// `outOfOrder`, so the target's layout is deterministic and matches qemu-img's.

import type { BlockDevice, FileRange } from '../../block/device.js';
import { allocIoBuffer } from '../../block/io-buffer.js';
import {
  bufferView,
  isZero,
  isZeroRange,
  throwIfAborted,
  type LeakyBucket,
} from '../../core/index.js';
import type { Qcow2Device } from '../../qcow2/qcow2-device.js';
import { compressClusterAsync } from '../../qcow2/compression.js';
import { nativeFileOps } from '../../block/native.js';

const SECTOR = 512;
/** BDRV_REQUEST_MAX_SECTORS (INT_MAX / 512, aligned down to the max alignment). */
const REQUEST_MAX_SECTORS = Math.floor(0x7fffffff / 512 / 8) * 8;

export type ChunkStatus = 'data' | 'zero' | 'backing';

export interface CopyPlan {
  sources: BlockDevice[];
  /** Sector counts of each source (ceil(size / 512)). */
  sourceSectors: number[];
  /** Per-source block-status alignment in sectors (max of request alignment and cluster size). */
  sourceAlignment: number[];
  target: BlockDevice;
  totalSectors: number;
  /** -S in sectors (0 = write everything, even zeros). */
  minSparse: number;
  /** Write-request alignment in sectors (avoid read-modify-write in the target). */
  alignment: number;
  /** Chunk size for data in sectors. */
  bufSectors: number;
  /** The target has a backing file: unallocated source ranges stay unallocated. */
  targetHasBacking: boolean;
  /** Sectors of the target's backing file (-1 unknown). Beyond it zeros must be written. */
  targetBackingSectors: number;
  /** The target reads as zeros already: zero ranges need no writes. */
  hasZeroInit: boolean;
  /**
   * The target was created by this convert and nothing in it is allocated yet (no
   * preallocation): a qcow2 target's writes then never copy data from its file, so the native
   * copy loop may make them (src/img/convert/native-copy.ts).
   */
  freshTarget?: boolean | undefined;
  compressed: boolean;
  clusterSectors: number;
  workers: number;
  inOrder: boolean;
  /** Copy unreadable sectors as zeros with a warning (--salvage). */
  salvage: boolean;
  /**
   * Map data chunks of file-backed sources instead of reading them (mapChunk), when the native
   * helper can. Not for -c: compression reads the bytes in JavaScript.
   */
  mapSources?: boolean | undefined;
  onWarning?: ((message: string) => void) | undefined;
  /** -r: the target's write throttle (bytes of write and zero-write requests per second). */
  throttle?: LeakyBucket | undefined;
  /** Called with (done, total) sectors of data written. */
  onProgress?: ((done: number, total: number) => void) | undefined;
  signal?: AbortSignal | undefined;
}

export interface CursorState {
  sectorNum: number;
  nextStatusSector: number;
  status: ChunkStatus;
}

function selectPart(plan: CopyPlan, sector: number): { index: number; offset: number } {
  let index = 0;
  let offset = 0;
  while (sector - offset >= plan.sourceSectors[index]!) {
    offset += plan.sourceSectors[index]!;
    index++;
  }
  return { index, offset };
}

/**
 * convert_iteration_sectors(): how many sectors from `sector` share one status, and which.
 * Mutates `st` (the status cache) exactly as QEMU does.
 */
export async function iterationSectors(
  plan: CopyPlan,
  st: CursorState,
  sector: number,
): Promise<number> {
  const { index, offset: partOffset } = selectPart(plan, sector);
  let n = Math.min(plan.totalSectors - sector, REQUEST_MAX_SECTORS);
  let postBackingZero = false;
  if (plan.targetBackingSectors >= 0) {
    if (sector >= plan.targetBackingSectors) postBackingZero = true;
    else if (sector + n > plan.targetBackingSectors) n = plan.targetBackingSectors - sector;
  }
  if (st.nextStatusSector <= sector) {
    const src = plan.sources[index]!;
    const byteOffset = (sector - partOffset) * SECTOR;
    const count = Math.min(n * SECTOR, src.size - byteOffset);
    let status: ChunkStatus;
    let bytes: number;
    if (count <= 0) {
      // The partial last sector of a source whose size is not a multiple of 512.
      status = 'data';
      bytes = SECTOR;
    } else {
      const [e] = await src.blockStatus(byteOffset, count, { maxExtents: 1 });
      if (!e) throw new Error(`internal error: no block status at ${byteOffset}`);
      bytes = e.length;
      // bdrv_block_status_above(src, base): with a target backing file the base is the
      // source's own backing file, so only this layer's allocation counts.
      const aboveBase = !plan.targetHasBacking || e.depth === 0;
      if (aboveBase && e.zero) status = postBackingZero ? 'backing' : 'zero';
      else if (aboveBase && e.data) status = 'data';
      else status = plan.targetHasBacking ? 'backing' : 'data';
    }
    n = Math.ceil(bytes / SECTOR);
    // Keep the next status query aligned to the source's cluster size (avoid re-reading).
    const tail = (sector - partOffset + n) % plan.sourceAlignment[index]!;
    if (n > tail) n -= tail;
    st.status = status;
    st.nextStatusSector = sector + n;
  }
  n = Math.min(n, st.nextStatusSector - sector);
  if (st.status === 'data') n = Math.min(n, plan.bufSectors);
  if (plan.compressed) {
    // Compressed writes are whole clusters.
    if (n < plan.clusterSectors) {
      n = Math.min(plan.clusterSectors, plan.totalSectors - sector);
      st.status = 'data';
    } else {
      n = Math.floor(n / plan.clusterSectors) * plan.clusterSectors;
    }
  }
  return n;
}

/** First allocation pass (for progress): how many sectors hold data to copy. */
export async function countAllocated(plan: CopyPlan): Promise<number> {
  const st: CursorState = { sectorNum: 0, nextStatusSector: 0, status: 'data' };
  let allocated = 0;
  for (let sector = 0; sector < plan.totalSectors;) {
    throwIfAborted(plan.signal);
    const n = await iterationSectors(plan, st, sector);
    if (st.status === 'data' || (!plan.minSparse && st.status === 'zero')) allocated += n;
    sector += n;
  }
  return allocated;
}

/** Read guest sectors across concatenated sources (convert_co_read), salvaging if asked. */
async function readSectors(
  plan: CopyPlan,
  sector: number,
  count: number,
  buf: Uint8Array,
): Promise<void> {
  let pos = 0;
  while (count > 0) {
    const { index, offset } = selectPart(plan, sector);
    const src = plan.sources[index]!;
    const n = Math.min(count, plan.sourceSectors[index]! - (sector - offset));
    const byteOffset = (sector - offset) * SECTOR;
    const readable = Math.max(0, Math.min(n * SECTOR, src.size - byteOffset));
    const dst = buf.subarray(pos, pos + n * SECTOR);
    try {
      if (readable > 0) await src.read(dst.subarray(0, readable), byteOffset);
      dst.fill(0, readable);
    } catch (err) {
      if (!plan.salvage) throw err;
      // Retry sector by sector; unreadable sectors become zeros.
      for (let s = 0; s < n; s++) {
        const one = dst.subarray(s * SECTOR, (s + 1) * SECTOR);
        const at = byteOffset + s * SECTOR;
        const len = Math.max(0, Math.min(SECTOR, src.size - at));
        try {
          if (len > 0) await src.read(one.subarray(0, len), at);
          one.fill(0, len);
        } catch (e) {
          one.fill(0);
          plan.onWarning?.(`error while reading offset ${at}: ${(e as Error).message}`);
        }
      }
    }
    sector += n;
    count -= n;
    pos += n * SECTOR;
  }
}

/**
 * Where a source chunk lies in a host file, mapped (native/mapread.c): a pool thread faults its
 * pages in and marks its all-zero sectors, and the target is written straight from the pages.
 * That saves read()'s copy of every byte, a third of the copy time of raw -> qcow2 on a
 * memory-bound 2-core machine (docs/img-convert.md). undefined when the chunk is not one
 * mappable range of one source file (qcow2 clusters not contiguous, compressed or in a backing
 * file; NBD; the partial last sector; an older native helper): the caller reads it.
 */
async function mapChunk(
  plan: CopyPlan,
  sector: number,
  count: number,
  zeroMap: Uint8Array,
): Promise<Uint8Array | undefined> {
  const native = nativeFileOps();
  if (!native?.mapRead) return undefined;
  const range = await chunkFileRange(plan, sector, count);
  if (!range) return undefined;
  return native.mapRead(range.fd, range.offset, count * SECTOR, plan.minSparse ? zeroMap : null);
}

/**
 * Where the chunk's sectors lie as one range of one source's host file (BlockDevice.fileRange),
 * or undefined: the chunk is then read the ordinary way, which also reports any error.
 */
export async function chunkFileRange(
  plan: CopyPlan,
  sector: number,
  count: number,
): Promise<FileRange | undefined> {
  const { index, offset } = selectPart(plan, sector);
  const src = plan.sources[index]!;
  const byteOffset = (sector - offset) * SECTOR;
  const length = count * SECTOR;
  if (!src.fileRange || byteOffset + length > src.size) return undefined;
  try {
    return await src.fileRange(byteOffset, length);
  } catch {
    return undefined; // the ordinary read reports it (or salvages)
  }
}

/**
 * A chunk as bytes (for memcmp) and as 32-bit words (chunk buffers are 4-byte aligned), or, for
 * a mapped chunk, only its zero map (one byte per sector, 1 = all zeros): JavaScript never
 * reads a mapping (see mapChunk).
 */
interface ChunkView {
  bytes: Buffer;
  words: Int32Array;
  zeroMap?: Uint8Array | undefined;
}

function chunkView(buf: Uint8Array, zeroMap?: Uint8Array): ChunkView {
  if (zeroMap) return { bytes: Buffer.alloc(0), words: new Int32Array(0), zeroMap };
  return {
    bytes: bufferView(buf),
    words: new Int32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2),
  };
}

/** The first sector in [from, to) whose zero-map byte is `value`, or `to`. */
function findInMap(map: Uint8Array, value: number, from: number, to: number): number {
  const i = map.indexOf(value, from);
  return i < 0 || i > to ? to : i;
}

/** Sectors per memcmp when skipping through a run of zeros. */
const ZERO_STRIDE = (64 * 1024) / SECTOR;

/** Whether sector `i` of the chunk is all zeros; data usually fails on its first word. */
function sectorIsZero(c: ChunkView, i: number): boolean {
  if (c.zeroMap) return c.zeroMap[i] === 1;
  const w = i * (SECTOR / 4);
  if (c.words[w] !== 0 || c.words[w + SECTOR / 4 - 1] !== 0) return false;
  return isZeroRange(c.bytes, i * SECTOR, (i + 1) * SECTOR);
}

/** The first sector in [from, to) that is not all zeros (or `to`), 64 KiB at a time first. */
function endOfZeros(c: ChunkView, from: number, to: number): number {
  if (c.zeroMap) return findInMap(c.zeroMap, 0, from, to);
  let s = from;
  while (to - s >= ZERO_STRIDE && isZeroRange(c.bytes, s * SECTOR, (s + ZERO_STRIDE) * SECTOR)) {
    s += ZERO_STRIDE;
  }
  while (s < to && sectorIsZero(c, s)) s++;
  return s;
}

/** The first sector in [from, to) that is all zeros (or `to`). */
function endOfData(c: ChunkView, from: number, to: number): number {
  if (c.zeroMap) return findInMap(c.zeroMap, 1, from, to);
  let s = from;
  while (s < to && !sectorIsZero(c, s)) s++;
  return s;
}

/**
 * is_allocated_sectors(): the length of the run starting at sector `first` of the chunk that is
 * all-zero or all non-zero (per 512-byte sector), adjusted so writes end on `alignment`
 * boundaries. `sector` is the guest sector of `first`.
 */
function allocatedRun(
  c: ChunkView,
  first: number,
  n: number,
  sector: number,
  alignment: number,
): { num: number; data: boolean } {
  if (n <= 0) return { num: 0, data: false };
  let zero = sectorIsZero(c, first);
  let i = (zero ? endOfZeros(c, first + 1, first + n) : endOfData(c, first + 1, first + n)) - first;
  if (i === n) return { num: i, data: !zero };
  const tail = (sector + i) & (alignment - 1);
  if (tail) {
    if (zero && i <= tail) zero = false;
    if (!zero) i = Math.min(i + alignment - tail, n);
    else i -= tail;
  }
  return { num: i, data: !zero };
}

/** is_allocated_sectors_min(): data unless a zero run of at least `min` sectors follows. */
function allocatedRunMin(
  c: ChunkView,
  first: number,
  n: number,
  min: number,
  sector: number,
  alignment: number,
): { num: number; data: boolean } {
  if (n < min) min = n;
  const head = allocatedRun(c, first, n, sector, alignment);
  if (!head.data) return head;
  let used = head.num;
  let checked = used;
  let rest = n - head.num;
  while (rest > 0) {
    const r = allocatedRun(c, first + checked, rest, sector + checked, alignment);
    rest -= r.num;
    checked += r.num;
    if (r.data) used = checked;
    else if (r.num >= min) break;
  }
  return { num: used, data: true };
}

/** One run of a chunk: `n` sectors, written as data or left as zeros/backing. */
interface Run {
  n: number;
  write: boolean;
}

/**
 * How convert_co_write() splits a chunk into data and zero runs (is_allocated_sectors_min with
 * -S). It depends only on the chunk's bytes, so it runs right after the read, while the chunk is
 * in the CPU cache and before the in-order wait: zero detection stays off the serialized write
 * path.
 */
function planRuns(
  plan: CopyPlan,
  sector: number,
  count: number,
  buf: Uint8Array,
  status: ChunkStatus,
  zeroMap?: Uint8Array,
): Run[] {
  if (status !== 'data' || !plan.minSparse) return [{ n: count, write: status === 'data' }];
  if (plan.compressed) return [{ n: count, write: !isZero(buf.subarray(0, count * SECTOR)) }];
  const view = chunkView(buf, zeroMap);
  const runs: Run[] = [];
  for (let first = 0; first < count;) {
    const r = allocatedRunMin(
      view,
      first,
      count - first,
      plan.minSparse,
      sector + first,
      plan.alignment,
    );
    runs.push({ n: r.num, write: r.data });
    first += r.num;
  }
  return runs;
}

/** convert_co_write(): write one chunk, run by run as planRuns() split it. */
async function writeChunk(
  plan: CopyPlan,
  sector: number,
  runs: Run[],
  buf: Uint8Array,
  status: ChunkStatus,
  compressed: Uint8Array | null | undefined,
): Promise<void> {
  const t = plan.target;
  for (const { n, write } of runs) {
    const bytes = buf.subarray(0, n * SECTOR); // empty for zero/backing chunks
    const offset = sector * SECTOR;
    // The target may end inside the last sector when sizes are not sector multiples.
    const len = Math.min(n * SECTOR, t.size - offset);
    const throttled = write || (status !== 'backing' && !plan.hasZeroInit);
    if (throttled) await plan.throttle?.take(len, plan.signal);
    if (write) {
      if (plan.compressed) {
        await (t as Qcow2Device).writeCompressed(bytes.subarray(0, len), offset, compressed);
      } else {
        await t.write(bytes.subarray(0, len), offset);
      }
    } else if (status !== 'backing' && !plan.hasZeroInit) {
      await t.writeZeroes(offset, len, { mayUnmap: true });
    }
    sector += n;
    if (buf.length) buf = buf.subarray(n * SECTOR);
  }
}

/**
 * One chunk the plain way, outside runCopy's workers: read it (data) into `buf`, split it into
 * runs and write them. For the native copy loop's chunks that it cannot map, or that failed.
 */
export async function copyChunkByReading(
  plan: CopyPlan,
  sector: number,
  n: number,
  status: ChunkStatus,
  buf: Uint8Array,
): Promise<void> {
  const data = status === 'data' ? buf.subarray(0, n * SECTOR) : new Uint8Array(0);
  if (status === 'data') await readSectors(plan, sector, n, data);
  const runs = planRuns(plan, sector, n, data, status);
  await writeChunk(plan, sector, runs, data, status, undefined);
}

/** Where a copy goes on from: the first sector not copied, and the data sectors copied. */
export interface CopyResume {
  sector: number;
  done: number;
}

/**
 * Run the copy (from `from`, where the native loop handed over). Resolves when every chunk is
 * written; rejects on the first error.
 */
export async function runCopy(
  plan: CopyPlan,
  allocatedTotal: number,
  from: CopyResume = { sector: 0, done: 0 },
): Promise<void> {
  const st: CursorState = { sectorNum: from.sector, nextStatusSector: 0, status: 'data' };
  let dispenser: Promise<unknown> = Promise.resolve();
  let failed: unknown;
  let done = from.done;
  // In-order writes: each chunk waits for the write of the chunk before it.
  let writeOffset = from.sector;
  const waiters = new Map<number, () => void>();
  const compressionType = plan.compressed
    ? ((plan.target as Qcow2Device).header?.compressionType ?? 0)
    : 0;

  const nextChunk = (): Promise<{ sector: number; n: number; status: ChunkStatus } | undefined> => {
    const p = dispenser.then(async () => {
      if (failed !== undefined || st.sectorNum >= plan.totalSectors) return undefined;
      let n = await iterationSectors(plan, st, st.sectorNum);
      const sector = st.sectorNum;
      const status = st.status;
      if (!plan.minSparse && status === 'zero') n = Math.min(n, plan.bufSectors);
      st.sectorNum += n;
      return { sector, n, status };
    });
    dispenser = p.catch(() => undefined);
    return p;
  };

  const worker = async (): Promise<void> => {
    // Each worker reuses one buffer, like QEMU's per-coroutine buffer: no GC churn.
    // Page-aligned: the kernel copies to and from it markedly faster (src/block/io-buffer.ts).
    let pool = allocIoBuffer(plan.bufSectors * SECTOR);
    const take = (bytes: number): Uint8Array => {
      if (pool.length < bytes) pool = allocIoBuffer(bytes);
      const b = pool.subarray(0, bytes);
      return b;
    };
    // One byte per sector of a mapped chunk (mapChunk); over 64 bytes, so off V8's heap.
    const zeroMap = new Uint8Array(Math.max(128, plan.bufSectors));
    for (;;) {
      if (failed !== undefined) return;
      throwIfAborted(plan.signal);
      const chunk = await nextChunk();
      if (!chunk) return;
      let { status } = chunk;
      const { sector, n } = chunk;
      let buf: Uint8Array = new Uint8Array(0);
      let compressed: Uint8Array | null | undefined;
      let mapped: Uint8Array | undefined;
      try {
        if (status === 'data') {
          mapped = plan.mapSources ? await mapChunk(plan, sector, n, zeroMap) : undefined;
          if (mapped) {
            buf = mapped;
          } else {
            buf = take(n * SECTOR);
            await readSectors(plan, sector, n, buf);
          }
          if (plan.compressed && !isZero(buf)) {
            const cluster =
              buf.length === plan.clusterSectors * SECTOR
                ? buf
                : padTo(buf, plan.clusterSectors * SECTOR);
            compressed = (await compressClusterAsync(compressionType, cluster)) ?? null;
          }
        } else if (!plan.minSparse && status === 'zero') {
          status = 'data';
          buf = take(n * SECTOR).fill(0);
        }
        if (failed !== undefined) return;
        const runs = planRuns(plan, sector, n, buf, status, mapped && zeroMap);
        if (plan.inOrder && writeOffset !== sector) {
          // Woken by the write before ours, or by wake() when another worker fails.
          await new Promise<void>((resolve) => waiters.set(sector, resolve));
        }
        if (failed !== undefined) return;
        throwIfAborted(plan.signal);
        await writeChunk(plan, sector, runs, buf, status, compressed);
      } finally {
        // Written (or failed): give the pages back now rather than at the next GC.
        if (mapped) nativeFileOps()?.unmap?.(mapped);
      }
      if (status === 'data') {
        done += n;
        plan.onProgress?.(done, allocatedTotal);
      }
      if (plan.inOrder) {
        writeOffset = sector + n;
        const next = waiters.get(writeOffset);
        if (next) {
          waiters.delete(writeOffset);
          next();
        }
      }
    }
  };

  const wake = () => {
    for (const w of waiters.values()) w();
    waiters.clear();
  };
  await Promise.all(
    Array.from({ length: plan.workers }, () =>
      worker().catch((err: unknown) => {
        if (failed === undefined) failed = err;
        wake();
      }),
    ),
  );
  // The last chunks' mappings wait for a next mapRead() that may never come in this process.
  if (plan.mapSources) nativeFileOps()?.flushUnmapped?.();
  if (failed !== undefined) throw failed;
}

function padTo(buf: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(buf);
  return out;
}
