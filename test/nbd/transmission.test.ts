// Transmission phase through the real server, driven byte-by-byte by a scripted peer (framing,
// draining, desync protection) and through vmforge's own client (commands, replies, errors).
import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { BlockDevice } from '../../src/block/device.js';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { RawDevice } from '../../src/raw/raw-device.js';
import { NbdClient, NbdRequestError } from '../../src/nbd/client.js';
import { NbdBlockDevice } from '../../src/nbd/client-device.js';
import {
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_GO,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REP_ACK,
  NBD_SIMPLE_REPLY_MAGIC,
} from '../../src/nbd/protocol.js';
import { NbdServer } from '../../src/nbd/server.js';
import { decodeReplyHeader, encodeInfoRequest, encodeRequest } from '../../src/nbd/wire.js';
import { tempDir } from '../support/tmp.js';
import { memoryDevice, testServer, type Chunking, type Peer } from './helpers.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** Negotiate GO on a scripted peer; returns once in transmission. */
async function go(p: Peer, structured: boolean): Promise<void> {
  await p.greet();
  if (structured) {
    await p.option(NBD_OPT_STRUCTURED_REPLY);
    expect((await p.reply()).type).toBe(NBD_REP_ACK);
  }
  await p.option(NBD_OPT_GO, encodeInfoRequest('', [NBD_INFO_BLOCK_SIZE]));
  for (let r = await p.reply(); r.type !== NBD_REP_ACK; r = await p.reply()) {
    /* info replies */
  }
}

async function simpleReply(p: Peer) {
  const h = decodeReplyHeader(await p.recv(16));
  if (h.kind !== 'simple') throw new Error('expected simple reply');
  return h;
}

const pattern = (i: number) => (i * 7 + (i >> 9)) & 0xff;

for (const chunking of ['whole', 'bytes'] as Chunking[]) {
  describe(`transmission framing (${chunking} input)`, () => {
    it('simple replies: write then read back, requests split arbitrarily', async () => {
      const t = testServer({ exports: [{ device: await memoryDevice(65536) }] });
      cleanups.push(() => t.server.destroy());
      const p = t.connect(chunking);
      await go(p, false);
      const data = new Uint8Array(1000).map((_, i) => pattern(i));
      await p.send(encodeRequest(0, NBD_CMD_WRITE, 7n, 100, data.length));
      await p.send(data);
      const w = await simpleReply(p);
      expect(w).toEqual({ kind: 'simple', error: 0, cookie: 7n });
      await p.send(encodeRequest(0, NBD_CMD_READ, 8n, 100, 1000));
      expect(await simpleReply(p)).toEqual({ kind: 'simple', error: 0, cookie: 8n });
      expect(Buffer.from(await p.recv(1000))).toEqual(Buffer.from(data));
    });

    it('drains the payload of a rejected write and stays in sync', async () => {
      const t = testServer({
        exports: [{ device: await memoryDevice(4096) }],
        rejectionErrors: 'spec',
      });
      cleanups.push(() => t.server.destroy());
      const p = t.connect(chunking);
      await go(p, false);
      // Past EOF: ENOSPC, and the 512 payload bytes must not be parsed as requests.
      await p.send(encodeRequest(0, NBD_CMD_WRITE, 1n, 4000, 512));
      await p.send(new Uint8Array(512).fill(0x25)); // 0x25 bytes look like request magic
      expect(await simpleReply(p)).toMatchObject({ error: 28, cookie: 1n });
      await p.send(encodeRequest(0, NBD_CMD_READ, 2n, 0, 16));
      expect(await simpleReply(p)).toMatchObject({ error: 0, cookie: 2n });
      expect(Buffer.from(await p.recv(16))).toEqual(Buffer.alloc(16));
    });
  });
}

describe('transmission replies', () => {
  it('structured read: holes as OFFSET_HOLE, data as OFFSET_DATA; DF gives one chunk', async () => {
    const storage = new MemoryStorage(256 * 1024);
    await storage.write(new Uint8Array(64 * 1024).fill(9), 64 * 1024); // page 1 allocated
    const t = testServer({ exports: [{ device: await RawDevice.open(storage) }] });
    cleanups.push(() => t.server.destroy());
    const p = t.connect();
    await go(p, true);
    await p.send(encodeRequest(0, NBD_CMD_READ, 5n, 0, 192 * 1024));
    const chunks = [];
    for (;;) {
      const h = decodeReplyHeader(await p.recv(20));
      if (h.kind !== 'chunk') throw new Error('expected chunk');
      const payload = await p.recv(h.length);
      chunks.push({ type: h.type, flags: h.flags, length: h.length, payload });
      if (h.flags & NBD_REPLY_FLAG_DONE) break;
    }
    expect(chunks.map((c) => c.type)).toEqual([
      NBD_REPLY_TYPE_OFFSET_HOLE,
      NBD_REPLY_TYPE_OFFSET_DATA,
      NBD_REPLY_TYPE_OFFSET_HOLE,
    ]);
    expect(chunks[1]!.payload.subarray(8).every((b) => b === 9)).toBe(true);

    await p.send(encodeRequest(NBD_CMD_FLAG_DF, NBD_CMD_READ, 6n, 0, 192 * 1024));
    const h = decodeReplyHeader(await p.recv(20));
    expect(h).toMatchObject({
      kind: 'chunk',
      type: NBD_REPLY_TYPE_OFFSET_DATA,
      flags: NBD_REPLY_FLAG_DONE,
    });
  });

  it('replies out of order: a fast request overtakes a slow one', async () => {
    const dev = await memoryDevice(8192, pattern);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow: BlockDevice = new Proxy(dev, {
      get(target, prop) {
        if (prop === 'read') {
          return async (buf: Uint8Array, offset: number) => {
            if (offset === 0) await gate;
            return target.read(buf, offset);
          };
        }
        // Methods run on the device itself (they use its private fields).
        const value: unknown = Reflect.get(target, prop);
        return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
      },
    });
    const t = testServer({ exports: [{ device: slow }] });
    cleanups.push(() => t.server.destroy());
    const p = t.connect();
    await go(p, false);
    await p.send(encodeRequest(0, NBD_CMD_READ, 1n, 0, 16));
    await p.send(encodeRequest(0, NBD_CMD_READ, 2n, 4096, 16));
    expect((await simpleReply(p)).cookie).toBe(2n);
    await p.recv(16);
    release();
    expect((await simpleReply(p)).cookie).toBe(1n);
  });

  it('a bad request magic closes that connection only', async () => {
    const t = testServer({ exports: [{ device: await memoryDevice(4096) }], maxConnections: 0 });
    cleanups.push(() => t.server.destroy());
    const bad = t.connect();
    const good = t.connect();
    await go(bad, false);
    await go(good, false);
    await bad.send(new Uint8Array(28).fill(0xee));
    expect(await bad.closed()).toBe(true);
    expect(t.logs.some((l) => l.message.includes('invalid magic (got 0xeeeeeeee)'))).toBe(true);
    await good.send(encodeRequest(0, NBD_CMD_READ, 3n, 0, 8));
    expect((await simpleReply(good)).error).toBe(0);
  });

  it('an oversized write beyond the drain limit is refused, then the client is dropped', async () => {
    const t = testServer({ exports: [{ device: await memoryDevice(4096) }] });
    cleanups.push(() => t.server.destroy());
    const p = t.connect();
    await go(p, false);
    await p.send(encodeRequest(0, NBD_CMD_WRITE, 9n, 0, 0xffff_0000));
    expect(await simpleReply(p)).toMatchObject({ error: 22, cookie: 9n });
    expect(await p.closed()).toBe(true);
  });

  it('a client vanishing mid-payload leaves the export untouched and the server serving', async () => {
    const dev = await memoryDevice(4096, pattern);
    const t = testServer({ exports: [{ device: dev }], maxConnections: 0 });
    cleanups.push(() => t.server.destroy());
    const p = t.connect();
    await go(p, false);
    await p.send(encodeRequest(0, NBD_CMD_WRITE, 1n, 0, 1024));
    await p.send(new Uint8Array(100).fill(0xff));
    p.socket.destroy();
    await new Promise((r) => setTimeout(r, 20));
    const buf = new Uint8Array(1024);
    await dev.read(buf, 0);
    expect(buf.every((b, i) => b === pattern(i))).toBe(true);
    const q = t.connect();
    await go(q, false);
    await q.send(encodeRequest(0, NBD_CMD_READ, 2n, 0, 4));
    expect((await simpleReply(q)).error).toBe(0);
  });

  it('DISC finishes in-flight requests before closing', async () => {
    const t = testServer({ exports: [{ device: await memoryDevice(4096) }] });
    cleanups.push(() => t.server.destroy());
    const p = t.connect();
    await go(p, false);
    const data = new Uint8Array(4096).fill(3);
    await p.send(encodeRequest(0, NBD_CMD_WRITE, 1n, 0, 4096));
    await p.send(data);
    await p.send(encodeRequest(0, NBD_CMD_DISC, 2n, 0, 0));
    const r = await simpleReply(p);
    expect(r).toMatchObject({ cookie: 1n, error: 0 });
    expect(await p.closed()).toBe(true);
    expect(p.buffered).toBe(0);
    const magic = NBD_SIMPLE_REPLY_MAGIC;
    expect(magic).toBe(0x67446698);
  });
});

describe('vmforge client against vmforge server (unix socket)', () => {
  async function serve(
    device: BlockDevice,
    opts: { readOnly?: boolean; rejectionErrors?: 'qemu' | 'spec' } = {},
  ) {
    const dir = await tempDir();
    const socket = join(dir, 's');
    const server = new NbdServer({
      exports: [{ device, ...(opts.readOnly ? { readOnly: true } : {}) }],
      maxConnections: 0,
      ...(opts.rejectionErrors ? { rejectionErrors: opts.rejectionErrors } : {}),
    });
    await server.listen({ kind: 'unix', path: socket });
    cleanups.push(() => server.destroy());
    return socket;
  }

  it('reads, writes, zeroes, trims, flushes and reports block status', async () => {
    const socket = await serve(await RawDevice.open(new MemoryStorage(1 << 20)));
    const dev = await NbdBlockDevice.open(`nbd+unix:///?socket=${socket}`);
    cleanups.push(() => dev.close());
    expect(dev.size).toBe(1 << 20);
    const data = new Uint8Array(200_000).map((_, i) => pattern(i));
    await dev.write(data, 12345, { fua: true });
    const back = new Uint8Array(200_000);
    await dev.read(back, 12345);
    expect(Buffer.from(back)).toEqual(Buffer.from(data));
    await dev.writeZeroes(12345, 1000, { mayUnmap: true });
    await dev.read(back.subarray(0, 1000), 12345);
    expect(back.subarray(0, 1000).every((b) => b === 0)).toBe(true);
    await dev.discard(0, 65536);
    await dev.flush();
    await dev.client.cache(0, 65536);
    const ext = await dev.blockStatus(0, 1 << 20);
    expect(ext[0]).toMatchObject({ offset: 0, data: false, zero: true });
    expect(ext.some((e) => e.data)).toBe(true);
    expect(ext.reduce((a, e) => a + e.length, 0)).toBe(1 << 20);
    const one = await dev.blockStatus(0, 1 << 20, { maxExtents: 1 });
    expect(one).toHaveLength(1);
  });

  it('many requests in flight on one connection all complete correctly', async () => {
    const socket = await serve(await memoryDevice(1 << 20, pattern));
    const client = await NbdClient.connect({ socket });
    cleanups.push(() => client.close());
    const reads = Array.from({ length: 200 }, (_, i) => {
      const buf = new Uint8Array(4096);
      return client.readInto(buf, (i * 4099) % ((1 << 20) - 4096)).then(() => ({ i, buf }));
    });
    for (const { i, buf } of await Promise.all(reads)) {
      const off = (i * 4099) % ((1 << 20) - 4096);
      expect(buf.every((b, j) => b === pattern(off + j))).toBe(true);
    }
  });

  it('refusals are EINVAL as in qemu-nbd by default', async () => {
    const socket = await serve(await memoryDevice(4096), { readOnly: true });
    const client = await NbdClient.connect({ socket });
    cleanups.push(() => client.close());
    await expect(client.write(new Uint8Array(1), 0)).rejects.toMatchObject({ nbdErrno: 22 });
  });

  it('keeps going when replies pile up faster than the client reads them (no deadlock)', async () => {
    // Regression: with the outbound queue over its limit and every slot busy, the loop must be
    // woken by 'drain', not only by request completions.
    const socket = await serve(await memoryDevice(8 << 20, pattern));
    const client = await NbdClient.connect({ socket, maxInFlight: 256 });
    cleanups.push(() => client.close());
    const reads = Array.from({ length: 120 }, (_, i) => {
      const buf = new Uint8Array(1 << 20);
      return client
        .readInto(buf, (i % 7) << 20)
        .then(() => buf[5] === pattern(((i % 7) << 20) + 5));
    });
    expect((await Promise.all(reads)).every(Boolean)).toBe(true);
  });

  it('bounds the data in flight across all connections (server budget)', async () => {
    const dev = await memoryDevice(8 << 20);
    let now = 0;
    let peak = 0;
    const slow: BlockDevice = new Proxy(dev, {
      get(target, prop) {
        if (prop === 'write') {
          return async (buf: Uint8Array, offset: number) => {
            now += buf.length;
            peak = Math.max(peak, now);
            await new Promise((r) => setTimeout(r, 2));
            await target.write(buf, offset);
            now -= buf.length;
          };
        }
        // Methods run on the device itself (they use its private fields).
        const value: unknown = Reflect.get(target, prop);
        return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
      },
    });
    const dir = await tempDir();
    const socket = join(dir, 's');
    const server = new NbdServer({
      exports: [{ device: slow }],
      maxConnections: 0,
      maxServerInFlightBytes: 1 << 20,
    });
    await server.listen({ kind: 'unix', path: socket });
    cleanups.push(() => server.destroy());
    const clients = await Promise.all([0, 1, 2].map(() => NbdClient.connect({ socket })));
    cleanups.push(async () => {
      for (const c of clients) await c.close();
    });
    const chunk = new Uint8Array(512 << 10).fill(7);
    await Promise.all(
      clients.flatMap((c, k) =>
        Array.from({ length: 8 }, (_, i) => c.write(chunk, ((k * 8 + i) % 16) << 19)),
      ),
    );
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(1 << 20);
  });

  it('errors carry the NBD error: EINVAL past EOF, EPERM on a read-only export (spec)', async () => {
    const socket = await serve(await memoryDevice(4096), {
      readOnly: true,
      rejectionErrors: 'spec',
    });
    const client = await NbdClient.connect({ socket });
    cleanups.push(() => client.close());
    await expect(client.readInto(new Uint8Array(10), 4090)).rejects.toMatchObject({
      nbdErrno: 22,
      errno: 'EINVAL',
    });
    const err = await client.write(new Uint8Array(1), 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdRequestError);
    expect((err as NbdRequestError).nbdErrno).toBe(1);
    expect((err as Error).message).toContain('Export is read-only');
    // The connection is still usable.
    await client.readInto(new Uint8Array(10), 0);
  });

  it('works with simple replies only (no structured replies negotiated)', async () => {
    const socket = await serve(await memoryDevice(65536, pattern));
    const client = await NbdClient.connect({ socket, structuredReplies: false });
    cleanups.push(() => client.close());
    expect(client.info.structured).toBe(false);
    const buf = new Uint8Array(1000);
    await client.readInto(buf, 5);
    expect(buf.every((b, j) => b === pattern(5 + j))).toBe(true);
  });
});
