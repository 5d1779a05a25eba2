// The copy loop for a raw or qcow2 file target: the chunks runCopy() would copy are handed to
// native/copychunks.c in batches; its two threads read them, split them into data and zero
// runs (-S) and write the data, with no JavaScript between the writes. On a 2-core machine
// that takes about a third off the copy (docs/img-convert.md). The cursor over the sources
// (block status, chunk sizes) and the run splitting are qemu-img's, as in runCopy(), so the
// target gets the same writes; only who performs them differs.
//
// A raw target's guest offsets are its file's offsets. A qcow2 target's are not: each chunk's
// data runs come back here once read, the qcow2 code plans their writes (allocating clusters,
// updating L2 tables and refcounts, exactly as its write() would; Qcow2Device.planWrite), and
// the native writer makes the data writes of the plan. Planning goes chunk by chunk in guest
// order, so the clusters are allocated in the order qemu-img allocates them.
//
// A chunk that is not one range of a source file (a compressed or backing-file cluster, the
// partial last sector) is copied the plain way (copyChunkByReading), as is any chunk the
// native loop fails on, which reports errors in qemu-img's words or salvages. A raw target's
// chunks are disjoint ranges of one file, so these may be written while native batches are
// still in flight; a qcow2 target's wait for them (allocation order). Where such chunks come
// in a row (NBD sources, an overlay flattened onto its backing file), runCopy(), which reads
// several at a time, takes over.

import { constants } from 'node:os';
import type { DataSink, DirectWriteTarget, PlannedWriteTarget } from '../../block/device.js';
import { allocIoBuffer } from '../../block/io-buffer.js';
import { nativeFileOps, type CopyChunkPlanner } from '../../block/native.js';
import { throwIfAborted } from '../../core/index.js';
import {
  chunkFileRange,
  copyChunkByReading,
  iterationSectors,
  type CopyPlan,
  type CopyResume,
  type CursorState,
} from './copy.js';

const SECTOR = 512;
/** Data bytes per native call: progress is reported as calls complete. */
const BATCH_BYTES = 16 * 1024 * 1024;
/**
 * Data bytes queued ahead of the writer. The native threads never wait for JavaScript (whose
 * thread competes with them for the cores) as long as this much is queued; Ctrl-C and a
 * failure cancel what is queued (cancelCopyChunks).
 */
const QUEUED_BYTES = 256 * 1024 * 1024;
/** Unmappable data chunks in a row after which runCopy() takes over. */
const UNMAPPABLE_RUN = 2;

/** The target as the native loop writes it: its file offsets, or planned (qcow2). */
export type NativeCopyTarget =
  { planned: false; target: DirectWriteTarget } | { planned: true; target: PlannedWriteTarget };

/**
 * The target the native loop can write, or undefined for runCopy(). Zero runs are left out, so
 * the target must read as zeros already (a file convert created, or --target-is-zero) with -S
 * on; -r meters every request, which only runCopy() does. A qcow2 target must be one this
 * convert created with nothing allocated (CopyPlan.freshTarget): its planned writes never
 * copy data from the file, which the native writer may not have written yet.
 */
export function nativeCopyTarget(plan: CopyPlan): NativeCopyTarget | undefined {
  if (!plan.mapSources || plan.compressed || !plan.minSparse || !plan.hasZeroInit) return undefined;
  if (plan.targetHasBacking || plan.throttle) return undefined;
  const native = nativeFileOps();
  if (!native?.copyChunks) return undefined;
  const direct = plan.target.directWriteTarget?.();
  if (direct) return { planned: false, target: direct };
  const planned =
    plan.freshTarget && native.planCopyChunk ? plan.target.plannedWriteTarget?.() : undefined;
  return planned ? { planned: true, target: planned } : undefined;
}

/**
 * Copy as runCopy() would, as far as the chunks can be mapped. Resolves undefined when the
 * copy is complete, or with where runCopy() is to go on: from the start, having written
 * nothing, when the first data chunk cannot be mapped; from a later chunk when several in a
 * row cannot (everything before it is written by then).
 */
export async function runNativeCopy(
  plan: CopyPlan,
  nativeTarget: NativeCopyTarget,
  allocatedTotal: number,
): Promise<CopyResume | undefined> {
  const native = nativeFileOps()!;
  const copyChunks = native.copyChunks!;
  const { target } = nativeTarget;
  let done = 0;
  const progress = (sectors: number) => {
    done += sectors;
    plan.onProgress?.(done, allocatedTotal);
  };
  // The first failure: the loop stops queuing, the queued native work is cancelled, nothing
  // more is retried, and this is what the copy rejects with.
  let failure: unknown;
  const cancel = () => native.cancelCopyChunks?.(target.fd);
  let buf: Uint8Array | undefined; // the loop's own; a failed batch's retries allocate theirs
  const copyByReading = async (sector: number, n: number, own?: Uint8Array) => {
    let b = own;
    if (!b) {
      if (!buf || buf.length < n * SECTOR)
        buf = allocIoBuffer(Math.max(n, plan.bufSectors) * SECTOR);
      b = buf;
    }
    await copyChunkByReading(plan, sector, n, 'data', b);
  };

  const failed = (err: unknown) => {
    if (failure === undefined) {
      failure = err;
      cancel();
    }
  };
  // A qcow2 target's first chunk the native side failed on (a read or write error, a source
  // that shrank): everything queued is cancelled and runCopy() goes on from there. Retrying
  // chunks while later ones are still planned and written could allocate in another order
  // than qemu-img, or let a later plan's copy-on-write zeros land over a retried chunk's data
  // in a cluster the two share.
  let handOver: number | undefined;
  const planner = nativeTarget.planned
    ? chunkPlanner(plan, nativeTarget.target, {
        failed,
        stopped: () =>
          failure !== undefined || handOver !== undefined || (plan.signal?.aborted ?? false),
      })
    : undefined;
  const check = () => {
    throwIfAborted(plan.signal);
    if (failure !== undefined) throw failure;
  };

  // A raw target's batch is announced before it is queued (which reserves space ahead); the
  // zero runs it left out are reported, then the batch is settled, so the reserved space it did
  // not use is given back as after plain writes. A qcow2 target's host writes are announced as
  // they are planned.
  const copyBatch = async (
    chunks: Float64Array,
    seq: number,
    before: Promise<unknown>,
  ): Promise<void> => {
    if (!nativeTarget.planned) {
      for (let i = 0; i < chunks.length; i += 4) {
        nativeTarget.target.announce(chunks[i]!, chunks[i]! + chunks[i + 1]!, seq);
      }
    }
    const result = await copyChunks(
      target.fd,
      target.size,
      chunks,
      plan.minSparse,
      plan.alignment,
      planner?.(chunks, seq),
    );
    // Results are taken in batch order. Each call's completion comes through its own
    // thread-safe function, and those can reach JavaScript out of order (libuv runs its async
    // handles one after another): a later batch's failure seen first made runCopy() go on from
    // there, and the earlier batch's failed chunks were never written (a qcow2 target), or
    // settled a later batch before an earlier one's zero runs were reported.
    await before;
    if (!nativeTarget.planned) nativeTarget.target.skipped(result.subarray(3));
    const copied = result[0]!;
    if (nativeTarget.planned && (copied < chunks.length / 4 || handOver !== undefined)) {
      // Batches settle in order: a later one's chunks are not counted (runCopy() copies them).
      if (handOver === undefined) {
        for (let i = 0; i < copied * 4; i += 4) progress(chunks[i + 1]! / SECTOR);
        handOver = chunks[copied * 4]! / SECTOR;
        cancel();
      }
      target.settle(seq);
      return;
    }
    if (copied < chunks.length / 4 && result[1] === constants.errno.ECANCELED) {
      check(); // aborted, or failing: the real reason
      throw new Error('copy cancelled');
    }
    let retryBuf: Uint8Array | undefined;
    for (let i = 0; i < chunks.length; i += 4) {
      const n = chunks[i + 1]! / SECTOR;
      if (i / 4 >= copied) {
        // Failed (or after the one that failed): the ordinary way says why, or succeeds.
        check();
        retryBuf ??= allocIoBuffer(plan.bufSectors * SECTOR);
        if (retryBuf.length < n * SECTOR) retryBuf = allocIoBuffer(n * SECTOR);
        await copyByReading(chunks[i]! / SECTOR, n, retryBuf);
      }
      progress(n);
    }
    target.settle(seq);
  };
  const runBatch = async (
    chunks: Float64Array,
    seq: number,
    before: Promise<unknown>,
  ): Promise<void> => {
    try {
      await copyBatch(chunks, seq, before);
    } catch (err) {
      failed(err);
      throw err;
    }
  };
  // Settled in order; the loop waits for the oldest when QUEUED_BYTES are queued.
  const running: { promise: Promise<void>; bytes: number }[] = [];
  let queuedBytes = 0;
  let batch: number[] = [];
  let batchBytes = 0;
  let batches = 0;
  let lastBatch: Promise<unknown> = Promise.resolve(); // settled when the newest batch's result is taken
  const waitOldest = async () => {
    const oldest = running.shift()!;
    queuedBytes -= oldest.bytes;
    await oldest.promise;
  };
  const queueBatch = async (): Promise<void> => {
    if (handOver !== undefined) [batch, batchBytes] = [[], 0]; // runCopy() copies those
    if (batch.length === 0) return;
    while (queuedBytes >= QUEUED_BYTES) await waitOldest();
    check();
    const promise = runBatch(Float64Array.from(batch), batches++, lastBatch);
    // The next batch waits on this one; its handler also keeps a rejection, awaited in turn
    // below, from counting as unhandled meanwhile.
    lastBatch = promise.catch(() => undefined);
    running.push({ promise, bytes: batchBytes });
    queuedBytes += batchBytes;
    batch = [];
    batchBytes = 0;
  };
  const drain = async () => {
    await queueBatch();
    while (running.length > 0) await waitOldest();
    check();
  };

  const st: CursorState = { sectorNum: 0, nextStatusSector: 0, status: 'data' };
  let finished = false;
  // Ctrl-C stops the queued native work at once, not when the loop next looks.
  plan.signal?.addEventListener('abort', cancel);
  try {
    let unmappable = 0;
    for (let sector = 0; sector < plan.totalSectors;) {
      check();
      if (handOver !== undefined) break;
      const n = await iterationSectors(plan, st, sector);
      // Zero and backing chunks need no write: the target reads as zeros and has no backing.
      if (st.status === 'data') {
        const range = await chunkFileRange(plan, sector, n);
        // A host offset past 2^53 (hostile metadata) is read the ordinary way: zeros, as QEMU.
        if (range && range.offset + n * SECTOR <= Number.MAX_SAFE_INTEGER) {
          unmappable = 0;
          batch.push(sector * SECTOR, n * SECTOR, range.fd, range.offset);
          batchBytes += n * SECTOR;
          // The first chunk goes at once: the pipeline starts while the rest are gathered.
          if (batchBytes >= BATCH_BYTES || running.length === 0) await queueBatch();
        } else if (++unmappable >= UNMAPPABLE_RUN || (batches === 0 && batch.length === 0)) {
          await drain();
          finished = true;
          return { sector: handOver ?? sector, done };
        } else {
          await queueBatch(); // announced in order, before this chunk's writes
          // A qcow2 target allocates in guest order, as qemu-img does.
          if (nativeTarget.planned) while (running.length > 0) await waitOldest();
          if (handOver !== undefined) break;
          await copyByReading(sector, n);
          progress(n);
        }
      }
      sector += n;
    }
    await drain();
    // A chunk's plan that ran late (its batch failed or was cancelled) has ended, and its
    // error, if any, is the copy's.
    await planner?.idle();
    check();
    finished = true;
    return handOver === undefined ? undefined : { sector: handOver, done };
  } finally {
    plan.signal?.removeEventListener('abort', cancel);
    // Never leave a native write running into a target the caller is about to close.
    if (!finished) cancel();
    await Promise.allSettled(running.map((r) => r.promise));
    // A cancelled chunk's plan may still be under way: done before the target is closed.
    await planner?.idle();
    native.releaseCopyBuffers?.();
  }
}

/**
 * The planner of a qcow2 target's batches (copyChunks' `planner`): each chunk's data runs are
 * planned as writeChunk() would write them (one write per run), one chunk at a time in the
 * order they come (guest order). The plan's parts that are the chunk's own bytes refer to the
 * native buffer (source 0); copy-on-write bytes (zeros, on a fresh image) travel with the plan
 * (source 1). A planning error fails the copy (`failed`) and the chunk gets no plan.
 */
function chunkPlanner(
  plan: CopyPlan,
  target: PlannedWriteTarget,
  failure: { failed(err: unknown): void; stopped(): boolean },
): { (chunks: Float64Array, seq: number): CopyChunkPlanner; idle(): Promise<void> } {
  const native = nativeFileOps()!;
  // Stands for a chunk's bytes, which stay in the native buffer: never read or written, so
  // its pages are never touched.
  const placeholder = new Uint8Array(plan.bufSectors * SECTOR);
  let queue: Promise<void> = Promise.resolve();

  const planChunk = async (guest: number, runs: Uint32Array, seq: number) => {
    const writes: number[] = [];
    const extras: Uint8Array[] = [];
    let extraBytes = 0;
    const sink: DataSink = (parts, host) => {
      let at = host;
      for (const part of parts) {
        if (part.buffer === placeholder.buffer) {
          writes.push(at, part.length, 0, part.byteOffset - placeholder.byteOffset);
        } else {
          writes.push(at, part.length, 1, extraBytes);
          extras.push(part);
          extraBytes += part.length;
        }
        at += part.length;
      }
      // Announced in the order the device's own writes (metadata) see them.
      target.announce(host, at, seq);
    };
    for (let r = 0; r < runs.length; r += 2) {
      const start = runs[r]! * SECTOR;
      const offset = guest + start;
      // The target may end inside the last sector (sizes that are not sector multiples).
      const length = Math.min(runs[r + 1]! * SECTOR, target.size - offset);
      if (length > 0) await target.plan(placeholder.subarray(start, start + length), offset, sink);
    }
    const extra = extraBytes ? new Uint8Array(extraBytes) : null;
    let at = 0;
    for (const part of extras) {
      extra!.set(part, at);
      at += part.length;
    }
    return { writes: Float64Array.from(writes), extra };
  };

  const forBatch =
    (chunks: Float64Array, seq: number): CopyChunkPlanner =>
    (slot, generation, chunk, runs) => {
      queue = queue.then(async () => {
        let planned: { writes: Float64Array; extra: Uint8Array | null } | undefined;
        try {
          // After a failure or Ctrl-C nothing more is planned: the copy is ending.
          if (!failure.stopped()) planned = await planChunk(chunks[chunk * 4]!, runs, seq);
        } catch (err) {
          failure.failed(err);
        }
        try {
          native.planCopyChunk!(slot, generation, planned?.writes ?? null, planned?.extra ?? null);
        } catch (err) {
          failure.failed(err); // a plan the native side refused (a bug): the chunk fails with it
        }
      });
    };
  return Object.assign(forBatch, { idle: () => queue });
}
