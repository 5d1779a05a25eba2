// qemu:dirty-bitmap:NAME contexts: qemu's query rules (nbd_meta_qemu_query), extents
// (bitmap_to_extents) against a byte-by-byte model, and the server end to end with vmforge's
// client (context ids, one chunk per context, refusals). test/interop/nbd-bitmap.test.ts
// compares the same things with qemu-nbd.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { bitmapExtents } from '../../src/nbd/export-bitmaps.js';
import { normalizeExport } from '../../src/nbd/export.js';
import {
  applyQuery,
  emptySelection,
  selectAll,
  selectedContexts,
  type MetaExport,
} from '../../src/nbd/meta-context.js';
import { NbdServer } from '../../src/nbd/server.js';
import { DirtyBitmap } from '../../src/qcow2/bitmaps/dirty-bitmap.js';
import { tempDir } from '../support/tmp.js';
import { memoryDevice } from './helpers.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

describe('metadata context queries with bitmaps', () => {
  const exp: MetaExport = {
    allocationDepth: true,
    bitmaps: [{ name: 'b0' }, { name: 'b1' }, { name: 'b0' }],
  };
  const names = (queries: string[], list: boolean, zero = false) => {
    const sel = emptySelection('', exp);
    if (zero) selectAll(sel, exp);
    for (const q of queries) applyQuery(sel, q, list, exp);
    return selectedContexts(sel, exp).map((c) => `${c.id}:${c.name}`);
  };

  it('LIST: wildcards select every bitmap; ids 2 + index, in export order', () => {
    const all = [
      '0:base:allocation',
      '1:qemu:allocation-depth',
      '2:qemu:dirty-bitmap:b0',
      '3:qemu:dirty-bitmap:b1',
      '4:qemu:dirty-bitmap:b0',
    ];
    expect(names([], true, true)).toEqual(all);
    expect(names(['qemu:'], true)).toEqual(all.slice(1));
    expect(names(['qemu:dirty-bitmap:'], true)).toEqual(all.slice(2));
    expect(names(['qemu:dirty-bitmap:b1', 'base:allocation'], true)).toEqual([all[0], all[3]]);
  });

  it('SET: empty leaves select nothing; a duplicated name selects its first bitmap', () => {
    expect(names(['qemu:', 'qemu:dirty-bitmap:'], false)).toEqual([]);
    expect(names(['qemu:dirty-bitmap:b0'], false)).toEqual(['2:qemu:dirty-bitmap:b0']);
    expect(
      names(['qemu:dirty-bitmap:b', 'qemu:dirty-bitmap:b0x', 'qemu:dirty-bitmap:B1'], false),
    ).toEqual([]);
  });
});

/** Random dirty bitmaps and requests; extents checked against a per-byte model. */
describe('bitmapExtents', () => {
  let seed = 7;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };

  it('matches a byte model: clipped, merged, REQ_ONE keeps the first, tail clean', () => {
    for (let round = 0; round < 200; round++) {
      const granularity = 512 * 2 ** rnd(5);
      const size = 512 * (1 + rnd(400));
      const bm = new DirtyBitmap({ name: 'b', granularity, size });
      for (let i = rnd(6); i > 0; i--) bm.setDirty(rnd(size), 1 + rnd(8192));
      const offset = rnd(size);
      const length = 1 + rnd(size - offset);
      const max = rnd(3) === 0 ? 1 : 1000;
      // The model: one flag per byte, then runs.
      const runs: { length: number; flags: number }[] = [];
      for (let pos = offset; pos < offset + length; pos++) {
        const flags = bm.isDirty(pos) ? 1 : 0;
        const last = runs[runs.length - 1];
        if (last && last.flags === flags) last.length++;
        else runs.push({ length: 1, flags });
      }
      expect(bitmapExtents(bm, offset, length, max), `round ${round}`).toEqual(runs.slice(0, max));
    }
  });

  it('a clean bitmap is one clean extent, a full one one dirty extent', () => {
    const bm = new DirtyBitmap({ name: 'b', granularity: 65536, size: 2 ** 33 });
    expect(bitmapExtents(bm, 100, 5000, 1)).toEqual([{ length: 5000, flags: 0 }]);
    bm.setDirty(0, 2 ** 33);
    // The largest request (32-bit length) is one extent.
    expect(bitmapExtents(bm, 12345, 2 ** 32 - 1, 10)).toEqual([{ length: 2 ** 32 - 1, flags: 1 }]);
  });
});

describe('NbdServer with bitmaps', () => {
  async function serve(bitmaps: DirtyBitmap[], readOnly = true) {
    const device = await memoryDevice(1 << 20);
    const socket = join(await tempDir(), 's');
    const server = new NbdServer({
      exports: [{ device, readOnly, bitmaps }],
      maxConnections: 0,
    });
    await server.listen({ kind: 'unix', path: socket });
    cleanups.push(() => server.destroy());
    return socket;
  }

  it('offers qemu:dirty-bitmap:NAME with qemu ids and one status chunk per context', async () => {
    const a = new DirtyBitmap({ name: 'a', granularity: 65536, size: 1 << 20 });
    const b = new DirtyBitmap({ name: 'b', granularity: 512, size: 1 << 20 });
    for (const bm of [a, b]) bm.readonly = true;
    a.setDirty(70000, 1);
    b.setDirty(1000, 24);
    const socket = await serve([a, b]);
    const client = await NbdClient.connect({
      socket,
      metaContexts: ['qemu:dirty-bitmap:b', 'base:allocation', 'qemu:dirty-bitmap:a'],
    });
    cleanups.push(() => client.close());
    expect(Object.fromEntries(client.info.contexts)).toEqual({
      'base:allocation': 0,
      'qemu:dirty-bitmap:a': 2,
      'qemu:dirty-bitmap:b': 3,
    });
    const status = await client.blockStatus(0, 200000);
    expect(status.get('qemu:dirty-bitmap:a')).toEqual([
      { length: 65536, flags: 0 },
      { length: 65536, flags: 1 },
      { length: 200000 - 131072, flags: 0 },
    ]);
    expect(status.get('qemu:dirty-bitmap:b')).toEqual([
      { length: 512, flags: 0 },
      { length: 512, flags: 1 },
      { length: 200000 - 1024, flags: 0 },
    ]);
    // Clipped to the request's start, and REQ_ONE stops at the granule's end.
    expect((await client.blockStatus(1000, 100, true)).get('qemu:dirty-bitmap:b')).toEqual([
      { length: 24, flags: 1 },
    ]);
    // Writes to the bitmap after the handshake show at once (qemu reads the live bitmap).
    a.setDirty(0, 1);
    expect((await client.blockStatus(0, 65536)).get('qemu:dirty-bitmap:a')).toEqual([
      { length: 65536, flags: 1 },
    ]);
  });

  it('refuses what nbd_export_create refuses', async () => {
    const device = await memoryDevice(4096);
    const enabled = new DirtyBitmap({ name: 'e', granularity: 512, size: 4096 });
    expect(() => normalizeExport({ device, readOnly: true, bitmaps: [enabled] })).toThrow(
      "Enabled bitmap 'e' incompatible with readonly export",
    );
    // Fine when the export is writable, or the bitmap read-only (its image opened read-only).
    expect(normalizeExport({ device, bitmaps: [enabled] }).bitmaps).toEqual([enabled]);
    enabled.readonly = true;
    expect(normalizeExport({ device, readOnly: true, bitmaps: [enabled] }).bitmaps).toHaveLength(1);
    const broken = new DirtyBitmap({ name: 'x', granularity: 512, size: 4096 });
    broken.inconsistent = true;
    expect(() => normalizeExport({ device, bitmaps: [broken] })).toThrow(
      "Bitmap 'x' is inconsistent and cannot be used",
    );
  });
});
