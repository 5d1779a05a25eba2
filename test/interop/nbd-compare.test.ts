// Side by side with qemu-nbd: the same libnbd probe (nbd-probe.py: negotiated features, flags,
// block sizes, block status, data, results and errors of every command, writes included) run
// against vmforge-nbd and qemu-nbd serving identical files with identical options must print
// the same thing; so must `qemu-nbd -L` and `nbdinfo --json/--map`, and the files must end up
// byte-identical.
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

async function pair(options: string[]): Promise<{ qemu: Side; vmforge: Side }> {
  const dir = await tempDir('vmforge-nbd-cmp-');
  const sides = { qemu: {} as Side, vmforge: {} as Side };
  for (const kind of ['qemu', 'vmforge'] as const) {
    const file = join(dir, `${kind}.raw`);
    const socket = join(dir, `${kind}.sock`);
    await makeSparseImage(file, 8 << 20);
    servers.push(await startOnSocket(kind, socket, ['-f', 'raw', '-t', ...options, file]));
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

describeWithTools(
  ['qemu-nbd', 'nbdinfo', 'nbdsh'],
  'vmforge-nbd vs qemu-nbd (libnbd probes)',
  () => {
    const cases: [string, string[], string[]][] = [
      // title, server options, probe options
      ['writable raw export', [], ['--writes']],
      ['read-only export (-r)', ['-r'], []],
      ['several clients allowed (-e 0: CAN_MULTI_CONN)', ['-e', '0'], ['--writes']],
      ['allocation depth (-A)', ['-A'], ['--writes', '--depth']],
      ['snapshot overlay (-s -A)', ['-s', '-A'], ['--writes', '--depth']],
      [
        'discard and zero detection (--discard=unmap --detect-zeroes=unmap)',
        ['--discard=unmap', '--detect-zeroes=unmap'],
        ['--writes'],
      ],
      ['writethrough cache', ['--cache=writethrough'], ['--writes']],
    ];
    for (const [title, options, probeArgs] of cases) {
      it(title, async () => {
        const { qemu, vmforge } = await pair(options);
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
        const q = await probe(qemu.uri, probeArgs);
        const v = await probe(vmforge.uri, probeArgs);
        expect(JSON.parse(v)).toEqual(JSON.parse(q));
        if (options.includes('-A')) {
          const mq = await tool('nbdinfo', ['--map=qemu:allocation-depth', qemu.uri]);
          const mv = await tool('nbdinfo', ['--map=qemu:allocation-depth', vmforge.uri]);
          expect(mv).toBe(mq);
        }
        const mq = await tool('nbdinfo', ['--map', '--totals', qemu.uri]);
        const mv = await tool('nbdinfo', ['--map', '--totals', vmforge.uri]);
        expect(mv).toBe(mq);
        // Same writes, same bytes on disk (-s: neither file was touched).
        expect(Buffer.compare(await readFile(vmforge.file), await readFile(qemu.file))).toBe(0);
      });
    }
  },
);
