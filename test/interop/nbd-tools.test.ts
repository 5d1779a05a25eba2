// The libnbd and QEMU clients against vmforge-nbd, over a unix socket and over TCP on
// 127.0.0.1: nbdinfo (--json, --map, --list), nbdcopy both ways, qemu-img (info, map, compare,
// convert) and qemu-io (write, read -P verify). Then vmforge's own client against qemu-nbd and
// nbdkit.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NbdBlockDevice } from '../../src/nbd/client-device.js';
import { listNbdExports } from '../../src/nbd/client.js';
import { describeWithTools } from '../support/tools.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import {
  freePort,
  makeSparseImage,
  python,
  spawnVmforgeNbd,
  startOnSocket,
  unixUri,
  waitForPort,
  type Server,
} from './nbd-support.js';

const servers: Server[] = [];
const devices: NbdBlockDevice[] = [];
afterEach(async () => {
  while (devices.length) await devices.pop()!.close();
  while (servers.length) await servers.pop()!.stop();
});

async function ok(file: string, args: string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Serve `file` over both transports: returns [unix URI, TCP URI]. */
async function serveBoth(file: string, extra: string[] = []): Promise<[string, string]> {
  const dir = await tempDir('vmforge-nbd-tools-');
  const socket = join(dir, 's.sock');
  servers.push(
    await startOnSocket('vmforge', socket, ['-f', 'raw', '-t', '-e', '0', ...extra, file]),
  );
  const port = await freePort();
  const tcp = spawnVmforgeNbd(['-f', 'raw', '-t', '-e', '0', '-p', String(port), ...extra, file]);
  servers.push(tcp);
  await waitForPort(port, tcp);
  return [unixUri(socket), `nbd://127.0.0.1:${port}/`];
}

describeWithTools(['nbdinfo', 'nbdcopy'], 'libnbd tools against vmforge-nbd', () => {
  it('nbdinfo --json, --map and --list over unix and TCP', async () => {
    const dir = await tempDir();
    const file = join(dir, 'disk.raw');
    await makeSparseImage(file, 4 << 20);
    for (const uri of await serveBoth(file, ['-x', 'disk', '-D', 'my disk'])) {
      const named = uri.replace(/\/(\?|$)/, '/disk$1');
      const info = JSON.parse(await ok('nbdinfo', ['--json', named])) as {
        protocol: string;
        structured: boolean;
        exports: { 'export-name': string; description: string; 'export-size': number }[];
      };
      expect(info.protocol).toBe('newstyle-fixed');
      expect(info.structured).toBe(true);
      expect(info.exports[0]).toMatchObject({
        'export-name': 'disk',
        description: 'my disk',
        'export-size': 4 << 20,
      });
      const map = JSON.parse(await ok('nbdinfo', ['--map', '--json', named])) as {
        offset: number;
        length: number;
        type: number;
      }[];
      expect(map[0]).toMatchObject({ offset: 0, length: 196608, type: 0 });
      expect(map[1]).toMatchObject({ offset: 196608, type: 3 });
      const list = await ok('nbdinfo', ['--list', uri]);
      expect(list).toContain('export="disk":');
      expect(list).toContain('description: my disk');
    }
  });

  it('nbdcopy into and out of an export (multi-conn and single connection)', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    await makeSparseImage(src, 8 << 20);
    const dst = join(dir, 'dst.raw');
    await writeFile(dst, Buffer.alloc(8 << 20));
    const [unix, tcp] = await serveBoth(dst);
    await ok('nbdcopy', ['-C', '4', src, unix]);
    expect(Buffer.compare(await readFile(dst), await readFile(src))).toBe(0);
    const back = join(dir, 'back.raw');
    await ok('nbdcopy', ['-C', '1', tcp, back]);
    expect(Buffer.compare(await readFile(back), await readFile(src))).toBe(0);
  });
});

describeWithTools(['nbdsh'], 'multi-conn', () => {
  it('a write on one connection, a flush on another, a read on a third (qemu nbd-multiconn)', async () => {
    const dir = await tempDir();
    const file = join(dir, 'disk.raw');
    await makeSparseImage(file, 4 << 20);
    const socket = join(dir, 's.sock');
    const server = await startOnSocket('vmforge', socket, ['-f', 'raw', '-t', '-e', '0', file]);
    servers.push(server);
    const result = await python<{ multi: boolean[]; seen: boolean }>(
      [
        'import json, sys, nbd',
        'hs = [nbd.NBD() for _ in range(3)]',
        'for h in hs: h.connect_uri(sys.argv[1])',
        "data = b'\\x5c' * 65536",
        'hs[0].pwrite(data, 1048576)',
        'hs[1].flush()',
        "print(json.dumps({'multi': [h.can_multi_conn() for h in hs], 'seen': hs[2].pread(65536, 1048576) == data}))",
      ].join('\n'),
      [unixUri(socket)],
    );
    expect(result).toEqual({ multi: [true, true, true], seen: true });
    // The flush on the other connection made the write durable: it survives kill -9.
    await server.stop('SIGKILL');
    const disk = await readFile(file);
    expect(disk.subarray(1 << 20, (1 << 20) + 65536).every((b) => b === 0x5c)).toBe(true);
  });
});

describeWithTools(['qemu-img', 'qemu-io'], 'QEMU clients against vmforge-nbd', () => {
  it('qemu-img info, map, compare and convert; qemu-io write and verify', async () => {
    const dir = await tempDir();
    const file = join(dir, 'disk.raw');
    await makeSparseImage(file, 4 << 20);
    const copy = join(dir, 'copy.raw');
    await ok('cp', [file, copy]);
    for (const uri of await serveBoth(file)) {
      const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', uri])) as {
        'virtual-size': number;
        format: string;
      };
      expect(info).toMatchObject({ 'virtual-size': 4 << 20, format: 'raw' });
      const map = JSON.parse(await ok('qemu-img', ['map', '--output=json', '-f', 'raw', uri])) as {
        start: number;
        data: boolean;
      }[];
      const local = JSON.parse(
        await ok('qemu-img', ['map', '--output=json', '-f', 'raw', copy]),
      ) as {
        start: number;
        data: boolean;
      }[];
      expect(map.map((m) => [m.start, m.data])).toEqual(local.map((m) => [m.start, m.data]));
      expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri, copy])).code).toBe(
        0,
      );
      const out = join(dir, `out-${uri.startsWith('nbd+unix') ? 'u' : 't'}.qcow2`);
      await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', uri, out]);
      expect((await run('qemu-img', ['compare', '-F', 'raw', out, copy])).code).toBe(0);
    }
    const [unix, tcp] = await serveBoth(file);
    const w = await ok('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x5a 1M 256k',
      '-c',
      'write -z 2M 64k',
      unix,
    ]);
    expect(w).toContain('wrote 262144/262144 bytes at offset 1048576');
    const r = await ok('qemu-io', [
      '-f',
      'raw',
      '-c',
      'read -P 0x5a 1M 256k',
      '-c',
      'read -P 0 2M 64k',
      tcp,
    ]);
    expect(r).toContain('read 262144/262144 bytes at offset 1048576');
    expect(r).not.toContain('Pattern verification failed');
    // And the bytes are in the file.
    const data = await readFile(file);
    expect(data.subarray(1 << 20, (1 << 20) + (256 << 10)).every((b) => b === 0x5a)).toBe(true);
    // A mismatching pattern is detected (the check can fail).
    const bad = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x11 1M 4k', unix]);
    expect(bad.stdout + bad.stderr).toContain('Pattern verification failed');
  });
});

describe('vmforge client against other servers', () => {
  const pattern = async (dir: string) => {
    const file = join(dir, 'disk.raw');
    await makeSparseImage(file, 4 << 20);
    return file;
  };

  async function exercise(uri: string, file: string): Promise<void> {
    const dev = await NbdBlockDevice.open(uri);
    devices.push(dev);
    expect(dev.size).toBe(4 << 20);
    const expected = await readFile(file);
    const buf = new Uint8Array(4 << 20);
    await dev.read(buf, 0);
    expect(Buffer.compare(Buffer.from(buf), expected)).toBe(0);
    const ext = await dev.blockStatus(0, 4 << 20);
    expect(ext[0]).toMatchObject({ offset: 0, length: 196608, data: true });
    expect(ext[1]).toMatchObject({ offset: 196608, data: false, zero: true });
    await dev.write(new Uint8Array(4096).fill(0x77), 8192, { fua: true });
    await dev.writeZeroes(0, 4096);
    await dev.flush();
    const now = await readFile(file);
    expect(now.subarray(8192, 12288).every((b) => b === 0x77)).toBe(true);
    expect(now.subarray(0, 4096).every((b) => b === 0)).toBe(true);
    // qemu-nbd serves one client by default: hang up before the next one connects.
    await dev.close();
  }

  describeWithTools(['qemu-nbd'], 'qemu-nbd', () => {
    it('reads, block status, writes, zeroes, flushes; lists exports', async () => {
      const dir = await tempDir();
      const file = await pattern(dir);
      const socket = join(dir, 'q.sock');
      servers.push(
        await startOnSocket('qemu', socket, ['-f', 'raw', '-t', '-x', 'e1', '-D', 'first', file]),
      );
      await exercise(unixUri(socket, 'e1'), file);
      const list = await listNbdExports({ socket });
      expect(list.exports).toEqual([
        expect.objectContaining({
          name: 'e1',
          description: 'first',
          size: 4 << 20,
          contexts: ['base:allocation'],
        }),
      ]);
    });
  });

  describeWithTools(['nbdkit'], 'nbdkit', () => {
    it('reads, block status, writes, zeroes, flushes', async () => {
      const dir = await tempDir();
      const file = await pattern(dir);
      const socket = join(dir, 'k.sock');
      servers.push(await startOnSocket('nbdkit', socket, ['file', file]));
      await exercise(unixUri(socket), file);
    });
  });
});
