// Engine regression: QEMU validates snapshots_offset only when it reads the snapshot table at
// open, which a check-mode open (qemu-img check) skips; the check then reports the bad pointer
// itself ("ERROR snapshot table offset invalid"). decodeHeader must not refuse the header.
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { createQcow2 } from '../../src/qcow2/create.js';
import { decodeHeader } from '../../src/qcow2/header.js';
import { openQcow2 } from '../../src/qcow2/open.js';

async function imageWithSnapshotPointer(offset: bigint, count: number): Promise<MemoryStorage> {
  const storage = new MemoryStorage();
  const dev = await createQcow2(storage, { size: 64 << 20 }, { filename: 'mem.qcow2' });
  await dev.close();
  const patch = new Uint8Array(12);
  const v = new DataView(patch.buffer);
  v.setUint32(0, count);
  v.setBigUint64(4, offset);
  await storage.write(patch, 60);
  return storage;
}

describe('snapshots_offset beyond 2^53', () => {
  it('is decoded, refused by a normal open and accepted by a check-mode open', async () => {
    const storage = await imageWithSnapshotPointer(0xffff_ffff_ffff_0000n, 0xffff);
    const cluster0 = new Uint8Array(65536);
    await storage.read(cluster0, 0);
    expect(() => decodeHeader(cluster0)).not.toThrow();
    await expect(openQcow2(storage, { filename: 'mem.qcow2', readOnly: true })).rejects.toThrow(
      'Snapshot table offset invalid',
    );
    const dev = await openQcow2(storage, {
      filename: 'mem.qcow2',
      readOnly: true,
      checkMode: true,
    });
    await dev.close();
  });
});
