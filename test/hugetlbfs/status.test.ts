import { describe, expect, it } from 'vitest';
import { readHugepageStatus } from '../../src/hugetlbfs/index.js';
import { fixtureHost } from '../support/hugetlb-fixture.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe('readHugepageStatus on fixture trees', () => {
  it('one node: pools per size, default size, the systemd mount', async () => {
    const { host } = await fixtureHost('one-node-2m');
    const s = await readHugepageStatus({ host });
    expect(s.supported).toBe(true);
    expect(s.defaultPageSize).toBe(2 * MiB);
    expect(s.pageSizes).toEqual([2 * MiB, GiB]);
    expect(s.nodes).toEqual([0]);
    expect(s.pools[0]).toEqual({
      pageSize: 2 * MiB,
      isDefault: true,
      total: 512,
      persistent: 512,
      free: 500,
      reserved: 10,
      surplus: 0,
      overcommit: 0,
      available: 490,
      minimum: 512,
      maximum: 512,
      nodes: [{ node: 0, total: 512, persistent: 512, free: 500, surplus: 0 }],
    });
    expect(s.pools[1]).toMatchObject({ pageSize: GiB, isDefault: false, total: 0 });
    expect(s.meminfo).toMatchObject({ total: 512, free: 500, reserved: 10 });
    expect(s.mounts).toEqual([
      expect.objectContaining({ mountPoint: '/dev/hugepages', pageSize: 2 * MiB, size: undefined }),
    ]);
  });

  it('two nodes: per-node counters and a pagesize=1024M mount', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    const s = await readHugepageStatus({ host });
    expect(s.nodes).toEqual([0, 1]);
    const [p2m, p1g] = s.pools;
    expect(p2m!.nodes.map((n) => [n.node, n.total, n.free])).toEqual([
      [0, 256, 256],
      [1, 256, 100],
    ]);
    expect(p1g!.nodes.map((n) => [n.node, n.total, n.free])).toEqual([
      [0, 2, 2],
      [1, 2, 1],
    ]);
    expect(p1g).toMatchObject({ total: 4, free: 3 });
    expect(s.mounts.map((m) => [m.mountPoint, m.pageSize])).toEqual([
      ['/dev/hugepages', 2 * MiB],
      ['/dev/hugepages1G', GiB],
    ]);
  });

  it('surplus pages: hugeadm minimum/maximum and persistent = total - surplus', async () => {
    const { host } = await fixtureHost('surplus');
    const [pool] = (await readHugepageStatus({ host })).pools;
    expect(pool).toMatchObject({
      total: 12,
      surplus: 4,
      persistent: 8,
      overcommit: 8,
      minimum: 8,
      maximum: 16,
      free: 2,
    });
    expect(pool!.nodes[0]).toMatchObject({ total: 12, persistent: 8, surplus: 4 });
  });

  it('no hugetlbfs support: reported, not thrown', async () => {
    const { host } = await fixtureHost('no-hugetlbfs');
    const s = await readHugepageStatus({ host });
    expect(s.supported).toBe(false);
    expect(s.hugetlbfsAvailable).toBe(false);
    expect(s.unsupportedReason).toMatch(/CONFIG_HUGETLBFS/);
    expect(s.pools).toEqual([]);
    expect(s.meminfo).toBeUndefined();
    expect(s.defaultPageSize).toBeUndefined();
  });

  it('existing mounts with other options are decoded', async () => {
    const { host } = await fixtureHost('existing-mount');
    const s = await readHugepageStatus({ host });
    expect(s.mounts).toEqual([
      expect.objectContaining({
        mountPoint: '/mnt/huge',
        pageSize: 2 * MiB,
        size: 128 * MiB,
        minSize: 8 * MiB,
        nrInodes: 16,
        uid: 64055,
        gid: 994,
        mode: 0o1770,
      }),
      expect.objectContaining({ mountPoint: '/mnt/huge1g', pageSize: GiB }),
      expect.objectContaining({ mountPoint: '/mnt/with space', readOnly: true }),
    ]);
  });

  it('a malformed counter is an error naming the file', async () => {
    const { host } = await fixtureHost('one-node-2m');
    const bad = {
      ...host,
      readText: async (p: string) =>
        p.endsWith('hugepages-2048kB/free_hugepages') ? 'garbage\n' : host.readText(p),
    };
    await expect(readHugepageStatus({ host: bad })).rejects.toThrow(
      "Unexpected content in /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages: 'garbage'",
    );
  });
});
