// Channel.sendFile(): READ reply data handed from the page cache to a real unix socket with
// sendfile(2). What must hold: the bytes arrive exactly as header + file range, in order with
// everything written before and after (also when the socket fills up mid-reply and the rest is
// queued); nothing is sent on the zero-copy path when it cannot be taken (bytes already queued,
// range not in the page cache, TLS).
import { closeSync, constants, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { TLSSocket } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { allocIoBuffer } from '../../src/block/io-buffer.js';
import { nativeFileOps } from '../../src/block/native.js';
import { Channel } from '../../src/nbd/channel.js';
import { pseudoRandom } from '../support/imgops-matrix.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const take = (n: number) => allocIoBuffer(n);
const give = () => undefined;

interface Pair {
  server: Socket;
  client: Socket;
  /** Resolves with the first `n` bytes the client receives. */
  receive(n: number): Promise<Buffer>;
}

const open: (() => void)[] = [];
afterEach(() => {
  while (open.length) open.pop()!();
});

async function socketPair(dir: string): Promise<Pair> {
  const path = join(dir, 's.sock');
  const listener = createServer();
  await new Promise<void>((resolve) => listener.listen(path, resolve));
  const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
  const client = connect(path);
  client.pause(); // the socket fills up until the test starts reading
  const server = await accepted;
  open.push(() => {
    client.destroy();
    server.destroy();
    listener.close();
  });
  const chunks: Buffer[] = [];
  let have = 0;
  return {
    server,
    client,
    receive: (n) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (have >= n) {
            client.off('data', onData);
            resolve(Buffer.concat(chunks).subarray(0, n));
          }
        };
        const onData = (c: Buffer) => {
          chunks.push(c);
          have += c.length;
          check();
        };
        client.on('data', onData);
        client.once('error', reject);
        client.resume();
        check();
      }),
  };
}

/** A file of pseudo-random bytes, read once so it is in the page cache, open for reading. */
async function cachedFile(seed: number, size: number) {
  const dir = await tempDir();
  const file = join(dir, 'data');
  const data = pseudoRandom(seed, size);
  writeFileSync(file, data);
  readFileSync(file);
  const fd = openSync(file, 'r');
  open.push(() => closeSync(fd));
  return { dir, data, fd };
}

const native = nativeFileOps();
const available = Boolean(native?.sendFileRange && native.cached);

describe('Channel.sendFile (sendfile of page-cache data to the socket)', () => {
  it('the native helper provides cachestat and sendfile (CI builds it)', () => {
    if (process.env['VMFORGE_REQUIRE_TOOLS'] !== '1' && !available) return;
    expect(available).toBe(true);
  });

  it.runIf(available)('sends a small reply whole, without a copy', async () => {
    const dir = await tempDir();
    const file = join(dir, 'data');
    const data = pseudoRandom(1, 4 * MiB);
    writeFileSync(file, data);
    readFileSync(file); // in the page cache
    const fd = openSync(file, 'r');
    open.push(() => closeSync(fd));
    const pair = await socketPair(dir);
    const ch = new Channel(pair.server);
    const header = Buffer.from('HEADER-0123456789ABCDEF-28b!');
    expect(ch.sendFile(header, { fd, offset: 12345 }, 64 * 1024, take, give)).toBe(true);
    expect(ch.zeroCopy).toEqual({ replies: 1, bytes: 64 * 1024 });
    const got = await pair.receive(header.length + 64 * 1024);
    expect(got.equals(Buffer.concat([header, data.subarray(12345, 12345 + 64 * 1024)]))).toBe(true);
  });

  it.runIf(available)(
    'a reply larger than the socket buffer continues by sendfile as the socket drains; later output waits in order',
    async () => {
      const { dir, data, fd } = await cachedFile(2, 8 * MiB);
      const pair = await socketPair(dir);
      const ch = new Channel(pair.server);
      const h2 = Buffer.alloc(28, 2);
      const h3 = Buffer.alloc(16, 3);
      const h4 = Buffer.alloc(28, 4);
      // The client is not reading: 2 MiB replies go out until one no longer fits (the first
      // sendfile raised the socket's buffer to what net.core.wmem_max allows).
      const parts: Buffer[] = [];
      let asked = 0;
      for (let i = 0; i < 16 && ch.zeroCopy.bytes === asked; i++) {
        const h1 = Buffer.alloc(16, 0x10 + i);
        const offset = 1000 + i * 4096;
        expect(ch.sendFile(h1, { fd, offset }, 2 * MiB, take, give)).toBe(true);
        parts.push(h1, data.subarray(offset, offset + 2 * MiB));
        asked += 2 * MiB;
      }
      expect(ch.zeroCopy.bytes).toBeLessThan(asked);
      // That reply is not all out: what follows is held back, in order.
      expect(ch.sendFile(h2, { fd, offset: 5 * MiB }, MiB, take, give)).toBe(true);
      ch.write(h3);
      ch.writev([h4, data.subarray(7 * MiB, 7 * MiB + 100)]);
      expect(ch.congested).toBe(false);
      const flushed = ch.flushed();
      const expected = Buffer.concat([
        ...parts,
        h2,
        data.subarray(5 * MiB, 6 * MiB),
        h3,
        h4,
        data.subarray(7 * MiB, 7 * MiB + 100),
      ]);
      const got = await pair.receive(expected.length);
      expect(got.equals(expected)).toBe(true);
      await flushed;
      expect(ch.zeroCopy.replies).toBe(parts.length / 2 + 1);
      // Only the 64 KiB slices that waited for room were copied.
      expect(ch.zeroCopy.bytes).toBeGreaterThan(asked + MiB - 16 * 64 * 1024);
    },
  );

  it.runIf(available)(
    'a reply waits for bytes already queued in Node, then goes by sendfile',
    async () => {
      const { dir, data, fd } = await cachedFile(6, 2 * MiB);
      const pair = await socketPair(dir);
      const ch = new Channel(pair.server);
      const queued = pseudoRandom(7, 3 * MiB); // more than the socket holds: stays in Node's queue
      ch.writev([queued]);
      expect(pair.server.writableLength).toBeGreaterThan(0);
      const h = Buffer.alloc(16, 9);
      expect(ch.sendFile(h, { fd, offset: 4096 }, MiB, take, give)).toBe(true);
      ch.end(); // deferred until the held reply is out
      const expected = Buffer.concat([queued, h, data.subarray(4096, 4096 + MiB)]);
      const got = await pair.receive(expected.length);
      expect(got.equals(expected)).toBe(true);
      await new Promise<void>((resolve) => pair.client.once('end', resolve).resume());
      expect(ch.zeroCopy.bytes).toBeGreaterThan(MiB / 2);
    },
  );

  it.runIf(available)('replies above 2 MiB take the asynchronous path', async () => {
    const { dir, fd } = await cachedFile(5, 4 * MiB);
    const pair = await socketPair(dir);
    const ch = new Channel(pair.server);
    expect(ch.sendFile(Buffer.alloc(16), { fd, offset: 0 }, 2 * MiB + 1, take, give)).toBe(false);
    expect(ch.zeroCopy.replies).toBe(0);
  });

  it.runIf(available)('steps aside when the range is not in the page cache', async () => {
    const dir = await tempDir();
    const file = join(dir, 'direct');
    // Written with O_DIRECT: the data goes to the disk, not into the page cache.
    const buf = allocIoBuffer(MiB);
    buf.set(pseudoRandom(3, MiB));
    const wfd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT);
    writeSync(wfd, buf, 0, MiB, 0);
    closeSync(wfd);
    const fd = openSync(file, 'r');
    open.push(() => closeSync(fd));
    expect(native!.cached!(fd, 0, MiB)).toBe(0);
    const pair = await socketPair(dir);
    const ch = new Channel(pair.server);
    expect(ch.sendFile(Buffer.alloc(16), { fd, offset: 0 }, MiB, take, give)).toBe(false);
    expect(ch.zeroCopy.replies).toBe(0);
  });

  it.runIf(available)(
    'sendfile failing on the file side: nothing sent, the normal path takes over, and that file is not tried again',
    async () => {
      const dir = await tempDir();
      const file = join(dir, 'data');
      writeFileSync(file, pseudoRandom(8, MiB));
      readFileSync(file);
      // Write-only: sendfile cannot read from it (EBADF), while cachestat still answers.
      const fd = openSync(file, 'w');
      open.push(() => closeSync(fd));
      const pair = await socketPair(dir);
      const ch = new Channel(pair.server);
      const h = Buffer.alloc(16, 5);
      expect(ch.sendFile(h, { fd, offset: 0 }, 65536, take, give)).toBe(false);
      expect(ch.sendFile(h, { fd, offset: 0 }, 65536, take, give)).toBe(false);
      expect(ch.zeroCopy).toEqual({ replies: 0, bytes: 0 });
      ch.write(h); // the stream is intact: the header never left
      expect((await pair.receive(16)).equals(h)).toBe(true);
    },
  );

  it.runIf(available)('never on a TLS socket (the bytes would bypass the encryption)', async () => {
    const { dir, fd } = await cachedFile(4, MiB);
    const pair = await socketPair(dir);
    const tls = new TLSSocket(pair.server);
    open.push(() => tls.destroy());
    const ch = new Channel(tls);
    expect(ch.sendFile(Buffer.alloc(16), { fd, offset: 0 }, 4096, take, give)).toBe(false);
    expect(ch.zeroCopy.replies).toBe(0);
  });
});
