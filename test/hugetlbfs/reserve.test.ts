import { describe, expect, it } from 'vitest';
import { readHugepageStatus, reserveHugepages } from '../../src/hugetlbfs/index.js';
import { fixtureHost } from '../support/hugetlb-fixture.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const POOL_2M = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';

describe('reserveHugepages', () => {
  it('sets the global pool and reads back what was granted', async () => {
    const { host, read } = await fixtureHost('one-node-2m');
    const r = await reserveHugepages({ host, count: 600 });
    expect(r).toMatchObject({
      pageSize: 2 * MiB,
      path: POOL_2M,
      previous: 512,
      requested: 600,
      granted: 600,
      shortfall: 0,
      ok: true,
      message: undefined,
    });
    expect(r.actions).toEqual([{ kind: 'write', path: POOL_2M, value: '600' }]);
    expect((await read('proc/meminfo')).match(/HugePages_Total:\s+(\d+)/)![1]).toBe('600');
  });

  it('rounds --memory up to whole pages', async () => {
    const { host } = await fixtureHost('one-node-2m');
    const r = await reserveHugepages({ host, memory: 3 * MiB + 1 });
    expect(r.requested).toBe(2);
    expect(r.granted).toBe(2);
  });

  it('grows or shrinks relative to the pool (hugeadm +N / -N)', async () => {
    const { host } = await fixtureHost('one-node-2m');
    expect((await reserveHugepages({ host, count: 8, adjust: 'add' })).requested).toBe(520);
    expect((await reserveHugepages({ host, count: 20, adjust: 'remove' })).granted).toBe(500);
    expect((await reserveHugepages({ host, count: 9999, adjust: 'remove' })).requested).toBe(0);
  });

  it('sets one NUMA node without touching the other', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    const r = await reserveHugepages({ host, count: 3, pageSize: GiB, node: 1 });
    expect(r).toMatchObject({
      path: '/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages',
      previous: 2,
      granted: 3,
      ok: true,
    });
    expect(r.pool.nodes.map((n) => n.total)).toEqual([2, 3]);
  });

  it('a partial grant is reported with the shortfall and fragmentation as the cause', async () => {
    const { host } = await fixtureHost('partial-grant');
    const r = await reserveHugepages({ host, count: 200 });
    expect(r).toMatchObject({ requested: 200, granted: 120, shortfall: 80, ok: false });
    expect(r.pool.nodes.map((n) => n.total)).toEqual([100, 20]);
    expect(r.message).toBe(
      'The kernel granted 120 of 200 2 MiB huge pages (short by 80, 160 MiB): free memory ' +
        '(MemAvailable is 14 GiB) is too fragmented to form enough contiguous 2 MiB blocks; retry ' +
        'after compaction (echo 1 > /proc/sys/vm/compact_memory) or reserve at boot: ' +
        'hugepagesz=2M hugepages=200',
    );
  });

  it('a partial grant on one node names the node', async () => {
    const { host } = await fixtureHost('partial-grant');
    const r = await reserveHugepages({ host, count: 50, node: 1 });
    expect(r).toMatchObject({ granted: 20, shortfall: 30, ok: false });
    expect(r.message).toMatch(/^The kernel granted 20 of 50 2 MiB huge pages on node 1 /);
  });

  it('1 GiB pages that cannot be had at run time point to the kernel command line', async () => {
    const { host } = await fixtureHost('partial-grant');
    const r = await reserveHugepages({ host, count: 2, pageSize: GiB });
    expect(r).toMatchObject({ granted: 0, shortfall: 2, ok: false });
    expect(r.message).toMatch(
      /best reserved on the kernel command line: hugepagesz=1G hugepages=2$/,
    );
  });

  it('shrinking below the pages in use leaves them as surplus', async () => {
    const { host } = await fixtureHost('surplus');
    const r = await reserveHugepages({ host, count: 2 });
    // 8 persistent + 4 surplus, 10 in use: the 2 free pages are released and 4 more in-use
    // ones become surplus, so the pool is 2 as asked, with 8 surplus pages until released.
    expect(r).toMatchObject({ previous: 8, requested: 2, granted: 2, ok: true, surplus: 8 });
    expect(r.pool).toMatchObject({ total: 10, persistent: 2, surplus: 8, free: 0 });
  });

  it('growing a pool with surplus pages promotes them first', async () => {
    const { host } = await fixtureHost('surplus');
    const r = await reserveHugepages({ host, count: 12 });
    expect(r).toMatchObject({ granted: 12, surplus: 0 });
    expect(r.pool).toMatchObject({ total: 12, free: 2 });
  });

  it('--dry-run records the write and changes nothing', async () => {
    const { host, read } = await fixtureHost('one-node-2m');
    const r = await reserveHugepages({ host, count: 1, node: 0, dryRun: true });
    expect(r.dryRun).toBe(true);
    expect(r.granted).toBeUndefined();
    expect(r.actions).toEqual([
      {
        kind: 'write',
        path: '/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages',
        value: '1',
      },
    ]);
    expect(await read('sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages')).toBe('512\n');
  });

  it('a refused write names the privilege needed', async () => {
    const { host } = await fixtureHost('one-node-2m', { readOnly: true });
    await expect(reserveHugepages({ host, count: 1 })).rejects.toMatchObject({
      code: 'VMF_PERMISSION',
      message: `Could not write 1 to ${POOL_2M}: Permission denied (changing huge page pools needs root)`,
    });
  });

  it('read-only /sys (containers) and EINVAL for 1 GiB pages are explained', async () => {
    const { host } = await fixtureHost('one-node-2m');
    const failing = (code: string) => ({
      ...host,
      writeText: async () => {
        throw Object.assign(new Error(code), { code });
      },
    });
    await expect(reserveHugepages({ host: failing('EROFS'), count: 1 })).rejects.toThrow(
      /Read-only file system \(\/sys and \/proc\/sys are read-only here, as in most containers/,
    );
    await expect(
      reserveHugepages({ host: failing('EINVAL'), count: 1, pageSize: GiB }),
    ).rejects.toThrow(/cannot allocate 1 GiB pages at run time; .*hugepagesz=1G hugepages=N\)$/);
  });

  it('refuses a pool larger than all memory before writing anything', async () => {
    const { host, runs } = await fixtureHost('one-node-2m');
    await expect(reserveHugepages({ host, count: 1, pageSize: GiB })).resolves.toMatchObject({
      ok: true,
    });
    await expect(reserveHugepages({ host, count: 18, pageSize: GiB })).rejects.toMatchObject({
      code: 'VMF_HUGEPAGES_TOO_MANY',
    });
    expect(runs).toEqual([]);
    expect((await readHugepageStatus({ host })).pools[1]!.total).toBe(1);
  });

  it('rejects unknown sizes, unknown nodes, no support and bad amounts', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    await expect(reserveHugepages({ host, count: 1, pageSize: 4 * MiB })).rejects.toThrow(
      'Huge page size 4 MiB is not supported by this kernel (supported: 2 MiB, 1 GiB)',
    );
    await expect(reserveHugepages({ host, count: 1, node: 2 })).rejects.toThrow(
      'NUMA node 2 has no 2 MiB huge page pool (nodes: 0, 1)',
    );
    await expect(reserveHugepages({ host })).rejects.toThrow(/either a page count or a memory/);
    await expect(reserveHugepages({ host, count: -1 })).rejects.toThrow(/Invalid page count/);
    const none = await fixtureHost('no-hugetlbfs');
    await expect(reserveHugepages({ host: none.host, count: 1 })).rejects.toMatchObject({
      code: 'VMF_HUGEPAGES_UNSUPPORTED',
    });
  });
});
