import { describe, expect, it } from 'vitest';
import { mountHugetlbfs, planHugepageBackend } from '../../src/hugetlbfs/index.js';
import { fixtureHost } from '../support/hugetlb-fixture.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe('planHugepageBackend', () => {
  it('memfd with hugetlb=on when no mount is wanted', async () => {
    const { host } = await fixtureHost('one-node-2m');
    const plan = await planHugepageBackend({ host, memory: 512 * MiB });
    expect(plan.args).toEqual([
      '-m',
      '512M',
      '-object',
      'memory-backend-memfd,id=ram0,size=512M,hugetlb=on,hugetlbsize=2M,prealloc=on,share=on',
      '-machine',
      'memory-backend=ram0',
    ]);
    expect(plan).toMatchObject({ backend: 'memfd', pages: 256, ok: true });
    expect(plan.machineProperties).toEqual({ 'memory-backend': 'ram0' });
    expect(plan.objects[0]!.qom).toEqual({
      'qom-type': 'memory-backend-memfd',
      id: 'ram0',
      size: 512 * MiB,
      hugetlb: true,
      hugetlbsize: 2 * MiB,
      prealloc: true,
      share: true,
    });
  });

  it('memory-backend-file on a mount, share=off by default', async () => {
    const { host } = await fixtureHost('one-node-2m');
    const plan = await planHugepageBackend({ host, memory: 512 * MiB, mount: '/dev/hugepages' });
    expect(plan.args).toEqual([
      '-m',
      '512M',
      '-object',
      'memory-backend-file,id=ram0,size=512M,mem-path=/dev/hugepages,prealloc=on,share=off',
      '-machine',
      'memory-backend=ram0',
    ]);
  });

  it('takes the page size from the mount: 1 GiB pages', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    const plan = await planHugepageBackend({ host, memory: 2 * GiB, mount: '/dev/hugepages1G' });
    expect(plan).toMatchObject({ pageSize: GiB, pages: 2 });
    expect(plan.objectArgs[1]).toBe(
      'memory-backend-file,id=ram0,size=2G,mem-path=/dev/hugepages1G,prealloc=on,share=off',
    );
  });

  it('NUMA: one backend per guest node bound to its host node, wired with -numa', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    const plan = await planHugepageBackend({
      host,
      memory: 640 * MiB,
      mount: '/dev/hugepages',
      numa: [
        { hostNode: 0, size: 512 * MiB },
        { hostNode: 1, size: 128 * MiB },
      ],
      share: true,
    });
    expect(plan.args).toEqual([
      '-m',
      '640M',
      '-object',
      'memory-backend-file,id=ram-node0,size=512M,mem-path=/dev/hugepages,prealloc=on,share=on,host-nodes=0,policy=bind',
      '-object',
      'memory-backend-file,id=ram-node1,size=128M,mem-path=/dev/hugepages,prealloc=on,share=on,host-nodes=1,policy=bind',
      '-numa',
      'node,nodeid=0,memdev=ram-node0',
      '-numa',
      'node,nodeid=1,memdev=ram-node1',
    ]);
    expect(plan.machineArgs).toEqual([]);
    expect(plan.checks).toEqual([
      { scope: 'pool', node: undefined, needed: 320, available: 356, ok: true },
      { scope: 'node', node: 0, needed: 256, available: 256, ok: true },
      { scope: 'node', node: 1, needed: 64, available: 100, ok: true },
    ]);
  });

  it('fails when a node lacks free pages, naming node and counts', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    await expect(
      planHugepageBackend({
        host,
        memory: 400 * MiB,
        numa: [
          { hostNode: 0, size: 100 * MiB },
          { hostNode: 1, size: 300 * MiB },
        ],
      }),
    ).rejects.toMatchObject({
      code: 'VMF_HUGEPAGES_SHORT',
      message:
        'Not enough free huge pages: 150 2 MiB pages needed on host node 1, 100 available; ' +
        'reserve them on those nodes first (vmforge hugepages reserve --node N)',
    });
  });

  it('adds up guest nodes that share a host node', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    await expect(
      planHugepageBackend({
        host,
        memory: 256 * MiB,
        numa: [
          { hostNode: 1, size: 128 * MiB },
          { hostNode: 1, size: 128 * MiB },
        ],
      }),
    ).rejects.toThrow('128 2 MiB pages needed on host node 1, 100 available');
  });

  it('fails when the pool is short globally, suggesting the reserve command', async () => {
    const { host } = await fixtureHost('one-node-2m');
    await expect(planHugepageBackend({ host, memory: 2 * GiB })).rejects.toThrow(
      'Not enough free huge pages: 1024 2 MiB pages needed, 490 available; reserve them first, ' +
        'e.g. vmforge hugepages reserve --count 1046 --pagesize 2M',
    );
    const unchecked = await planHugepageBackend({ host, memory: 2 * GiB, check: false });
    expect(unchecked.ok).toBe(false);
    expect(unchecked.args).toHaveLength(6);
  });

  it('respects a size= limit on the mount', async () => {
    const { host } = await fixtureHost('existing-mount');
    await expect(
      planHugepageBackend({ host, memory: 256 * MiB, mount: '/mnt/huge' }),
    ).rejects.toThrow(
      '/mnt/huge has room for 64 more 2 MiB pages (size=128 MiB), the guest needs 128',
    );
  });

  it('backend file without a mount picks one serving the page size', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    const plan = await planHugepageBackend({ host, memory: GiB, pageSize: GiB, backend: 'file' });
    expect(plan.mount!.mountPoint).toBe('/dev/hugepages1G');
    const none = await fixtureHost('partial-grant');
    await expect(
      planHugepageBackend({ host: none.host, memory: GiB, pageSize: GiB, backend: 'file' }),
    ).rejects.toThrow(
      /No hugetlbfs mount serves 1 GiB pages \(mount one with: vmforge hugepages mount DIR --pagesize 1G/,
    );
  });

  it('escapes commas in mem-path for QEMU keyval syntax', async () => {
    const { host } = await fixtureHost('one-node-2m');
    await mountHugetlbfs({ host, dir: '/mnt/a,b' });
    const plan = await planHugepageBackend({ host, memory: 2 * MiB, mount: '/mnt/a,b' });
    expect(plan.objectArgs[1]).toContain('mem-path=/mnt/a,,b,prealloc=on');
    expect(plan.objects[0]!.qom['mem-path']).toBe('/mnt/a,b');
  });

  it('rejects inconsistent requests', async () => {
    const { host } = await fixtureHost('two-nodes-1g');
    await expect(planHugepageBackend({ host, memory: 3 * MiB })).rejects.toThrow(
      'memory (3 MiB) is not a multiple of the 2 MiB huge page size',
    );
    await expect(
      planHugepageBackend({ host, memory: GiB, numa: [{ hostNode: 0, size: 512 * MiB }] }),
    ).rejects.toThrow("NUMA node memory adds up to 512 MiB, not the guest's 1 GiB");
    await expect(
      planHugepageBackend({ host, memory: GiB, numa: [{ hostNode: 5, size: GiB }] }),
    ).rejects.toThrow('NUMA node 5 has no 2 MiB huge page pool (nodes: 0, 1)');
    await expect(planHugepageBackend({ host, memory: GiB, mount: '/proc' })).rejects.toThrow(
      '/proc is not a hugetlbfs mount point (mount one with: vmforge hugepages mount /proc)',
    );
    await expect(
      planHugepageBackend({ host, memory: GiB, mount: '/dev/hugepages1G', pageSize: 2 * MiB }),
    ).rejects.toThrow('/dev/hugepages1G serves 1 GiB pages, not 2 MiB');
    await expect(
      planHugepageBackend({ host, memory: GiB, mount: '/dev/hugepages', backend: 'memfd' }),
    ).rejects.toThrow(/memfd takes no mount point/);
  });
});
