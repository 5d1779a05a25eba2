// Side by side with qemu-nbd: the same libnbd probe (nbd-probe.py: negotiated features, flags,
// block sizes, block status, data, results and errors of every command, writes included) run
// against vmforge-nbd and qemu-nbd serving identical files with identical options must print
// the same thing; so must `qemu-nbd -L` and `nbdinfo --json/--map`. Raw files must end up
// byte-identical; qcow2 images must pass `qemu-img check` and compare equal to the image qemu-nbd
// wrote.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { describeWithTools } from '../support/tools.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import { PYTHON, makeSparseImage, startOnSocket, unixUri, type Server } from './nbd-support.js';

const PROBE = fileURLToPath(new URL('./nbd-probe.py', import.meta.url));
const servers: Server[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop();
});

interface Side {
  file: string;
  uri: string;
  socket: string;
}

async function ok(file: string, args: string[]): Promise<void> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')}: ${r.stderr}`);
}

/** A qcow2 overlay over a qcow2 base, with data, zero clusters and holes in both layers. */
async function makeQcow2Chain(dir: string, name: string): Promise<string> {
  const base = join(dir, `${name}-base.qcow2`);
  const top = join(dir, `${name}.qcow2`);
  await ok('qemu-img', ['create', '-f', 'qcow2', base, '8M']);
  await ok('qemu-io', [
    '-c',
    'write -P 0x11 0 1M',
    '-c',
    'write -P 0x22 3M 512k',
    '-c',
    'write -z 5M 1M',
    base,
  ]);
  await ok('qemu-img', ['create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
  await ok('qemu-io', ['-c', 'write -P 0x33 512k 1M', '-c', 'write -z 3M 64k', top]);
  return top;
}

async function pair(
  options: string[],
  format: 'raw' | 'qcow2',
): Promise<{ qemu: Side; vmforge: Side }> {
  const dir = await tempDir('vmforge-nbd-cmp-');
  const sides = { qemu: {} as Side, vmforge: {} as Side };
  for (const kind of ['qemu', 'vmforge'] as const) {
    let file: string;
    if (format === 'raw') {
      file = join(dir, `${kind}.raw`);
      await makeSparseImage(file, 8 << 20);
    } else {
      file = await makeQcow2Chain(dir, kind);
    }
    const socket = join(dir, `${kind}.sock`);
    servers.push(await startOnSocket(kind, socket, ['-f', format, '-t', ...options, file]));
    sides[kind] = { file, socket, uri: unixUri(socket) };
  }
  return sides;
}

async function probe(uri: string, args: string[]): Promise<string> {
  const r = await run(PYTHON, [PROBE, uri, ...args]);
  if (r.code !== 0) throw new Error(`probe failed: ${r.stderr}`);
  return r.stdout;
}

async function tool(file: string, args: string[]): Promise<string> {
  const r = await run(file, args);
  return `${r.code}\n${r.stdout}${r.stderr}`;
}

const cases: [string, string[], string[], 'raw' | 'qcow2'][] = [
  // title, server options, probe options, image format
  ['writable raw export', [], ['--writes'], 'raw'],
  ['read-only export (-r)', ['-r'], [], 'raw'],
  ['several clients allowed (-e 0: CAN_MULTI_CONN)', ['-e', '0'], ['--writes'], 'raw'],
  ['allocation depth (-A)', ['-A'], ['--writes', '--depth'], 'raw'],
  ['snapshot overlay (-s -A)', ['-s', '-A'], ['--writes', '--depth'], 'raw'],
  [
    'discard and zero detection (--discard=unmap --detect-zeroes=unmap)',
    ['--discard=unmap', '--detect-zeroes=unmap'],
    ['--writes'],
    'raw',
  ],
  ['writethrough cache', ['--cache=writethrough'], ['--writes'], 'raw'],
  ['qcow2 with a backing chain (-A)', ['-A'], ['--writes', '--depth'], 'qcow2'],
  ['qcow2 read-only (-r -A)', ['-r', '-A'], ['--depth'], 'qcow2'],
  ['qcow2 snapshot overlay (-s -A)', ['-s', '-A'], ['--writes', '--depth'], 'qcow2'],
];

describeWithTools(
  ['qemu-nbd', 'qemu-img', 'qemu-io', 'nbdinfo', 'nbdsh'],
  'vmforge-nbd vs qemu-nbd (libnbd probes)',
  () => {
    for (const [title, options, probeArgs, format] of cases) {
      it(title, async () => {
        const { qemu, vmforge } = await pair(options, format);
        // Transmission flags as qemu-nbd -L decodes them, read from both servers.
        const listQ = await tool('qemu-nbd', ['-L', '-k', qemu.socket]);
        const listV = await tool('qemu-nbd', ['-L', '-k', vmforge.socket]);
        expect(listV).toBe(listQ);
        const infoQ = (await tool('nbdinfo', ['--json', qemu.uri])).replaceAll(qemu.socket, 'S');
        const infoV = (await tool('nbdinfo', ['--json', vmforge.uri])).replaceAll(
          vmforge.socket,
          'S',
        );
        expect(infoV).toBe(infoQ);
        const q = JSON.parse(await probe(qemu.uri, probeArgs)) as Record<string, unknown>;
        const v = JSON.parse(await probe(vmforge.uri, probeArgs)) as Record<string, unknown>;
        if (format === 'qcow2' && options.includes('-r')) {
          // Known divergence: qemu-nbd answers NBD_CMD_CACHE on a read-only image with a backing
          // file with EPERM (its prefetch is a copy-on-read into the read-only top image, and
          // fails with "Failed to flush the refcount block cache"). CACHE is only a hint
          // (proto.md); vmforge prefetches by reading and succeeds.
          expect([q['cache'], v['cache']]).toEqual([
            ['err', 'EPERM'],
            ['ok', null],
          ]);
          delete q['cache'];
          delete v['cache'];
        }
        expect(v).toEqual(q);
        if (options.includes('-A')) {
          const mq = await tool('nbdinfo', ['--map=qemu:allocation-depth', qemu.uri]);
          const mv = await tool('nbdinfo', ['--map=qemu:allocation-depth', vmforge.uri]);
          expect(mv).toBe(mq);
        }
        const mq = await tool('nbdinfo', ['--map', '--totals', qemu.uri]);
        const mv = await tool('nbdinfo', ['--map', '--totals', vmforge.uri]);
        expect(mv).toBe(mq);
        if (format === 'qcow2') {
          // Both servers stopped (images closed): the same writes made the same guest-visible
          // image, and vmforge's is consistent.
          while (servers.length) await servers.pop()!.stop();
          const check = await run('qemu-img', ['check', vmforge.file]);
          expect(check.stdout).toContain('No errors were found on the image.');
          const cmp = await run('qemu-img', ['compare', qemu.file, vmforge.file]);
          expect(cmp.stdout).toContain('Images are identical.');
        } else {
          // Same writes, same bytes on disk (-s: neither file was touched).
          expect(Buffer.compare(await readFile(vmforge.file), await readFile(qemu.file))).toBe(0);
        }
      });
    }
  },
);
