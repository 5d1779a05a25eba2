// Real QEMU lifecycle: CPU and memory hotplug through the helpers (seen in query-cpus-fast and
// query-memory-devices), `vmforge qmp` against a live VM, the stop ladder's QMP steps, cleanup
// when `vmforge run` gets Ctrl-C, and --keep-running leaving a usable VM behind.
import { spawn } from 'node:child_process';
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { hotplugCpu, hotplugMemory, normalizeSpec, QmpClient, Vm } from '../../src/qemu/index.js';
import { binPath, runBin } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import { describeWithTools } from '../support/tools.js';

/** PIDs of processes whose command line mentions `needle`. */
async function pidsMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle) && !cmdline.includes('vitest')) pids.push(Number(name));
  }
  return pids;
}

async function until(what: string, cond: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

describeWithTools(['qemu-system-x86_64'], 'QEMU lifecycle', () => {
  it('hotplugs a CPU and a DIMM into a running TCG guest; vmforge qmp talks to it', async () => {
    const model = normalizeSpec({
      name: 'hotplug',
      arch: 'x86_64',
      accel: 'tcg',
      smp: { cpus: 1, maxcpus: 2 },
      memory: { size: '512M', slots: 2, maxmem: '1G' },
    });
    const vm = await Vm.launch(model);
    try {
      expect(await vm.qmp.execute<{ status: string }>('query-status')).toMatchObject({
        status: 'running',
      });
      const before = await vm.qmp.execute<unknown[]>('query-cpus-fast');
      expect(before).toHaveLength(1);
      const plugged = await hotplugCpu(vm.qmp);
      expect(plugged).toMatchObject({
        id: 'cpu-hp-0-0-0-1-0',
        driver: 'max-x86_64-cpu',
        props: { 'socket-id': 0, 'core-id': 1, 'thread-id': 0 },
      });
      const after =
        await vm.qmp.execute<{ 'cpu-index': number; props: Record<string, number> }[]>(
          'query-cpus-fast',
        );
      expect(after).toHaveLength(2);
      expect(after[1]!.props).toMatchObject({ 'core-id': 1 });
      await expect(hotplugCpu(vm.qmp)).rejects.toThrow(
        /no free CPU slot: all 2 possible CPUs are present/,
      );

      const dimm = await hotplugMemory(vm.qmp, { size: 256 * 1024 * 1024, id: 'dimm-hp0' });
      expect(dimm).toEqual({ id: 'dimm-hp0', memdev: 'mem-dimm-hp0' });
      const devs =
        await vm.qmp.execute<
          { type: string; data: { id: string; size: number; memdev: string } }[]
        >('query-memory-devices');
      expect(devs).toEqual([
        expect.objectContaining({
          type: 'dimm',
          data: expect.objectContaining({
            id: 'dimm-hp0',
            size: 268435456,
            memdev: '/objects/mem-dimm-hp0',
          }),
        }),
      ]);

      const q = vm.plan.qmp.kind === 'unix' ? vm.plan.qmp.path : '';
      const status = await runBin('vmforge', ['qmp', q, 'query-status']);
      expect(status.code).toBe(0);
      expect(JSON.parse(status.stdout)).toMatchObject({ running: true, status: 'running' });
      const hmp = await runBin('vmforge', ['qmp', q, 'hmp', 'info', 'cpus']);
      expect(hmp.stdout).toMatch(/CPU #0: thread_id=\d+\r?\n.*CPU #1: thread_id=\d+/s);
      const bad = await runBin('vmforge', ['qmp', q, 'no-such-command']);
      expect(bad).toMatchObject({
        code: 1,
        stderr:
          'vmforge qmp: QMP no-such-command: CommandNotFound: The command no-such-command has not been found\n',
      });
    } finally {
      // The user's monitor is free while vmforge holds its own.
      // The UEFI shell ignores the ACPI power button: powerdown times out, quit ends it.
      const { step, exit } = await vm.stop({ powerdownTimeoutMs: 1000 });
      expect(step).toBe('quit');
      expect(exit.code).toBe(0);
    }
    expect(await exists(vm.plan.runDir)).toBe(false);
  });

  it('Ctrl-C on vmforge run kills QEMU and removes the run directory', async () => {
    const dir = await tempDir();
    const qmpSock = join(dir, 'ctrlc-qmp.sock');
    const spec = join(dir, 'vm.yaml');
    await writeFile(spec, `name: ctrlc\narch: x86_64\naccel: tcg\nmemory: 256M\nqmp: ${qmpSock}\n`);
    const child = spawn(
      process.execPath,
      [binPath('vmforge'), 'run', spec, '--wait-for', 'never', '--timeout', '120'],
      { stdio: 'ignore' },
    );
    const exited = new Promise<NodeJS.Signals | number | null>((r) =>
      child.once('exit', (code, sig) => r(sig ?? code)),
    );
    await until('QMP socket', () => exists(qmpSock));
    await until('QEMU', async () => (await pidsMentioning(qmpSock)).length > 0);
    const [qemuPid] = await pidsMentioning(qmpSock);
    const cmdline = await readFile(`/proc/${qemuPid}/cmdline`, 'utf8');
    const runDir = /"filename":"([^"]+)\/vars\.fd"/.exec(cmdline)![1]!;
    expect(await exists(runDir)).toBe(true);
    child.kill('SIGINT');
    expect(await exited).toBe('SIGINT');
    await until(
      'QEMU to die',
      async () =>
        !(await exists(`/proc/${qemuPid}`)) ||
        (await readFile(`/proc/${qemuPid}/stat`, 'utf8')).includes(') Z'),
      5000,
    );
    expect(await exists(runDir)).toBe(false);
  });

  it('--keep-running leaves the VM up for vmforge qmp (QMP over TCP), with its run directory', async () => {
    const dir = await tempDir();
    const spec = join(dir, 'vm.yaml');
    const port = await freePort();
    await writeFile(
      spec,
      `name: kept\narch: x86_64\naccel: tcg\nmemory: 256M\nqmp: tcp:127.0.0.1:${port}\n`,
    );
    const r = await runBin('vmforge', ['run', spec, '--keep-running']);
    expect(r.code).toBe(0);
    const m = /VM left running: pid (\d+), QMP (\S+), serial log (\S+), run directory (\S+) /.exec(
      r.stderr,
    );
    expect(m, r.stderr).not.toBeNull();
    const [, pid, sock, , runDir] = m!;
    expect(sock).toBe(`tcp:127.0.0.1:${port}`);
    try {
      expect(await exists(`/proc/${pid}`)).toBe(true);
      const status = await runBin('vmforge', ['qmp', sock!, 'query-status']);
      expect(JSON.parse(status.stdout)).toMatchObject({ status: 'running' });
      const qmp = await QmpClient.connect({ host: '127.0.0.1', port });
      await qmp.execute('quit').catch(() => undefined);
      qmp.destroy();
      await until('kept QEMU to exit', async () => !(await exists(`/proc/${pid}`)), 10_000);
    } finally {
      if (await exists(`/proc/${pid}`)) process.kill(Number(pid), 'SIGKILL');
      await rm(runDir!, { recursive: true, force: true });
    }
  });

  it('--keep-running does not keep a VM whose marker never came', async () => {
    const dir = await tempDir();
    const qmpSock = join(dir, 'timeout-qmp.sock');
    const spec = join(dir, 'vm.yaml');
    await writeFile(
      spec,
      `name: notkept\narch: x86_64\naccel: tcg\nmemory: 256M\nqmp: ${qmpSock}\n`,
    );
    const r = await runBin('vmforge', [
      'run',
      spec,
      '--keep-running',
      '--wait-for',
      'never',
      '--timeout',
      '3',
    ]);
    expect(r.code).toBe(124);
    expect(r.stderr).not.toContain('VM left running');
    expect(await pidsMentioning(qmpSock)).toEqual([]);
  });
});
