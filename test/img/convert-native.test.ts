// The native copy loop for raw file targets (src/img/convert/native-copy.ts,
// native/copychunks.c). What must hold: the native threads really are what copies (the
// sources' read() and the target's write() are made to fail); the target's bytes and sparse
// layout are those of the JavaScript copy loop (qemu-img's run splitting, several -S sizes);
// chunks that cannot be mapped, and chunks the native loop fails on, are copied the ordinary
// way; Ctrl-C ends the queued native work, and the next copy still works; and the loop is
// chosen only where it may be.
import { readFileSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { constants } from 'node:os';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/device.js';
import { nativeFileOps } from '../../src/block/native.js';
import type { ReserveAheadOptions } from '../../src/block/reserve-ahead.js';
import { LeakyBucket } from '../../src/core/index.js';
import { createImage } from '../../src/image/create.js';
import { openImage } from '../../src/image/open.js';
import { runCopy, type CopyPlan, type CopyResume } from '../../src/img/convert/copy.js';
import { nativeCopyTarget, runNativeCopy } from '../../src/img/convert/native-copy.js';
import { pseudoRandom } from '../support/imgops-matrix.js';
import { rawCopyPlan, rawLayout, withNewRawTarget } from '../support/copy-plan.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const SECTOR = 512;
const native = nativeFileOps();
const available = Boolean(native?.copyChunks);
if (process.env['VMFORGE_REQUIRE_TOOLS'] === '1' && !available) {
  throw new Error('the native helper with copyChunks() is required (VMFORGE_REQUIRE_TOOLS=1)');
}

/** 6 MiB + 512: random runs, zero gaps of several sizes around -S, single bytes, zeros. */
function sourceBytes(): Buffer {
  const b = Buffer.alloc(6 * MiB + SECTOR);
  pseudoRandom(21, MiB).copy(b, 0);
  pseudoRandom(22, MiB).copy(b, 2 * MiB);
  // Zero gaps of 512 B, 2 KiB, 3.5 KiB (unaligned), 4 KiB, 8 KiB and 12 KiB in the data.
  let at = 2 * MiB + 4096;
  for (const gap of [512, 2048, 3584, 4096, 8192, 12288]) {
    b.fill(0, at + 1536, at + 1536 + gap);
    at += 64 * 1024;
  }
  // 3 MiB..5 MiB: zeros with a lone non-zero byte in the middle of a sector every 256 KiB.
  for (let o = 3 * MiB + 300; o < 5 * MiB; o += 256 * 1024) b[o] = 0x5a;
  pseudoRandom(23, MiB).copy(b, 5 * MiB);
  b[6 * MiB + 17] = 1; // the last sector
  return b;
}

/** st_blocks once written back (reserved space counts in full, delayed allocation not yet). */
async function settledBlocks(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    await fh.datasync();
    return (await fh.stat()).blocks;
  } finally {
    await fh.close();
  }
}

interface CopyOptions {
  /** Tamper with the opened source (and target) before the copy. */
  prepare?: (source: BlockDevice, target: BlockDevice) => void;
  /** The JavaScript loop instead of the native one. */
  js?: boolean;
  minSparse?: number;
  change?: (p: CopyPlan) => void;
}

/**
 * Copy `src` to a new raw file `out`, as convert does (the native loop, then runCopy() from
 * where it hands over, if it does); resolves with that hand-over point.
 */
async function copyTo(
  src: string,
  format: 'raw' | 'qcow2',
  out: string,
  o: CopyOptions = {},
): Promise<CopyResume | undefined> {
  // Space reserved ahead as convert does (src/img/convert/index.ts), in small spans.
  const reserveAhead: ReserveAheadOptions = {
    span: MiB,
    maxSpan: 8 * MiB,
    unallocatedFrom: 0,
    fill: [[0, 4096]],
  };
  return withNewRawTarget(
    src,
    format,
    out,
    async (source, target) => {
      o.prepare?.(source, target);
      const p = rawCopyPlan(source, target, o.minSparse);
      o.change?.(p);
      if (o.js) {
        await runCopy(p, 0);
        return undefined;
      }
      const direct = nativeCopyTarget(p);
      if (!direct) throw new Error('the native loop was not chosen');
      const resume = await runNativeCopy(p, direct, 0);
      if (resume) await runCopy(p, 0, resume);
      return resume;
    },
    reserveAhead,
  );
}

const failReads = (dev: BlockDevice) => {
  dev.read = () => Promise.reject(new Error('read() used although the chunk was mappable'));
};
const failWrites = (dev: BlockDevice) => {
  dev.write = () => Promise.reject(new Error('write() used although the native loop copies'));
};

describe.runIf(available)('the native copy loop for raw targets', () => {
  // The pipeline's threads end with each copy; the direct calls below leave them running.
  afterEach(() => native?.releaseCopyBuffers?.());

  for (const minSparse of [1, 8, 16]) {
    it(`-S ${minSparse * SECTOR}: the bytes, and the holes, of the JavaScript loop`, async () => {
      const dir = await tempDir();
      const src = join(dir, 'src.raw');
      const bytes = sourceBytes();
      writeFileSync(src, bytes);
      const nat = join(dir, 'native.raw');
      const js = join(dir, 'js.raw');
      await copyTo(src, 'raw', nat, {
        minSparse,
        prepare: (s, t) => (failReads(s), failWrites(t)),
      });
      await copyTo(src, 'raw', js, { minSparse, js: true });
      expect(readFileSync(nat).equals(bytes)).toBe(true);
      expect(readFileSync(js).equals(bytes)).toBe(true);
      const runs = await rawLayout(nat);
      expect(runs).toEqual(await rawLayout(js));
      expect(runs.length).toBeGreaterThan(3); // zero runs did become holes
      expect(await settledBlocks(nat)).toBe(await settledBlocks(js));
    });
  }

  it('many calls: the bytes, the holes and the disk blocks of the JavaScript loop', async () => {
    // 48 MiB: three native calls and more, each with zero runs to give back.
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    const bytes = pseudoRandom(24, 48 * MiB);
    for (let o = 100 * 1024; o < bytes.length; o += 256 * 1024) bytes.fill(0, o, o + 12 * 1024);
    bytes.fill(0, 20 * MiB, 23 * MiB);
    writeFileSync(src, bytes);
    const nat = join(dir, 'native.raw');
    const js = join(dir, 'js.raw');
    await copyTo(src, 'raw', nat, { prepare: (s, t) => (failReads(s), failWrites(t)) });
    await copyTo(src, 'raw', js, { js: true });
    expect(readFileSync(nat).equals(bytes)).toBe(true);
    const runs = await rawLayout(nat);
    expect(runs).toEqual(await rawLayout(js));
    expect(runs.length).toBeGreaterThan(150);
    expect(await settledBlocks(nat)).toBe(await settledBlocks(js));
  });

  it('qcow2 source: mapped clusters natively, the chunks it cannot map by reading', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.qcow2');
    const bytes = sourceBytes();
    await createImage(src, { format: 'qcow2', size: bytes.length });
    const w = await openImage(src, { format: 'qcow2', readOnly: false });
    await w.write(bytes, 0);
    await w.close();
    const out = join(dir, 'out.raw');
    const js = join(dir, 'js.raw');
    const readAt: number[] = [];
    await copyTo(src, 'qcow2', js, { js: true });
    await copyTo(src, 'qcow2', out, {
      prepare: (s) => {
        // The chunk at 2 MiB is "not mappable" (as a compressed cluster would be): read.
        const fileRange = s.fileRange!.bind(s);
        s.fileRange = (offset, length) =>
          offset === 2 * MiB ? undefined : fileRange(offset, length);
        const read = s.read.bind(s);
        s.read = (buf, offset) => (readAt.push(offset), read(buf, offset));
      },
    });
    expect(readFileSync(out).equals(bytes)).toBe(true);
    expect(readAt).toEqual([2 * MiB]);
    expect(await rawLayout(out)).toEqual(await rawLayout(js));
    expect(await settledBlocks(out)).toBe(await settledBlocks(js));
  });

  it('unmappable chunks in a row: runCopy() takes over from there', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    const bytes = sourceBytes();
    writeFileSync(src, bytes);
    const out = join(dir, 'out.raw');
    const js = join(dir, 'js.raw');
    await copyTo(src, 'raw', js, { js: true });
    const resume = await copyTo(src, 'raw', out, {
      prepare: (s) => {
        // Only the first chunk is in a file (as an overlay over a backing file would be).
        const fileRange = s.fileRange!.bind(s);
        s.fileRange = (offset, length) => (offset === 0 ? fileRange(offset, length) : undefined);
      },
    });
    // The chunk at 2 MiB was copied by the loop, the one at 4 MiB handed over.
    expect(resume).toEqual({ sector: (4 * MiB) / SECTOR, done: (4 * MiB) / SECTOR });
    expect(readFileSync(out).equals(bytes)).toBe(true);
    expect(await rawLayout(out)).toEqual(await rawLayout(js));
    expect(await settledBlocks(out)).toBe(await settledBlocks(js));
  });

  it('a chunk the native loop cannot read is copied the ordinary way', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    const bytes = sourceBytes();
    writeFileSync(src, bytes);
    // A decoy file too short for the chunk: the native read comes up short (EIO).
    const short = join(dir, 'short');
    writeFileSync(short, Buffer.alloc(4096, 7));
    const out = join(dir, 'out.raw');
    const decoy = await openImage(short, { format: 'raw', readOnly: true });
    const readAt: number[] = [];
    try {
      await copyTo(src, 'raw', out, {
        prepare: (s) => {
          const fileRange = s.fileRange!.bind(s);
          s.fileRange = (offset, length) =>
            offset === 4 * MiB ? decoy.fileRange!(0, 4096) : fileRange(offset, length);
          const read = s.read.bind(s);
          s.read = (buf, offset) => (readAt.push(offset), read(buf, offset));
        },
      });
    } finally {
      await decoy.close();
    }
    expect(readFileSync(out).equals(bytes)).toBe(true);
    // That chunk and the rest of its batch; nothing before it.
    expect(readAt[0]).toBe(4 * MiB);
    expect(readAt.every((o) => o >= 4 * MiB)).toBe(true);
  });

  it('hands everything to runCopy() when the first data chunk is not in a file (NBD)', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    const bytes = sourceBytes();
    writeFileSync(src, bytes);
    const out = join(dir, 'out.raw');
    const resume = await copyTo(src, 'raw', out, {
      prepare: (s) => (s.fileRange = () => undefined),
    });
    expect(resume).toEqual({ sector: 0, done: 0 });
    expect(readFileSync(out).equals(bytes)).toBe(true);
  });

  it('copyChunks() reports a failed chunk instead of copying it, and checks its arguments', async () => {
    const dir = await tempDir();
    const srcPath = join(dir, 'src');
    writeFileSync(srcPath, Buffer.alloc(8192, 1));
    const src = await openImage(srcPath, { format: 'raw', readOnly: true });
    const dstPath = join(dir, 'dst');
    writeFileSync(dstPath, Buffer.alloc(0));
    const dst = await openImage(dstPath, { format: 'raw', readOnly: false });
    try {
      const srcFd = (await src.fileRange!(0, 8192))!.fd;
      const dstFd = dst.directWriteTarget!()!.fd;
      // Chunk 0 reads fine; chunk 1 lies past the source's end.
      const chunks = Float64Array.of(0, 4096, srcFd, 0, 4096, 8192, srcFd, 4096);
      const r = await native!.copyChunks!(dstFd, 16384, chunks, 8, 8);
      expect([...r.subarray(0, 3)]).toEqual([1, constants.errno.EIO, 1]);
      expect(
        readFileSync(dstPath)
          .subarray(0, 4096)
          .every((x) => x === 1),
      ).toBe(true);
      expect(() => native!.copyChunks!(dstFd, 16384, Float64Array.of(1, 512, 0, 0), 8, 8)).toThrow(
        /bad chunk/,
      );
      expect(() => native!.copyChunks!(dstFd, 16384, new Float64Array(3), 8, 8)).toThrow(
        /bad arguments/,
      );
      expect(() => native!.copyChunks!(dstFd, 16384, chunks, 8, 3)).toThrow(/bad arguments/);
    } finally {
      await src.close();
      await dst.close();
    }
  });

  it("a failed write is reported, and its chunk's zero runs are not", async () => {
    const dir = await tempDir();
    const srcPath = join(dir, 'src');
    const data = Buffer.alloc(1 * MiB);
    data.fill(1, 0, 4096);
    data.fill(2, 512 * 1024); // zeros between: a run to leave out
    writeFileSync(srcPath, data);
    const src = await openImage(srcPath, { format: 'raw', readOnly: true });
    const dstPath = join(dir, 'dst');
    writeFileSync(dstPath, Buffer.alloc(0));
    const fh = await open(dstPath, 'r'); // read-only: pwrite() fails with EBADF
    try {
      const srcFd = (await src.fileRange!(0, MiB))!.fd;
      const r = await native!.copyChunks!(fh.fd, MiB, Float64Array.of(0, MiB, srcFd, 0), 8, 8);
      expect([...r]).toEqual([0, constants.errno.EBADF, 2]);
    } finally {
      await fh.close();
      await src.close();
    }
  });

  it('cancelCopyChunks() ends a queued copy after its current chunk', async () => {
    const dir = await tempDir();
    const srcPath = join(dir, 'src');
    writeFileSync(srcPath, pseudoRandom(32, 32 * MiB));
    const src = await openImage(srcPath, { format: 'raw', readOnly: true });
    const dstPath = join(dir, 'dst');
    writeFileSync(dstPath, Buffer.alloc(0));
    const fh = await open(dstPath, 'r+');
    try {
      const srcFd = (await src.fileRange!(0, MiB))!.fd;
      // 32 chunks of 1 MiB, many times over: far more than can be copied before the cancel.
      const chunks: number[] = [];
      for (let round = 0; round < 8; round++) {
        for (let i = 0; i < 32; i++) chunks.push(i * MiB, MiB, srcFd, i * MiB);
      }
      const copy = native!.copyChunks!(fh.fd, 32 * MiB, Float64Array.from(chunks), 8, 8);
      native!.cancelCopyChunks!(fh.fd);
      const r = await copy;
      expect(r[0]).toBeLessThan(chunks.length / 4);
      expect(r[1]).toBe(constants.errno.ECANCELED);
    } finally {
      native!.releaseCopyBuffers!();
      await fh.close();
      await src.close();
    }
  });

  it('a worker thread ended mid-copy: its queued work stops, the process and the next copy go on', async () => {
    const dir = await tempDir();
    const srcPath = join(dir, 'src');
    writeFileSync(srcPath, pseudoRandom(33, 32 * MiB));
    const addon = join(process.cwd(), 'build/Release/vmforge_native.node');
    const worker = new Worker(
      `const { parentPort, workerData: w } = require('node:worker_threads');
       const fs = require('node:fs');
       const native = require(w.addon);
       const src = fs.openSync(w.src, 'r');
       const dst = fs.openSync(w.dst, 'w');
       const chunks = [];
       for (let round = 0; round < 16; round++)
         for (let i = 0; i < 32; i++) chunks.push(i * 1048576, 1048576, src, i * 1048576);
       native.copyChunks(dst, 32 * 1048576, Float64Array.from(chunks), 8, 8);
       parentPort.postMessage('queued');`,
      { eval: true, workerData: { addon, src: srcPath, dst: join(dir, 'dst') } },
    );
    await new Promise((resolve) => worker.once('message', resolve));
    await worker.terminate(); // its environment's cleanup cancels the job and waits for it
    const out = join(dir, 'after.raw');
    const bytes = sourceBytes();
    writeFileSync(join(dir, 'src.raw'), bytes);
    await copyTo(join(dir, 'src.raw'), 'raw', out);
    expect(readFileSync(out).equals(bytes)).toBe(true);
  });

  it('Ctrl-C ends the queued native work; the next copy works', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    const big = pseudoRandom(31, 64 * MiB);
    writeFileSync(src, big);
    const abort = new AbortController();
    let reports = 0;
    const copy = copyTo(src, 'raw', join(dir, 'aborted.raw'), {
      change: (p) => {
        p.signal = abort.signal;
        p.onProgress = () => {
          if (++reports === 1) abort.abort();
        };
      },
    });
    await expect(copy).rejects.toThrow(/abort/i);
    expect(reports).toBeLessThan(32); // not every chunk
    const out = join(dir, 'after.raw');
    await copyTo(src, 'raw', out);
    expect(readFileSync(out).equals(big)).toBe(true);
  });

  it('is chosen only for a raw file target that reads as zeros, with -S, unmetered', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    writeFileSync(src, Buffer.alloc(MiB, 1));
    const source = await openImage(src, { format: 'raw', readOnly: true });
    const rawPath = join(dir, 'out.raw');
    const qcowPath = join(dir, 'out.qcow2');
    await createImage(rawPath, { format: 'raw', size: MiB });
    await createImage(qcowPath, { format: 'qcow2', size: MiB });
    const raw = await openImage(rawPath, { format: 'raw', readOnly: false });
    const qcow = await openImage(qcowPath, { format: 'qcow2', readOnly: false });
    try {
      const chosen = (change: (p: CopyPlan) => void, target: BlockDevice = raw) => {
        const p = rawCopyPlan(source, target);
        change(p);
        return nativeCopyTarget(p) !== undefined;
      };
      expect(chosen(() => undefined)).toBe(true);
      expect(chosen(() => undefined, qcow)).toBe(false);
      expect(chosen((p) => (p.minSparse = 0))).toBe(false); // -S 0 writes the zeros
      expect(chosen((p) => (p.hasZeroInit = false))).toBe(false); // -n: zeros must be written
      expect(chosen((p) => (p.compressed = true))).toBe(false);
      expect(chosen((p) => (p.throttle = new LeakyBucket(MiB)))).toBe(false); // -r
      expect(chosen((p) => (p.mapSources = false))).toBe(false);
    } finally {
      await raw.close();
      await qcow.close();
      await source.close();
    }
  });
});
