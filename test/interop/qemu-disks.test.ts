// Disks from other sources: a throwaway snapshot overlay made by the vmforge engine (the original
// is never written), a qcow2 whose backing format is not recorded (refused, never probed), and
// NBD exports served by `vmforge-nbd` (the built bin, with qemu-nbd's flags) over a unix socket
// (a full UEFI boot from the qcow2 it decodes) and over TCP (a snapshot overlay on top, made by
// the vmforge engine through src/nbd's client). qemu-img stays as the oracle that reads the
// overlays back.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createImage } from '../../src/image/index.js';
import { normalizeSpec, resolveModelPaths, Vm } from '../../src/qemu/index.js';
import { makeUefiDisk, MARKER_RE, MARKER_SCRIPT } from '../qemu/fat-disk.js';
import { binPath, run, runBin } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * Start `vmforge-nbd --persistent ARGS` and wait until `ready()` says it listens; if it exits
 * first, fail with what it printed.
 */
async function vmforgeNbd(args: string[], ready: () => Promise<boolean>): Promise<ChildProcess> {
  const child = spawn(process.execPath, [binPath('vmforge-nbd'), '--persistent', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; i < 300; i++) {
    if (await ready()) return child;
    const gone = await Promise.race([
      exited.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 100)),
    ]);
    if (gone) throw new Error(`vmforge-nbd ${args.join(' ')} exited: ${stderr}`);
  }
  child.kill('SIGKILL');
  throw new Error(`vmforge-nbd ${args.join(' ')} did not start listening: ${stderr}`);
}

/** SIGTERM (vmforge-nbd then closes its exports and removes its socket), SIGKILL if it hangs. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

describeWithTools(
  ['qemu-system-x86_64', 'qemu-img', 'mkfs.fat', 'mcopy'],
  'disks: snapshot overlays and NBD',
  () => {
    let dir: string;
    let disk: { raw: string; qcow2: string };
    const servers: ChildProcess[] = [];
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'vmforge-disks-'));
      disk = await makeUefiDisk(dir, 'boot', MARKER_SCRIPT);
    });
    afterAll(async () => {
      await Promise.all(servers.map(stopServer));
      await rm(dir, { recursive: true, force: true });
    });

    it('snapshot: the guest writes into a throwaway overlay, the original is untouched', async () => {
      const base = join(dir, 'base.raw');
      await writeFile(base, Buffer.alloc(1024 * 1024, 0x11));
      const model = resolveModelPaths(
        normalizeSpec({
          arch: 'x86_64',
          accel: 'tcg',
          firmware: 'bios',
          disks: [{ path: 'base.raw', format: 'raw', snapshot: true }],
        }),
        dir,
      );
      const vm = await Vm.launch(model, { paused: true }); // overlay made by the vmforge engine
      try {
        const [info] = await vm.qmp.execute<
          {
            qdev: string;
            inserted: {
              drv: string;
              ro: boolean;
              backing_file_depth: number;
              image: { 'backing-image'?: { filename: string; format: string } };
            };
          }[]
        >('query-block');
        expect(info!.inserted).toMatchObject({ drv: 'qcow2', ro: false, backing_file_depth: 1 });
        expect(info!.inserted.image['backing-image']).toMatchObject({
          filename: base,
          format: 'raw',
        });
        // HMP qemu-io prints to QEMU's stdout, not the monitor: check the effect instead.
        expect(await vm.qmp.hmp(`qemu-io -d ${info!.qdev} "write -P 0xab 0 64k"`)).not.toMatch(
          /error/i,
        );
        await vm.qmp.hmp(`qemu-io -d ${info!.qdev} flush`); // qcow2 metadata is cached until then
        const overlay = join(vm.plan.runDir, 'disk0-overlay.qcow2');
        const map = await run('qemu-img', ['map', '-U', '--output=json', '-f', 'qcow2', overlay]);
        expect(JSON.parse(map.stdout)[0]).toMatchObject({
          start: 0,
          length: 65536,
          depth: 0,
          data: true,
        });
      } finally {
        await vm.stop({ powerdownTimeoutMs: 0 });
      }
      expect((await readFile(base)).every((b) => b === 0x11)).toBe(true);
      expect(await exists(vm.plan.runDir)).toBe(false);
    });

    it('refuses a backing file whose format is not recorded, before QEMU starts', async () => {
      const base = join(dir, 'noformat-base.raw');
      await writeFile(base, Buffer.alloc(1024 * 1024));
      const top = join(dir, 'noformat-top.qcow2');
      // qemu-img 7.2 writes such images only with -u (nothing is probed then); old ones
      // from before 7.0 are still around.
      await createImage(top, {
        format: 'qcow2',
        backingFile: base,
        size: 1024 * 1024,
        unsafe: true,
      });
      expect((await run('qemu-img', ['info', top])).stdout).not.toMatch(/backing file format/);
      const model = normalizeSpec({ arch: 'x86_64', accel: 'tcg', firmware: 'bios', disks: [top] });
      await expect(Vm.launch(model, { paused: true })).rejects.toThrow(
        `disks[0]: backing file '${base}' of '${top}' has no recorded format, and vmforge does not let QEMU probe it`,
      );
    });

    it('boots under UEFI from a qcow2 served by vmforge-nbd on a unix socket (nbd+unix://)', async () => {
      const sock = join(dir, 'nbd.sock');
      servers.push(
        await vmforgeNbd(['-f', 'qcow2', '-x', 'boot', '-k', sock, disk.qcow2], () => exists(sock)),
      );
      const spec = join(dir, 'nbd.yaml');
      await writeFile(
        spec,
        `arch: x86_64\nmemory: 256M\ndisks:\n  - uri: nbd+unix:///boot?socket=${sock}\n`,
      );
      const r = await runBin(
        'vmforge',
        ['run', spec, '--wait-for', MARKER_RE, '--timeout', '120'],
        { timeoutMs: 150_000 },
      );
      expect(r.stderr).toMatch(/matched "vmforge boot marker"/);
      expect(r.code).toBe(0);
    });

    it('attaches a vmforge-nbd export over TCP (nbd://) with a snapshot overlay on top', async () => {
      const port = await freePort();
      // Listening once a connection is accepted (a probe that binds the port could steal it).
      const ready = async (): Promise<boolean> =>
        new Promise((resolve) => {
          const c = connect(port, '127.0.0.1');
          c.once('connect', () => {
            c.destroy();
            resolve(true);
          });
          c.once('error', () => resolve(false));
        });
      servers.push(
        await vmforgeNbd(
          [
            '-f',
            'raw',
            '-r',
            '-e',
            '4',
            '-x',
            'data',
            '-b',
            '127.0.0.1',
            '-p',
            String(port),
            disk.raw,
          ],
          ready,
        ),
      );
      const model = normalizeSpec({
        arch: 'x86_64',
        accel: 'tcg',
        firmware: 'bios',
        disks: [{ uri: `nbd://127.0.0.1:${port}/data`, snapshot: true }],
      });
      const vm = await Vm.launch(model, { paused: true }); // overlay made by the vmforge engine
      try {
        const [info] = await vm.qmp.execute<
          {
            qdev: string;
            inserted: {
              drv: string;
              backing_file_depth: number;
              image: { 'backing-image'?: { filename: string } };
            };
          }[]
        >('query-block');
        expect(info!.inserted).toMatchObject({ drv: 'qcow2', backing_file_depth: 1 });
        expect(info!.inserted.image['backing-image']?.filename).toBe(
          `nbd://127.0.0.1:${port}/data`,
        );
        expect(await vm.qmp.hmp(`qemu-io -d ${info!.qdev} "write -P 0xcd 0 4k"`)).not.toMatch(
          /error/i,
        );
        await vm.qmp.hmp(`qemu-io -d ${info!.qdev} flush`);
        const map = await run('qemu-img', [
          'map',
          '-U',
          '--output=json',
          '-f',
          'qcow2',
          join(vm.plan.runDir, 'disk0-overlay.qcow2'),
        ]);
        expect(JSON.parse(map.stdout)[0]).toMatchObject({
          start: 0,
          length: 65536,
          depth: 0,
          data: true,
        }); // one 64 KiB cluster, copied up;
      } finally {
        await vm.stop({ powerdownTimeoutMs: 0 });
      }
    });
  },
);
