import { describe, expect, it } from 'vitest';
import { captureIO } from '../../src/cli/io.js';
import { runHugepages } from '../../src/cli/hugepages/index.js';
import { runVmforge } from '../../src/cli/main.js';

import { fixtureHost } from '../support/hugetlb-fixture.js';

async function hp(fixture: string, args: string[], cwd = '/') {
  const fx = await fixtureHost(fixture);
  const cap = captureIO({}, cwd);
  const code = await runHugepages(args, cap.io, fx.host);
  return { code, stdout: cap.out, stderr: cap.err, fx };
}

describe('vmforge hugepages (CLI on fixture trees)', () => {
  it('is registered as a vmforge subprogram', async () => {
    const cap = captureIO();
    expect(await runVmforge(['--help'], cap.io)).toBe(0);
    expect(cap.out).toMatch(
      /^ {2}hugepages {3}huge page pools, hugetlbfs mounts, QEMU memory backends$/m,
    );
  });

  it('status: pools, nodes and mounts as a table', async () => {
    const r = await hp('two-nodes-1g', ['status']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'Huge page pools (default size 2 MiB):',
        '  Size   Total  Free  Reserved  Surplus  Overcommit  Minimum  Maximum  Default',
        '  2 MiB    512   356         0        0           0      512      512  *',
        '  1 GiB      4     3         0        0           0        4        4',
        '',
        'Per NUMA node:',
        '  Node  Size   Total  Free  Surplus',
        '     0  2 MiB    256   256        0',
        '     0  1 GiB      2     2        0',
        '     1  2 MiB    256   100        0',
        '     1  1 GiB      2     1        0',
        '',
        'hugetlbfs mounts:',
        '  Mount point       Page size  Size limit  Min size  Inodes  Owner  Mode',
        '  /dev/hugepages    2 MiB      -           -         -       0:0    0755',
        '  /dev/hugepages1G  1 GiB      -           -         -       0:0    0755',
        '',
      ].join('\n'),
    );
  });

  it('status --json and the unsupported case', async () => {
    const r = await hp('surplus', ['status', '--json']);
    const s = JSON.parse(r.stdout) as { pools: { surplus: number; minimum: number }[] };
    expect(s.pools[0]).toMatchObject({ surplus: 4, minimum: 8 });
    const none = await hp('no-hugetlbfs', ['status']);
    expect(none.code).toBe(0);
    expect(none.stdout).toMatch(/^Huge pages: not available: this kernel has no huge page support/);
  });

  it('reserve: sets the pool and reports it', async () => {
    const r = await hp('one-node-2m', ['reserve', '--memory', '1G']);
    expect(r).toMatchObject({
      code: 0,
      stderr: '',
      stdout: '2 MiB pool: 512 -> 512 pages (1 GiB)\n',
    });
    const g = await hp('two-nodes-1g', [
      'reserve',
      '--count',
      '+1',
      '--pagesize',
      '1G',
      '--node',
      '0',
    ]);
    expect(g.stdout).toBe('1 GiB pool on node 0: 2 -> 3 pages (3 GiB)\n');
  });

  it('reserve: a partial grant exits 2 naming the shortfall and cause', async () => {
    const r = await hp('partial-grant', ['reserve', '--count', '200']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('2 MiB pool: 0 -> 120 pages (asked for 200) (240 MiB)\n');
    expect(r.stderr).toMatch(
      /^vmforge hugepages: The kernel granted 120 of 200 2 MiB huge pages \(short by 80, 160 MiB\): .*fragmented/,
    );
    const j = await hp('partial-grant', ['reserve', '--count', '200', '--json']);
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stdout)).toMatchObject({ granted: 120, shortfall: 80, ok: false });
  });

  it('reserve --dry-run prints the write as a shell command', async () => {
    const r = await hp('one-node-2m', ['reserve', '--count', '8', '--node', '0', '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      'echo 8 > /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages\n',
    );
    expect(await r.fx.read('sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages')).toBe('512\n');
  });

  it('reserve: option errors are one line and exit 1', async () => {
    for (const [args, message] of [
      [['reserve'], 'vmforge hugepages: reserve needs exactly one of --count or --memory'],
      [['reserve', '--count', '1', '--memory', '2M'], 'reserve needs exactly one'],
      [['reserve', '--count', 'lots'], "Invalid count 'lots': expected a non-negative integer"],
      [
        ['reserve', '--count', '1', '--pagesize', '3M'],
        "Invalid page size '3M': not a power of two",
      ],
      [['reserve', '--count', '1', '--node', 'x'], "Invalid NUMA node 'x'"],
      [['reserve', '--bogus'], "unrecognized option '--bogus'"],
    ] as const) {
      const r = await hp('one-node-2m', [...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('mount: uid/gid names, octal mode, relative DIR; then reuse and mismatch', async () => {
    const fx = await fixtureHost('one-node-2m');
    const run = async (args: string[]) => {
      const cap = captureIO({}, '/srv');
      const code = await runHugepages(args, cap.io, fx.host);
      return { code, stdout: cap.out, stderr: cap.err };
    };
    const m = await run([
      'mount',
      'huge',
      '--size',
      '64M',
      '--uid',
      'libvirt-qemu',
      '--gid',
      'kvm',
      '--mode',
      '770',
    ]);
    expect(m).toMatchObject({
      code: 0,
      stdout:
        'Mounted hugetlbfs (2 MiB pages) at /srv/huge (rw,relatime,uid=64055,gid=994,mode=770,pagesize=2M,size=67108864)\n',
    });
    expect(fx.runs[0]).toEqual([
      'mount',
      '-t',
      'hugetlbfs',
      '-o',
      'pagesize=2M,size=67108864,uid=64055,gid=994,mode=0770',
      'none',
      '/srv/huge',
    ]);
    const again = await run(['mount', '/srv/huge', '--size', '64M']);
    expect(again.stdout).toMatch(/^\/srv\/huge: already mounted with matching options/);
    const other = await run(['mount', '/srv/huge', '--size', '32M']);
    expect(other.code).toBe(1);
    expect(other.stderr).toBe(
      'vmforge hugepages: /srv/huge is already a hugetlbfs mount with other options: size is 64 MiB, not 32 MiB (unmount it first, or use another directory)\n',
    );
    const bad = await run(['mount', '/x', '--uid', 'nosuchuser']);
    expect(bad.stderr).toBe('vmforge hugepages: Unknown user: nosuchuser\n');
    const badMode = await run(['mount', '/x', '--mode', 'rwx']);
    expect(badMode.stderr).toContain("Invalid mode 'rwx'");
  });

  it('mount --dry-run prints mkdir and mount', async () => {
    const r = await hp('one-node-2m', [
      'mount',
      '/mnt/g',
      '--pagesize',
      '1G',
      '--min-size',
      '0',
      '--dry-run',
    ]);
    expect(r.stdout).toBe(
      'mkdir -p /mnt/g\nmount -t hugetlbfs -o pagesize=1G,min_size=0 none /mnt/g\n',
    );
  });

  it('mount: too few pages for min_size exits 2', async () => {
    const r = await hp('existing-mount', ['mount', '/mnt/new', '--min-size', '100%']);
    expect(r.code).toBe(2); // 100% of the 64-page pool, but 28 pages are available
    expect(r.stderr).toMatch(/min_size=128 MiB needs 64 free/);
  });

  it('umount: refuses when busy, detaches with --force', async () => {
    const fx = await fixtureHost('existing-mount');
    const cap = captureIO();
    expect(await runHugepages(['umount', '/mnt/huge'], cap.io, fx.host)).toBe(1);
    expect(cap.err).toMatch(
      /^vmforge hugepages: \/mnt\/huge is in use by qemu-system-x86 \(pid 4242\)/,
    );
    const cap2 = captureIO();
    expect(await runHugepages(['umount', '/mnt/huge', '--force'], cap2.io, fx.host)).toBe(0);
    expect(cap2.out).toBe(
      'Detached /mnt/huge lazily; still in use by qemu-system-x86 (pid 4242), bash (pid 4300)\n',
    );
    const cap3 = captureIO();
    expect(await runHugepages(['umount', '/mnt/huge1g'], cap3.io, fx.host)).toBe(0);
    expect(cap3.out).toBe('Unmounted /mnt/huge1g\n');
  });

  it('plan: prints a shell-ready argument line, or JSON', async () => {
    const r = await hp('two-nodes-1g', [
      'plan',
      '--memory',
      '512',
      '--numa',
      '0=384M',
      '--numa',
      '1=128M',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      '-m 512M -object memory-backend-memfd,id=ram-node0,size=384M,hugetlb=on,hugetlbsize=2M,prealloc=on,share=on,host-nodes=0,policy=bind ' +
        '-object memory-backend-memfd,id=ram-node1,size=128M,hugetlb=on,hugetlbsize=2M,prealloc=on,share=on,host-nodes=1,policy=bind ' +
        '-numa node,nodeid=0,memdev=ram-node0 -numa node,nodeid=1,memdev=ram-node1\n',
    );
    const j = await hp('one-node-2m', [
      'plan',
      '--memory',
      '64M',
      '--mount',
      '/dev/hugepages',
      '--id',
      'pc.ram',
      '--json',
    ]);
    expect(JSON.parse(j.stdout).args).toEqual([
      '-m',
      '64M',
      '-object',
      'memory-backend-file,id=pc.ram,size=64M,mem-path=/dev/hugepages,prealloc=on,share=off',
      '-machine',
      'memory-backend=pc.ram',
    ]);
  });

  it('plan: not enough pages exits 2; --no-check prints anyway', async () => {
    const r = await hp('one-node-2m', ['plan', '--memory', '4G']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /^vmforge hugepages: Not enough free huge pages: 2048 2 MiB pages needed, 490 available/,
    );
    const n = await hp('one-node-2m', ['plan', '--memory', '4G', '--no-check', '--no-prealloc']);
    expect(n.code).toBe(0);
    expect(n.stdout).toContain('prealloc=off');
  });

  it('plan: option errors', async () => {
    for (const [args, message] of [
      [['plan'], "required option '--memory <SIZE>' not specified"],
      [['plan', '--memory', '1G', '--numa', 'zero=1G'], "Invalid --numa entry 'zero=1G'"],
      [['plan', '--memory', '1G', '--share', 'maybe'], "Invalid share 'maybe'"],
      [['plan', '--memory', '1G', '--backend', 'ram'], "Invalid backend 'ram'"],
      [['plan', '--memory', '1G', '--id', '0bad'], "Invalid id '0bad'"],
      [['frobnicate'], "unknown command 'frobnicate'"],
    ] as const) {
      const r = await hp('one-node-2m', [...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toContain(message);
    }
  });
});
