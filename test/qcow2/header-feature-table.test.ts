// Engine regression: QEMU reads the feature name table into a zero-padded buffer and walks it in
// 48-byte entries, so a table shorter than one entry (qemu-iotests 036 adds exactly such a table:
// "\x00\x3fTest feature", 14 bytes) still names the feature.
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { createQcow2 } from '../../src/qcow2/create.js';
import { decodeHeader } from '../../src/qcow2/header.js';

const FEATURE_TABLE = 0x6803f857;

async function headerWithFeatureTable(data: Uint8Array): Promise<Uint8Array> {
  const storage = new MemoryStorage();
  await (await createQcow2(storage, { size: 64 << 20 }, { filename: 'mem.qcow2' })).close();
  const cluster0 = new Uint8Array(65536);
  await storage.read(cluster0, 0);
  const view = new DataView(cluster0.buffer);
  view.setBigUint64(72, 1n << 63n); // unknown incompatible bit 63
  // Replace the extensions with just the given feature table.
  cluster0.fill(0, 112);
  view.setUint32(112, FEATURE_TABLE);
  view.setUint32(116, data.length);
  cluster0.set(data, 120);
  return cluster0;
}

describe('feature name table', () => {
  it('names a feature from a table shorter than one 48-byte entry (iotest 036)', async () => {
    const name = new TextEncoder().encode('Test feature');
    const cluster0 = await headerWithFeatureTable(new Uint8Array([0x00, 0x3f, ...name]));
    expect(() => decodeHeader(cluster0)).toThrow('Unsupported qcow2 feature(s): Test feature');
  });

  it('still reports unnamed bits', async () => {
    const cluster0 = await headerWithFeatureTable(new Uint8Array(0));
    expect(() => decodeHeader(cluster0)).toThrow(
      'Unsupported qcow2 feature(s): Unknown incompatible feature: 8000000000000000',
    );
  });
});
