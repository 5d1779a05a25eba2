// A guest on 2 MiB huge pages reserved and mounted through src/hugetlbfs, as root: QMP must show
// each NUMA node's backend on the hugetlbfs mount (qom-get mem-path), preallocated, and
// HugePages_Free must drop by the guest's size. The memfd variant needs no mount. A pool too
// small fails before QEMU starts. The pool and the mount are restored even when a test fails.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { mountHugetlbfs, reserveHugepages, umountHugetlbfs } from '../../src/hugetlbfs/index.js';
import { normalizeSpec, Vm } from '../../src/qemu/index.js';
import { describeWithTools } from '../support/tools.js';

const MiB = 1024 * 1024;
const POOL = '/sys/kernel/mm/hugepages/hugepages-2048kB';
const isRoot = process.getuid?.() === 0;

async function freePages(): Promise<number> {
  const m = /HugePages_Free:\s+(\d+)/.exec(await readFile('/proc/meminfo', 'utf8'));
  return Number(m![1]);
}
const persistent = async (): Promise<number> =>
  Number(await readFile(`${POOL}/nr_hugepages`, 'utf8')) -
  Number(await readFile(`${POOL}/surplus_hugepages`, 'utf8'));

const undo: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (undo.length) await undo.pop()!().catch(() => undefined);
});

/** Grow the 2 MiB pool by `pages` for this test and mount hugetlbfs; both undone afterwards. */
async function hugepageSetup(pages: number): Promise<string> {
  const before = await persistent();
  await reserveHugepages({ count: before + pages, pageSize: 2 * MiB });
  undo.push(() => reserveHugepages({ count: before, pageSize: 2 * MiB }));
  const dir = await mkdtemp(join(tmpdir(), 'vmforge-hp-'));
  undo.push(() => rm(dir, { recursive: true, force: true }));
  await mountHugetlbfs({ dir, pageSize: 2 * MiB });
  undo.push(() => umountHugetlbfs({ dir, force: true }));
  return dir;
}

// Not root: reported like a missing tool (skipped, or failing under VMFORGE_REQUIRE_TOOLS=1).
const TOOLS = ['qemu-system-x86_64', 'mount', 'umount', ...(isRoot ? [] : ['<root privileges>'])];

describeWithTools(TOOLS, 'huge-page backed guests through src/hugetlbfs', () => {
  it('two NUMA nodes on 2 MiB pages: backends on the hugetlbfs mount, pages taken', async () => {
    const mount = await hugepageSetup(128);
    const free = await freePages();
    const model = normalizeSpec({
      arch: 'x86_64',
      accel: 'tcg',
      firmware: 'bios',
      smp: 2,
      memory: {
        size: '256M',
        hugepages: { pageSize: '2M', mount },
        numa: [
          { cpus: 0, memory: '128M' },
          { cpus: 1, memory: '128M' },
        ],
      },
    });
    const vm = await Vm.launch(model, { paused: true });
    try {
      const memdevs =
        await vm.qmp.execute<{ id: string; size: number; prealloc: boolean }[]>('query-memdev');
      expect(memdevs.map((d) => [d.id, d.size, d.prealloc]).sort()).toEqual([
        ['ram-node0', 128 * MiB, true],
        ['ram-node1', 128 * MiB, true],
      ]);
      for (const id of ['ram-node0', 'ram-node1']) {
        expect(
          await vm.qmp.execute('qom-get', { path: `/objects/${id}`, property: 'mem-path' }),
        ).toBe(mount);
      }
      expect(free - (await freePages())).toBe(128);
    } finally {
      await vm.stop({ powerdownTimeoutMs: 0 });
    }
  });

  it('memfd with hugetlb=on needs no mount', async () => {
    await hugepageSetup(64);
    const model = normalizeSpec({
      arch: 'x86_64',
      accel: 'tcg',
      firmware: 'bios',
      memory: { size: '128M', hugepages: { backend: 'memfd' } },
    });
    const vm = await Vm.launch(model, { paused: true });
    try {
      expect(vm.argv.join(' ')).toContain(
        '"qom-type":"memory-backend-memfd","id":"ram0","size":134217728',
      );
      expect(await vm.qmp.execute('qom-get', { path: '/objects/ram0', property: 'hugetlb' })).toBe(
        true,
      );
      expect(
        await vm.qmp.execute('qom-get', { path: '/objects/ram0', property: 'hugetlbsize' }),
      ).toBe(2 * MiB);
    } finally {
      await vm.stop({ powerdownTimeoutMs: 0 });
    }
  });

  it('a pool too small fails before QEMU starts, naming the shortfall', async () => {
    const mount = await hugepageSetup(16);
    const model = normalizeSpec({
      arch: 'x86_64',
      accel: 'tcg',
      firmware: 'bios',
      memory: { size: '1G', hugepages: { mount } },
    });
    await expect(Vm.launch(model, { paused: true })).rejects.toThrow(
      /^Not enough free huge pages: 512 2 MiB pages needed, \d+ available/,
    );
  });
});
