// READ replies of raw exports leave by sendfile(2) when the data is in the page cache
// (src/nbd/channel.ts sendFile). libnbd and nbdcopy read through that path over a unix socket
// and TCP, with structured and simple replies, DF, the -o window, reads right after writes, and
// request sizes from 1 byte to 32 MiB; every byte must equal the file's, and the server's -v log
// must show that the zero-copy path was the one taken.
import { createHash } from 'node:crypto';
import { readFile, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { nativeFileOps } from '../../src/block/native.js';
import { pseudoRandom } from '../support/imgops-matrix.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import { describeWithTools } from '../support/tools.js';
import {
  freePort,
  python,
  spawnVmforgeNbd,
  startOnSocket,
  unixUri,
  waitForPort,
  type Server,
} from './nbd-support.js';

const MiB = 1024 * 1024;
const SIZE = 24 * MiB;

const servers: Server[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop();
});

/** 24 MiB: random data, a hole (never written), written zeros, data up to the end. */
async function makeDisk(path: string): Promise<Buffer> {
  const content = Buffer.alloc(SIZE);
  pseudoRandom(7, 10 * MiB).copy(content, 0);
  pseudoRandom(8, 8 * MiB + 333).copy(content, 16 * MiB - 333);
  const fh = await open(path, 'w');
  try {
    await fh.truncate(SIZE);
    await fh.write(content, 0, 10 * MiB, 0);
    await fh.write(Buffer.alloc(2 * MiB), 0, 2 * MiB, 13 * MiB);
    await fh.write(content, 16 * MiB - 333, 8 * MiB + 333, 16 * MiB - 333);
  } finally {
    await fh.close();
  }
  await readFile(path); // into the page cache: the zero-copy path serves cached ranges only
  return content;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Reads as [offset, length]: aligned and not, 1 byte, across hole/data edges, large. */
const READS: [number, number][] = [
  [0, 1],
  [1, 4095],
  [4096, 65536],
  [12345, 300_001],
  [10 * MiB - 100, 200], // data into hole
  [16 * MiB - 400, 1000], // hole into data
  [0, 8 * MiB],
  [SIZE - 513, 513],
  [3 * MiB + 7, 5 * MiB],
];

const READ_SCRIPT = `
import hashlib, json, sys, nbd
uri, structured, df = sys.argv[1], sys.argv[2] == '1', sys.argv[3] == '1'
reads = json.loads(sys.argv[4])
h = nbd.NBD()
h.set_request_structured_replies(structured)
h.connect_uri(uri)
out = {'structured': h.get_structured_replies_negotiated(), 'sha': []}
for off, n in reads:
    # DF (one data chunk, no holes) only exists with structured replies (pread_structured).
    data = h.pread_structured(n, off, lambda *args: 0, nbd.CMD_FLAG_DF) if df else h.pread(n, off)
    out['sha'].append(hashlib.sha256(data).hexdigest())
# A write, then reads of it: the page cache holds the new bytes.
saved = h.pread(70000, 5000000)
h.pwrite(b'\\xa5' * 70000, 5000000)
out['after'] = hashlib.sha256(h.pread(100000, 4990000)).hexdigest()
h.pwrite(saved, 5000000)  # as it was, for the next client
h.shutdown()
print(json.dumps(out))
`;

const READS_ONLY_SCRIPT = `
import hashlib, json, sys, nbd
h = nbd.NBD()
h.set_request_structured_replies(sys.argv[2] == '1')
h.connect_uri(sys.argv[1])
print(json.dumps({'sha': [hashlib.sha256(h.pread(n, off)).hexdigest() for off, n in json.loads(sys.argv[3])]}))
h.shutdown()
`;

async function serve(
  file: string,
  extra: string[] = [],
  format = 'raw',
): Promise<[Server, string[]]> {
  const dir = await tempDir('vmforge-nbd-sendfile-');
  const socket = join(dir, 's.sock');
  const unix = await startOnSocket('vmforge', socket, [
    '-v',
    '-f',
    format,
    '-t',
    '-e',
    '0',
    ...extra,
    file,
  ]);
  servers.push(unix);
  const port = await freePort();
  const tcp = spawnVmforgeNbd([
    '-v',
    '-f',
    format,
    '-t',
    '-e',
    '0',
    '-p',
    String(port),
    ...extra,
    file,
  ]);
  servers.push(tcp);
  await waitForPort(port, tcp);
  return [unix, [unixUri(socket), `nbd://127.0.0.1:${port}/`]];
}

/** Total bytes the server logged as sent by sendfile (its -v line at each disconnect). */
function zeroCopyBytes(log: string): number {
  let total = 0;
  for (const m of log.matchAll(/READ replies sent with sendfile \((\d+) bytes\)/g)) {
    total += Number(m[1]);
  }
  return total;
}

describeWithTools(['nbdcopy'], 'vmforge-nbd zero-copy READ replies (sendfile)', () => {
  it('the native helper with sendfile support is built (it is what makes reads zero-copy)', () => {
    expect(nativeFileOps()?.sendFileRange).toBeTypeOf('function');
  });

  it('libnbd reads equal the file: structured and simple replies, DF, unix and TCP, after writes', async () => {
    const dir = await tempDir();
    const file = join(dir, 'disk.raw');
    const content = await makeDisk(file);
    const [unix, uris] = await serve(file);
    const expected = READS.map(([o, n]) => sha(content.subarray(o, o + n)));
    for (const uri of uris) {
      for (const [structured, df] of [
        [1, 0],
        [1, 1],
        [0, 0],
      ]) {
        const r = await python<{ structured: boolean; sha: string[]; after: string }>(READ_SCRIPT, [
          uri,
          String(structured),
          String(df),
          JSON.stringify(READS),
        ]);
        expect(r.structured, uri).toBe(structured === 1);
        expect(r.sha, `${uri} structured=${structured} df=${df}`).toEqual(expected);
        const after = Buffer.from(content.subarray(4990000, 5090000));
        after.fill(0xa5, 10000, 80000);
        expect(r.after, `${uri} read after write`).toBe(sha(after));
      }
    }
    await unix.stop();
    expect(zeroCopyBytes(unix.stderr())).toBeGreaterThan(MiB);
  });

  it('nbdcopy with 4 and 1 connections and 4 KiB to 32 MiB requests copies the file exactly', async () => {
    const dir = await tempDir();
    const file = join(dir, 'disk.raw');
    const content = await makeDisk(file);
    const [unix, uris] = await serve(file);
    const want = sha(content);
    for (const uri of uris) {
      for (const args of [
        ['-C', '4'],
        ['-C', '1'],
        ['--request-size=4096', '-C', '2'],
        ['--request-size=33554432'],
      ]) {
        const out = join(dir, 'out.raw');
        const r = await run('nbdcopy', [...args, uri, out]);
        expect(r.code, r.stderr).toBe(0);
        expect(sha(await readFile(out)), `${uri} ${args.join(' ')}`).toBe(want);
      }
    }
    await unix.stop();
    expect(zeroCopyBytes(unix.stderr())).toBeGreaterThan(SIZE);
  });

  it('requests sent before NBD_CMD_DISC all get their replies, though libnbd shuts its side', async () => {
    const dir = await tempDir();
    const file = join(dir, 'disk.raw');
    const content = await makeDisk(file);
    const [, uris] = await serve(file);
    const script = `
import hashlib, json, sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = int(sys.argv[2])
done = {}
bufs = []
for i in range(12):
    n = 2097152 if i % 2 == 0 else 262144
    b = nbd.Buffer(n)
    def cb(err, i=i):
        done[i] = err.value if hasattr(err, 'value') else err
        return 1
    h.aio_pread(b, (i * 1999999) % (size - n), completion=cb)
    bufs.append((b, (i * 1999999) % (size - n), n))
h.aio_disconnect()
while not (h.aio_is_closed() or h.aio_is_dead()):
    h.poll(-1)
print(json.dumps({'dead': h.aio_is_dead(), 'errors': [done.get(i) for i in range(12)],
  'sha': [hashlib.sha256(bytes(b.to_bytearray())).hexdigest() for b, _, _ in bufs],
  'ranges': [[o, n] for _, o, n in bufs]}))
`;
    for (const uri of uris) {
      const r = await python<{
        dead: boolean;
        errors: number[];
        sha: string[];
        ranges: [number, number][];
      }>(script, [uri, String(SIZE)]);
      expect(r.dead, uri).toBe(false);
      expect(r.errors, uri).toEqual(Array.from({ length: 12 }, () => 0));
      expect(r.sha, uri).toEqual(r.ranges.map(([o, n]) => sha(content.subarray(o, o + n))));
    }
  });

  it('qcow2: a read-only export sends its data clusters by sendfile, a writable one copies', async () => {
    const dir = await tempDir();
    const raw = join(dir, 'disk.raw');
    const content = await makeDisk(raw);
    const qcow2 = join(dir, 'disk.qcow2');
    // Holes stay unallocated, written zeros become zero clusters, the rest data clusters.
    const c = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    expect(c.code, c.stderr).toBe(0);
    await readFile(qcow2);
    const want = sha(content);
    for (const [extra, zeroCopy] of [
      [['-r'], true],
      [[], false],
    ] as const) {
      const [unix, uris] = await serve(qcow2, [...extra], 'qcow2');
      const expected = READS.map(([o, n]) => sha(content.subarray(o, o + n)));
      for (const uri of uris) {
        for (const args of [
          ['-C', '4'],
          ['-C', '1', '--request-size=65536'],
        ]) {
          const out = join(dir, 'out.raw');
          const r = await run('nbdcopy', [...args, uri, out]);
          expect(r.code, r.stderr).toBe(0);
          expect(sha(await readFile(out)), `${uri} ${args.join(' ')} ${extra.join(' ')}`).toBe(
            want,
          );
        }
        for (const structured of ['1', '0']) {
          const r = await python<{ sha: string[] }>(READS_ONLY_SCRIPT, [
            uri,
            structured,
            JSON.stringify(READS),
          ]);
          expect(r.sha, `${uri} structured=${structured}`).toEqual(expected);
        }
      }
      await unix.stop();
      if (zeroCopy) expect(zeroCopyBytes(unix.stderr())).toBeGreaterThan(8 * MiB);
      else expect(zeroCopyBytes(unix.stderr())).toBe(0);
    }
  });

  it('-o OFFSET: the window starts OFFSET bytes into the file', async () => {
    const dir = await tempDir();
    const file = join(dir, 'disk.raw');
    const content = await makeDisk(file);
    const offset = 3 * MiB + 512;
    const [unix, uris] = await serve(file, ['-o', String(offset)]);
    for (const uri of uris) {
      const out = join(dir, 'window.raw');
      const r = await run('nbdcopy', [uri, out]);
      expect(r.code, r.stderr).toBe(0);
      expect(sha(await readFile(out)), uri).toBe(sha(content.subarray(offset)));
    }
    await unix.stop();
    expect(zeroCopyBytes(unix.stderr())).toBeGreaterThan(0);
    await writeFile(join(dir, 'done'), '');
  });
});
