import { describe, expect, it } from 'vitest';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  findMountUsers,
  mountHugetlbfs,
  readHugepageStatus,
  umountHugetlbfs,
} from '../../src/hugetlbfs/index.js';
import { fixtureHost } from '../support/hugetlb-fixture.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe('mountHugetlbfs', () => {
  it('creates the directory, runs mount(8) with an argv and verifies /proc/mounts', async () => {
    const { host, root, runs } = await fixtureHost('one-node-2m');
    const r = await mountHugetlbfs({
      host,
      dir: '/srv/vm/huge',
      size: 64 * MiB,
      minSize: 4 * MiB,
      nrInodes: 8,
      uid: 64055,
      gid: 994,
      mode: 0o1770,
    });
    const argv = [
      'mount',
      '-t',
      'hugetlbfs',
      '-o',
      'pagesize=2M,size=67108864,min_size=4194304,nr_inodes=8,uid=64055,gid=994,mode=1770',
      'none',
      '/srv/vm/huge',
    ];
    expect(r).toMatchObject({ dir: '/srv/vm/huge', created: true, reused: false, argv });
    expect(runs).toEqual([argv]);
    expect(r.mount).toMatchObject({
      pageSize: 2 * MiB,
      size: 64 * MiB,
      minSize: 4 * MiB,
      nrInodes: 8,
      uid: 64055,
      gid: 994,
      mode: 0o1770,
    });
    expect((await stat(join(root, 'srv/vm/huge'))).isDirectory()).toBe(true);
    expect(r.actions.map((a) => a.kind)).toEqual(['mkdir', 'run']);
  });

  it('passes percentages through and compares them with the pool', async () => {
    const { host, runs } = await fixtureHost('one-node-2m');
    const r = await mountHugetlbfs({ host, dir: '/mnt/half', size: { percent: 50 } });
    expect(runs[0]![4]).toBe('pagesize=2M,size=50%');
    expect(r.mount!.size).toBe(256 * 2 * MiB);
    // Mounting again with the same percentage finds the same mount.
    expect((await mountHugetlbfs({ host, dir: '/mnt/half', size: { percent: 50 } })).reused).toBe(
      true,
    );
  });

  it('reuses a mount whose page size and requested options match (idempotent)', async () => {
    const { host, runs } = await fixtureHost('existing-mount');
    const r = await mountHugetlbfs({ host, dir: '/mnt/huge', size: 128 * MiB, mode: 0o1770 });
    expect(r).toMatchObject({ reused: true, created: false, argv: [] });
    expect(r.mount).toMatchObject({ uid: 64055, nrInodes: 16 });
    expect(runs).toEqual([]);
  });

  it('a mount with other options is an error naming each difference', async () => {
    const { host, runs } = await fixtureHost('existing-mount');
    await expect(
      mountHugetlbfs({ host, dir: '/mnt/huge', size: 64 * MiB, uid: 0, mode: 0o755 }),
    ).rejects.toMatchObject({
      code: 'VMF_MOUNT_MISMATCH',
      message:
        '/mnt/huge is already a hugetlbfs mount with other options: size is 128 MiB, not 64 MiB; ' +
        'uid is 64055, not 0; mode is 1770, not 0755 (unmount it first, or use another directory)',
    });
    await expect(mountHugetlbfs({ host, dir: '/mnt/huge1g' })).rejects.toThrow(
      'pagesize is 1 GiB, not 2 MiB',
    );
    expect(runs).toEqual([]);
  });

  it('refuses to mount over another filesystem', async () => {
    const { host } = await fixtureHost('existing-mount');
    await expect(mountHugetlbfs({ host, dir: '/mnt/scratch' })).rejects.toThrow(
      '/mnt/scratch is already a tmpfs mount point, not hugetlbfs; refusing to mount over it',
    );
  });

  it('checks min_size against free pages before mounting', async () => {
    const { host, runs } = await fixtureHost('existing-mount');
    await expect(
      mountHugetlbfs({ host, dir: '/mnt/new', minSize: 64 * MiB }),
    ).rejects.toMatchObject({
      code: 'VMF_HUGEPAGES_SHORT',
      message:
        'min_size=64 MiB needs 32 free 2 MiB huge pages but only 28 are available (free 32, ' +
        'reserved 4); reserve more first (vmforge hugepages reserve)',
    });
    expect(runs).toEqual([]);
  });

  it('--dry-run records mkdir and mount without doing either', async () => {
    const { host, root, runs } = await fixtureHost('two-nodes-1g');
    const r = await mountHugetlbfs({ host, dir: '/mnt/g', pageSize: GiB, dryRun: true });
    expect(r.actions).toEqual([
      { kind: 'mkdir', path: '/mnt/g' },
      { kind: 'run', argv: ['mount', '-t', 'hugetlbfs', '-o', 'pagesize=1G', 'none', '/mnt/g'] },
    ]);
    expect(r.mount).toBeUndefined();
    expect(runs).toEqual([]);
    await expect(stat(join(root, 'mnt/g'))).rejects.toThrow(/ENOENT/);
  });

  it('mount(8) refusing for lack of privilege names CAP_SYS_ADMIN', async () => {
    const { host } = await fixtureHost('one-node-2m', { mountDenied: true });
    await expect(mountHugetlbfs({ host, dir: '/mnt/x' })).rejects.toMatchObject({
      code: 'VMF_PERMISSION',
      message:
        'Could not mount /mnt/x: mount: only root can use "--types" option ' +
        '(mounting and unmounting need root (CAP_SYS_ADMIN))',
    });
  });

  it('a missing mount(8) says where it comes from', async () => {
    const { host } = await fixtureHost('one-node-2m');
    const noMount = {
      ...host,
      run: async () => ({ code: -1, stdout: '', stderr: '', spawnError: 'ENOENT' }),
    };
    await expect(mountHugetlbfs({ host: noMount, dir: '/mnt/x' })).rejects.toThrow(
      'Could not mount /mnt/x: mount(8) is not installed (it comes with util-linux)',
    );
  });

  it('rejects impossible options before running anything', async () => {
    const { host, runs } = await fixtureHost('one-node-2m');
    await expect(mountHugetlbfs({ host, dir: '/mnt/x', size: MiB })).rejects.toThrow(
      'size=1048576 is less than one 2 MiB page: nothing could be allocated',
    );
    await expect(
      mountHugetlbfs({ host, dir: '/mnt/x', size: 4 * MiB, minSize: 8 * MiB }),
    ).rejects.toThrow('min_size (8 MiB) is larger than size (4 MiB)');
    await expect(mountHugetlbfs({ host, dir: 'relative' })).rejects.toThrow(/absolute path/);
    await expect(mountHugetlbfs({ host, dir: '/mnt/x', pageSize: 4 * MiB })).rejects.toThrow(
      /not supported/,
    );
    const none = await fixtureHost('no-hugetlbfs');
    await expect(mountHugetlbfs({ host: none.host, dir: '/mnt/x' })).rejects.toMatchObject({
      code: 'VMF_HUGEPAGES_UNSUPPORTED',
    });
    expect(runs).toEqual([]);
  });
});

describe('umountHugetlbfs and busy detection', () => {
  it('finds processes with open, mapped or cwd files on the mount, not nested mounts or lookalikes', async () => {
    const { host } = await fixtureHost('existing-mount');
    const users = await findMountUsers(host, '/mnt/huge', ['/mnt/huge/sub']);
    expect(users).toEqual([
      {
        pid: 4242,
        command: 'qemu-system-x86',
        paths: ['/mnt/huge/qemu_back_mem.pc.ram.Ab12Cd'],
      },
      { pid: 4300, command: 'bash', paths: ['/mnt/huge'] },
    ]);
  });

  it('refuses while files are in use, naming the users', async () => {
    const { host, runs } = await fixtureHost('existing-mount');
    await expect(umountHugetlbfs({ host, dir: '/mnt/huge' })).rejects.toMatchObject({
      code: 'VMF_MOUNT_BUSY',
      message:
        '/mnt/huge is in use by qemu-system-x86 (pid 4242), bash (pid 4300): refusing to ' +
        'unmount (stop them ' +
        'first, or use --force to detach it lazily; their huge pages stay allocated until they exit)',
    });
    expect(runs).toEqual([]);
  });

  it('--force detaches lazily', async () => {
    const { host, runs } = await fixtureHost('existing-mount');
    const r = await umountHugetlbfs({ host, dir: '/mnt/huge', force: true });
    expect(r).toMatchObject({ lazy: true, argv: ['umount', '--lazy', '/mnt/huge'] });
    expect(r.users.map((u) => u.pid)).toEqual([4242, 4300]);
    expect(runs).toEqual([['umount', '--lazy', '/mnt/huge']]);
    const s = await readHugepageStatus({ host });
    expect(s.mounts.map((m) => m.mountPoint)).not.toContain('/mnt/huge');
  });

  it('unmounts an unused mount and verifies it is gone', async () => {
    const { host, runs } = await fixtureHost('existing-mount');
    const r = await umountHugetlbfs({ host, dir: '/mnt/huge1g' });
    expect(r).toMatchObject({ lazy: false, users: [], argv: ['umount', '/mnt/huge1g'] });
    expect(runs).toEqual([['umount', '/mnt/huge1g']]);
    const s = await readHugepageStatus({ host });
    expect(s.mounts.map((m) => m.mountPoint)).toEqual(['/mnt/huge', '/mnt/with space']);
  });

  it('mount points with spaces round-trip through /proc/mounts escapes', async () => {
    const { host, runs } = await fixtureHost('existing-mount');
    await umountHugetlbfs({ host, dir: '/mnt/with space' });
    expect(runs).toEqual([['umount', '/mnt/with space']]);
  });

  it('--dry-run only records', async () => {
    const { host, runs } = await fixtureHost('existing-mount');
    const r = await umountHugetlbfs({ host, dir: '/mnt/huge1g', dryRun: true });
    expect(r.actions).toEqual([{ kind: 'run', argv: ['umount', '/mnt/huge1g'] }]);
    expect(runs).toEqual([]);
  });

  it('refuses directories that are not hugetlbfs mounts', async () => {
    const { host } = await fixtureHost('existing-mount');
    await expect(umountHugetlbfs({ host, dir: '/mnt/scratch' })).rejects.toThrow(
      '/mnt/scratch is a tmpfs mount, not hugetlbfs; refusing to unmount it',
    );
    await expect(umountHugetlbfs({ host, dir: '/mnt/nothing' })).rejects.toMatchObject({
      code: 'VMF_NOT_MOUNTED',
    });
  });
});
