// vmforge-nbd -B NAME (qemu:dirty-bitmap:NAME) side by side with qemu-nbd 7.2: the same images
// (bitmaps made with `qemu-img bitmap`, data written with qemu-io, so the bitmaps are QEMU's own),
// served by both, must give the same context lists, ids and BLOCK_STATUS extents to libnbd, the
// same `nbdinfo --map` and `qemu-img map` (x-dirty-bitmap, how backup tools read bitmaps), and the
// same errors. Extents are also checked against a model of the writes, so a bug both servers
// shared could not pass. A writable export must keep an enabled bitmap up to date and leave a
// clean image behind.
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { run, runBin } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { PYTHON, hasPythonNbd, startOnSocket, unixUri, type Server } from './nbd-support.js';

const PROBE = fileURLToPath(new URL('./nbd-bitmap-probe.py', import.meta.url));
const KiB = 1024;
const MiB = 1024 * KiB;
/** Not a multiple of any granularity above 512: every bitmap has a partial last granule. */
const SIZE = 10 * MiB + 1536;

const servers: Server[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop();
});

async function ok(file: string, args: string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

type Range = [offset: number, length: number];

/** Writes before `bdis` is disabled and `b4k` exists (every other bitmap records them too). */
const EARLY: Range[] = [
  [0, 100],
  [1 * MiB, 70 * KiB],
];
/** Writes after: not in `bdis`, the only ones in `b4k`. */
const LATE: Range[] = [
  [3 * MiB + 512, 1024],
  [5 * MiB, 64 * KiB], // written as zeroes
  [8 * MiB - 1000, 2000], // across a 2 MiB granule boundary
  [SIZE - 512, 512], // the image tail
];

/** Bitmap name -> granularity, and which writes it saw. */
const BITMAPS: Record<string, { granularity: number; writes: Range[] }> = {
  b64k: { granularity: 64 * KiB, writes: [...EARLY, ...LATE] },
  b512: { granularity: 512, writes: [...EARLY, ...LATE] },
  b2m: { granularity: 2 * MiB, writes: [...EARLY, ...LATE] },
  bdis: { granularity: 64 * KiB, writes: EARLY },
  b4k: { granularity: 4 * KiB, writes: LATE },
};
const NAMES = Object.keys(BITMAPS);
const ctx = (name: string) => `qemu:dirty-bitmap:${name}`;

function qemuIoWrites(ranges: Range[]): string[] {
  return ranges.flatMap(([off, len], i) => [
    '-c',
    off === 5 * MiB
      ? `write -z ${off} ${len}`
      : `write -P 0x${(0x11 * (i + 1)).toString(16)} ${off} ${len}`,
  ]);
}

/** A qcow2 image holding the bitmaps of BITMAPS, made and filled by QEMU's own tools. */
async function makeImage(dir: string, name = 'img'): Promise<string> {
  const file = join(dir, `${name}.qcow2`);
  await ok('qemu-img', ['create', '-f', 'qcow2', file, String(SIZE)]);
  await ok('qemu-img', ['bitmap', '--add', file, 'b64k']);
  await ok('qemu-img', ['bitmap', '--add', '-g', '512', file, 'b512']);
  await ok('qemu-img', ['bitmap', '--add', '-g', '2M', file, 'b2m']);
  await ok('qemu-img', ['bitmap', '--add', file, 'bdis']);
  await ok('qemu-io', ['-f', 'qcow2', ...qemuIoWrites(EARLY), file]);
  await ok('qemu-img', ['bitmap', '--disable', file, 'bdis']);
  await ok('qemu-img', ['bitmap', '--add', '-g', '4k', file, 'b4k']);
  await ok('qemu-io', ['-f', 'qcow2', ...qemuIoWrites(LATE), file]);
  return file;
}

/**
 * The extents qemu's bitmap_to_extents() must produce for [offset, offset+length) of a bitmap
 * with granularity `g` that saw `writes`: granules touched by a write are dirty (flag 1), runs
 * are clipped to the request, equal ones merge, REQ_ONE keeps the first.
 */
function model(
  g: number,
  writes: Range[],
  offset: number,
  length: number,
  reqOne: boolean,
): number[] {
  const dirty = (pos: number) =>
    writes.some(
      ([o, l]) => Math.floor(pos / g) >= Math.floor(o / g) && pos < Math.ceil((o + l) / g) * g,
    );
  const out: number[] = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const flag = dirty(pos) ? 1 : 0;
    let next = Math.min(end, (Math.floor(pos / g) + 1) * g);
    while (next < end && (dirty(next) ? 1 : 0) === flag) next = Math.min(end, next + g);
    out.push(next - pos, flag);
    pos = next;
  }
  return reqOne ? out.slice(0, 2) : out;
}

function modelExtents(name: string, offset: number, length: number, reqOne: boolean): number[] {
  const { granularity, writes } = BITMAPS[name]!;
  return model(granularity, writes, offset, length, reqOne);
}

/** The bitmaps section of `qemu-img info --output=json` (names, flags, granularities). */
async function bitmapInfo(file: string): Promise<unknown> {
  const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', file])) as {
    'format-specific': { data: { bitmaps?: unknown[] } };
  };
  return info['format-specific'].data.bitmaps;
}

interface ProbeSpec {
  lists?: string[][];
  contexts?: string[];
  requests?: [number, number, boolean][];
  writes?: [string, number, number][];
}
type Status = Record<string, number[][]> | { error: string };
interface ProbeResult {
  lists: string[][];
  size: number;
  selected: Record<string, boolean>;
  status: [[number, number, boolean], Status][];
  after?: [[number, number, boolean], Status][];
}

async function probe(socket: string, spec: ProbeSpec, exportName = ''): Promise<ProbeResult> {
  const r = await run(PYTHON, [PROBE, unixUri(socket, exportName), JSON.stringify(spec)], {
    timeoutMs: 60_000,
  });
  if (r.code !== 0) throw new Error(`probe failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as ProbeResult;
}

/** The same image twice (one per server) in a fresh directory. */
async function twoCopies(): Promise<{ dir: string; qemu: string; vmforge: string }> {
  const dir = await tempDir('vmforge-nbd-bitmap-');
  const qemu = await makeImage(dir, 'qemu');
  const vmforge = join(dir, 'vmforge.qcow2');
  await copyFile(qemu, vmforge);
  return { dir, qemu, vmforge };
}

/** Start both servers with the same options (FILE last); returns their sockets. */
async function serveBoth(
  dir: string,
  files: { qemu: string; vmforge: string },
  args: string[],
): Promise<{ qemu: string; vmforge: string }> {
  const sockets = { qemu: join(dir, 'qemu.sock'), vmforge: join(dir, 'vmforge.sock') };
  for (const kind of ['qemu', 'vmforge'] as const) {
    servers.push(await startOnSocket(kind, sockets[kind], ['-t', ...args, files[kind]]));
  }
  return sockets;
}

/** -B for every bitmap, in NAMES order (qemu-nbd lists them in reverse). */
const B_ALL = NAMES.flatMap((n) => ['-B', n]);

/** BLOCK_STATUS requests: whole image, REQ_ONE, unaligned edges, inside granules, the tail. */
function requests(): [number, number, boolean][] {
  const list: [number, number, boolean][] = [
    [0, SIZE, false],
    [0, SIZE, true],
    [1000, 3 * MiB, false],
    [65535, 2, false],
    [1 * MiB + 100, 1, false],
    [1 * MiB + 100, 1, true],
    [3 * MiB, 4096, true],
    [3 * MiB + 1000, 100 * KiB, false],
    [8 * MiB - 1500, 3000, false],
    [SIZE - 4096, 4096, false],
    [SIZE - 100, 100, false],
    [SIZE - 1536, 1536, true],
  ];
  // Deterministic pseudo-random ranges (an LCG) for the cases nobody thought of.
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let i = 0; i < 12; i++) {
    const off = rnd(SIZE - 1);
    list.push([off, 1 + rnd(SIZE - off - 1), i % 3 === 0]);
  }
  return list;
}

describeWithTools(
  ['qemu-nbd', 'qemu-img', 'qemu-io', 'nbdinfo'],
  'vmforge-nbd -B against qemu-nbd',
  () => {
    it('has libnbd for Python (python3-libnbd)', () => {
      expect(hasPythonNbd()).toBe(true);
    });

    it('lists, selects and reports every bitmap as qemu-nbd does, and as the writes say', async () => {
      const { dir, ...files } = await twoCopies();
      const sockets = await serveBoth(dir, files, ['-r', ...B_ALL]);
      const spec: ProbeSpec = {
        lists: [
          [],
          ['qemu:'],
          ['qemu:dirty-bitmap:'],
          ['base:'],
          [ctx('b512')],
          [ctx('nope')],
          ['qemu:dirty-bitmap:b64', 'qemu:dirty-bitmap:b64k2', 'qemu:allocation-depth'],
          [ctx('b2m'), 'base:allocation', ctx('bdis')],
        ],
        contexts: ['base:allocation', ...NAMES.map(ctx)],
        requests: [...requests(), [SIZE, 512, false]],
      };
      const q = await probe(sockets.qemu, spec);
      const v = await probe(sockets.vmforge, spec);
      expect(v).toEqual(q);

      // What qemu-nbd answers (so equality above means something): -B order reversed.
      const reversed = [...NAMES].reverse().map(ctx);
      expect(q.lists).toEqual([
        ['base:allocation', ...reversed],
        reversed,
        reversed,
        ['base:allocation'],
        [ctx('b512')],
        [],
        [],
        // In the export's order, not the query's.
        ['base:allocation', ctx('bdis'), ctx('b2m')],
      ]);
      expect(Object.values(v.selected)).toEqual(spec.contexts!.map(() => true));
      for (const [[off, len, one], status] of v.status) {
        if (off >= SIZE) {
          expect(status).toEqual({ error: 'EINVAL' });
          continue;
        }
        for (const name of NAMES) {
          expect(
            (status as Record<string, number[][]>)[ctx(name)],
            `${name} ${off}+${len}`,
          ).toEqual([modelExtents(name, off, len, one)]);
        }
      }
    });

    it('gives each bitmap qemu-nbd context id, alone or with others', async () => {
      const { dir, ...files } = await twoCopies();
      const sockets = await serveBoth(dir, files, ['-r', '-B', 'b4k', '-B', 'b512', '-B', 'bdis']);
      for (const metaContexts of [
        [ctx('b512')],
        [ctx('b4k'), 'base:allocation'],
        [ctx('bdis'), ctx('b4k'), ctx('b512')],
      ]) {
        const seen: Record<string, unknown> = {};
        for (const kind of ['qemu', 'vmforge'] as const) {
          const client = await NbdClient.connect({ socket: sockets[kind], metaContexts });
          try {
            seen[kind] = {
              ids: Object.fromEntries(client.info.contexts),
              status: Object.fromEntries(await client.blockStatus(0, SIZE)),
            };
          } finally {
            await client.close();
          }
        }
        expect(seen['vmforge']).toEqual(seen['qemu']);
      }
      // qemu numbers its bitmaps from 2 in its (reversed) list: bdis 2, b512 3, b4k 4.
      const client = await NbdClient.connect({
        socket: sockets.vmforge,
        metaContexts: [ctx('b4k')],
      });
      expect(Object.fromEntries(client.info.contexts)).toEqual({ [ctx('b4k')]: 4 });
      await client.close();
    });

    it('gives nbdinfo --map and qemu-img map (x-dirty-bitmap) the same answers', async () => {
      const { dir, ...files } = await twoCopies();
      const sockets = await serveBoth(dir, files, ['-r', ...B_ALL]);
      for (const name of NAMES) {
        const maps: Record<string, string[]> = {};
        for (const kind of ['qemu', 'vmforge'] as const) {
          maps[kind] = [
            await ok('nbdinfo', [`--map=${ctx(name)}`, unixUri(sockets[kind])]),
            await ok('qemu-img', [
              'map',
              '--output=json',
              '--image-opts',
              `driver=nbd,server.type=unix,server.path=${sockets[kind]},x-dirty-bitmap=${ctx(name)}`,
            ]),
          ];
        }
        expect(maps['vmforge'], name).toEqual(maps['qemu']);
        // The dirty runs of the model, as nbdinfo prints them.
        const model = modelExtents(name, 0, SIZE, false);
        const dirtyRuns = model.filter((f, i) => i % 2 === 1 && f === 1).length;
        expect(maps['vmforge']![0]!.match(/\sdirty$/gm)?.length ?? 0, name).toBe(dirtyRuns);
        // x-dirty-bitmap reads dirty as "no data" (the NBD_STATE_HOLE bit).
        const json = JSON.parse(maps['vmforge']![1]!) as { data: boolean }[];
        expect(json.filter((e) => !e.data).length, name).toBe(dirtyRuns);
      }
    });

    it('exports the same contexts with duplicates, -s, a backing file, -l and --export', async () => {
      const { dir, ...files } = await twoCopies();
      const spec: ProbeSpec = {
        lists: [[]],
        contexts: [ctx('b64k'), ctx('b512')],
        requests: [
          [0, SIZE, false],
          [1000, 2 * MiB, false],
        ],
      };
      const compare = async (args: string[], f = files) => {
        const sockets = await serveBoth(dir, f, args);
        const q = await probe(sockets.qemu, spec);
        expect(await probe(sockets.vmforge, spec), args.join(' ')).toEqual(q);
        while (servers.length) await servers.pop()!.stop();
        return q;
      };
      // The same bitmap twice: listed twice, a SET selects the first (qemu's lookup).
      const dup = await compare(['-r', '-B', 'b64k', '-B', 'b512', '-B', 'b64k']);
      expect(dup.lists[0]).toEqual(['base:allocation', ctx('b64k'), ctx('b512'), ctx('b64k')]);
      // Writes to a -s overlay do not reach the image, whose bitmaps are exported.
      await compare(['-s', '-B', 'b64k', '-B', 'b512']);
      // A bitmap of the backing file, found below a writable overlay.
      const overlays = {
        qemu: join(dir, 'qemu-top.qcow2'),
        vmforge: join(dir, 'vmforge-top.qcow2'),
      };
      for (const kind of ['qemu', 'vmforge'] as const) {
        await ok('qemu-img', [
          'create',
          '-f',
          'qcow2',
          '-b',
          files[kind],
          '-F',
          'qcow2',
          overlays[kind],
        ]);
      }
      const chain = await compare(['-B', 'b64k', '-B', 'b512'], overlays);
      expect(chain.status[0]![1]).toHaveProperty(ctx('b512'));
      // An internal snapshot loaded with -l: the bitmaps are the image's current ones.
      for (const kind of ['qemu', 'vmforge'] as const) {
        await ok('qemu-img', ['snapshot', '-c', 'snap', files[kind]]);
      }
      await compare(['-l', 'snap', '-B', 'b64k', '-B', 'b512']);

      // --export bitmap=NAME (repeatable, listed in the order given) == -B in reverse.
      const socket = join(dir, 'multi.sock');
      servers.push(
        await startOnSocket('vmforge', socket, [
          '-t',
          '--export',
          `name=one,file=${files.vmforge},readonly=on,bitmap=b512,bitmap=b64k`,
          '--export',
          `name=two,file=${files.vmforge},readonly=on`,
        ]),
      );
      const multi = await probe(socket, spec, 'one');
      expect(multi.lists).toEqual([['base:allocation', ctx('b512'), ctx('b64k')]]);
      expect(multi.status).toEqual(dup.status);
      expect((await probe(socket, { lists: [[]] }, 'two')).lists).toEqual([['base:allocation']]);
    });

    it.each(['ignore', 'unmap'])(
      'keeps the enabled bitmaps of a writable export up to date, --discard=%s; the image closes clean',
      async (discard) => {
        const { dir, ...files } = await twoCopies();
        const sockets = await serveBoth(dir, files, [
          `--discard=${discard}`,
          '-B',
          'b64k',
          '-B',
          'bdis',
          '-B',
          'b512',
        ]);
        const writes: [string, number, number][] = [
          ['write', 6 * MiB + 100, 4096],
          ['zero', 7 * MiB + 512, 1024],
          ['trim', 9 * MiB, 128 * KiB], // a change only with --discard=unmap
          ['write', SIZE - 70000, 70000],
        ];
        const spec: ProbeSpec = {
          contexts: [ctx('b64k'), ctx('bdis'), ctx('b512')],
          requests: [
            [0, SIZE, false],
            [6 * MiB, 2 * MiB, false],
            [SIZE - 100 * KiB, 100 * KiB, true],
          ],
          writes,
        };
        const q = await probe(sockets.qemu, spec);
        const v = await probe(sockets.vmforge, spec);
        expect(v).toEqual(q);
        // The enabled bitmaps now have the new granules, the disabled one does not.
        const changed: Range[] = writes
          .filter(([op]) => op !== 'trim' || discard === 'unmap')
          .map(([, o, l]) => [o, l]);
        for (const [[off, len, one], status] of v.after!) {
          const st = status as Record<string, number[][]>;
          for (const name of ['b64k', 'b512']) {
            const { granularity, writes: before } = BITMAPS[name]!;
            expect(st[ctx(name)], name).toEqual([
              model(granularity, [...before, ...changed], off, len, one),
            ]);
          }
          expect(st[ctx('bdis')]).toEqual([modelExtents('bdis', off, len, one)]);
        }
        expect(v.after).not.toEqual(v.status);

        for (const s of servers.splice(0)) expect(await s.stop()).toBe(0);
        // Stored on close: same bitmaps, flags and contents as qemu-nbd left, no "in-use".
        expect(await bitmapInfo(files.vmforge)).toEqual(await bitmapInfo(files.qemu));
        expect(JSON.stringify(await bitmapInfo(files.vmforge))).not.toContain('in-use');
        await ok('qemu-img', ['check', files.vmforge]);
        await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', files.qemu, files.vmforge]);
        // A fresh qemu-nbd reads the stored bitmaps as the qemu-written image's.
        const maps: string[] = [];
        for (const f of [files.qemu, files.vmforge]) {
          const socket = join(dir, 'check.sock');
          const s = await startOnSocket('qemu', socket, [
            '-t',
            '-r',
            '-B',
            'b64k',
            '-B',
            'b512',
            f,
          ]);
          maps.push(await ok('nbdinfo', [`--map=${ctx('b64k')}`, unixUri(socket)]));
          maps.push(await ok('nbdinfo', [`--map=${ctx('b512')}`, unixUri(socket)]));
          await s.stop();
        }
        expect(maps[2]).toEqual(maps[0]);
        expect(maps[3]).toEqual(maps[1]);
        expect(maps[2]).toMatch(/^\s+6291456\s+65536\s+1\s+dirty$/m);
      },
    );
  },
);

describeWithTools(
  ['qemu-nbd', 'qemu-img', 'qemu-io'],
  'vmforge-nbd -B errors against qemu-nbd',
  () => {
    /** Both programs' stderr (tool name normalised) and exit status for the same arguments. */
    async function both(
      args: string[],
      cwd: string,
    ): Promise<{ qemu: string[]; vmforge: string[] }> {
      const socket = join(cwd, 'err.sock');
      const q = await run('qemu-nbd', ['-k', socket, ...args], { cwd, timeoutMs: 20_000 });
      const v = await runBin('vmforge-nbd', ['-k', socket, ...args], { cwd, timeoutMs: 20_000 });
      return {
        qemu: [String(q.code), q.stderr.replaceAll('qemu-nbd:', 'vmforge-nbd:')],
        vmforge: [String(v.code), v.stderr],
      };
    }

    describe('refuses what qemu-nbd refuses, with its words and status', () => {
      it.each([
        ['an unknown bitmap', ['-B', 'nope', 'img.qcow2'], "Bitmap 'nope' is not found"],
        [
          'an unknown bitmap, read-only',
          ['-r', '-B', 'nope', 'img.qcow2'],
          "Bitmap 'nope' is not found",
        ],
        ['an empty name', ['-r', '-B', '', 'img.qcow2'], "Bitmap '' is not found"],
        ['a raw image', ['-f', 'raw', '-B', 'b64k', 'raw.img'], "Bitmap 'b64k' is not found"],
        ['a probed raw image', ['-B', 'b64k', 'raw.img'], 'probing guessed raw'],
        ['a qcow2 v2 image', ['-B', 'b64k', 'v2.qcow2'], "Bitmap 'b64k' is not found"],
        [
          'an offset',
          ['-r', '-o', '65536', '-B', 'b64k', 'img.qcow2'],
          "Bitmap 'b64k' is not found",
        ],
        ['an inconsistent bitmap', ['-B', 'b512', 'inuse.qcow2'], "Bitmap 'b512' is inconsistent"],
        ['an inconsistent bitmap, read-only', ['-r', '-B', 'b512', 'inuse.qcow2'], 'inconsistent'],
        // qemu-nbd checks the last -B first: the inconsistent one is reported, not the unknown one.
        ['-B order', ['-B', 'nope', '-B', 'b64k', 'inuse.qcow2'], "Bitmap 'b64k' is inconsistent"],
        ['list mode', ['-L', '-B', 'b64k'], 'List mode is incompatible with per-device settings'],
      ])('%s', async (_what, args, text) => {
        const dir = await tempDir('vmforge-nbd-bitmap-err-');
        await makeImage(dir, 'img');
        await ok('qemu-img', ['create', '-f', 'raw', join(dir, 'raw.img'), '1M']);
        await ok('qemu-img', [
          'create',
          '-f',
          'qcow2',
          '-o',
          'compat=0.10',
          join(dir, 'v2.qcow2'),
          '1M',
        ]);
        // A writer killed with its bitmaps marked in use leaves them inconsistent.
        const inuse = join(dir, 'inuse.qcow2');
        await copyFile(join(dir, 'img.qcow2'), inuse);
        await run('qemu-io', ['-f', 'qcow2', '-c', 'write 0 64k', '-c', 'sigraise 9', inuse]);
        const before = await bitmapInfo(join(dir, 'img.qcow2'));

        const r = await both(args as string[], dir);
        expect(r.vmforge).toEqual(r.qemu);
        expect(r.vmforge[0]).toBe('1');
        expect(r.vmforge[1]).toContain(text);
        // A refused export leaves the image as it was (no bitmap left "in use").
        expect(await bitmapInfo(join(dir, 'img.qcow2'))).toEqual(before);
      });
    });
  },
);
