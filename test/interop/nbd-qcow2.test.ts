// qcow2 exports written over NBD: the same writes done by qemu-io on one copy of an image and
// over vmforge-nbd on another (unaligned writes, zeroes, discards, then 4 concurrent nbdcopy
// connections) must leave images that `qemu-img check` finds clean and `qemu-img compare` finds
// identical. And vmforge-img takes NBD URIs as sources and targets.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { describeWithTools } from '../support/tools.js';
import { binPath, run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import { startOnSocket, unixUri, type Server } from './nbd-support.js';

const servers: Server[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop();
});

async function ok(file: string, args: string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} (${r.code}): ${r.stderr}`);
  return r.stdout;
}

const vmforgeImg = (args: string[]) => run(process.execPath, [binPath('vmforge-img'), ...args]);

const SCRIPT = [
  'write -P 0xa1 0 65536',
  'write -P 0xa2 70000 12345',
  'write -P 0xa3 1048575 3',
  'write -z 2M 256k',
  'write -z 2200000 5000',
  'discard 4M 1M',
  'write -P 0xa4 6M 2M',
  'write -P 0xa5 13M 3M',
];

describeWithTools(['qemu-img', 'qemu-io', 'nbdcopy'], 'qcow2 exports written over NBD', () => {
  it('the same writes as qemu-io: check clean, contents identical', async () => {
    const dir = await tempDir('vmforge-nbd-qcow2-');
    const base = join(dir, 'base.qcow2');
    await ok('qemu-img', ['create', '-f', 'qcow2', base, '16M']);
    await ok('qemu-io', ['-c', 'write -P 0x5b 0 8M', base]);
    const local = join(dir, 'local.qcow2');
    const served = join(dir, 'served.qcow2');
    for (const f of [local, served]) {
      await ok('qemu-img', ['create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', f]);
    }
    const script = SCRIPT.flatMap((c) => ['-c', c]);
    await ok('qemu-io', [...script, local]);

    const socket = join(dir, 's.sock');
    servers.push(
      await startOnSocket('vmforge', socket, ['-t', '-e', '0', '--discard=unmap', served]),
    );
    const uri = unixUri(socket);
    await ok('qemu-io', ['-f', 'raw', ...script, uri]);

    // Concurrent writers: 4 connections copying a data file over the second half.
    const data = join(dir, 'data.raw');
    const bytes = Buffer.alloc(8 << 20);
    for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((i * 2654435761) >>> 0, i);
    await writeFile(data, bytes);
    const big = join(dir, 'big.raw');
    await ok('qemu-img', ['create', '-f', 'raw', big, '16M']);
    await ok('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', uri, big]);
    await ok('qemu-io', ['-f', 'raw', '-c', `write -P 0 8M 8M`, big]);
    await run('dd', [`if=${data}`, `of=${big}`, 'bs=1M', 'seek=8', 'conv=notrunc']);
    await ok('nbdcopy', ['-C', '4', big, uri]);
    await ok('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'qcow2', big, local]);

    await servers.pop()!.stop();
    const check = await run('qemu-img', ['check', served]);
    expect(check.stdout, check.stderr).toContain('No errors were found on the image.');
    const cmp = await run('qemu-img', ['compare', local, served]);
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical.');
    // The check could fail: a different image is reported as different.
    await ok('qemu-io', ['-c', 'write -P 0xff 0 512', local]);
    expect((await run('qemu-img', ['compare', local, served])).code).toBe(1);
  });

  it('vmforge-img info, map and convert with NBD URIs, as qemu-img', async () => {
    const dir = await tempDir('vmforge-nbd-img-');
    const image = join(dir, 'disk.qcow2');
    await ok('qemu-img', ['create', '-f', 'qcow2', image, '16M']);
    await ok('qemu-io', ['-c', 'write -P 0x42 1M 1M', '-c', 'write -z 4M 1M', image]);
    const socket = join(dir, 'guest.sock');
    servers.push(await startOnSocket('vmforge', socket, ['-t', '-e', '0', '-r', image]));
    const uri = unixUri(socket);
    // The same image served raw (the qcow2 file's bytes): qemu-img probes qcow2 through NBD.
    const rawSocket = join(dir, 'file.sock');
    servers.push(
      await startOnSocket('vmforge', rawSocket, ['-t', '-e', '0', '-r', '-f', 'raw', image]),
    );
    const fileUri = unixUri(rawSocket);
    for (const args of [
      ['info', uri],
      ['info', '--output=json', uri], // raw over NBD: no dirty-flag (QEMU's nbd has no get_info)
      ['info', '--output=json', fileUri],
      ['map', '--output=json', uri],
      ['map', fileUri],
    ]) {
      const ours = await vmforgeImg(args);
      const theirs = await run('qemu-img', args);
      expect({ args, out: ours.stdout, code: ours.code }).toEqual({
        args,
        out: theirs.stdout,
        code: theirs.code,
      });
    }
    // NBD as convert source and as target (a raw export written in place).
    const out = join(dir, 'out.qcow2');
    expect((await vmforgeImg(['convert', '-O', 'qcow2', uri, out])).code).toBe(0);
    expect((await run('qemu-img', ['compare', out, image])).stdout).toContain(
      'Images are identical.',
    );
    const target = join(dir, 'target.raw');
    await ok('qemu-img', ['create', '-f', 'raw', target, '16M']);
    const tsock = join(dir, 'target.sock');
    servers.push(await startOnSocket('vmforge', tsock, ['-t', '-e', '0', '-f', 'raw', target]));
    const r = await vmforgeImg(['convert', '-O', 'raw', image, unixUri(tsock)]);
    expect(r.code, r.stderr).toBe(0);
    expect((await run('qemu-img', ['compare', '-F', 'raw', image, target])).stdout).toContain(
      'Images are identical.',
    );
  });
});

describeWithTools(
  ['qemu-img', 'qemu-io', 'qemu-nbd'],
  'vmforge-nbd -l (internal snapshots)',
  () => {
    it('exports the snapshot read-only, as qemu-nbd -l does; a missing one fails to load', async () => {
      const dir = await tempDir('vmforge-nbd-snap-');
      const image = join(dir, 'disk.qcow2');
      await ok('qemu-img', ['create', '-f', 'qcow2', image, '4M']);
      await ok('qemu-io', ['-c', 'write -P 0x11 0 1M', image]);
      await ok('qemu-img', ['snapshot', '-c', 'before', image]);
      await ok('qemu-io', ['-c', 'write -P 0x22 0 2M', image]);
      const uris: Record<string, string> = {};
      for (const [kind, param] of [
        ['vmforge', 'before'],
        ['qemu', 'snapshot.name=before'],
      ] as const) {
        const socket = join(dir, `${kind}.sock`);
        servers.push(await startOnSocket(kind, socket, ['-t', '-f', 'qcow2', '-l', param, image]));
        uris[kind] = unixUri(socket);
      }
      // The snapshot's bytes (0x11 over 1M, then zeros), not the active layer's 0x22.
      await ok('qemu-io', [
        '-r',
        '-f',
        'raw',
        '-c',
        'read -P 0x11 0 1M',
        '-c',
        'read -P 0 1M 1M',
        uris['vmforge']!,
      ]);
      const cmp = await run('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        uris['vmforge']!,
        uris['qemu']!,
      ]);
      expect(cmp.stdout, cmp.stderr).toContain('Images are identical.');
      // Read-only, as with -r.
      const w = await run('qemu-io', ['-f', 'raw', '-c', 'write 0 512', uris['vmforge']!]);
      expect(w.code).not.toBe(0);
      expect(w.stdout + w.stderr).toMatch(/Permission denied|read-only/i);
      // A snapshot that does not exist: exit 1 with qemu-nbd's wording.
      const bad = await run(process.execPath, [
        binPath('vmforge-nbd'),
        '-l',
        'nope',
        '-k',
        join(dir, 'x.sock'),
        image,
      ]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^vmforge-nbd: Failed to load snapshot: /);
      const ref = await run('qemu-nbd', ['-l', 'nope', '-k', join(dir, 'y.sock'), image]);
      expect(ref.code).toBe(1);
      expect(bad.stderr.replace('vmforge-nbd', 'qemu-nbd')).toBe(ref.stderr);
    });
  },
);
