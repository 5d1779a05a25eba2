// The native copy loop into a new qcow2 file (src/img/convert/native-copy.ts chunkPlanner,
// Qcow2Device.planWrite, native/copychunks.c planned jobs). What must hold: the native threads
// really are what copies (the source's read() and the target's write() are made to fail);
// the file is byte for byte the one the JavaScript loop makes (clusters allocated in the same
// order, L2 tables and refcount blocks allocated mid-copy, copy-on-write parts with -S 512 and
// subclusters); chunks it cannot map are copied the ordinary way in guest order; a failed plan
// fails the copy, a failed native write is retried the ordinary way; Ctrl-C and a worker
// thread ended while chunks wait for their plans neither hang nor crash; planCopyChunk()
// checks what it is given; and the loop is chosen only for a target convert just created.
import { readFileSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BlockDevice, PlannedWriteTarget } from '../../src/block/device.js';
import { nativeFileOps, type NativeFileOps } from '../../src/block/native.js';
import { createImage } from '../../src/image/create.js';
import { openImage } from '../../src/image/open.js';
import { runCopy, type CopyPlan } from '../../src/img/convert/copy.js';
import { nativeCopyTarget, runNativeCopy } from '../../src/img/convert/native-copy.js';
import { pseudoRandom } from '../support/imgops-matrix.js';
import { rawCopyPlan, withNewQcow2Target } from '../support/copy-plan.js';
import { tempDir } from '../support/tmp.js';

// The native helper's exports are read-only; this file sees them through a pass-through object
// whose functions one test replaces (nativeOverrides: "results seen out of order").
const nativeOverrides = vi.hoisted(() => ({}) as Partial<NativeFileOps>);
vi.mock('../../src/block/native.js', async (importOriginal) => {
  const m = await importOriginal<{ nativeFileOps: typeof nativeFileOps }>();
  const real = m.nativeFileOps();
  const ops =
    real &&
    new Proxy({} as NativeFileOps, {
      get: (_t, key: keyof NativeFileOps) => nativeOverrides[key] ?? real[key],
      has: (_t, key) => key in nativeOverrides || key in real,
    });
  return { ...m, nativeFileOps: () => ops };
});

const MiB = 1024 * 1024;
const native = nativeFileOps();
const available = Boolean(native?.copyChunks && native.planCopyChunk);
if (process.env['VMFORGE_REQUIRE_TOOLS'] === '1' && !available) {
  throw new Error('the native helper with planCopyChunk() is required (VMFORGE_REQUIRE_TOOLS=1)');
}

/**
 * 40 MiB in 1 MiB stripes: random data; zeros (some with a lone byte every 200 KiB); random
 * data with zero gaps of 512 B to 68 KiB (around -S, inside and across clusters); zeros.
 */
function mixedSource(): Buffer {
  const b = Buffer.alloc(40 * MiB);
  for (let i = 0; i < 40; i++) {
    const at = i * MiB;
    if (i % 2 === 0) pseudoRandom(100 + i, MiB).copy(b, at);
    if (i % 4 === 2) {
      [512, 2048, 3584, 4096, 8192, 12288, 70000].forEach((gap, k) =>
        b.fill(0, at + k * 131072 + 1536, at + k * 131072 + 1536 + gap),
      );
    }
    if (i % 8 === 1) for (let o = at + 300; o < at + MiB; o += 200 * 1024) b[o] = 0x5a;
  }
  return b;
}

type CreateOptions = { clusterSize?: number; extendedL2?: boolean };

/** mixedSource() in `dir`/src.raw. */
function writeMixedSource(dir: string): { src: string; bytes: Buffer } {
  const src = join(dir, 'src.raw');
  const bytes = mixedSource();
  writeFileSync(src, bytes);
  return { src, bytes };
}

interface CopyOptions {
  create?: CreateOptions;
  minSparse?: number;
  /** The JavaScript loop instead of the native one. */
  js?: boolean;
  prepare?: (source: BlockDevice, target: BlockDevice) => void;
  change?: (p: CopyPlan) => void;
  /** Replace the planned target the loop gets (after the checks that chose it). */
  planned?: (t: PlannedWriteTarget) => PlannedWriteTarget;
}

/** Copy `src` to a new qcow2 `out` as convert does: the native loop, then runCopy() if asked. */
async function copyTo(src: string, format: 'raw' | 'qcow2', out: string, o: CopyOptions = {}) {
  await withNewQcow2Target(
    src,
    format,
    out,
    o.create ?? {},
    async (p, source, target) => {
      o.prepare?.(source, target);
      o.change?.(p);
      if (o.js) return runCopy(p, 0);
      const chosen = nativeCopyTarget(p);
      if (!chosen?.planned) throw new Error('the planned native loop was not chosen');
      const t = o.planned ? o.planned(chosen.target) : chosen.target;
      const resume = await runNativeCopy(p, { planned: true, target: t }, 0);
      if (resume) await runCopy(p, 0, resume);
    },
    o.minSparse,
  );
}

/** Guest bytes of a qcow2 file. */
async function guestBytes(path: string): Promise<Buffer> {
  const dev = await openImage(path, { format: 'qcow2', readOnly: true });
  try {
    const b = Buffer.alloc(dev.size);
    await dev.read(b, 0);
    return b;
  } finally {
    await dev.close();
  }
}

/**
 * copyTo() a new qcow2 `out` with a descriptor the native writer cannot write (a file opened
 * read-only: EBADF), so every batch fails natively and runCopy() writes what it copies.
 */
async function copyWithFailingNativeWrites(src: string, out: string, o: CopyOptions = {}) {
  const decoy = `${out}.decoy`;
  writeFileSync(decoy, Buffer.alloc(0));
  const readOnly = await open(decoy, 'r');
  try {
    await copyTo(src, 'raw', out, { ...o, planned: (t) => ({ ...t, fd: readOnly.fd }) });
  } finally {
    await readOnly.close();
  }
}

const failReads = (dev: BlockDevice) => {
  dev.read = () => Promise.reject(new Error('read() used although the chunk was mappable'));
};
const failWrites = (dev: BlockDevice) => {
  dev.write = () => Promise.reject(new Error('write() used although the native loop copies'));
};

describe.runIf(available)('the native copy loop for new qcow2 targets', () => {
  afterEach(() => native?.releaseCopyBuffers?.());

  const layouts: { name: string; create: CreateOptions; minSparse: number }[] = [
    { name: '64 KiB clusters, -S 4k', create: {}, minSparse: 8 },
    { name: '64 KiB clusters, -S 512 (copy-on-write parts)', create: {}, minSparse: 1 },
    {
      name: '4 KiB clusters (L2 tables and refcount blocks mid-copy)',
      create: { clusterSize: 4096 },
      minSparse: 8,
    },
    { name: '2 MiB clusters', create: { clusterSize: 2 * MiB }, minSparse: 8 },
    {
      name: 'extended L2, 64 KiB clusters, -S 512',
      create: { extendedL2: true },
      minSparse: 1,
    },
    {
      // 64 KiB subclusters: runs start and end inside subclusters another run allocated.
      name: 'extended L2, 2 MiB clusters, -S 4k',
      create: { clusterSize: 2 * MiB, extendedL2: true },
      minSparse: 8,
    },
  ];
  for (const { name, create, minSparse } of layouts) {
    it(`${name}: the file the JavaScript loop makes, byte for byte`, async () => {
      const dir = await tempDir();
      const { src, bytes } = writeMixedSource(dir);
      const js = join(dir, 'js.qcow2');
      const out = join(dir, 'out.qcow2');
      await copyTo(src, 'raw', js, { create, minSparse, js: true });
      await copyTo(src, 'raw', out, {
        create,
        minSparse,
        prepare: (s, t) => {
          failReads(s);
          failWrites(t);
        },
      });
      expect((await guestBytes(out)).equals(bytes)).toBe(true);
      expect(readFileSync(out).equals(readFileSync(js))).toBe(true);
    });
  }

  it('chunks it cannot map are copied by reading, in guest order', async () => {
    const dir = await tempDir();
    const { src } = writeMixedSource(dir);
    const js = join(dir, 'js.qcow2');
    const out = join(dir, 'out.qcow2');
    const readAt: number[] = [];
    await copyTo(src, 'raw', js, { js: true });
    await copyTo(src, 'raw', out, {
      prepare: (s) => {
        // Single chunks "not mappable" (as compressed clusters would be), between mapped ones.
        const fileRange = s.fileRange!.bind(s);
        s.fileRange = (offset, length) =>
          offset % (8 * MiB) === 4 * MiB ? undefined : fileRange(offset, length);
        const read = s.read.bind(s);
        s.read = (buf, offset) => (readAt.push(offset), read(buf, offset));
      },
    });
    expect(readAt).toEqual([4, 12, 20, 28, 36].map((m) => m * MiB));
    expect(readFileSync(out).equals(readFileSync(js))).toBe(true);
  });

  it('a planning error fails the copy with that error; the next copy works', async () => {
    const dir = await tempDir();
    const { src, bytes } = writeMixedSource(dir);
    let plans = 0;
    const failing = copyTo(src, 'raw', join(dir, 'failed.qcow2'), {
      planned: (t) => ({
        ...t,
        plan: (buf, offset, sink) =>
          ++plans === 3 ? Promise.reject(new Error('planning broke')) : t.plan(buf, offset, sink),
      }),
    });
    await expect(failing).rejects.toThrow('planning broke');
    const out = join(dir, 'out.qcow2');
    await copyTo(src, 'raw', out);
    expect((await guestBytes(out)).equals(bytes)).toBe(true);
  });

  it('chunks whose native writes fail are written the ordinary way', async () => {
    const dir = await tempDir();
    const { src, bytes } = writeMixedSource(dir);
    const out = join(dir, 'out.qcow2');
    let written = 0;
    await copyWithFailingNativeWrites(src, out, {
      prepare: (_s, t) => {
        const write = t.write.bind(t);
        t.write = (buf, offset) => ((written += buf.length), write(buf, offset));
      },
    });
    expect((await guestBytes(out)).equals(bytes)).toBe(true);
    expect(written).toBeGreaterThan(0);
  });

  it('native writes that fail, results seen out of order: the copy goes on from the first failed chunk', async () => {
    // Each call's completion comes through its own thread-safe function, and those can reach
    // JavaScript in either order. Here the first call's result is held back until the second
    // call's has arrived: the copy must still go on from the first call's failed chunk (it
    // went on from the second call's, and the first call's chunks were never written).
    const dir = await tempDir();
    const { src, bytes } = writeMixedSource(dir);
    const out = join(dir, 'out.qcow2');
    const real = native!.copyChunks!;
    let calls = 0;
    let releaseFirst = () => {};
    const secondArrived = new Promise<void>((resolve) => {
      releaseFirst = resolve;
      setTimeout(resolve, 2000); // never hang if there is no second call (asserted below)
    });
    nativeOverrides.copyChunks = (...args) => {
      const result = real(...args);
      if (++calls === 1) return result.then(async (r) => (await secondArrived, r));
      if (calls === 2) void result.then(() => setTimeout(releaseFirst, 10));
      return result;
    };
    try {
      await copyWithFailingNativeWrites(src, out);
    } finally {
      delete nativeOverrides.copyChunks;
    }
    expect(calls).toBeGreaterThanOrEqual(2);
    expect((await guestBytes(out)).equals(bytes)).toBe(true);
  });

  it('Ctrl-C while chunks are being planned: the copy stops; the next copy works', async () => {
    const dir = await tempDir();
    const { src, bytes } = writeMixedSource(dir);
    const abort = new AbortController();
    let plans = 0;
    const copy = copyTo(src, 'raw', join(dir, 'aborted.qcow2'), {
      change: (p) => (p.signal = abort.signal),
      planned: (t) => ({
        ...t,
        plan: (buf, offset, sink) => {
          if (++plans === 2) abort.abort();
          return t.plan(buf, offset, sink);
        },
      }),
    });
    await expect(copy).rejects.toThrow(/abort/i);
    const out = join(dir, 'out.qcow2');
    await copyTo(src, 'raw', out);
    expect((await guestBytes(out)).equals(bytes)).toBe(true);
  });

  it('a worker thread ended while its chunks wait for plans: no hang, the next copy works', async () => {
    const dir = await tempDir();
    const srcPath = join(dir, 'src');
    writeFileSync(srcPath, pseudoRandom(34, 16 * MiB));
    const addon = join(process.cwd(), 'build/Release/vmforge_native.node');
    const worker = new Worker(
      `const { parentPort, workerData: w } = require('node:worker_threads');
       const fs = require('node:fs');
       const native = require(w.addon);
       const src = fs.openSync(w.src, 'r');
       const dst = fs.openSync(w.dst, 'w');
       let asked = 0;
       // Planners that never answer: the first call's chunk waits for its plan, the later
       // calls' chunks wait in the ring behind it, and their cleanup hooks run first.
       for (const count of [1, 2, 2]) {
         const chunks = [];
         for (let i = 0; i < count; i++) chunks.push(i * 1048576, 1048576, src, i * 1048576);
         native.copyChunks(dst, 16 * 1048576, Float64Array.from(chunks), 8, 8, () => {
           if (++asked === 1) setTimeout(() => parentPort.postMessage('waiting'), 100);
         });
       }`,
      { eval: true, workerData: { addon, src: srcPath, dst: join(dir, 'dst') } },
    );
    await new Promise((resolve) => worker.once('message', resolve));
    await worker.terminate(); // its environment's cleanup fails the jobs and frees the ring
    const { src, bytes } = writeMixedSource(dir);
    const out = join(dir, 'out.qcow2');
    await copyTo(src, 'raw', out);
    expect((await guestBytes(out)).equals(bytes)).toBe(true);
  });

  it('planCopyChunk(): writes from the chunk and from `extra`; no plan, a bad plan and a late one', async () => {
    const dir = await tempDir();
    const srcPath = join(dir, 'src');
    writeFileSync(srcPath, Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(4096, 2)]));
    const dstPath = join(dir, 'dst');
    writeFileSync(dstPath, Buffer.alloc(0));
    const src = await openImage(srcPath, { format: 'raw', readOnly: true });
    const fh = await open(dstPath, 'r+');
    try {
      const srcFd = (await src.fileRange!(0, 8192))!.fd;
      const chunks = Float64Array.of(0, 4096, srcFd, 0, 4096, 4096, srcFd, 4096);
      const asked: number[][] = [];
      let late: [number, number] | undefined;
      const r = await native!.copyChunks!(fh.fd, 8192, chunks, 8, 8, (slot, gen, chunk, runs) => {
        asked.push([chunk, ...runs]);
        late = [slot, gen];
        if (chunk === 0) {
          native!.planCopyChunk!(slot, gen, Float64Array.of(8192, 4096, 0, 0), null);
        } else {
          // Two contiguous writes (one pwritev): 512 bytes of `extra`, then the chunk's rest.
          const writes = Float64Array.of(0, 512, 1, 0, 512, 3584, 0, 512);
          native!.planCopyChunk!(slot, gen, writes, new Uint8Array(512).fill(7));
        }
      });
      expect([...r]).toEqual([2, 0, 0]);
      expect(asked).toEqual([
        [0, 0, 8],
        [1, 0, 8],
      ]);
      const out = readFileSync(dstPath);
      expect(out.subarray(0, 512).every((x) => x === 7)).toBe(true);
      expect(out.subarray(512, 4096).every((x) => x === 2)).toBe(true);
      expect(out.subarray(8192, 12288).every((x) => x === 1)).toBe(true);
      // A late answer for a chunk already written is ignored.
      native!.planCopyChunk!(late![0], late![1], Float64Array.of(0, 4096, 0, 0), null);
      expect(
        readFileSync(dstPath)
          .subarray(0, 512)
          .every((x) => x === 7),
      ).toBe(true);

      const noPlan = await native!.copyChunks!(fh.fd, 8192, chunks, 8, 8, (slot, gen) =>
        native!.planCopyChunk!(slot, gen, null, null),
      );
      expect([...noPlan]).toEqual([0, constants.errno.ECANCELED, 3]);

      const errors: unknown[] = [];
      const badPlan = await native!.copyChunks!(fh.fd, 8192, chunks, 8, 8, (slot, gen) => {
        try {
          // Past the chunk's 4096 bytes.
          native!.planCopyChunk!(slot, gen, Float64Array.of(0, 4096, 0, 512), null);
        } catch (err) {
          errors.push(err);
        }
      });
      expect([...badPlan]).toEqual([0, constants.errno.ECANCELED, 3]);
      expect(String(errors[0])).toMatch(/RangeError: planCopyChunk: bad write/);
      expect(() => native!.planCopyChunk!(0, 0, new Float64Array(3), null)).toThrow(
        /bad arguments/,
      );
    } finally {
      await fh.close();
      await src.close();
    }
  });

  it('is chosen only for a qcow2 file target this convert created, with nothing allocated', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    writeFileSync(src, Buffer.alloc(MiB, 1));
    const source = await openImage(src, { format: 'raw', readOnly: true });
    const plain = join(dir, 'plain.qcow2');
    const backed = join(dir, 'backed.qcow2');
    await createImage(plain, { format: 'qcow2', size: MiB });
    await createImage(backed, {
      format: 'qcow2',
      size: MiB,
      backingFile: src,
      backingFormat: 'raw',
    });
    const qcow = await openImage(plain, { format: 'qcow2', readOnly: false });
    const overlay = await openImage(backed, { format: 'qcow2', readOnly: false });
    const readOnly = await openImage(plain, { format: 'qcow2', readOnly: true });
    try {
      const chosen = (target: BlockDevice, change: (p: CopyPlan) => void = () => undefined) => {
        const p = { ...rawCopyPlan(source, target), freshTarget: true };
        change(p);
        return nativeCopyTarget(p);
      };
      expect(chosen(qcow)?.planned).toBe(true);
      expect(chosen(qcow, (p) => (p.freshTarget = false))).toBeUndefined(); // -n, preallocation
      expect(chosen(qcow, (p) => (p.hasZeroInit = false))).toBeUndefined();
      expect(chosen(qcow, (p) => (p.compressed = true))).toBeUndefined();
      expect(chosen(overlay)).toBeUndefined(); // a backing file
      expect(chosen(readOnly)).toBeUndefined();
    } finally {
      await qcow.close();
      await overlay.close();
      await readOnly.close();
      await source.close();
    }
  });
});
