// The real thing, as root: reserve 2 MiB pages, mount hugetlbfs in a temp dir, boot a paused
// TCG QEMU with exactly the arguments `vmforge hugepages plan` printed and watch HugePages_Free
// drop by the guest's size, then release everything. afterEach restores the pool and removes
// mounts even when a test fails midway. When this machine is not root or the kernel refuses
// (read-only /sys, no hugetlbfs, mount denied), the suite is skipped with the exact refusal, and
// fails with it under VMFORGE_REQUIRE_TOOLS=1.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { captureIO } from '../../src/cli/io.js';
import { runHugepages } from '../../src/cli/hugepages/index.js';
import { runBin } from '../support/run.js';
import { missingTools } from '../support/tools.js';

const MiB = 2 ** 20;
const POOL = '/sys/kernel/mm/hugepages/hugepages-2048kB';
const POOL_1G = '/sys/kernel/mm/hugepages/hugepages-1048576kB';
const TOOLS = ['qemu-system-x86_64', 'mount', 'umount'];

const readNum = (path: string) => Number(readFileSync(path, 'utf8').trim());
const persistent = (pool: string) =>
  readNum(`${pool}/nr_hugepages`) - readNum(`${pool}/surplus_hugepages`);
const persistent2M = () => persistent(POOL);
const has1G = existsSync(POOL_1G);

function meminfo(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+)/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** The hugetlbfs line of /proc/mounts for `dir`, or undefined. */
function mountLine(dir: string): string | undefined {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[1] === dir && l.split(' ')[2] === 'hugetlbfs');
}

/** Why this machine cannot run the suite, in the kernel's own words; undefined when it can. */
function refusal(): string | undefined {
  const missing = missingTools(TOOLS);
  if (missing.length)
    return `missing: ${missing.join(', ')} (qemu-system-x86_64: apt-get install qemu-system-x86; mount, umount: util-linux)`;
  if (process.getuid?.() !== 0) return 'not running as root (needed to change pools and mount)';
  try {
    // Writing the current value back changes nothing but proves the kernel accepts writes.
    writeFileSync(`${POOL}/nr_hugepages`, `${readNum(`${POOL}/nr_hugepages`)}\n`);
  } catch (err) {
    return `the kernel refused a write to ${POOL}/nr_hugepages: ${(err as Error).message}`;
  }
  const dir = mkdtempSync(join(tmpdir(), 'vmforge-hp-probe-'));
  try {
    const m = spawnSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M', 'none', dir], {
      encoding: 'utf8',
    });
    if (m.status !== 0) return `mount -t hugetlbfs was refused: ${m.stderr.trim()}`;
    spawnSync('umount', [dir]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return undefined;
}

const reason = refusal();
const describeReal =
  reason === undefined
    ? describe
    : process.env['VMFORGE_REQUIRE_TOOLS'] === '1'
      ? (title: string, _fn: () => void) =>
          describe(title, () => {
            it('can change huge page pools and mount hugetlbfs here', () => {
              throw new Error(`VMFORGE_REQUIRE_TOOLS=1 but ${reason}`);
            });
          })
      : (title: string, fn: () => void) => describe.skip(`${title} [skipped: ${reason}]`, fn);

async function hp(args: string[]) {
  const cap = captureIO();
  const code = await runHugepages(args, cap.io);
  return { code, stdout: cap.out, stderr: cap.err };
}

/** A minimal QMP exchange (docs/interop/qmp-spec.rst): greeting, then one command per call. */
async function qmpSession(path: string) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const sock = connect(path);
    try {
      await once(sock, 'connect');
    } catch (err) {
      sock.destroy();
      if (Date.now() > deadline) throw err;
      await sleep(50);
      continue;
    }
    let buffer = '';
    const lines: string[] = [];
    let wake: (() => void) | undefined;
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        lines.push(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
      wake?.();
    });
    const next = async (): Promise<Record<string, unknown>> => {
      while (lines.length === 0) await new Promise<void>((r) => (wake = r));
      return JSON.parse(lines.shift()!) as Record<string, unknown>;
    };
    const execute = async (command: string) => {
      sock.write(JSON.stringify({ execute: command }) + '\n');
      for (;;) {
        const msg = await next();
        if ('return' in msg || 'error' in msg) return msg;
      }
    };
    const greeting = await next();
    expect(greeting).toHaveProperty('QMP');
    await execute('qmp_capabilities');
    return { execute, close: () => sock.destroy() };
  }
}

describeReal('hugepages on the real kernel (root)', () => {
  let saved: number;
  let saved1G: number;
  let work: string;
  let qemu: ChildProcess | undefined;

  beforeEach(() => {
    saved = persistent2M();
    saved1G = has1G ? persistent(POOL_1G) : 0;
    work = mkdtempSync(join(tmpdir(), 'vmforge-hp-'));
    qemu = undefined;
  });

  afterEach(async () => {
    // Release everything, whatever state the test left: QEMU, mounts under `work`, the pool.
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      qemu.kill('SIGKILL');
      await once(qemu, 'exit');
    }
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n').reverse()) {
      const dir = line.split(' ')[1];
      if (dir?.startsWith(work)) spawnSync('umount', ['--lazy', dir]);
    }
    if (persistent2M() !== saved) writeFileSync(`${POOL}/nr_hugepages`, `${saved}\n`);
    if (has1G && persistent(POOL_1G) !== saved1G) {
      writeFileSync(`${POOL_1G}/nr_hugepages`, `${saved1G}\n`);
    }
    rmSync(work, { recursive: true, force: true });
    expect(persistent2M()).toBe(saved);
    if (has1G) expect(persistent(POOL_1G)).toBe(saved1G);
  });

  function startQemu(args: string[]): { child: ChildProcess; qmp: string; stderr: () => string } {
    const qmp = join(work, 'qmp.sock');
    const child = spawn(
      'qemu-system-x86_64',
      [
        ...['-machine', 'pc', '-accel', 'tcg', '-S', '-display', 'none', '-nodefaults'],
        ...['-no-user-config', '-qmp', `unix:${qmp},server=on,wait=off`],
        ...args,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    qemu = child;
    return { child, qmp, stderr: () => err };
  }

  it('reserve, mount, plan, boot paused QEMU on the mount; HugePages_Free drops by the guest size; release', async () => {
    const guestPages = 32; // 64 MiB guest
    const before = meminfo();
    expect(before['Hugepagesize']).toBe(2048); // the checks below read meminfo's default size

    // reserve: the pool grows by the guest's pages, as meminfo confirms.
    const r = await hp(['reserve', '--count', `+${guestPages}`, '--pagesize', '2M', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ previous: saved, granted: saved + guestPages });
    const reserved = meminfo();
    expect(reserved['HugePages_Total']! - before['HugePages_Total']!).toBe(guestPages);
    expect(reserved['HugePages_Free']! - before['HugePages_Free']!).toBe(guestPages);

    // mount: created, mounted, listed in /proc/mounts with our options; idempotent; mismatch.
    const dir = join(work, 'huge');
    const m = await hp(['mount', dir, '--pagesize', '2M', '--size', '64M']);
    expect(m.stderr).toBe('');
    expect(m.code).toBe(0);
    expect(mountLine(dir)).toBe(`none ${dir} hugetlbfs rw,relatime,pagesize=2M,size=67108864 0 0`);
    const again = await hp(['mount', dir, '--size', '64M']);
    expect(again.stdout).toMatch(/already mounted with matching options/);
    const other = await hp(['mount', dir, '--size', '32M']);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/size is 64 MiB, not 32 MiB/);

    // plan, from the built binary: the printed line is the argv QEMU gets.
    const planned = await runBin('vmforge', [
      'hugepages',
      'plan',
      '--memory',
      '64M',
      '--mount',
      dir,
    ]);
    expect(planned.stderr).toBe('');
    expect(planned.code).toBe(0);
    const line = planned.stdout.trim();
    expect(line).not.toMatch(/['"\\]/); // no quoting in this path: splitting on spaces is exact
    const args = line.split(' ');
    const json = await runBin('vmforge', [
      'hugepages',
      'plan',
      '--memory',
      '64M',
      '--mount',
      dir,
      '--json',
    ]);
    expect((JSON.parse(json.stdout) as { args: string[] }).args).toEqual(args);
    expect(args).toEqual([
      '-m',
      '64M',
      '-object',
      `memory-backend-file,id=ram0,size=64M,mem-path=${dir},prealloc=on,share=off`,
      '-machine',
      'memory-backend=ram0',
    ]);

    // QEMU, paused: prealloc=on faults every page in before the monitor answers.
    const vm = startQemu(args);
    const qmp = await qmpSession(vm.qmp).catch((e: unknown) => {
      throw new Error(`QEMU did not come up: ${String(e)}\n${vm.stderr()}`);
    });
    const status = await qmp.execute('query-status');
    expect(status['return']).toMatchObject({ running: false, status: 'prelaunch' });
    const running = meminfo();
    expect(reserved['HugePages_Free']! - running['HugePages_Free']!).toBe(guestPages);
    const fs = await statfs(dir);
    expect([fs.bsize, fs.blocks, fs.bfree]).toEqual([2 * MiB, guestPages, 0]);

    // umount refuses while QEMU maps a file there, and names it.
    const busy = await hp(['umount', dir]);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain(`is in use by qemu-system-x86 (pid ${vm.child.pid})`);
    expect(mountLine(dir)).toBeDefined();

    await qmp.execute('quit');
    qmp.close();
    await once(vm.child, 'exit');
    expect(meminfo()['HugePages_Free']).toBe(reserved['HugePages_Free']);

    // Release: unmount, then the pool back to where it was.
    const u = await hp(['umount', dir]);
    expect(u).toMatchObject({ code: 0, stdout: `Unmounted ${dir}\n` });
    expect(mountLine(dir)).toBeUndefined();
    const back = await hp(['reserve', '--count', String(saved), '--pagesize', '2M']);
    expect(back.code).toBe(0);
    expect(persistent2M()).toBe(saved);
    expect(meminfo()['HugePages_Total']).toBe(before['HugePages_Total']);
  });

  it('memfd backend bound to host node 0 (no mount) takes its pages from the pool', async () => {
    const guestPages = 16; // 32 MiB
    expect((await hp(['reserve', '--count', `+${guestPages}`])).code).toBe(0);
    const planned = await hp(['plan', '--memory', '32M', '--numa', '0=32M', '--json']);
    expect(planned.code).toBe(0);
    const args = (JSON.parse(planned.stdout) as { args: string[] }).args;
    expect(args).toContain(
      'memory-backend-memfd,id=ram-node0,size=32M,hugetlb=on,hugetlbsize=2M,prealloc=on,share=on,host-nodes=0,policy=bind',
    );
    const before = meminfo()['HugePages_Free']!;
    const vm = startQemu(['-smp', '1', ...args]);
    const qmp = await qmpSession(vm.qmp).catch((e: unknown) => {
      throw new Error(`QEMU did not come up: ${String(e)}\n${vm.stderr()}`);
    });
    expect((await qmp.execute('query-status'))['return']).toMatchObject({ running: false });
    expect(before - meminfo()['HugePages_Free']!).toBe(guestPages);
    await qmp.execute('quit');
    qmp.close();
    await once(vm.child, 'exit');
    expect(meminfo()['HugePages_Free']).toBe(before);
  });

  it('every mount option reaches the kernel; min_size reserves pages; --dry-run changes nothing', async () => {
    expect((await hp(['reserve', '--count', '+4'])).code).toBe(0);
    const dir = join(work, 'opts');
    const rsvd = meminfo()['HugePages_Rsvd']!;
    const dry = await hp(['mount', dir, '--size', '8M', '--min-size', '4M', '--dry-run']);
    expect(dry.stdout).toBe(
      `mkdir -p ${dir}\nmount -t hugetlbfs -o pagesize=2M,size=8388608,min_size=4194304 none ${dir}\n`,
    );
    expect(mountLine(dir)).toBeUndefined();
    const m = await hp([
      ...['mount', dir, '--size', '8M', '--min-size', '4M', '--nr-inodes', '16'],
      ...['--uid', '65534', '--gid', '65534', '--mode', '1770'],
    ]);
    expect(m.stderr).toBe('');
    // The order hugetlbfs_show_options prints, which the fixture simulator reproduces.
    expect(mountLine(dir)).toBe(
      `none ${dir} hugetlbfs rw,relatime,uid=65534,gid=65534,mode=1770,nr_inodes=16,pagesize=2M,size=8388608,min_size=4194304 0 0`,
    );
    expect(meminfo()['HugePages_Rsvd']! - rsvd).toBe(2);
    const status = JSON.parse((await hp(['status', '--json'])).stdout) as {
      mounts: { mountPoint: string; uid: number; mode: number; minSize: number }[];
    };
    expect(status.mounts.find((x) => x.mountPoint === dir)).toMatchObject({
      uid: 65534,
      mode: 0o1770,
      minSize: 4 * MiB,
    });
    expect((await hp(['umount', dir, '--dry-run'])).stdout).toBe(`umount ${dir}\n`);
    expect(mountLine(dir)).toBeDefined();
    expect((await hp(['umount', dir])).code).toBe(0);
    expect(meminfo()['HugePages_Rsvd']).toBe(rsvd);
  });

  it.runIf(has1G)(
    '1 GiB pages at run time: granted, or a shortfall naming the boot option',
    async () => {
      const r = await hp(['reserve', '--count', '+1', '--pagesize', '1G', '--json']);
      const result = JSON.parse(r.stdout) as { granted: number; requested: number; ok: boolean };
      // Whatever the kernel did, the report must match sysfs.
      expect(result.granted).toBe(persistent(POOL_1G));
      expect(result.requested).toBe(saved1G + 1);
      if (result.ok) {
        expect(r.code).toBe(0);
        expect(result.granted).toBe(saved1G + 1);
      } else {
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(/hugepagesz=1G hugepages=\d+/);
      }
      const back = await hp(['reserve', '--count', String(saved1G), '--pagesize', '1G']);
      expect(back.code).toBe(0);
      expect(persistent(POOL_1G)).toBe(saved1G);
    },
  );
});
