// Hostile and broken clients against the real vmforge-nbd process: unknown client flags, bad
// magics, absurd option lengths, unknown options and commands, unaligned and out-of-range
// requests, oversized writes, clients vanishing mid-payload, random bytes from a hundred clients
// and 200 simultaneous connections. The server must keep serving everyone else with correct
// data, never print a stack trace, and lose no write it acknowledged with FUA or flush (kill -9).
import { open, readFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import {
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPTS_MAGIC,
  NBD_OPT_GO,
  NBD_REP_ACK,
  NBD_REP_ERR_UNSUP,
} from '../../src/nbd/protocol.js';
import { decodeReplyHeader, encodeInfoRequest, encodeRequest } from '../../src/nbd/wire.js';
import { describeWithTools } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { Peer } from '../nbd/helpers.js';
import { spawnVmforgeNbd, waitForSocket, type Server } from './nbd-support.js';

const SIZE = 4 << 20;
const pattern = (off: number) => (off * 7 + (off >> 12)) & 0xff;

const servers: Server[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop('SIGKILL');
});

async function start(
  extra: string[] = [],
): Promise<{ socket: string; file: string; server: Server }> {
  const dir = await tempDir('vmforge-nbd-abuse-');
  const file = join(dir, 'disk.raw');
  const buf = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i++) buf[i] = pattern(i);
  const fh = await open(file, 'w');
  await fh.write(buf);
  await fh.close();
  const socket = join(dir, 's.sock');
  const server = spawnVmforgeNbd(['-f', 'raw', '-t', '-e', '0', '-k', socket, ...extra, file]);
  servers.push(server);
  await waitForSocket(socket, server);
  return { socket, file, server };
}

function connect(socket: string): Promise<Peer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    s.once('connect', () => resolve(new Peer(s)));
    s.once('error', reject);
  });
}

async function go(p: Peer): Promise<void> {
  await p.greet();
  await p.option(NBD_OPT_GO, encodeInfoRequest('', [NBD_INFO_BLOCK_SIZE]));
  for (let r = await p.reply(); r.type !== NBD_REP_ACK; r = await p.reply());
}

async function reply(p: Peer): Promise<{ error: number; cookie: bigint }> {
  const h = decodeReplyHeader(await p.recv(16));
  if (h.kind !== 'simple') throw new Error('expected a simple reply');
  return h;
}

/** A well-behaved client reads `len` bytes at `off` and checks them against the pattern. */
async function checkRead(socket: string, off: number, len = 4096): Promise<void> {
  const p = await connect(socket);
  await go(p);
  await p.send(encodeRequest(0, NBD_CMD_READ, 1n, off, len));
  expect((await reply(p)).error).toBe(0);
  const data = await p.recv(len);
  for (let i = 0; i < len; i++)
    if (data[i] !== pattern(off + i)) throw new Error(`bad byte at ${off + i}`);
  p.socket.destroy();
}

function noStackTraces(server: Server): void {
  const err = server.stderr();
  expect(err).not.toMatch(/\n\s+at /);
  expect(err).not.toContain('internal error');
  expect(err).not.toContain('TypeError');
}

describeWithTools(['nbdsh'], 'vmforge-nbd under abuse', () => {
  it('handshake abuse: unknown flags, bad magic, absurd lengths, unknown options', async () => {
    const { socket, server } = await start();
    const flags = await connect(socket);
    await flags.greet(NBD_FLAG_C_FIXED_NEWSTYLE | 0x40);
    expect(await flags.closed()).toBe(true);

    const magic = await connect(socket);
    await magic.greet();
    await magic.send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(await magic.closed()).toBe(true);

    const absurd = await connect(socket);
    await absurd.greet();
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
    h.writeUInt32BE(NBD_OPT_GO, 8);
    h.writeUInt32BE(0xfffffff0, 12);
    await absurd.send(h);
    expect(await absurd.closed()).toBe(true);

    const unknown = await connect(socket);
    await unknown.greet();
    await unknown.option(0xdeadbeef, Buffer.alloc(1000, 1));
    expect((await unknown.reply()).type).toBe(NBD_REP_ERR_UNSUP);
    await unknown.option(NBD_OPT_GO, encodeInfoRequest('', []));
    for (let r = await unknown.reply(); r.type !== NBD_REP_ACK; r = await unknown.reply());
    unknown.socket.destroy();

    await checkRead(socket, 12345);
    noStackTraces(server);
  });

  it('transmission abuse: unknown commands, out-of-range, unaligned, oversized, vanishing', async () => {
    const { socket, file, server } = await start();
    const p = await connect(socket);
    await go(p);
    await p.send(encodeRequest(0, 99, 1n, 0, 0));
    expect(await reply(p)).toEqual({ kind: 'simple', error: 22, cookie: 1n });
    await p.send(encodeRequest(0, NBD_CMD_READ, 2n, SIZE - 100, 200));
    expect((await reply(p)).error).toBe(22);
    await p.send(encodeRequest(0, NBD_CMD_READ, 3n, 2 ** 63, 1));
    expect((await reply(p)).error).toBe(22);
    // Unaligned: odd offsets and lengths are served exactly.
    await p.send(encodeRequest(0, NBD_CMD_WRITE, 4n, 4097, 3));
    await p.send(Uint8Array.of(0xa1, 0xa2, 0xa3));
    expect((await reply(p)).error).toBe(0);
    await p.send(encodeRequest(0, NBD_CMD_READ, 5n, 4095, 7));
    expect((await reply(p)).error).toBe(0);
    expect([...(await p.recv(7))]).toEqual([
      pattern(4095),
      pattern(4096),
      0xa1,
      0xa2,
      0xa3,
      pattern(4100),
      pattern(4101),
    ]);
    // Oversized write inside the drain limit: refused, payload drained, stream still in sync.
    const big = 33 << 20;
    await p.send(encodeRequest(0, NBD_CMD_WRITE, 6n, 0, big));
    await p.send(Buffer.alloc(big, 0xee));
    expect((await reply(p)).error).toBe(22);
    await p.send(encodeRequest(0, NBD_CMD_FLUSH, 7n, 0, 0));
    expect(await reply(p)).toMatchObject({ error: 0, cookie: 7n });
    // Absurd write: refused and the client dropped.
    await p.send(encodeRequest(0, NBD_CMD_WRITE, 8n, 0, 0xfffffff0));
    expect((await reply(p)).error).toBe(22);
    expect(await p.closed()).toBe(true);
    // A client vanishing mid-payload changes nothing.
    const v = await connect(socket);
    await go(v);
    await v.send(encodeRequest(0, NBD_CMD_WRITE, 1n, 65536, 65536));
    await v.send(Buffer.alloc(30000, 0xff));
    v.socket.destroy();
    await checkRead(socket, 65536, 65536);
    const disk = await readFile(file);
    expect(disk.subarray(0, 4096).every((b, i) => b === pattern(i))).toBe(true);
    noStackTraces(server);
  });

  it('random bytes from 100 clients while 200 good clients read correct data', async () => {
    const { socket, server } = await start();
    let seed = 7;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    const hostile = Array.from({ length: 100 }, async () => {
      const s = net.connect(socket);
      s.on('error', () => undefined);
      await new Promise((r) => s.once('connect', r));
      const junk = Buffer.alloc(rand() % 4000);
      for (let i = 0; i < junk.length; i++) junk[i] = rand() & 0xff;
      if (rand() % 2) s.write(Buffer.from([0, 0, 0, 1]));
      s.write(junk);
      await new Promise((r) => setTimeout(r, rand() % 50));
      s.destroy();
    });
    const good = Array.from({ length: 200 }, (_, i) =>
      checkRead(socket, (i * 20483) % (SIZE - 4096)),
    );
    await Promise.all([...hostile, ...good]);
    await checkRead(socket, 0);
    noStackTraces(server);
  });

  it('kill -9 loses no write acknowledged with FUA or flush', async () => {
    const { socket, file, server } = await start();
    const p = await connect(socket);
    await go(p);
    await p.send(encodeRequest(1, NBD_CMD_WRITE, 1n, 8192, 4096)); // FUA
    await p.send(Buffer.alloc(4096, 0x11));
    expect((await reply(p)).error).toBe(0);
    await p.send(encodeRequest(0, NBD_CMD_WRITE, 2n, 1 << 20, 65536));
    await p.send(Buffer.alloc(65536, 0x22));
    expect((await reply(p)).error).toBe(0);
    await p.send(encodeRequest(0, NBD_CMD_FLUSH, 3n, 0, 0));
    expect((await reply(p)).error).toBe(0);
    expect(await server.stop('SIGKILL')).toBe('SIGKILL');
    const disk = await readFile(file);
    expect(disk.subarray(8192, 12288).every((b) => b === 0x11)).toBe(true);
    expect(disk.subarray(1 << 20, (1 << 20) + 65536).every((b) => b === 0x22)).toBe(true);
    expect(disk.subarray(0, 8192).every((b, i) => b === pattern(i))).toBe(true);
  });
});
