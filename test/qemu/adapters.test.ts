// The launcher's adapters over the vmforge libraries: huge-page backends planned by
// src/hugetlbfs against fixture hosts (pool checks for the whole guest and per host node), and
// disk probing / overlays through the image engine (backing chains without a format refused;
// overlays over an NBD export served in-process by src/nbd).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { createImage, isQcow2, openImage } from '../../src/image/index.js';
import { NbdServer } from '../../src/nbd/index.js';
import { RawDevice } from '../../src/raw/raw-device.js';
import {
  buildArgv,
  engineDiskImages,
  hugetlbfsPlanner,
  normalizeSpec,
  planLaunch,
} from '../../src/qemu/index.js';
import { fixtureHost } from '../support/hugetlb-fixture.js';
import { tempDir } from '../support/tmp.js';
import { FAKE_RUN_DIR, fakeProviders } from './support.js';

const MiB = 1024 * 1024;

async function argvWithHugepages(
  fixture: string,
  memory: Record<string, unknown>,
  dryRun = false,
): Promise<string[]> {
  const { host } = await fixtureHost(fixture);
  const model = normalizeSpec({ arch: 'x86_64', smp: 2, memory });
  const plan = await planLaunch(model, {
    providers: { ...fakeProviders(), hugepages: hugetlbfsPlanner(host) },
    runDir: FAKE_RUN_DIR,
    dryRun,
    accel: { accel: 'tcg', note: undefined },
  });
  return buildArgv(plan);
}

describe('hugetlbfsPlanner', () => {
  it('binds each guest node to its host node on the 2 MiB mount', async () => {
    const argv = await argvWithHugepages('two-nodes-1g', {
      size: '384M',
      hugepages: { mount: '/dev/hugepages' },
      numa: [
        { cpus: 0, memory: '256M', hostNodes: [0] },
        { cpus: 1, memory: '128M', hostNodes: [1], policy: 'preferred' },
      ],
    });
    const objects = argv
      .filter((_, i) => argv[i - 1] === '-object')
      .map((o) => JSON.parse(o) as unknown);
    expect(objects).toEqual([
      {
        'qom-type': 'memory-backend-file',
        id: 'ram-node0',
        size: 256 * MiB,
        'mem-path': '/dev/hugepages',
        prealloc: true,
        share: false,
        'host-nodes': [0],
        policy: 'bind',
      },
      {
        'qom-type': 'memory-backend-file',
        id: 'ram-node1',
        size: 128 * MiB,
        'mem-path': '/dev/hugepages',
        prealloc: true,
        share: false,
        'host-nodes': [1],
        policy: 'preferred',
      },
    ]);
    expect(argv).toContain('node,nodeid=1,cpus=1,memdev=ram-node1');
  });

  it('checks a host node pool', async () => {
    await expect(
      argvWithHugepages('two-nodes-1g', {
        size: '512M',
        hugepages: true,
        numa: [
          { cpus: 0, memory: '256M', hostNodes: [0] },
          { cpus: 1, memory: '256M', hostNodes: [1] },
        ],
      }),
    ).rejects.toThrow(
      'Not enough free huge pages: 128 2 MiB pages needed on host node 1, 100 available',
    );
  });

  it('checks the pool for the whole guest, not region by region', async () => {
    // 2 × 200 pages: each region alone fits in the 356 free pages, together they do not.
    await expect(
      argvWithHugepages('two-nodes-1g', {
        size: '800M',
        hugepages: true,
        numa: [
          { cpus: 0, memory: '400M' },
          { cpus: 1, memory: '400M' },
        ],
      }),
    ).rejects.toThrow(/^Not enough free huge pages: 400 2 MiB pages needed, 356 available/);
  });

  it('--dry-run prints the argv even when the pool is short', async () => {
    const argv = await argvWithHugepages('two-nodes-1g', { size: '2G', hugepages: true }, true);
    expect(argv).toContain('q35,pflash0=fw-code,pflash1=fw-vars,memory-backend=ram0');
  });

  it('1 GiB pages on their own mount, and memfd with hugetlb=on', async () => {
    const big = await argvWithHugepages('two-nodes-1g', {
      size: '2G',
      hugepages: { pageSize: '1G' },
    });
    expect(big).toContain(
      '{"qom-type":"memory-backend-file","id":"ram0","size":2147483648,"mem-path":"/dev/hugepages1G","prealloc":true,"share":false}',
    );
    const memfd = await argvWithHugepages('one-node-2m', {
      size: '256M',
      hugepages: { backend: 'memfd' },
    });
    expect(memfd).toContain(
      '{"qom-type":"memory-backend-memfd","id":"ram0","size":268435456,"hugetlb":true,"hugetlbsize":2097152,"prealloc":true,"share":false}',
    );
  });
});

describe('engineDiskImages', () => {
  const images = engineDiskImages();

  it('probes by content, never by name', async () => {
    const dir = await tempDir();
    await createImage(join(dir, 'disk.raw'), { format: 'qcow2', size: MiB });
    await writeFile(join(dir, 'disk.qcow2'), Buffer.alloc(MiB));
    expect(await images.probeFormat(join(dir, 'disk.raw'))).toBe('qcow2');
    expect(await images.probeFormat(join(dir, 'disk.qcow2'))).toBe('raw');
  });

  it('follows a backing chain with recorded formats, refuses one without', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'base.img'), Buffer.alloc(MiB));
    await createImage(join(dir, 'mid.qcow2'), {
      format: 'qcow2',
      backingFile: 'base.img',
      backingFormat: 'raw',
    });
    await createImage(join(dir, 'top.qcow2'), {
      format: 'qcow2',
      backingFile: 'mid.qcow2',
      backingFormat: 'qcow2',
    });
    expect(await images.probeFormat(join(dir, 'top.qcow2'))).toBe('qcow2');
    // -u (unsafe) with no format: nothing is probed, so no format is recorded.
    await createImage(join(dir, 'bad-mid.qcow2'), {
      format: 'qcow2',
      backingFile: 'base.img',
      size: MiB,
      unsafe: true,
    });
    await createImage(join(dir, 'bad-top.qcow2'), {
      format: 'qcow2',
      backingFile: 'bad-mid.qcow2',
      backingFormat: 'qcow2',
    });
    await expect(images.probeFormat(join(dir, 'bad-top.qcow2'))).rejects.toThrow(
      `backing file 'base.img' of '${join(dir, 'bad-mid.qcow2')}' has no recorded format`,
    );
  });

  it('makes a qcow2 overlay naming the original and its format', async () => {
    const dir = await tempDir();
    const base = join(dir, 'base.raw');
    await writeFile(base, Buffer.alloc(4 * MiB, 7));
    const overlay = join(dir, 'overlay.qcow2');
    await images.createOverlay({
      backing: { kind: 'file', path: base },
      backingFormat: 'raw',
      path: overlay,
    });
    const dev = await openImage(overlay, { format: 'qcow2', backing: 'none', noIO: true });
    try {
      expect(isQcow2(dev) && dev.header).toMatchObject({ backingFile: base, backingFormat: 'raw' });
      expect(dev.size).toBe(4 * MiB);
    } finally {
      await dev.close();
    }
  });

  it('an overlay over an NBD export takes its size through the NBD client', async () => {
    const dir = await tempDir();
    const server = new NbdServer({
      exports: [{ name: 'x', device: await RawDevice.open(new MemoryStorage(3 * MiB)) }],
    });
    const socket = join(dir, 's.sock');
    await server.listen({ kind: 'unix', path: socket });
    const uri = `nbd+unix:///x?socket=${socket}`;
    const overlay = join(dir, 'o.qcow2');
    try {
      await images.createOverlay({
        backing: { kind: 'nbd', uri },
        backingFormat: 'raw',
        path: overlay,
      });
    } finally {
      await server.destroy();
    }
    const dev = await openImage(overlay, { format: 'qcow2', backing: 'none', noIO: true });
    try {
      expect(isQcow2(dev) && dev.header).toMatchObject({ backingFile: uri, backingFormat: 'raw' });
      expect(dev.size).toBe(3 * MiB);
    } finally {
      await dev.close();
    }
  });

  it('an overlay over an NBD export nobody serves names the export', async () => {
    const dir = await tempDir();
    const socket = join(dir, 'nobody.sock');
    const overlay = join(dir, 'o.qcow2');
    await expect(
      images.createOverlay({
        backing: { kind: 'nbd', uri: `nbd+unix:///x?socket=${socket}` },
        backingFormat: 'raw',
        path: overlay,
      }),
    ).rejects.toThrow(
      `Could not create the snapshot overlay '${overlay}': Could not open backing image: ` +
        `Could not open 'nbd+unix:///x?socket=${socket}': Failed to connect to '${socket}'`,
    );
  });
});
