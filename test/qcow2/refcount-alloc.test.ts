// Cluster allocation (QEMU's alloc_clusters_noref and qcow2_alloc_clusters_at): the search
// looks up each refcount block once for a run of clusters instead of each cluster, so these
// check where runs end: at a cluster in use, at a refcount block boundary, in a block that does
// not exist yet, and past the end of the reftable. 512-byte clusters with 16-bit refcounts
// make a refcount block cover 256 clusters (128 KiB), so runs cross blocks cheaply.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createImage } from '../../src/image/create.js';
import { openImage } from '../../src/image/open.js';
import type { Qcow2Device } from '../../src/qcow2/qcow2-device.js';
import { tempDir } from '../support/tmp.js';

const CS = 512;
const PER_BLOCK = 256; // refcount entries per block: 512 * 8 / 16

const devices: Qcow2Device[] = [];
afterEach(async () => {
  while (devices.length) await devices.pop()!.close();
});

async function freshImage(): Promise<Qcow2Device> {
  const path = join(await tempDir(), 'small-clusters.qcow2');
  await createImage(path, { format: 'qcow2', size: 64 * 1024 * 1024, clusterSize: CS });
  const dev = (await openImage(path, { format: 'qcow2', readOnly: false })) as Qcow2Device;
  devices.push(dev);
  expect(dev.layout.clusterSize).toBe(CS);
  expect(dev.layout.refblockEntries).toBe(PER_BLOCK);
  return dev;
}

/** The refcounts of `n` clusters from host offset `offset`, one by one. */
async function refcountsAt(dev: Qcow2Device, offset: number, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await dev.refcounts.get(offset / CS + i));
  return out;
}

/** Two refcount blocks' worth of clusters allocated: where they start, and the first block
 * boundary inside them (host offsets). */
async function allocateAcrossBoundary(
  dev: Qcow2Device,
): Promise<{ base: number; boundary: number }> {
  const base = await dev.refcounts.allocClusters(PER_BLOCK * 2);
  return { base, boundary: (Math.floor(base / CS / PER_BLOCK) + 1) * PER_BLOCK * CS };
}

describe('qcow2 cluster allocation', () => {
  it('allocates a run across several refcount blocks, creating the blocks it needs', async () => {
    const dev = await freshImage();
    const r = dev.refcounts;
    const first = await r.allocClusters(1);
    // 600 clusters: more than two refcount blocks' worth, none of which existed before.
    const run = await r.allocClusters(3 * PER_BLOCK);
    expect(run % CS).toBe(0);
    expect(run).toBeGreaterThan(first);
    expect(await refcountsAt(dev, run, 3 * PER_BLOCK)).toEqual(new Array(3 * PER_BLOCK).fill(1));
    // The refcount blocks it created came from before or after the run, never inside it.
    for (const block of r.refblockOffsets()) {
      expect(block < run || block >= run + 3 * PER_BLOCK * CS).toBe(true);
    }
  });

  it('skips gaps too small for the request and takes the first that fits', async () => {
    const dev = await freshImage();
    const r = dev.refcounts;
    // Holes before a refcount block boundary: one cluster, then two, the two on either side.
    const { base, boundary } = await allocateAcrossBoundary(dev);
    const one = boundary - 4 * CS;
    const two = boundary - CS; // its second cluster is the next block's first
    await r.update(one, CS, -1);
    await r.update(two, 2 * CS, -1);
    expect(r.freeClusterIndex).toBe(one / CS);

    expect(await r.allocClusters(2)).toBe(two);
    expect(r.freeClusterIndex).toBe(two / CS + 2);
    // The one-cluster gap lies before the search position now: QEMU does not go back for it.
    const next = await r.allocClusters(1);
    expect(next).toBeGreaterThanOrEqual(base + 2 * PER_BLOCK * CS);
    expect(await refcountsAt(dev, one, 1)).toEqual([0]);
  });

  it('allocClustersAt() stops at the first cluster in use, wherever it lies', async () => {
    const dev = await freshImage();
    const r = dev.refcounts;
    const { boundary } = await allocateAcrossBoundary(dev);
    // Free 5 clusters ending 2 clusters into the next block.
    const from = boundary - 3 * CS;
    await r.update(from, 5 * CS, -1);
    expect(await r.allocClustersAt(from, 8)).toBe(5);
    expect(await refcountsAt(dev, from, 5)).toEqual([1, 1, 1, 1, 1]);
    // Taken now: nothing more there.
    expect(await r.allocClustersAt(from, 1)).toBe(0);
    expect(await r.allocClustersAt(boundary + CS, 3)).toBe(0);
  });

  it('allocClustersAt() past every refcount block and past the reftable counts all as free', async () => {
    const dev = await freshImage();
    const r = dev.refcounts;
    const end = (await r.allocClusters(1)) + CS;
    // Far beyond anything allocated: its refcount block does not exist (nor, 1 GiB on, its
    // reftable entry with 512-byte clusters: the table has 64 entries per cluster).
    const far = end + 10 * PER_BLOCK * CS;
    expect(await r.allocClustersAt(far, 3)).toBe(3);
    expect(await refcountsAt(dev, far, 3)).toEqual([1, 1, 1]);
    const beyondTable = 1024 * 1024 * 1024;
    expect(Math.floor(beyondTable / CS / PER_BLOCK)).toBeGreaterThanOrEqual(r.table.length);
    expect(await r.allocClustersAt(beyondTable, 2)).toBe(2);
    expect(await refcountsAt(dev, beyondTable, 2)).toEqual([1, 1]);
  });
});
