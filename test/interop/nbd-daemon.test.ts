// vmforge-nbd as a daemon: qemu-nbd's lifetime rules (-t, -e), --fork/--pid-file, systemd socket
// activation (started by nbdinfo "[ CMD ]"), signals, several exports, -L output, the TCP bind
// default, the handshake limit, and error messages/exit codes side by side with qemu-nbd.
import { access, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { describeWithTools } from '../support/tools.js';
import { binPath, run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import {
  freePort,
  makeSparseImage,
  spawnTool,
  spawnVmforgeNbd,
  startOnSocket,
  unixUri,
  waitForPort,
  waitForSocket,
  type Server,
} from './nbd-support.js';

const servers: Server[] = [];
const pids: number[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop('SIGKILL');
  for (const pid of pids.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

async function image(size = 1 << 20): Promise<{ dir: string; file: string }> {
  const dir = await tempDir('vmforge-nbd-daemon-');
  const file = join(dir, 'disk.raw');
  await makeSparseImage(file, size);
  return { dir, file };
}

const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

describeWithTools(['nbdinfo', 'qemu-nbd'], 'vmforge-nbd daemon behaviour', () => {
  it('without -t it exits 0 when the last client leaves, and removes its socket', async () => {
    const { dir, file } = await image();
    const socket = join(dir, 's.sock');
    const server = spawnVmforgeNbd(['-f', 'raw', '-k', socket, file]);
    servers.push(server);
    await waitForSocket(socket, server);
    // A listing client does not count (it never completes a handshake), as with qemu-nbd.
    expect((await run('nbdinfo', ['--list', unixUri(socket)])).code).toBe(0);
    expect(server.proc.exitCode).toBe(null);
    expect((await run('nbdinfo', ['--size', unixUri(socket)])).stdout.trim()).toBe(String(1 << 20));
    expect(await server.exited).toBe(0);
    expect(await exists(socket)).toBe(false);
  });

  it('-e 1 (the default) makes a second client wait for the first', async () => {
    const { dir, file } = await image();
    const socket = join(dir, 's.sock');
    servers.push(await startOnSocket('vmforge', socket, ['-f', 'raw', '-t', file]));
    const first = net.connect(socket);
    await new Promise((r) => first.once('data', r)); // greeted: this client holds the slot
    const second = spawnTool('nbdinfo', ['--size', unixUri(socket)]);
    let secondDone = false;
    void second.exited.then(() => (secondDone = true));
    await new Promise((r) => setTimeout(r, 1000));
    expect(secondDone).toBe(false);
    first.destroy();
    expect(await second.exited).toBe(0);
  });

  it('--fork returns once serving, --pid-file names the daemon, SIGTERM stops it cleanly', async () => {
    const { dir, file } = await image();
    const socket = join(dir, 's.sock');
    const pidFile = join(dir, 'nbd.pid');
    const r = await run(process.execPath, [
      binPath('vmforge-nbd'),
      '--fork',
      '--pid-file',
      pidFile,
      '-t',
      '-f',
      'raw',
      '-k',
      socket,
      file,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    pids.push(pid);
    expect(() => process.kill(pid, 0)).not.toThrow();
    expect((await run('nbdinfo', ['--size', unixUri(socket)])).stdout.trim()).toBe(String(1 << 20));
    process.kill(pid, 'SIGTERM');
    // The daemon removes the socket, then the pid file, then exits: wait for the exit.
    const alive = (): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 400 && alive(); i++) await new Promise((res) => setTimeout(res, 25));
    expect(alive()).toBe(false);
    expect(await exists(socket)).toBe(false);
    expect(await exists(pidFile)).toBe(false);
  });

  it('--fork reports startup errors and exits 1', async () => {
    const { dir } = await image();
    const r = await run(process.execPath, [
      binPath('vmforge-nbd'),
      '--fork',
      '-k',
      join(dir, 's'),
      join(dir, 'missing.raw'),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Failed to blk_new_open');
  });

  it('systemd socket activation: nbdinfo starts it as [ CMD ]', async () => {
    const { file } = await image();
    const r = await run('nbdinfo', [
      '--size',
      '--',
      '[',
      process.execPath,
      binPath('vmforge-nbd'),
      '-f',
      'raw',
      file,
      ']',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(String(1 << 20));
    // With socket activation, -k is an error (qemu-nbd's message).
    const c = await run('sh', [
      '-c',
      `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`,
      process.execPath,
      binPath('vmforge-nbd'),
      '-k',
      '/tmp/x.sock',
      file,
    ]);
    expect(c.code).toBe(1);
    expect(c.stderr).toBe("vmforge-nbd: Unix socket can't be set when using socket activation\n");
  });

  it('several exports from one process (--export)', async () => {
    const a = await image(1 << 20);
    const b = await image(2 << 20);
    const socket = join(a.dir, 's.sock');
    servers.push(
      await startOnSocket('vmforge', socket, [
        '-t',
        '--export',
        `name=a,file=${a.file},format=raw`,
        '--export',
        `name=b,file=${b.file},format=raw,readonly=on,description=second`,
      ]),
    );
    const list = (await run('nbdinfo', ['--list', unixUri(socket)])).stdout;
    expect(list).toContain('export="a":');
    expect(list).toContain('export="b":');
    expect(list).toContain('description: second');
    expect((await run('nbdinfo', ['--size', unixUri(socket, 'b')])).stdout.trim()).toBe(
      String(2 << 20),
    );
    expect((await run('nbdinfo', ['--is', 'read-only', unixUri(socket, 'b')])).code).toBe(0);
    expect((await run('nbdinfo', ['--is', 'read-only', unixUri(socket, 'a')])).code).toBe(2);
  });

  it('-L prints exactly what qemu-nbd -L prints', async () => {
    const { dir, file } = await image();
    for (const kind of ['vmforge', 'qemu'] as const) {
      const socket = join(dir, `${kind}.sock`);
      servers.push(
        await startOnSocket(kind, socket, [
          '-f',
          'raw',
          '-t',
          '-e',
          '0',
          '-x',
          'exp',
          '-D',
          'some text',
          '-A',
          file,
        ]),
      );
      const ours = await run(process.execPath, [binPath('vmforge-nbd'), '-L', '-k', socket]);
      const theirs = await run('qemu-nbd', ['-L', '-k', socket]);
      expect(ours.code).toBe(0);
      expect(ours.stdout).toBe(theirs.stdout);
      expect(ours.stdout).toContain('qemu:allocation-depth');
    }
  });

  it('TCP listens on 127.0.0.1 unless -b says otherwise', async () => {
    const { file } = await image();
    const port = await freePort();
    const server = spawnVmforgeNbd(['-f', 'raw', '-t', '-p', String(port), file]);
    servers.push(server);
    await waitForPort(port, server);
    const tcp = await readFile('/proc/net/tcp', 'utf8');
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    const listening = tcp.split('\n').filter((l) => l.includes(`:${hexPort} 00000000:0000 0A`));
    expect(listening.map((l) => l.trim().split(/\s+/)[1])).toEqual([`0100007F:${hexPort}`]);
    expect((await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`])).stdout.trim()).toBe(
      String(1 << 20),
    );
  });

  it('--handshake-limit drops clients that stall', async () => {
    const { dir, file } = await image();
    const socket = join(dir, 's.sock');
    const server = await startOnSocket('vmforge', socket, [
      '-f',
      'raw',
      '-t',
      '--handshake-limit',
      '1',
      file,
    ]);
    servers.push(server);
    const s = net.connect(socket);
    s.on('error', () => undefined);
    s.resume(); // read the greeting, then say nothing
    const closed = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 10_000);
      s.once('close', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    expect(closed).toBe(true);
    expect(server.stderr()).toContain('handshake not completed within 1 seconds');
  });

  it('SIGTERM during writes: acknowledged data is on disk and the exit status is 0', async () => {
    const { dir, file } = await image();
    const socket = join(dir, 's.sock');
    const server = await startOnSocket('vmforge', socket, ['-f', 'raw', '-t', file]);
    servers.push(server);
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 0 512k', unixUri(socket)]);
    expect(r.code, r.stderr).toBe(0);
    expect(await server.stop('SIGTERM')).toBe(0);
    const disk = await readFile(file);
    expect(disk.subarray(0, 512 << 10).every((b) => b === 0x61)).toBe(true);
  });

  it('error messages and exit codes match qemu-nbd', async () => {
    const { dir, file } = await image();
    await writeFile(join(dir, 'x'), '');
    const cases = [
      ['nonexistent.img'],
      ['-k', 'relative.sock', file],
      ['-e', '-1', file],
      ['--cache=bogus', file],
      ['--discard=bogus', file],
      ['--detect-zeroes=unmap', file],
      ['--detect-zeroes=bogus', file],
      ['-f', 'bogus', file],
      [file, file],
      ['--bogus-option'],
      ['-L', file],
      ['-L', '-x', 'e'],
      ['--tls-creds=nope', file],
      ['--object', `tls-creds-x509,id=t,dir=${join(dir, 'nope')},endpoint=server`, file],
      ['--object', 'bogus,id=t', file],
      ['-o', 'abc', file],
      ['--tls-authz=a', file],
    ];
    for (const args of cases) {
      const q = await run('qemu-nbd', args, { cwd: dir });
      const v = await run(process.execPath, [binPath('vmforge-nbd'), ...args], { cwd: dir });
      expect({ args, code: v.code, stderr: v.stderr }).toEqual({
        args,
        code: q.code,
        stderr: q.stderr.replaceAll('qemu-nbd', 'vmforge-nbd'),
      });
    }
  });
});
